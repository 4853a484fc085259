#!/usr/bin/env python3
"""Generates the SONAR parity fixtures under crates/sonar/tests/fixtures/.

Regenerate (from the repository root; the venv comes from scripts/sonar/setup-venv.sh):

    bash scripts/sonar/setup-venv.sh
    /work/py/sonar-venv/bin/python scripts/sonar/make_fixtures.py

Options: --out DIR (default crates/sonar/tests/fixtures), --check (regenerate into a temporary
directory and fail if any file differs from the committed one, byte for byte for the binary
files and value for value for the JSON files).

Everything is deterministic (fixed seeds, one CPU thread, no network). What is built:

  * a tiny SentencePiece model (BPE, nmt_nfkc, 200 pieces, NLLB's <unk>=0 <s>=1 </s>=2 and no
    <pad>) trained on the multilingual sentences in CORPUS_* below, plus a unigram twin
    (identity normalisation, to stay small) that is only used for tokenizer fixtures;
  * the SONAR tokenizer on top of it, exactly as sonar-space 0.5 builds it (fairseq2's
    `load_nllb_tokenizer`: <pad> inserted at 0, so piece k -> k+1, then the language tags
    __deu_Latn__, __eng_Latn__, __fra_Latn__ and the three NLLB data tags);
  * tiny random-weight SONAR text encoder and decoder built with sonar's own factories
    (`SonarTextEncoderFactory`, `SonarTextDecoderFactory`) from configs that copy the "basic"
    architectures (text_sonar_basic_encoder / text_sonar_basic_decoder) with small sizes;
  * their weights as fairseq2 `.pt` ({"model": state_dict}, as the real checkpoints are
    distributed) and safetensors (same keys), and the decoder also in the legacy fairseq1 `.pt`
    layout that sonar's checkpoint converter accepts ({"state_dict": ...}, fc1/fc2, rows 0-3 of
    the embedding in fairseq1 dictionary order). Every file is reloaded through fairseq2's
    `load_model` (or `load_state_dict` for safetensors) and must give bit-identical outputs;
  * fixtures: token ids, encoder states and pooled embeddings on a padded batch, teacher-forced
    decoder logits, beam-search hypotheses with scores (fairseq2's BeamSearchSeq2SeqGenerator,
    configured exactly as sonar's EmbeddingToTextModelPipeline does, checked against the
    pipeline's output and for robustness under float64 and 1e-4 weight perturbations), greedy
    output, detokenised strings, and a sacreBLEU fixture (sacrebleu package).

Output: ~660 KB in 11 files (du -sh crates/sonar/tests/fixtures); CPU only, ~20 s.

See scripts/sonar/FIXTURES.md for the file formats and the architecture facts behind them.
"""

from __future__ import annotations

import argparse
import copy
import filecmp
import hashlib
import io
import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import sacrebleu  # noqa: E402
import sentencepiece as spm  # noqa: E402
from safetensors.torch import load_file as st_load  # noqa: E402
from safetensors.torch import save_file as st_save  # noqa: E402

from fairseq2 import init_fairseq2  # noqa: E402

init_fairseq2()

from fairseq2.assets import AssetCard  # noqa: E402
from fairseq2.data.tokenizers import VocabularyInfo  # noqa: E402
from fairseq2.generation.beam_search.generator import BeamSearchSeq2SeqGenerator  # noqa: E402
from fairseq2.models import load_model  # noqa: E402
from fairseq2.models.nllb.tokenizer import NllbTokenizerConfig, load_nllb_tokenizer  # noqa: E402
from fairseq2.nn import BatchLayout  # noqa: E402
from fairseq2.nn.utils.padding import pad_seqs  # noqa: E402

from sonar.inference_pipelines.text import (  # noqa: E402
    EmbeddingToTextModelPipeline,
    TextToEmbeddingModelPipeline,
)
from sonar.inference_pipelines.utils import SequenceToTextConverter  # noqa: E402
from sonar.models.sonar_text import (  # noqa: E402
    SonarTextDecoderConfig,
    SonarTextDecoderFactory,
    SonarTextEncoderConfig,
    SonarTextEncoderFactory,
)
from sonar.models.sonar_translation import SonarEncoderDecoderModel  # noqa: E402
from sonar.models.sonar_translation.model import DummyEncoderModel  # noqa: E402

SEED = 20261128  # corpus templates, perturbation noise
WEIGHT_SEED = 7  # random weights; picked among 1..10 for varied beam endings (natural EOS at
# several lengths, forced EOS at max length, non-empty texts), see FIXTURES.md
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "crates" / "sonar" / "tests" / "fixtures"

# ----------------------------------------------------------------------------------------------
# Sizes. Everything not listed here is copied from sonar's "basic" architectures
# (sonar/models/sonar_text/config.py, `basic()` of both registrars).
SPM_VOCAB = 200  # SentencePiece pieces including <unk>, <s>, </s> (real model: 256000)
LANGS = ["deu_Latn", "eng_Latn", "fra_Latn"]  # alphabetical, like the card's 202-entry list
MODEL_DIM = 16
NUM_LAYERS = 2
NUM_HEADS = 4
FFN_DIM = 32
MAX_SEQ_LEN = 512  # as in basic(); the encoder factory adds pad_idx + 1 = 2 (_from_fairseq)
WEIGHT_STD = 0.2
DECODER_EMBED_STD = 0.5  # tied output projection: a larger scale makes beam decisions robust
EOS_ROW_SCALE = 4.0  # decoder embedding row 3 (</s>) is multiplied by this, so that EOS gets chosen
BEAM_SHORT_MAX_SEQ_LEN = 16  # second beam run with a short max_seq_len (forced EOS)
PERTURB_REL = 1e-4  # robustness check of the beam fixtures (see run_beam)
PERTURB_TRIALS = 3

