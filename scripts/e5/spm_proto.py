"""Minimal SentencePiece ModelProto writer/reader (no protobuf dependency).

Only the fields the XLM-R tokenizer needs are written: pieces (text, score, type), the
trainer spec (unigram, the <unk>/<s>/</s>/pad ids) and the normalizer spec (name,
precompiled charsmap, the three whitespace flags). Field numbers are those of
sentencepiece_model.proto.
"""

from __future__ import annotations

import io
import struct

NORMAL, UNKNOWN, CONTROL = 1, 2, 3


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _float(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", value)


def write_model(pieces, charsmap: bytes, normalizer_name: str = "nmt_nfkc") -> bytes:
    """`pieces`: list of (text, score, type). Returns the serialised ModelProto."""
    out = io.BytesIO()
    for text, score, kind in pieces:
        msg = _bytes(1, text.encode("utf-8")) + _float(2, score) + _int(3, kind)
        out.write(_bytes(1, msg))
    trainer = (
        _int(3, 1)  # model_type UNIGRAM
        + _int(4, len(pieces))  # vocab_size
        + _int(40, 0)  # unk_id
        + _int(41, 1)  # bos_id
        + _int(42, 2)  # eos_id
        + _int(43, -1)  # pad_id
    )
    out.write(_bytes(2, trainer))
    normalizer = (
        _bytes(1, normalizer_name.encode())
        + _bytes(2, charsmap)
        + _int(3, 1)  # add_dummy_prefix
        + _int(4, 1)  # remove_extra_whitespaces
        + _int(5, 1)  # escape_whitespaces
    )
    out.write(_bytes(3, normalizer))
    return out.getvalue()


def _fields(buf: bytes):
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield field, value


def _read_varint(buf: bytes, pos: int):
    value, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def read_charsmap(model: bytes) -> bytes:
    """The precompiled charsmap of a serialised ModelProto."""
    for field, value in _fields(model):
        if field == 3:
            for f, v in _fields(value):
                if f == 2:
                    return bytes(v)
    raise ValueError("model has no precompiled charsmap")


def nmt_nfkc_charsmap() -> bytes:
    """SentencePiece's built-in `nmt_nfkc` charsmap, taken from a throw-away model trained
    by the installed sentencepiece (the table is compiled into the library)."""
    import sentencepiece as spm

    text = ["The quick brown fox jumps over the lazy dog.", "Le renard brun saute."] * 50
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text),
        model_writer=model,
        vocab_size=60,
        hard_vocab_limit=False,
        model_type="unigram",
        normalization_rule_name="nmt_nfkc",
        minloglevel=2,
    )
    return read_charsmap(model.getvalue())
