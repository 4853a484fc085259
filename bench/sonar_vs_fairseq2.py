#!/usr/bin/env python3
"""Full-size SONAR text encoder and decoder, random weights: lcm (Rust) vs fairseq2 (PyTorch CPU).

    python3 bench/sonar_vs_fairseq2.py [--threads 2] [--sentences 256]
        [--vectors 32] [--beam 5] [--max-gen-len 32] [--batch-size 32] [--skip-build]

The peer installs itself: run with any Python 3 that lacks fairseq2, the script creates (or
completes) the pinned venv `target/bench/sonar-venv` with `scripts/sonar/setup-venv.sh`
(torch 2.8.0, fairseq2 0.5.2, sonar-space 0.5.0, from PyPI) and re-runs itself there.

What it does, in one run:
1. Builds the SONAR `basic` encoder (24 layers, d 1024, 16 heads, FFN 8192, vocab 256206) and
   decoder with fairseq2's factories and their default random initialisation (seed 0), and
   saves both as safetensors under target/bench/sonar-random/ (6.5 GB; reused when present).
   No real SONAR weight is involved: the real ones are CC-BY-NC-4.0 and not offline.
2. Makes the inputs: 256 token-id sequences whose lengths follow the project corpus's sentence
   lengths (words × 1.4, as SentencePiece pieces run for English), ids drawn at random, each
   framed as `[eng_Latn, pieces…, </s>]` exactly like SONAR's source side.
3. Runs each side in its own process (so that peak RSS is per side), same threads, same batches:
   - encode: all sentences in batches of `--batch-size`, right-padded, pooled embeddings;
   - decode: beam search (beam 5) of 32 of those embeddings into fra_Latn, at most
     `--max-gen-len` generated tokens (random weights rarely emit EOS, so the cap fixes the work;
     both sides stop at the same cap).
   One warm-up batch, then one timed pass (full-size passes take tens of seconds each).
   - load: from the safetensors file to a ready model, the way fairseq2's own loader does it
     (built on the meta device, `to_empty`, checkpoint copied in, non-persistent buffers
     reset); lcm's timer covers allocating its buffers and reading the file into them.
4. Prints sentences/s, the ratios lcm/fairseq2, peak RSS, and checks that both sides agree:
   max |Δ| of the embeddings and whether the beam hypotheses are identical.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LCM_HOME = Path(os.environ.get("LCM_HOME", Path.home() / ".lcm"))
OUT = ROOT / "target" / "bench" / "sonar-random"
VOCAB = 256206
ENG, FRA, EOS = 256047, 256057, 3


VENV = ROOT / "target" / "bench" / "sonar-venv"


def ensure_peer() -> None:
    """Re-runs this script in the pinned fairseq2 venv, creating it first if needed."""
    try:
        import fairseq2  # noqa: F401
        import sonar  # noqa: F401

        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        sys.exit(f"fairseq2/sonar-space do not import in {VENV}: delete it and run again")
    subprocess.run(["bash", str(ROOT / "scripts" / "sonar" / "setup-venv.sh")],
                   env={**os.environ, "SONAR_VENV": str(VENV)}, check=True)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def sentence_lengths(n: int, rng: random.Random) -> tuple[list[int], str]:
    corpus = LCM_HOME / "corpus" / "default.jsonl"
    words: list[int] = []
    if corpus.exists():
        import re

        with open(corpus, encoding="utf-8") as f:
            for line in f:
                for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]):
                    if s.strip():
                        words.append(len(s.split()))
                if len(words) >= n:
                    break
        source = f"word counts of the first {n} sentences of {corpus}"
    else:
        words = [rng.randint(5, 35) for _ in range(n)]
        source = "FALLBACK: corpus missing; uniform 5-35 words"
    pieces = [max(1, min(200, round(w * 1.4))) for w in words[:n]]
    return pieces, source


def make_inputs(args) -> dict:
    rng = random.Random(0)
    lengths, source = sentence_lengths(args.sentences, rng)
    seqs = [[ENG] + [rng.randrange(4, 256001) for _ in range(k)] + [EOS] for k in lengths]
    return {"sequences": seqs, "length_source": source}


def basic_config(vocab_info) -> dict:
    """The fields SONAR's `basic` encoder and decoder configs share (sonar/models/sonar_text/config.py)."""
    return dict(model_dim=1024, vocab_info=vocab_info, learned_pos=False, no_scale_embedding=False,
                emb_dropout_p=0.1, attention_dropout_p=0.1, activation_dropout_p=0.1,
                no_token_positional_embeddings=False, activation_fn="ReLU",
                num_encoder_layers=24, num_decoder_layers=24, num_encoder_attn_heads=16,
                num_decoder_attn_heads=16, ffn_inner_dim=8192)