# ----------------------------------------------------------------------------------------------
# Training text for the tiny SentencePiece model: hand-written sentences plus templated ones.
CORPUS_EN = [
    "Hello, my name is Paul.", "I work as a teacher.", "The weather is nice today.",
    "Where is the train station?", "It costs 42 euros, doesn't it?",
    "She bought three apples and two pears.", "We will meet at 10:30 in front of the museum.",
    "My brother lives in London.", "The children are playing in the garden.",
    "Could you please open the window?", "This book is very interesting!",
    "They have been waiting for an hour.", "The cat sleeps on the sofa.",
    "I don't know what to say.", "Our flight leaves at 7 a.m. tomorrow.",
    "The river flows through the old town.", "He said: \"I'll be there soon.\"",
    "Please call me back before Friday.", "The results were published in 2021.",
    "Water boils at 100 degrees Celsius.", "There are 365 days in a year.",
    "The museum is closed on Mondays.", "Can I pay by card?", "What time is it?",
    "The new bridge is 1,200 metres long.", "I'm learning French and German.",
    "The soup is too hot to eat.", "Let's go for a walk in the park.",
    "The meeting has been moved to Thursday.", "Do you speak English?",
    "The shop on the corner sells fresh bread.", "My grandmother is 87 years old.",
    "The teacher explained the lesson twice.", "We need milk, eggs and butter.",
    "The train was late again.", "Thank you very much for your help!",
]
CORPUS_FR = [
    "Bonjour, je m'appelle Paul.", "Je travaille comme professeur.",
    "Il fait beau aujourd'hui.", "Où est la gare ?", "Ça coûte 42 euros, n'est-ce pas ?",
    "Elle a acheté trois pommes et deux poires.", "Nous nous retrouverons à 10 h 30 devant le musée.",
    "Mon frère habite à Londres.", "Les enfants jouent dans le jardin.",
    "Pourriez-vous ouvrir la fenêtre, s'il vous plaît ?", "Ce livre est très intéressant !",
    "Ils attendent depuis une heure.", "Le chat dort sur le canapé.",
    "Je ne sais pas quoi dire.", "Notre vol part demain à 7 heures.",
    "La rivière traverse la vieille ville.", "Il a dit : « J'arrive bientôt. »",
    "Rappelez-moi avant vendredi, s'il vous plaît.", "Les résultats ont été publiés en 2021.",
    "L'eau bout à 100 degrés Celsius.", "Il y a 365 jours dans une année.",
    "Le musée est fermé le lundi.", "Puis-je payer par carte ?", "Quelle heure est-il ?",
    "Le nouveau pont mesure 1 200 mètres.", "J'apprends le français et l'allemand.",
    "La soupe est trop chaude pour être mangée.", "Allons nous promener dans le parc.",
    "La réunion a été déplacée à jeudi.", "Parlez-vous anglais ?",
    "La boutique du coin vend du pain frais.", "Ma grand-mère a 87 ans.",
    "Le professeur a expliqué la leçon deux fois.", "Il nous faut du lait, des œufs et du beurre.",
    "Le train était encore en retard.", "Merci beaucoup pour votre aide !",
]
CORPUS_DE = [
    "Guten Tag, ich heiße Paul.", "Ich arbeite als Lehrer.", "Das Wetter ist heute schön.",
    "Wo ist der Bahnhof?", "Das kostet 42 Euro, nicht wahr?",
    "Sie hat drei Äpfel und zwei Birnen gekauft.", "Wir treffen uns um 10:30 Uhr vor dem Museum.",
    "Mein Bruder wohnt in London.", "Die Kinder spielen im Garten.",
    "Könnten Sie bitte das Fenster öffnen?", "Dieses Buch ist sehr interessant!",
    "Sie warten seit einer Stunde.", "Die Katze schläft auf dem Sofa.",
    "Ich weiß nicht, was ich sagen soll.", "Unser Flug geht morgen um 7 Uhr.",
    "Der Fluss fließt durch die Altstadt.", "Er sagte: „Ich bin gleich da.“",
    "Bitte rufen Sie mich vor Freitag zurück.", "Die Ergebnisse wurden 2021 veröffentlicht.",
    "Wasser kocht bei 100 Grad Celsius.", "Ein Jahr hat 365 Tage.",
    "Das Museum ist montags geschlossen.", "Kann ich mit Karte zahlen?", "Wie spät ist es?",
    "Die neue Brücke ist 1.200 Meter lang.", "Ich lerne Französisch und Deutsch.",
    "Die Suppe ist zu heiß zum Essen.", "Lass uns im Park spazieren gehen.",
    "Die Besprechung wurde auf Donnerstag verschoben.", "Sprechen Sie Englisch?",
    "Der Laden an der Ecke verkauft frisches Brot.", "Meine Großmutter ist 87 Jahre alt.",
    "Der Lehrer hat die Lektion zweimal erklärt.", "Wir brauchen Milch, Eier und Butter.",
    "Der Zug hatte wieder Verspätung.", "Vielen Dank für Ihre Hilfe!",
]
TEMPLATES = {
    "en": ("The {thing} costs {n} euros.", "I see {n} {thing}s in the {place}.",
           ["house", "car", "bird", "tree", "letter"], ["street", "garden", "city", "village"]),
    "fr": ("Le {thing} coûte {n} euros.", "Je vois {n} {thing}s dans la {place}.",
           ["livre", "vélo", "oiseau", "arbre", "gâteau"], ["rue", "forêt", "ville", "maison"]),
    "de": ("Das {thing} kostet {n} Euro.", "Ich sehe {n} {thing}e in der {place}.",
           ["Haus", "Auto", "Boot", "Bild", "Glas"], ["Straße", "Stadt", "Küche", "Schule"]),
}


def build_corpus() -> list[str]:
    rng = random.Random(SEED)
    lines = CORPUS_EN + CORPUS_FR + CORPUS_DE
    for lang, (t1, t2, things, places) in TEMPLATES.items():
        for _ in range(70):
            n = rng.choice([2, 3, 7, 12, 19, 45, 100, 250, 1999])
            thing, place = rng.choice(things), rng.choice(places)
            tpl = t1 if rng.random() < 0.5 else t2
            lines.append(tpl.format(thing=thing, n=n, place=place))
    return lines


# The six sentences of the model fixtures: two per language, different lengths.
SENTENCES = [
    ("eng_Latn", "Hello, my name is Paul."),
    ("fra_Latn", "Je travaille comme professeur."),
    ("deu_Latn", "Wo ist der Bahnhof?"),
    ("eng_Latn", "Thank you very much for your help!"),
    ("fra_Latn", "Ça coûte 42 euros."),
    ("deu_Latn", "Die Kinder spielen im Garten, nicht wahr?"),
]
# Decoding targets for the beam search: every embedding is decoded into this language.
BEAM_TARGET_LANGS = ["fra_Latn", "eng_Latn", "deu_Latn", "eng_Latn", "fra_Latn", "deu_Latn"]

