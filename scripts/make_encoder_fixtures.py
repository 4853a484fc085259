#!/usr/bin/env python3
"""Generates the encoder parity fixtures under fixtures/encoder/.

Regenerate (from the repository root, after `bash scripts/fetch-models.sh minilm`):

    /work/py/venv/bin/python scripts/make_encoder_fixtures.py

(any Python with torch, sentence-transformers, transformers and tokenizers works).

Writes
  fixtures/encoder/minilm_parity.json  sentence-transformers embeddings of PARITY_SENTENCES with
                                       all-MiniLM-L6-v2, plus the sha256 of its model.safetensors
  fixtures/encoder/tiny-bert/          a 2-layer, 32-wide random-weight BERT sentence-transformers
                                       folder (mean pooling + Normalize) with a 3k WordPiece vocab
  fixtures/encoder/tiny_parity.json    its embeddings, and those of folder variants (other pooling
                                       modes, activations, missing optional files) described as
                                       edits that the Rust tests re-apply to a copy of tiny-bert

The tiny weights are rounded to bfloat16 values inside float16's normal range, so the same
model saved as f16 or bf16 has bit-identical weights; the Rust tests use that to check the
half-precision loaders exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer, models
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "encoder"

LONG_EN = (
    "The history of the printing press is a story of many hands. "
    "Long before Gutenberg, craftsmen in China and Korea carved wooden blocks and cast metal type, "
    "and monasteries across Europe copied manuscripts letter by letter, a slow labour that made books "
    "rare and precious. When movable type arrived in Mainz in the middle of the fifteenth century, "
    "the price of a book fell, literacy spread, and pamphlets carried new ideas faster than any rider. "
) * 4
LONG_ZH = "长城是中国古代的军事防御工程，绵延数千公里，经历了多个朝代的修建和维护。" * 12

PARITY_SENTENCES = [
    "hello world",
    "The cat sat on the mat.",
    "A man is playing a guitar on the stage while the audience sings along.",
    "Stocks rallied on Tuesday after the central bank held interest rates steady.",
    "I can't believe it's already December!",
    "Quantum entanglement links the states of two particles regardless of distance.",
    "The mitochondria is the powerhouse of the cell.",
    "She sells sea shells by the sea shore.",
    "Rust's borrow checker enforces memory safety without a garbage collector.",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong stepped out at 02:56 UTC.",
    "e-mail me at someone@example.com or visit https://example.org/path?q=1&r=2",
    "ALL CAPS SENTENCE WITH NUMBERS 12345 AND SYMBOLS #@$%",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\ninside",
    "Le chat est assis sur le tapis, et il regarde la pluie tomber.",
    "Die Katze sitzt auf der Matte und schläft in der warmen Sonne.",
    "Кошка сидит на коврике и смотрит в окно.",
    "猫坐在垫子上，看着窗外的雨。",
    "猫はマットの上に座って、窓の外の雨を見ています。",
    "القطة تجلس على السجادة وتنظر من النافذة.",
    "Ελληνικά: η γάτα κάθεται στο χαλί.",
    "Café naïve résumé coöperate — Zürich, São Paulo, Kraków.",
    "I love pizza 🍕🍕 and sunshine ☀️ 😀👍🏽",
    "🙂",
    LONG_EN,
    LONG_ZH,
    "word " * 300,
    "",
    " ",
    ".",
    "?!",
    "—",
    "a",
    "[CLS] [SEP] [PAD] [MASK] [UNK]",
]

MINILM_BATCH_SIZE = 8


def fmt(x: np.ndarray) -> list:
    """float32 values as the shortest decimal strings that round-trip, to keep the JSON small."""
    return [float(str(np.float32(v))) for v in x.tolist()] if x.ndim == 1 else [fmt(r) for r in x]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")


def token_counts(model: SentenceTransformer, sentences: list[str]) -> list[int]:
    tok = model.tokenizer
    return [len(tok(s, truncation=False)["input_ids"]) for s in sentences]


def make_minilm(model_dir: Path) -> None:
    model = SentenceTransformer(str(model_dir), device="cpu")
    emb = model.encode(PARITY_SENTENCES, batch_size=MINILM_BATCH_SIZE, convert_to_numpy=True)
    counts = token_counts(model, PARITY_SENTENCES)
    assert max(counts) > model.max_seq_length, "no sentence exercises truncation"
    write_json(
        OUT / "minilm_parity.json",
        {
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "model_sha256": sha256(model_dir / "model.safetensors"),
            "generator": "scripts/make_encoder_fixtures.py",
            "sentence_transformers": __import__("sentence_transformers").__version__,
            "torch": torch.__version__,
            "max_seq_length": model.max_seq_length,
            "batch_size": MINILM_BATCH_SIZE,
            "dim": int(emb.shape[1]),
            "sentences": PARITY_SENTENCES,
            "num_tokens_untruncated": counts,
            "embeddings": fmt(emb),
        },
    )


# --- tiny random BERT -------------------------------------------------------------------------

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    type_vocab_size=2,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
)
TINY_MAX_SEQ_LENGTH = 40
TINY_VOCAB_SIZE = 3000


def train_tiny_tokenizer(minilm_dir: Path) -> Tokenizer:
    """A BERT-style (uncased) WordPiece tokenizer with a small vocabulary.

    Trained on MiniLM's vocabulary words plus the parity sentences, so it covers English
    subwords and the scripts the parity sentences use."""
    words = [
        line.strip()
        for line in (minilm_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("[")
    ]
    corpus = [" ".join(w.removeprefix("##") for w in words[i : i + 64]) for i in range(0, len(words), 64)]
    corpus += PARITY_SENTENCES
    tok = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = WordPieceTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        limit_alphabet=1000,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def bf16_exact_(t: torch.Tensor) -> None:
    """Rounds in place to bfloat16 values that float16 also represents exactly."""
    r = t.to(torch.bfloat16).to(torch.float32)
    r[r.abs() < 2.0**-14] = 0.0
    t.copy_(r)


@torch.no_grad()
def random_bert(vocab_size: int) -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=vocab_size, pad_token_id=0, **TINY)
    # The pooler is unused by sentence-transformers but real folders carry one; keep it
    # (seeded and rounded like the rest) so the loader is tested on ignoring extra tensors.
    model = BertModel(cfg, add_pooling_layer=True).eval()
    for name, p in model.named_parameters():
        if "LayerNorm.weight" in name:
            p.copy_(1.0 + 0.1 * torch.randn_like(p))
        elif name.endswith("bias"):
            p.copy_(0.05 * torch.randn_like(p))
        elif "embeddings" in name:
            p.copy_(0.5 * torch.randn_like(p))
        else:
            # Wider than BERT's 0.02 init so that attention is far from uniform.
            p.copy_(0.15 * torch.randn_like(p))
        bf16_exact_(p)
    return model


def make_tiny(minilm_dir: Path) -> None:
    dest = OUT / "tiny-bert"
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = Path(tmp) / "hf"
        tok = train_tiny_tokenizer(minilm_dir)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="[UNK]",
            sep_token="[SEP]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            mask_token="[MASK]",
        )
        fast.save_pretrained(hf_dir)
        random_bert(tok.get_vocab_size()).save_pretrained(hf_dir, safe_serialization=True)

        transformer = models.Transformer(str(hf_dir), max_seq_length=TINY_MAX_SEQ_LENGTH)
        pooling = models.Pooling(TINY["hidden_size"], pooling_mode="mean")
        st = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
        if dest.exists():
            shutil.rmtree(dest)
        st.save(str(dest))
    # Model cards and extras are noise in a fixture; the loader must not need them.
    for extra in ["README.md", "config_sentence_transformers.json", "special_tokens_map.json"]:
        (dest / extra).unlink(missing_ok=True)

    sentences = PARITY_SENTENCES + ["word " * 30, "short", "tiny model parity check"]
    base = SentenceTransformer(str(dest), device="cpu")
    counts = token_counts(base, sentences)
    assert max(counts) > TINY_MAX_SEQ_LENGTH, "no sentence exercises truncation"
    emb = base.encode(sentences, batch_size=4, convert_to_numpy=True)

    variants = []
    for name, edits in tiny_variants(dest):
        with tempfile.TemporaryDirectory() as tmp:
            vdir = Path(tmp) / "tiny-bert"
            shutil.copytree(dest, vdir)
            apply_edits(vdir, edits)
            m = SentenceTransformer(str(vdir), device="cpu")
            v_emb = m.encode(sentences, batch_size=4, convert_to_numpy=True)
            variants.append(
                {
                    "name": name,
                    "edits": edits,
                    "max_seq_length": m.max_seq_length,
                    "embeddings": fmt(v_emb),
                }
            )
            print(f"variant {name}: dim {v_emb.shape[1]}, max_seq_length {m.max_seq_length}")

    total = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"tiny-bert folder: {total // 1024} KiB")
    write_json(
        OUT / "tiny_parity.json",
        {
            "model": "fixtures/encoder/tiny-bert",
            "model_sha256": sha256(dest / "model.safetensors"),
            "generator": "scripts/make_encoder_fixtures.py",
            "sentence_transformers": __import__("sentence_transformers").__version__,
            "max_seq_length": base.max_seq_length,
            "dim": int(emb.shape[1]),
            "sentences": sentences,
            "num_tokens_untruncated": counts,
            "embeddings": fmt(emb),
            "variants": variants,
        },
    )


def tiny_variants(dest: Path):
    """Folder edits whose sentence-transformers output the Rust encoder must reproduce.

    An edit is {"json": {relative path: new JSON content}, "config": {key: value merged into
    config.json}, "delete": [relative paths]}."""
    modules = json.loads((dest / "modules.json").read_text())
    no_norm = [m for m in modules if not m["type"].endswith("Normalize")]
    pool = lambda mode: {"embedding_dimension": TINY["hidden_size"], "pooling_mode": mode}  # noqa: E731
    legacy = {
        "word_embedding_dimension": TINY["hidden_size"],
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": True,
    }
    yield "cls_pooling_unnormalised", {"json": {"1_Pooling/config.json": pool("cls"), "modules.json": no_norm}}
    yield "max_pooling", {"json": {"1_Pooling/config.json": pool("max")}}
    yield "legacy_mean_sqrt_len", {"json": {"1_Pooling/config.json": legacy, "modules.json": no_norm}}
    yield "lasttoken_pooling", {"json": {"1_Pooling/config.json": pool("lasttoken")}}
    yield "gelu_new", {"config": {"hidden_act": "gelu_new"}}
    yield "relu", {"config": {"hidden_act": "relu"}}
    # Without sentence_bert_config.json the limit is tokenizer_config.json's model_max_length
    # (capped by max_position_embeddings); without that too, max_position_embeddings.
    yield "no_sbert_config", {"delete": ["sentence_bert_config.json"]}
    yield "no_sbert_no_tokenizer_config", {
        "delete": ["sentence_bert_config.json", "tokenizer_config.json"],
    }
    # A plain HF folder: sentence-transformers falls back to mean pooling without Normalize.
    yield "plain_hf_folder", {"delete": ["modules.json", "1_Pooling/config.json"]}


def apply_edits(folder: Path, edits: dict) -> None:
    for rel in edits.get("delete", []):
        (folder / rel).unlink()
    for rel, content in edits.get("json", {}).items():
        (folder / rel).write_text(json.dumps(content, indent=2))
    if "config" in edits:
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(edits["config"])
        (folder / "config.json").write_text(json.dumps(cfg, indent=2))


def main() -> None:
    lcm_home = Path(os.environ.get("LCM_HOME", Path.home() / ".lcm"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minilm", type=Path, default=lcm_home / "models" / "all-MiniLM-L6-v2")
    ap.add_argument("--only", choices=["minilm", "tiny"], help="regenerate one fixture only")
    args = ap.parse_args()
    if not (args.minilm / "model.safetensors").exists():
        raise SystemExit(f"{args.minilm} has no model.safetensors; run: bash scripts/fetch-models.sh minilm")
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "minilm"):
        make_minilm(args.minilm)
    if args.only in (None, "tiny"):
        make_tiny(args.minilm)


if __name__ == "__main__":
    main()