def build_weights(args) -> None:
    if (OUT / "encoder.safetensors").exists() and (OUT / "decoder.safetensors").exists():
        return
    import torch
    from safetensors.torch import save_file

    from fairseq2 import init_fairseq2

    init_fairseq2()
    from fairseq2.data.tokenizers import VocabularyInfo
    from sonar.models.sonar_text import (
        SonarTextDecoderConfig,
        SonarTextDecoderFactory,
        SonarTextEncoderConfig,
        SonarTextEncoderFactory,
    )

    torch.manual_seed(0)
    vi = VocabularyInfo(size=VOCAB, unk_idx=1, bos_idx=2, eos_idx=3, pad_idx=1)
    common = basic_config(vi)
    enc = SonarTextEncoderFactory(SonarTextEncoderConfig(
        max_seq_len=512, pooling="mean", normalize_before=False, _from_fairseq=True, **common)).create_model()
    dec = SonarTextDecoderFactory(SonarTextDecoderConfig(
        max_seq_len=512, normalize_before=True, **common)).create_model()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, model, drop in [("encoder", enc, ()), ("decoder", dec, ("final_proj.weight",))]:
        sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in drop}
        tmp = OUT / f"{name}.safetensors.tmp"
        save_file(sd, str(tmp), metadata={"format": "pt"})
        tmp.rename(OUT / f"{name}.safetensors")