# Strings for the tokenizer fixture (normalisation, whitespace, unknown characters, empty).
TOKENIZER_STRINGS = [
    "Hello, my name is Paul.",
    "Où est la gare ? À 10 h 30.",
    "Die Straße ist 1.200 Meter lang.",
    "  leading and   multiple   spaces  ",
    "tab\tand\nnewline",
    "ﬁne Ｆｕｌｌｗｉｄｔｈ ①②",  # NFKC: ligature, full-width, circled digits
    "unknown: Ω 你好 🙂",
    "",
    "«Guillemets» „Anführungszeichen“ \"quotes\"",
    "e\u0301te\u0301 vs été",  # combining accents vs precomposed
]

# sacreBLEU fixture: (hypothesis, reference) pairs with tricky tokenisation.
BLEU_PAIRS = [
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("The cat is on the mat.", "The cat sat on the mat."),
    ("Hello, world!", "Hello world!"),
    ("It costs $42.50, doesn't it?", "It costs $42.50, does it not?"),
    ("We met at 10:30 on 2021-03-04.", "We met at 10:30 on 4 March 2021."),
    ("", "This reference has no hypothesis."),
    ("Bonjour, je m'appelle Paul.", "Bonjour, mon nom est Paul."),
    ("Je travaille comme professeur.", "Je travaille comme professeur."),
    ("Ça coûte 42 euros, n'est-ce pas ?", "Ça coûte 42 euros, non ?"),
    ("Die Straße ist 1.200 Meter lang.", "Die Straße ist 1200 Meter lang."),
    ("Er sagte: „Ich bin gleich da.“", "Er sagte: \"Ich bin gleich da.\""),
    ("1,000,000 people (approx.) live there.", "About 1,000,000 people live there."),
    ("e-mail me at paul@example.com!", "Email me at paul@example.com."),
    ("Numbers: 3.14, 2.71 and 1.41.", "Numbers: 3.14, 2.72 and 1.41."),
    ("a a a a a a", "a b c d e f"),
    ("Short.", "This is a much longer reference sentence than the hypothesis."),
    ("A much longer hypothesis sentence than the short reference here.", "Short reference."),
    ("Tokyo is 東京 in Japanese.", "In Japanese, Tokyo is 東京."),
    ("The U.S.A. and the U.K. signed it.", "The USA and the UK signed it."),
    ("Don't stop -- keep going...", "Do not stop - keep going..."),
    ("   extra   spaces   here   ", "extra spaces here"),
    ("Tabs\tand\tnewlines", "Tabs and newlines"),
]


# ----------------------------------------------------------------------------------------------
def train_spm(corpus: list[str], model_type: str, normalization: str = "nmt_nfkc") -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=buf,
        model_type=model_type,
        vocab_size=SPM_VOCAB,
        character_coverage=1.0,
        normalization_rule_name=normalization,
        add_dummy_prefix=True,
        remove_extra_whitespaces=True,
        split_digits=False,
        byte_fallback=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        hard_vocab_limit=True,
        minloglevel=2,
    )
    return buf.getvalue()


def encoder_config(vocab_size: int) -> SonarTextEncoderConfig:
    # Mirrors `basic()` in sonar/models/sonar_text/config.py (encoder registrar).
    return SonarTextEncoderConfig(
        model_dim=MODEL_DIM,
        vocab_info=VocabularyInfo(size=vocab_size, unk_idx=1, bos_idx=2, eos_idx=3, pad_idx=1),
        learned_pos=False,
        no_scale_embedding=False,
        emb_dropout_p=0.1,
        attention_dropout_p=0.1,
        activation_dropout_p=0.1,
        max_seq_len=MAX_SEQ_LEN,
        pooling="mean",
        no_token_positional_embeddings=False,
        activation_fn="ReLU",
        normalize_before=False,
        num_encoder_layers=NUM_LAYERS,
        num_decoder_layers=NUM_LAYERS,
        num_encoder_attn_heads=NUM_HEADS,
        num_decoder_attn_heads=NUM_HEADS,
        ffn_inner_dim=FFN_DIM,
        _from_fairseq=True,
    )


def decoder_config(vocab_size: int) -> SonarTextDecoderConfig:
    # Mirrors `basic()` in sonar/models/sonar_text/config.py (decoder registrar).
    return SonarTextDecoderConfig(
        model_dim=MODEL_DIM,
        max_seq_len=MAX_SEQ_LEN,
        vocab_info=VocabularyInfo(size=vocab_size, unk_idx=1, bos_idx=2, eos_idx=3, pad_idx=1),
        learned_pos=False,
        no_scale_embedding=False,
        emb_dropout_p=0.1,
        attention_dropout_p=0.1,
        activation_dropout_p=0.1,
        no_token_positional_embeddings=False,
        activation_fn="ReLU",
        normalize_before=True,
        num_encoder_layers=NUM_LAYERS,
        num_decoder_layers=NUM_LAYERS,
        num_encoder_attn_heads=NUM_HEADS,
        num_decoder_attn_heads=NUM_HEADS,
        ffn_inner_dim=FFN_DIM,
    )


