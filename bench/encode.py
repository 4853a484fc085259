#!/usr/bin/env python3
"""Sentence-encoder throughput: lcm (Rust) vs sentence-transformers (PyTorch CPU), same sentences.

    target/bench-venv/bin/python bench/encode.py [--sentences FILE] [--batch-sizes 32,64,128]
        [--threads 2] [--repeat 3] [--model DIR] [--skip-build]

Without --sentences, the first 2,000 sentences of ${LCM_HOME:-~/.lcm}/corpus/default.jsonl are
used (written to target/bench/encode_sentences.txt); if that corpus is missing, a fallback set is
cut from text files on this machine and the output says so. Both sides get the same threads and
batch size, a warm-up pass, then `--repeat` timed passes over all sentences (fastest reported).
Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LCM_HOME = Path(os.environ.get("LCM_HOME", Path.home() / ".lcm"))
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
N_SENTENCES = 2000


def split_sentences(text: str) -> list[str]:
    out = []
    for para in text.split("\n"):
        out += [s.strip() for s in SENTENCE_SPLIT.split(para.strip()) if s.strip()]
    return out


def default_sentences() -> tuple[Path, str]:
    out = ROOT / "target" / "bench" / "encode_sentences.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    corpus = LCM_HOME / "corpus" / "default.jsonl"
    sentences: list[str] = []
    if corpus.exists():
        with open(corpus, encoding="utf-8") as f:
            for line in f:
                sentences += split_sentences(json.loads(line)["text"])
                if len(sentences) >= N_SENTENCES:
                    break
        source = f"first {N_SENTENCES} sentences of {corpus}"
    else:
        # Any English prose at hand: licence texts and Python's own documentation strings.
        files = sorted(Path("/usr/share/common-licenses").glob("*"))
        texts = [p.read_text(encoding="utf-8", errors="ignore") for p in files if p.is_file()]
        import importlib

        for mod in ("argparse", "json", "pathlib", "subprocess", "re", "datetime", "pydoc", "textwrap"):
            texts.append(importlib.import_module(mod).__doc__ or "")
        for t in texts:
            sentences += split_sentences(" ".join(t.split()))
        source = (
            f"FALLBACK: {corpus} not found; {min(len(sentences), N_SENTENCES)} sentences from "
            "/usr/share/common-licenses and Python module docstrings (not the project corpus)"
        )
    sentences = [s for s in sentences if s][:N_SENTENCES]
    out.write_text("\n".join(s.replace("\n", " ") for s in sentences) + "\n", encoding="utf-8")
    return out, source


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bench_st(model_dir: Path, sentences: list[str], batch_size: int, threads: int, repeat: int) -> float:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(sentences[: 2 * batch_size], batch_size=batch_size)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeat):
            t = time.perf_counter()
            model.encode(sentences, batch_size=batch_size)
            best = min(best, time.perf_counter() - t)
    return len(sentences) / best


def bench_lcm(exe: Path, model: str, path: Path, batch_size: int, threads: int, repeat: int) -> dict:
    cmd = [
        str(exe), str(path), "--model", model, "--batch-size", str(batch_size),
        "--threads", str(threads), "--repeat", str(repeat),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=Path)
    ap.add_argument("--batch-sizes", default="32", help="comma-separated, e.g. 32,64,128")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", type=Path, default=LCM_HOME / "models" / "all-MiniLM-L6-v2")
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()

    if not (args.model / "model.safetensors").exists():
        sys.exit(f"{args.model} not found; run: bash scripts/fetch-models.sh minilm")
    if args.sentences:
        path, source = args.sentences, str(args.sentences)
    else:
        path, source = default_sentences()
    sentences = [line for line in path.read_text(encoding="utf-8").split("\n") if line]
    # encode_bench reads one sentence per line; keep both sides on identical input.
    if args.sentences and len(sentences) != len(path.read_text(encoding="utf-8").splitlines()):
        sys.exit(f"{path} has empty lines; remove them so both sides see the same sentences")
    print(f"sentences: {len(sentences)} ({source})", file=sys.stderr)

    if not args.skip_build:
        subprocess.run(
            ["cargo", "build", "--release", "--example", "encode_bench", "-p", "lcm-concept"],
            cwd=ROOT, check=True,
        )
    exe = ROOT / "target" / "release" / "examples" / "encode_bench"

    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        lcm = bench_lcm(exe, str(args.model), path, bs, args.threads, args.repeat)
        st = bench_st(args.model, sentences, bs, args.threads, args.repeat)
        rows.append((bs, lcm["sentences_per_s"], st, lcm))
        print(f"batch {bs}: lcm {lcm['sentences_per_s']:.1f}/s, ST {st:.1f}/s", file=sys.stderr)

    import sentence_transformers
    import torch

    tokens = rows[0][3]["tokens"]
    print(f"\nall-MiniLM-L6-v2 encoding, {len(sentences)} sentences ({tokens} tokens; {source}), "
          f"{args.threads} threads, best of {args.repeat}")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs. Date: {datetime.date.today()}. "
          f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}.\n")
    print("| batch | lcm (Rust) sent/s | sentence-transformers sent/s | lcm / ST |")
    print("|---|---|---|---|")
    for bs, lcm, st, _ in rows:
        print(f"| {bs} | {lcm:.1f} | {st:.1f} | {lcm / st:.2f}× |")
    print(f"\nCommand: python bench/encode.py --batch-sizes {args.batch_sizes} --threads {args.threads} "
          f"--repeat {args.repeat}")


if __name__ == "__main__":
    main()
