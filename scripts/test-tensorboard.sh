#!/usr/bin/env bash
# TensorBoard read-back: every trainer (an LCM, a concept decoder, a world model, the last
# one killed after a step and resumed) trains a few steps through `lcm`, then TensorBoard
# itself reads the event files (scripts/tensorboard_check.py: EventAccumulator against
# metrics.jsonl, and a `tensorboard --logdir` server on loopback).
# Creates a pinned virtual environment in target/tb-venv on first use (tensorboard 2.21.0,
# ~30 s) and builds `lcm` (test profile, as `cargo test` does); LCM_BIN=path uses another.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
VENV=target/tb-venv
if ! "$VENV/bin/python" -c 'import tensorboard, numpy; assert tensorboard.__version__ == "2.21.0"' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        tensorboard==2.21.0 protobuf==7.36.2 numpy==2.4.6
fi
if [ -z "${LCM_BIN:-}" ]; then
    cargo build --quiet --profile test -p lcm-cli --bin lcm
    LCM_BIN=target/debug/lcm
fi
LCM_BIN="$(realpath "$LCM_BIN")"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# An isolated model home, offline, as the CLI tests use.
export LCM_HOME="$WORK/home" HF_HOME="$WORK/home/hf" HF_HUB_OFFLINE=1 RAYON_NUM_THREADS=2
RUNS="$WORK/runs"
mkdir -p "$RUNS"
ENCODER="$ROOT/fixtures/encoder/tiny-bert"
STORE="$WORK/store"
lcm() { "$LCM_BIN" "$@" >/dev/null; }

# An LCM (Two-Tower, tiny) and a concept decoder on the committed corpus sample.
lcm prepare "$ROOT/fixtures/corpus/sample.jsonl" --out "$STORE" --encoder "$ENCODER" --quiet --threads 1
lcm fit-normalizer "$STORE" --out "$STORE/normalizer.safetensors"
lcm train "$STORE" --model two-tower --preset tiny --steps 4 --out "$RUNS/lcm" --encoder "$ENCODER" \
    --max-concepts 64 --valid-fraction 0.2 --quiet
lcm train-decoder --data "$STORE" --out "$RUNS/decoder" --encoder "$ENCODER" --layers 1 --heads 2 \
    --ffn 32 --vocab 300 --batch-size 16 --steps 4 --valid-fraction 0.2 --valid-sentences 16 \
    --threads 1 --quiet
# A world model killed after step 25, before that step's checkpoint (its step-25 checkpoint
# removed), then resumed from step 20 to 30: steps 21-25 must show once.
wm() { lcm wm train --obs state --out "$RUNS/wm" --trajectories 12 --batch-size 16 \
    --eval-every 10 --checkpoint-every 10 --quiet "$@"; }
wm --steps 25
rm -r "$RUNS/wm/checkpoints/step-00000025"
wm --steps 30 --resume

"$VENV/bin/python" scripts/tensorboard_check.py \
    "$RUNS/lcm:train/loss,valid/loss,optim/lr,optim/grad_norm,throughput/concepts_per_s,batch/concepts" \
    "$RUNS/decoder:train/loss,train/nll,valid/loss,optim/lr,optim/grad_norm,throughput/tokens_per_s" \
    "$RUNS/wm:train/loss,valid/loss,optim/lr,optim/grad_norm,valid/probe_rms,collapse/effective_rank,collapse/mean_std,collapse/per_dim_std/00"