def randomize(model: torch.nn.Module, gen: torch.Generator, embed_std: float) -> None:
    """N(0, WEIGHT_STD) for every weight and bias, LayerNorm weights 1 + N(0, WEIGHT_STD),
    the token embedding N(0, embed_std). Shared parameters are visited once."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("embed.weight"):
                p.copy_(noise * embed_std)
            elif "layer_norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + noise * WEIGHT_STD)
            else:
                p.copy_(noise * WEIGHT_STD)


# fairseq2 key -> legacy fairseq1 key (the inverse of the key maps in
# sonar/models/sonar_text/checkpoint.py).
def to_legacy_key(key: str, side: str) -> str | None:
    import re

    if key == "final_proj.weight":
        return "output_projection.weight"
    if key.endswith("embed.weight"):
        return "embed_tokens.weight"
    if side == "decoder" and key.startswith("decoder.layer_norm."):
        return key[len("decoder."):]
    m = re.match(rf"{side}\.layers\.(\d+)\.(.*)$", key)
    if m is None:
        return key  # e.g. the encoder's top-level layer_norm.*
    n, rest = m.groups()
    rest = (
        rest.replace("self_attn.output_proj.", "self_attn.out_proj.")
        .replace("encoder_decoder_attn.output_proj.", "encoder_attn.out_proj.")
        .replace("encoder_decoder_attn_layer_norm.", "encoder_attn_layer_norm.")
        .replace("encoder_decoder_attn.", "encoder_attn.")
        .replace("ffn.inner_proj.", "fc1.")
        .replace("ffn.output_proj.", "fc2.")
        .replace("ffn_layer_norm.", "final_layer_norm.")
    )
    return f"layers.{n}.{rest}"


def legacy_state_dict(sd: dict[str, torch.Tensor], side: str) -> dict[str, object]:
    """fairseq1 layout: rows 0-3 of the embedding in fairseq1's dictionary order
    (<s>, <pad>, </s>, <unk>) instead of SONAR's (<pad>, <unk>, <s>, </s>). The decoder's
    output_projection.weight is the same tensor object as embed_tokens.weight, as fairseq1
    saves tied embeddings (sonar's converter permutes the rows in place, so sharing matters)."""
    out: dict[str, object] = {}
    embed = None
    for k, v in sd.items():
        lk = to_legacy_key(k, side)
        if lk in ("embed_tokens.weight", "output_projection.weight"):
            if embed is None:
                e = v.detach().clone()
                legacy = e.clone()
                # sonar: new[[0,1,2,3]] = old[[1,3,0,2]]  =>  old[[1,3,0,2]] = new[[0,1,2,3]]
                legacy[[1, 3, 0, 2]] = e[[0, 1, 2, 3]]
                embed = legacy
            out[lk] = embed
        else:
            out[lk] = v.detach().clone()
    out["version"] = torch.tensor([3.0])
    out["embed_positions._float_tensor"] = torch.tensor([0.0])
    return {"state_dict": out}


def save_pt(obj: object, path: Path) -> None:
    # torch.save embeds the archive name (file stem) in the zip: keep it fixed for stable bytes.
    torch.save(obj, path)


def tensor_sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()


def r(x: float) -> float:
    return float(f"{float(x):.9g}")


# ----------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()

    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            return compare_dirs(Path(tmp), args.out)
    generate(args.out)
    return 0


def compare_dirs(new: Path, old: Path) -> int:
    bad = []
    for p in sorted(new.iterdir()):
        q = old / p.name
        if not q.exists():
            bad.append(f"missing {q}")
        elif p.suffix == ".json":
            if json.loads(p.read_text()) != json.loads(q.read_text()):
                bad.append(f"differs {q}")
        elif p.suffix == ".safetensors":
            a, b = st_load(p), st_load(q)
            if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
                bad.append(f"differs {q}")
        elif p.suffix == ".pt":
            a, b = torch.load(p, weights_only=True), torch.load(q, weights_only=True)
            fa = a.get("model") or a.get("state_dict")
            fb = b.get("model") or b.get("state_dict")
            if fa.keys() != fb.keys() or any(not torch.equal(fa[k], fb[k]) for k in fa):
                bad.append(f"differs {q}")
        elif not filecmp.cmp(p, q, shallow=False):
            bad.append(f"differs {q}")
    for line in bad:
        print(line)
    print("fixtures up to date" if not bad else f"{len(bad)} fixture file(s) out of date")
    return 1 if bad else 0


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(WEIGHT_SEED)

    # -- tokenizer --------------------------------------------------------------------------
    corpus = build_corpus()
    spm_bytes = train_spm(corpus, "bpe")
    (out / "tiny_spm.model").write_bytes(spm_bytes)
    # The unigram twin only serves tokenizer fixtures; identity normalisation keeps it small
    # (the nmt_nfkc precompiled charsmap alone is ~240 KB).
    uni_bytes = train_spm(corpus, "unigram", normalization="identity")
    (out / "tiny_spm_unigram.model").write_bytes(uni_bytes)

    tok_cfg = NllbTokenizerConfig(langs=list(LANGS), default_lang="eng_Latn")
    tokenizer = load_nllb_tokenizer(out / "tiny_spm.model", tok_cfg)
    vi = tokenizer.vocab_info
    sp = spm.SentencePieceProcessor(model_proto=spm_bytes)
    assert sp.get_piece_size() == SPM_VOCAB
    vocab_size = vi.size
    lang_ids = {lang: tokenizer._model.token_to_index(f"__{lang}__") for lang in LANGS}
    data_tags = {t: tokenizer._model.token_to_index(t) for t in ["<MINED_DATA>", "<MMT_BT_DATA>", "<SMT_BT_DATA>"]}
    assert (vi.pad_idx, vi.unk_idx, vi.bos_idx, vi.eos_idx) == (0, 1, 2, 3)
    assert [lang_ids[lang] for lang in LANGS] == list(range(SPM_VOCAB + 1, SPM_VOCAB + 1 + len(LANGS)))

    tokenizer_fixture(out, tokenizer, sp, spm.SentencePieceProcessor(model_proto=uni_bytes), lang_ids, data_tags)

    # -- models -----------------------------------------------------------------------------
    enc_cfg = encoder_config(vocab_size)
    dec_cfg = decoder_config(vocab_size)
    encoder = SonarTextEncoderFactory(copy.deepcopy(enc_cfg)).create_model()
    decoder = SonarTextDecoderFactory(copy.deepcopy(dec_cfg)).create_model()
    randomize(encoder, gen, WEIGHT_STD)
    randomize(decoder, gen, DECODER_EMBED_STD)
    with torch.no_grad():
        decoder.decoder_frontend.embed.weight[3] *= EOS_ROW_SCALE
    encoder.eval()
    decoder.eval()

    enc_sd = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    dec_sd = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
    assert torch.equal(dec_sd["final_proj.weight"], dec_sd["decoder_frontend.embed.weight"])

    # fairseq2 layout, as distributed: {"model": state_dict}. The decoder's final_proj.weight
    # is stored as the same tensor as decoder_frontend.embed.weight (one storage in the zip).
    dec_sd_shared = dict(dec_sd)
    dec_sd_shared["final_proj.weight"] = dec_sd_shared["decoder_frontend.embed.weight"]
    save_pt({"model": enc_sd}, out / "encoder.pt")
    save_pt({"model": dec_sd_shared}, out / "decoder.pt")
    # safetensors: same keys; the tied final_proj.weight is left out (safetensors cannot alias).
    st_save(enc_sd, str(out / "encoder.safetensors"), metadata={"format": "pt"})
    st_save({k: v for k, v in dec_sd.items() if k != "final_proj.weight"}, str(out / "decoder.safetensors"),
            metadata={"format": "pt"})  # one metadata key only: safetensors writes a hash map
    # legacy fairseq1 layout
    # (no encoder in legacy layout: sonar-space 0.5 cannot load one, see verify_loading)
    save_pt(legacy_state_dict(dec_sd, "decoder"), out / "decoder_legacy.pt")

    checks = verify_loading(out, enc_cfg, dec_cfg, encoder, decoder)

    # -- model fixtures ---------------------------------------------------------------------
    tensors: dict[str, torch.Tensor] = {}
    meta = model_fixtures(tokenizer, encoder, decoder, tensors, lang_ids)
    meta["checks"] = checks
    meta["weights"] = weights_meta(enc_sd, dec_sd)
    meta["config"] = {
        "seed": SEED,
        "weight_seed": WEIGHT_SEED,
        "spm_vocab": SPM_VOCAB,
        "vocab_size": vocab_size,
        "model_dim": MODEL_DIM,
        "num_layers": NUM_LAYERS,
        "num_heads": NUM_HEADS,
        "head_dim": MODEL_DIM // NUM_HEADS,
        "ffn_inner_dim": FFN_DIM,
        "activation": "relu",
        "layer_norm_eps": 1e-5,
        "encoder_max_seq_len": MAX_SEQ_LEN + 2,
        "decoder_max_seq_len": MAX_SEQ_LEN,
        "position_offset": 2,
        "embedding_scale": math.sqrt(MODEL_DIM),
        "model_vocab_info_pad_idx": 1,
        "tokenizer_pad_idx": 0,
        "ids": {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "piece_offset": 1, "langs": lang_ids, "data_tags": data_tags},
        "weight_init": {"std": WEIGHT_STD, "layer_norm_weight": f"1 + N(0, {WEIGHT_STD})",
                        "encoder_embed_std": WEIGHT_STD, "decoder_embed_std": DECODER_EMBED_STD,
                        "decoder_eos_row_scale": EOS_ROW_SCALE},
        "versions": versions(),
    }
    st_save({k: v.contiguous() for k, v in tensors.items()}, str(out / "model_fixtures.safetensors"))
    write_json(out / "model_fixtures.json", meta)

    bleu_fixture(out)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    return {p: md.version(p) for p in ["torch", "fairseq2", "fairseq2n", "sonar-space", "sentencepiece", "sacrebleu"]}


def write_json(path: Path, obj: object) -> None:
    """Indented JSON with every innermost array (numbers or strings only) on one line."""
    import re

    text = json.dumps(obj, ensure_ascii=False, indent=1)
    atom = r'(?:-?[0-9.eE+-]+|true|false|null|"(?:[^"\\]|\\.)*")'
    flat = re.compile(r"\[\n\s*((?:" + atom + r"\s*,\s*)*" + atom + r")\n\s*\]")
    text = flat.sub(lambda m: "[" + re.sub(r",\s*\n\s*", ", ", m.group(1)) + "]", text)
    assert json.loads(text) == obj
    path.write_text(text + "\n")


def weights_meta(enc_sd: dict[str, torch.Tensor], dec_sd: dict[str, torch.Tensor]) -> dict[str, object]:
    def table(sd: dict[str, torch.Tensor], side: str) -> list[dict[str, object]]:
        return [
            {"key": k, "legacy_key": to_legacy_key(k, side), "shape": list(v.shape), "dtype": "float32",
             "sha256": tensor_sha(v)}
            for k, v in sd.items()
        ]

    return {"encoder": table(enc_sd, "encoder"), "decoder": table(dec_sd, "decoder")}


def verify_loading(out: Path, enc_cfg, dec_cfg, encoder, decoder) -> dict[str, object]:
    """Reload every saved layout through sonar/fairseq2 and check bit-identical outputs."""
    checks: dict[str, object] = {}
    eng = SPM_VOCAB + 2  # __eng_Latn__
    seqs = torch.tensor([[eng, 10, 11, 12, 3]])
    layout = BatchLayout.of(seqs)
    with torch.inference_mode():
        ref_enc = encoder(seqs, layout).sentence_embeddings
    emb = ref_enc.unsqueeze(1)
    prev = torch.tensor([[3, eng, 20, 21]])
    with torch.inference_mode():
        ref_dec = decoder.project(decoder.decode(prev, BatchLayout.of(prev), emb, BatchLayout.of(emb)))

    @torch.inference_mode()
    def enc_out(m):
        return m.eval()(seqs, layout).sentence_embeddings

    @torch.inference_mode()
    def dec_out(m):
        m.eval()
        return m.project(m.decode(prev, BatchLayout.of(prev), emb, BatchLayout.of(emb)))

    # 1. fairseq2's own loader (load_model with an asset card pointing at the .pt file). This
    #    goes through sonar's registered state-dict converters, as for the real checkpoints.
    tmp = Path(tempfile.mkdtemp())
    save_pt(legacy_state_dict({k: v for k, v in encoder.state_dict().items()}, "encoder"), tmp / "encoder_legacy.pt")
    for side, cfg, path, ref, fn in [
        ("encoder", enc_cfg, out / "encoder.pt", ref_enc, enc_out),
        ("decoder", dec_cfg, out / "decoder.pt", ref_dec, dec_out),
        ("decoder", dec_cfg, out / "decoder_legacy.pt", ref_dec, dec_out),
        # Not written to the fixtures: sonar-space 0.5's legacy encoder converter is broken.
        ("encoder", enc_cfg, tmp / "encoder_legacy.pt", ref_enc, enc_out),
    ]:
        family = "transformer_encoder" if side == "encoder" else "transformer_decoder"
        fname = path.name
        card = AssetCard(
            f"tiny_{fname}",
            {"name": f"tiny_{fname}", "model_family": family, "model_arch": "basic",
             "checkpoint": path.resolve().as_uri()},
        )
        try:
            m = load_model(card, config=copy.deepcopy(cfg), device=torch.device("cpu"), dtype=torch.float32,
                           progress=False)
            same = bool(torch.equal(fn(m), ref))
            checks[f"fairseq2_load_model:{fname}"] = "identical" if same else "DIFFERENT"
        except Exception as ex:  # noqa: BLE001 - recorded in the fixture, see FIXTURES.md
            checks[f"fairseq2_load_model:{fname}"] = f"error: {type(ex).__name__}: {str(ex).splitlines()[0][:200]}"
    (tmp / "encoder_legacy.pt").unlink()
    tmp.rmdir()

    # 2. safetensors into freshly built models
    for side, fname, ref, fn in [
        ("encoder", "encoder.safetensors", ref_enc, enc_out),
        ("decoder", "decoder.safetensors", ref_dec, dec_out),
    ]:
        sd = st_load(str(out / fname))
        if side == "encoder":
            m = SonarTextEncoderFactory(copy.deepcopy(enc_cfg)).create_model()
            m.load_state_dict(sd, strict=True)
        else:
            m = SonarTextDecoderFactory(copy.deepcopy(dec_cfg)).create_model()
            missing, unexpected = m.load_state_dict(sd, strict=False)
            assert missing == ["final_proj.weight"] or not missing, missing
            assert not unexpected, unexpected
            assert m.final_proj.weight is m.decoder_frontend.embed.weight
        checks[f"safetensors:{fname}"] = "identical" if torch.equal(fn(m), ref) else "DIFFERENT"
    for k, v in checks.items():
        print(f"  load check {k}: {v}")
    return checks


def model_fixtures(tokenizer, encoder, decoder, tensors: dict[str, torch.Tensor], lang_ids) -> dict[str, object]:
    meta: dict[str, object] = {}

    # -- encoder: token ids and a padded batch ---------------------------------------------
    src_ids = [tokenizer.create_encoder(lang=lang, mode="source")(text) for lang, text in SENTENCES]
    seqs, layout = pad_seqs(src_ids, pad_value=tokenizer.vocab_info.pad_idx)
    lens = [len(s) for s in src_ids]
    with torch.inference_mode():
        out = encoder(seqs, layout)
    mask = (torch.arange(seqs.size(1))[None, :] < torch.tensor(lens)[:, None])
    states = out.encoded_seqs.masked_fill(~mask[..., None], 0.0)  # pad rows zeroed: not defined
    tensors["encoder.input_ids"] = seqs.to(torch.int64)
    tensors["encoder.seq_lens"] = torch.tensor(lens, dtype=torch.int64)
    tensors["encoder.states"] = states.float()
    tensors["encoder.embeddings"] = out.sentence_embeddings.float()

    # Each sentence alone (unpadded) must give the same rows.
    solo_diff = 0.0
    for i, ids in enumerate(src_ids):
        with torch.inference_mode():
            o = encoder(ids[None, :], BatchLayout.of(ids[None, :]))
        solo_diff = max(solo_diff, float((o.sentence_embeddings[0] - out.sentence_embeddings[i]).abs().max()))
        solo_diff = max(solo_diff, float((o.encoded_seqs[0] - out.encoded_seqs[i, : len(ids)]).abs().max()))
    # The official pipeline (per language, it sorts by length and pads with tokenizer pad 0).
    t2v = TextToEmbeddingModelPipeline(encoder=encoder, tokenizer=tokenizer)
    pipe_diff = 0.0
    for lang in LANGS:
        idx = [i for i, (lg, _) in enumerate(SENTENCES) if lg == lang]
        e = t2v.predict([SENTENCES[i][1] for i in idx], source_lang=lang, batch_size=5)
        pipe_diff = max(pipe_diff, float((e - out.sentence_embeddings[idx]).abs().max()))
    meta["sentences"] = [
        {"lang": lang, "text": text, "encoder_ids": ids.tolist(),
         "pieces": tokenizer.create_encoder(lang=lang).encode_as_tokens(text),
         "decoder_prompt": tokenizer.create_encoder(lang=lang, mode="target").prefix_indices.tolist(),
         "target_ids": tokenizer.create_encoder(lang=lang, mode="target")(text).tolist()}
        for (lang, text), ids in zip(SENTENCES, src_ids)
    ]
    meta["encoder"] = {
        "padded_batch_width": int(seqs.size(1)),
        "pad_value": tokenizer.vocab_info.pad_idx,
        "max_abs_diff_unpadded_vs_padded": solo_diff,
        "max_abs_diff_TextToEmbeddingModelPipeline_vs_padded": pipe_diff,
        "states_note": "rows at padded positions are set to 0 in the fixture (the model leaves unspecified values there)",
    }

    # -- decoder: teacher-forced logits on a padded batch -----------------------------------
    emb = out.sentence_embeddings.float()
    tf_idx = [0, 1, 2]  # one sentence per language, decoded in its own language
    tgt = [tokenizer.create_encoder(lang=SENTENCES[i][0], mode="target")(SENTENCES[i][1]) for i in tf_idx]
    prev = [t[:-1] for t in tgt]  # [</s>, lang, pieces...]; the targets are t[1:]
    prev_seqs, prev_layout = pad_seqs(prev, pad_value=0)
    e3 = emb[tf_idx].unsqueeze(1)
    with torch.inference_mode():
        logits = decoder.project(decoder.decode(prev_seqs, prev_layout, e3, BatchLayout.of(e3)))
    plens = [len(p) for p in prev]
    pmask = (torch.arange(prev_seqs.size(1))[None, :] < torch.tensor(plens)[:, None])
    tensors["decoder.tf.source_embeddings"] = emb[tf_idx].clone()
    tensors["decoder.tf.prev_ids"] = prev_seqs.to(torch.int64)
    tensors["decoder.tf.seq_lens"] = torch.tensor(plens, dtype=torch.int64)
    tensors["decoder.tf.logits"] = logits.masked_fill(~pmask[..., None], 0.0).float()
    tf_solo = 0.0
    for j, p in enumerate(prev):
        with torch.inference_mode():
            lj = decoder.project(decoder.decode(p[None], BatchLayout.of(p[None]), e3[j : j + 1], BatchLayout.of(e3[j : j + 1])))
        tf_solo = max(tf_solo, float((lj[0] - logits[j, : len(p)]).abs().max()))
    # Incremental decoding with the KV cache must give the same logits (checks the cache path).
    from fairseq2.nn import IncrementalStateBag

    inc_diff = 0.0
    for j, p in enumerate(prev):
        bag = IncrementalStateBag(max_num_steps=64)
        rows = []
        for t in range(len(p)):
            step = p[None, t : t + 1]
            with torch.inference_mode():
                lt = decoder.project(decoder.decode(step, BatchLayout.of(step), e3[j : j + 1], BatchLayout.of(e3[j : j + 1]), state_bag=bag))
            bag.increment_step_nr()
            rows.append(lt[0, 0])
        inc_diff = max(inc_diff, float((torch.stack(rows) - logits[j, : len(p)]).abs().max()))
    meta["decoder_teacher_forced"] = {
        "sentence_indices": tf_idx,
        "target_ids": [t.tolist() for t in tgt],
        "note": "logits[j, t] predicts target_ids[j][t + 1]; prev_ids = target_ids[:-1] padded with 0",
        "max_abs_diff_unpadded_vs_padded": tf_solo,
        "max_abs_diff_incremental_vs_full": inc_diff,
    }

    # -- generation ------------------------------------------------------------------------
    meta["beam"] = run_beam(decoder, tokenizer, emb, tensors, "beam", beam_size=5, extra={})
    meta["beam_short"] = run_beam(decoder, tokenizer, emb, tensors, "beam_short", beam_size=5,
                                  extra={"max_seq_len": BEAM_SHORT_MAX_SEQ_LEN})
    meta["greedy"] = run_beam(decoder, tokenizer, emb, tensors, "greedy", beam_size=1, extra={})
    tensors["decoder.source_embeddings"] = emb.clone()

    # Official pipeline text must equal the top hypotheses' detokenised text.
    e2t = EmbeddingToTextModelPipeline(decoder=decoder, tokenizer=tokenizer)
    pipe_texts = []
    for lang in sorted(set(BEAM_TARGET_LANGS)):
        idx = [i for i, lg in enumerate(BEAM_TARGET_LANGS) if lg == lang]
        texts = e2t.predict(emb[idx], target_lang=lang, batch_size=5)
        pipe_texts += list(zip(idx, texts))
    pipe_texts = [t for _, t in sorted(pipe_texts)]
    meta["beam"]["EmbeddingToTextModelPipeline_texts"] = pipe_texts
    meta["beam"]["pipeline_matches_top_hypotheses"] = pipe_texts == [h["text"] for h in meta["beam"]["results"]]
    return meta


def run_beam(decoder, tokenizer, emb: torch.Tensor, tensors, name: str, beam_size: int, extra: dict) -> dict[str, object]:
    """Runs fairseq2's BeamSearchSeq2SeqGenerator the way EmbeddingToTextModelPipeline.predict
    does (sonar/inference_pipelines/text.py), one call per target language.

    Robustness: the same search is re-run (a) in float64 and (b) PERTURB_TRIALS times with every
    decoder weight multiplied by (1 + PERTURB_REL * N(0, 1)); the fixture records whether all of
    them chose the same sequences in the same order, i.e. whether no decision of the search
    hinges on differences far larger than a correct float32 port makes."""
    model = SonarEncoderDecoderModel(DummyEncoderModel(), decoder).eval()
    settings = {
        "beam_size": beam_size,
        "min_gen_len": 1,
        "max_gen_len": [1.0, 128],
        "max_seq_len": extra.get("max_seq_len"),
        "echo_prompt": False,
        "normalize_scores": True,
        "temperature": 1.0,
        "unk_penalty": 0.0,
        "len_penalty": 1.0,
        "prefill_chunk_size": 512,
        "decode_capacity_increment": 16,
        "vocab_info": {"pad_idx": tokenizer.vocab_info.pad_idx, "unk_idx": tokenizer.vocab_info.unk_idx,
                       "eos_idx": tokenizer.vocab_info.eos_idx},
    }
    variants = [("float64", SonarEncoderDecoderModel(DummyEncoderModel(), copy.deepcopy(decoder).double()).eval(), torch.float64)]
    pgen = torch.Generator().manual_seed(SEED + 1)
    for t in range(PERTURB_TRIALS):
        d2 = copy.deepcopy(decoder)
        with torch.no_grad():
            for p_ in d2.parameters():
                p_.mul_(1.0 + PERTURB_REL * torch.randn(p_.shape, generator=pgen))
        variants.append((f"perturbed{t}", SonarEncoderDecoderModel(DummyEncoderModel(), d2).eval(), torch.float32))

    results: list[dict[str, object] | None] = [None] * len(emb)
    stable = {v[0]: True for v in variants}
    dec = tokenizer.create_decoder(skip_special_tokens=True)
    for lang in sorted(set(BEAM_TARGET_LANGS)):
        idx = [i for i, lg in enumerate(BEAM_TARGET_LANGS) if lg == lang]
        out32 = generate_hyps(model, tokenizer, emb[idx], lang, beam_size, extra)
        others = {vn: generate_hyps(vm, tokenizer, emb[idx].to(vdt), lang, beam_size, extra) for vn, vm, vdt in variants}
        # log p(lang | </s>): part of every hypothesis score (the prompt's second token is scored).
        prompt = tokenizer.create_encoder(lang=lang, mode="target").prefix_indices
        e3 = emb[idx].unsqueeze(1)
        pr = prompt[None, :1].expand(len(idx), 1)
        with torch.inference_mode():
            lp0 = torch.log_softmax(decoder.project(decoder.decode(pr, BatchLayout.of(pr), e3, BatchLayout.of(e3))).float(), -1)
        for j, i in enumerate(idx):
            hyps = out32.hypotheses[j]
            seqs32 = [h.seq.tolist() for h in hyps]
            for vn, vo in others.items():
                stable[vn] &= seqs32 == [h.seq.tolist() for h in vo.hypotheses[j]]
            lang_lp = float(lp0[j, 0, prompt[1]])
            for h in hyps:
                n = len(h.seq)
                # step_scores are per-step except the first, which still holds the cumulative
                # score up to it (log p(lang | </s>) + log p(first token)); the hypothesis score
                # is the cumulative score of the whole sequence over (n + 1) (len_penalty 1).
                recon = float(h.step_scores.sum()) / (n + 1)
                assert abs(recon - float(h.score)) < 1e-4, (recon, float(h.score))
            results[i] = {
                "target_lang": lang,
                "prompt": prompt.tolist(),
                "prompt_lang_logprob": r(lang_lp),
                "hypotheses": [{"ids": h.seq.tolist(), "score": r(h.score), "text": dec(h.seq)} for h in hyps],
                "float64_scores": [r(h.score) for h in others["float64"].hypotheses[j]],
            }
            results[i]["text"] = results[i]["hypotheses"][0]["text"]
            # step scores (per generated token, EOS included) as a padded [beam, max_len] tensor
            L = max(len(h.seq) for h in hyps)
            st = torch.zeros(len(hyps), L, dtype=torch.float32)
            for k, h in enumerate(hyps):
                st[k, : len(h.seq)] = h.step_scores.float()
            tensors[f"{name}.{i}.step_scores"] = st
    d = emb.size(1)
    max_gen_len = int(1.0 * d + 128)
    model_max = decoder.decoder_frontend.pos_encoder.max_seq_len
    eff_max_seq_len = min(extra.get("max_seq_len") or model_max, model_max, 2 + max_gen_len)
    settings["effective"] = {
        "source_len_used_for_max_gen_len": d,
        "max_gen_len": max_gen_len,
        "max_seq_len_including_prompt": eff_max_seq_len,
        "max_generated_tokens_including_eos": eff_max_seq_len - 2,
    }
    return {
        "settings": settings,
        "robustness": {"float64_same_sequences": stable["float64"],
                       "perturbation": {"relative_std": PERTURB_REL, "trials": PERTURB_TRIALS,
                                        "same_sequences": all(v for k, v in stable.items() if k != "float64")}},
        "results": results,
    }


def generate_hyps(model, tokenizer, emb: torch.Tensor, lang: str, beam_size: int, extra: dict):
    gen = BeamSearchSeq2SeqGenerator(model, tokenizer.vocab_info, beam_size=beam_size, **extra)
    conv = SequenceToTextConverter(gen, tokenizer, task="translation", target_lang=lang, mode="target")
    seqs = torch.stack(list(emb))
    with torch.inference_mode():
        _, output = conv.batch_convert(seqs, BatchLayout.of(seqs))
    return output


def tokenizer_fixture(out: Path, tokenizer, sp, sp_uni, lang_ids, data_tags) -> None:
    dec = tokenizer.create_decoder(skip_special_tokens=True)
    rows = []
    for s in TOKENIZER_STRINGS:
        row = {"text": s, "normalized": sp.normalize(s) if hasattr(sp, "normalize") else None}
        row["spm_pieces"] = sp.encode(s, out_type=str)
        row["spm_ids"] = sp.encode(s)
        row["sonar_encoder_ids"] = {lang: tokenizer.create_encoder(lang=lang)(s).tolist() for lang in ["eng_Latn", "fra_Latn"]}
        row["sonar_decoded"] = dec(tokenizer.create_encoder(lang="eng_Latn")(s))
        row["spm_decoded"] = sp.decode(sp.encode(s))
        row["unigram_spm_pieces"] = sp_uni.encode(s, out_type=str)
        row["unigram_spm_ids"] = sp_uni.encode(s)
        rows.append(row)
    # Detokenisation of raw id lists (control tokens, language tags, unk).
    V = SPM_VOCAB
    id_lists = [
        [3, lang_ids["fra_Latn"], 10, 11, 12, 3],
        [lang_ids["eng_Latn"], 20, 21, 3, 0, 0],
        [2, 1, 30, 1, 3],
        [data_tags["<MINED_DATA>"], 40, 41, lang_ids["deu_Latn"]],
        [3],
        [],
        list(range(4, 24)),
    ]
    detok = [{"ids": ids, "text": dec(torch.tensor(ids, dtype=torch.int64))} for ids in id_lists]
    pieces = [sp.id_to_piece(i) for i in range(V)]
    write_json(out / "tokenizer.json", {
        "spm_model": "tiny_spm.model",
        "spm_unigram_model": "tiny_spm_unigram.model",
        "spm_trainer": {"model_type": "bpe (unigram twin: tiny_spm_unigram.model)", "vocab_size": SPM_VOCAB,
                        "normalization_rule_name": "nmt_nfkc", "add_dummy_prefix": True,
                        "remove_extra_whitespaces": True, "byte_fallback": False, "character_coverage": 1.0,
                        "unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1},
        "sonar_vocab_size": tokenizer.vocab_info.size,
        "ids": {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "piece_k_to": "k + 1",
                "langs": lang_ids, "data_tags": data_tags},
        "spm_pieces": pieces,
        "strings": rows,
        "detokenize": detok,
    })


def bleu_fixture(out: Path) -> None:
    hyps = [h for h, _ in BLEU_PAIRS]
    refs = [ref for _, ref in BLEU_PAIRS]
    bleu = sacrebleu.metrics.BLEU()
    corpus = bleu.corpus_score(hyps, [refs])
    sent_bleu = sacrebleu.metrics.BLEU(effective_order=True)
    sentences = []
    for h, ref in BLEU_PAIRS:
        s = sent_bleu.sentence_score(h, [ref])
        sentences.append({"hyp": h, "ref": ref, "score": r(s.score), "counts": s.counts, "totals": s.totals,
                          "precisions": [r(p) for p in s.precisions], "bp": r(s.bp), "sys_len": s.sys_len,
                          "ref_len": s.ref_len})
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tok13a = Tokenizer13a()
    write_json(out / "sacrebleu.json", {
        "sacrebleu_version": sacrebleu.__version__,
        "corpus": {"score": r(corpus.score), "counts": corpus.counts, "totals": corpus.totals,
                   "precisions": [r(p) for p in corpus.precisions], "bp": r(corpus.bp),
                   "sys_len": corpus.sys_len, "ref_len": corpus.ref_len,
                   "signature": str(bleu.get_signature()),
                   "formatted": corpus.format()},
        "sentence_settings": {"effective_order": True, "smooth_method": "exp", "tokenize": "13a",
                              "signature": str(sent_bleu.get_signature()),
                              "api": "BLEU(effective_order=True).sentence_score(hyp, [ref])"},
        "sentences": sentences,
        "tokenize_13a": [{"text": t, "tokens": tok13a(t.rstrip())} for t in hyps + refs],
    })


if __name__ == "__main__":
    sys.exit(main())