def run_torch(args) -> dict:
    """The peer, in this (child) process."""
    import torch

    torch.set_num_threads(args.threads)
    from fairseq2 import init_fairseq2

    init_fairseq2()
    from fairseq2.data.tokenizers import VocabularyInfo
    from fairseq2.generation.beam_search.generator import BeamSearchSeq2SeqGenerator
    from fairseq2.nn import BatchLayout
    from fairseq2.nn.utils.padding import pad_seqs
    from fairseq2.nn.utils.module import reset_non_persistent_buffers, to_empty
    from safetensors.torch import load_file
    from sonar.models.sonar_text import (
        SonarTextDecoderConfig,
        SonarTextDecoderFactory,
        SonarTextEncoderConfig,
        SonarTextEncoderFactory,
    )
    from sonar.models.sonar_translation import SonarEncoderDecoderModel
    from sonar.models.sonar_translation.model import DummyEncoderModel

    vi = VocabularyInfo(size=VOCAB, unk_idx=1, bos_idx=2, eos_idx=3, pad_idx=1)
    common = basic_config(vi)
    inputs = json.loads((OUT / "inputs.json").read_text())
    seqs = [torch.tensor(s, dtype=torch.int64) for s in inputs["sequences"]]

    # Loading is timed the way fairseq2's own loader (`fairseq2.models.family`,
    # `_do_load_model`) does it: the model built on the meta device, `to_empty` onto the CPU
    # (allocated, not initialised), then the checkpoint's state copied in. lcm's timer covers
    # the same: allocating the buffers and reading the file into them.
    enc_cfg = SonarTextEncoderConfig(
        max_seq_len=512, pooling="mean", normalize_before=False, _from_fairseq=True, **common)
    t0 = time.perf_counter()
    with torch.device("meta"):
        enc = SonarTextEncoderFactory(enc_cfg).create_model()
    to_empty(enc, device=torch.device("cpu"))
    enc.load_state_dict(load_file(str(OUT / "encoder.safetensors")))
    reset_non_persistent_buffers(enc)  # the sinusoidal positions, not in the checkpoint
    enc.eval()
    load_enc = time.perf_counter() - t0

    def encode(batch):
        padded, layout = pad_seqs(batch, pad_value=0)
        return enc(padded, layout).sentence_embeddings

    with torch.inference_mode():
        encode(seqs[:4])  # warm-up
        t0 = time.perf_counter()
        embs = [encode(seqs[i:i + args.batch_size]) for i in range(0, len(seqs), args.batch_size)]
        enc_s = time.perf_counter() - t0
    emb = torch.cat(embs)
    del enc

    dec_cfg = SonarTextDecoderConfig(max_seq_len=512, normalize_before=True, **common)
    t0 = time.perf_counter()
    with torch.device("meta"):
        dec = SonarTextDecoderFactory(dec_cfg).create_model()
    to_empty(dec, device=torch.device("cpu"))
    # final_proj.weight is the embedding's own Parameter (TiedProjection), so loading the
    # embedding sets both; safetensors cannot store the alias, hence strict=False.
    missing, unexpected = dec.load_state_dict(load_file(str(OUT / "decoder.safetensors")), strict=False)
    assert set(missing) <= {"final_proj.weight"} and not unexpected, (missing, unexpected)
    assert dec.final_proj.weight is dec.decoder_frontend.embed.weight
    reset_non_persistent_buffers(dec)
    dec.eval()
    load_dec = time.perf_counter() - t0
    model = SonarEncoderDecoderModel(DummyEncoderModel(), dec).eval()
    tok_vi = VocabularyInfo(size=VOCAB, unk_idx=1, bos_idx=2, eos_idx=3, pad_idx=0)
    gen = BeamSearchSeq2SeqGenerator(model, tok_vi, beam_size=args.beam, max_gen_len=(0, args.max_gen_len))
    vectors = emb[: args.vectors].clone()
    prompts = torch.tensor([[EOS, FRA]] * len(vectors), dtype=torch.int64)
    with torch.inference_mode():
        gen(vectors[:2], BatchLayout.of(vectors[:2]), prompts[:2], BatchLayout.of(prompts[:2]))  # warm-up
        t0 = time.perf_counter()
        out = gen(vectors, BatchLayout.of(vectors), prompts, BatchLayout.of(prompts))
        dec_s = time.perf_counter() - t0
    hyps = [[h.seq.tolist() for h in hs] for hs in out.hypotheses]
    return {
        "encode_s": enc_s, "decode_s": dec_s, "load_encoder_s": load_enc, "load_decoder_s": load_dec,
        "embeddings": emb.tolist(), "hypotheses": hyps,
        "generated_tokens": sum(len(h[0]) for h in hyps),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "version": f"torch {torch.__version__}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--vectors", type=int, default=32)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--max-gen-len", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--side", choices=["torch"], help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=["torch", "lcm"], help="run one side (its previous result file is reused for the other)")
    args = ap.parse_args()

    if args.side == "torch":
        (OUT / "torch.json").write_text(json.dumps(run_torch(args)))
        return

    weights = (OUT / "encoder.safetensors").exists() and (OUT / "decoder.safetensors").exists()
    if args.only != "lcm" or not weights:
        ensure_peer()
    OUT.mkdir(parents=True, exist_ok=True)
    build_weights(args)
    (OUT / "inputs.json").write_text(json.dumps(make_inputs(args)))
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--example", "sonar_bench", "-p", "lcm-sonar"],
                       cwd=ROOT, check=True)
    common = ["--threads", str(args.threads), "--vectors", str(args.vectors), "--beam", str(args.beam),
              "--max-gen-len", str(args.max_gen_len), "--batch-size", str(args.batch_size)]
    if args.only != "lcm":
        subprocess.run([sys.executable, __file__, "--side", "torch", *common], check=True)
    if args.only != "torch":
        env_cmd = [str(ROOT / "target" / "release" / "examples" / "sonar_bench"), str(OUT), *common]
        subprocess.run(env_cmd, check=True, env={**os.environ, "RAYON_NUM_THREADS": str(args.threads)})
    for side in ("torch", "lcm"):
        if not (OUT / f"{side}.json").exists():
            sys.exit(f"{OUT / side}.json missing: run without --only first")
    t = json.loads((OUT / "torch.json").read_text())
    r = json.loads((OUT / "lcm.json").read_text())

    import math

    n = len(t["embeddings"])
    max_diff = max(abs(a - b) for ra, rb in zip(t["embeddings"], r["embeddings"]) for a, b in zip(ra, rb))
    same_hyps = t["hypotheses"] == r["hypotheses"]
    top_same = sum(a[0] == b[0] for a, b in zip(t["hypotheses"], r["hypotheses"]))
    enc_t, enc_r = n / t["encode_s"], n / r["encode_s"]
    nv = len(t["hypotheses"])
    dec_t, dec_r = nv / t["decode_s"], nv / r["decode_s"]
    print(f"\n## SONAR full size, random weights — {datetime.date.today()}, {cpu_model()}, {args.threads} threads")
    print(f"inputs: {n} sentences ({r.get('tokens', '?')} tokens; lengths from {json.loads((OUT / 'inputs.json').read_text())['length_source']}),"
          f" batch {args.batch_size}; decode {nv} vectors, beam {args.beam}, ≤ {args.max_gen_len} generated tokens\n")
    print("| task | fairseq2 (sent/s) | lcm (sent/s) | lcm / fairseq2 |")
    print("|---|---:|---:|---:|")
    print(f"| encode {n} sentences | {enc_t:.2f} | {enc_r:.2f} | {enc_r / enc_t:.2f}× |")
    print(f"| beam-{args.beam} decode {nv} vectors | {dec_t:.2f} | {dec_r:.2f} | {dec_r / dec_t:.2f}× |")
    print(f"\npeak RSS: fairseq2 {t['peak_rss_mb']:.0f} MB, lcm {r['peak_rss_mb']:.0f} MB (each process, weights for both models loaded one after the other)")
    print(f"load (s): fairseq2 encoder {t['load_encoder_s']:.1f} / decoder {t['load_decoder_s']:.1f}; lcm encoder {r['load_encoder_s']:.1f} / decoder {r['load_decoder_s']:.1f}")
    print(f"agreement: embeddings max |Δ| = {max_diff:.2e}; beam hypotheses identical: {same_hyps} (top-1 equal for {top_same}/{nv}); generated tokens fairseq2 {t['generated_tokens']}, lcm {r['generated_tokens']}")
    print(f"versions: {t['version']}; lcm {r.get('version', '?')}")
    if not math.isfinite(max_diff):
        sys.exit("non-finite embeddings")


if __name__ == "__main__":
    main()
