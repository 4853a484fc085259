#!/usr/bin/env bash
# Training and generation speed, lcm (Rust/candle) vs PyTorch (CPU, eager fp32), for the
# `small` Base-LCM and Two-Tower LCM on random data. Both sides get the same shapes, steps and
# thread count; a parity check first proves the PyTorch port computes the same functions.
#
#   bash bench/train_lcm.sh                 # 32 documents x 128 concepts, D = 384, 2 + 5 steps
#   bash bench/train_lcm.sh --quick         # small shapes, few steps: checks that it all runs
#   bash bench/train_lcm.sh --threads 1 --steps 10 --batch 16
#
# Options of this script: --quick, --threads N (default: nproc), --skip-build, --skip-check,
# --models base,two_tower, --engine fused,candle (lcm's engines, for both models). Each (model, engine) runs in its own process, as does each PyTorch
# model, so that every peak RSS is that model's alone.
# Everything else is passed to both sides (see `bench/train_lcm.py --help`): --models,
# --preset, --batch, --seq, --input-dim, --warmup, --steps, --gen-context, --gen-steps,
# --gen-warmup, --gen-repeat, --seed, --no-train, --no-generate. PyTorch-only options go in
# TORCH_ARGS, e.g. TORCH_ARGS="--adamw fused --attention naive". PYTHON picks the
# interpreter (default: the pinned venv `bench/setup.sh` creates under target/, created on
# first use). Results: target/bench/train_lcm/.
set -euo pipefail

ORIG_ARGS="$*"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$(bash "$ROOT/bench/setup.sh")}"
# Before OMP_NUM_THREADS is exported below: `nproc` honours it.
NCORES="$(nproc)"
THREADS="$NCORES"
BUILD=1
CHECK=1
MODELS="base,two_tower"
ENGINES="fused,candle"
QUICK=0
PASS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --threads) THREADS="${2:?--threads needs a value}"; shift ;;
        --skip-build) BUILD=0 ;;
        --skip-check) CHECK=0 ;;
        --models) MODELS="${2:?--models needs a value}"; shift ;;
        --engine) ENGINES="${2:?--engine needs a value}"; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) PASS+=("$1") ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then
    # Real `small` models (so parameter counts are checked) on a batch of 4 x 32 concepts.
    PASS=(--batch 4 --seq 32 --warmup 1 --steps 3 --gen-warmup 1 --gen-repeat 3 "${PASS[@]}")
fi

if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
    echo "error: PyTorch is not importable with $PYTHON; run bash bench/setup.sh or set PYTHON=/path/to/python of a venv with torch" >&2
    exit 1
fi

if [[ $BUILD == 1 ]]; then
    cargo build --release -p lcm-workflows --example bench_lcm
fi
BIN="$ROOT/target/release/examples/bench_lcm"
[[ -x "$BIN" ]] || { echo "error: $BIN missing; run without --skip-build" >&2; exit 1; }

# Another busy process skews both sides, PyTorch's most: its OpenMP threads wait at barriers
# for a descheduled sibling (seen here: guided generation 10x slower at 2 threads than at 1).
LOAD_BEFORE="$(cut -d' ' -f1 /proc/loadavg)"
if awk -v l="$LOAD_BEFORE" -v n="$NCORES" 'BEGIN { exit !(l > 0.5 * n) }'; then
    echo "warning: load average $LOAD_BEFORE on $NCORES cores; results will be contended" >&2
fi

OUT="$ROOT/target/bench/train_lcm"
mkdir -p "$OUT"
# candle sizes its thread pool from RAYON_NUM_THREADS; PyTorch gets torch.set_num_threads.
export RAYON_NUM_THREADS="$THREADS"
export OMP_NUM_THREADS="$THREADS"

if [[ $CHECK == 1 ]]; then
    echo "== parity: same weights and inputs through both implementations" >&2
    "$BIN" --dump "$OUT/parity" --no-train --no-generate --models "$MODELS" "${PASS[@]}" >/dev/null
    # shellcheck disable=SC2086
    "$PYTHON" bench/train_lcm.py --check "$OUT/parity" --threads "$THREADS" --models "$MODELS" "${PASS[@]}" ${TORCH_ARGS:-}
fi

: >"$OUT/lcm.jsonl"
: >"$OUT/pytorch.jsonl"
for MODEL in ${MODELS//,/ }; do
    GENERATE=()
    for ENGINE in ${ENGINES//,/ }; do
        echo "== lcm $MODEL ($ENGINE engine), $THREADS threads" >&2
        "$BIN" --models "$MODEL" --engine "$ENGINE" "${GENERATE[@]}" "${PASS[@]}" >>"$OUT/lcm.jsonl"
        # Generation does not depend on the training engine: measured once.
        GENERATE=(--no-generate)
    done
    echo "== PyTorch $MODEL, $THREADS threads" >&2
    # shellcheck disable=SC2086
    "$PYTHON" bench/train_lcm.py --threads "$THREADS" --models "$MODEL" "${PASS[@]}" ${TORCH_ARGS:-} >>"$OUT/pytorch.jsonl"
done

echo
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($NCORES cores), $(date -u +%Y-%m-%d)"
echo "Command: bash bench/train_lcm.sh $ORIG_ARGS"
echo "Load average before the runs: $LOAD_BEFORE (idle machine: well below the core count)"
echo
"$PYTHON" bench/train_lcm.py --report "$OUT/lcm.jsonl" "$OUT/pytorch.jsonl"
