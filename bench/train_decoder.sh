#!/usr/bin/env bash
# Training speed of the concept decoder (`lcm train-decoder`'s SonarDecoder, default shapes:
# 4 layers, d 384, 6 heads, FFN 1536, vocab 8192, batch 64), lcm (Rust/candle) vs a PyTorch port
# (CPU, eager fp32), on one fixed seeded batch. Both sides get the same shapes, token counts,
# steps and thread count; a parity check first proves the PyTorch port computes the same function.
#
#   bash bench/train_decoder.sh                 # 64 sentences padded to 32 tokens, 2 + 5 steps
#   bash bench/train_decoder.sh --quick         # small shapes, few steps: checks that it all runs
#   bash bench/train_decoder.sh --threads 1 --steps 10 --seq 64
#
# Options of this script: --quick, --threads N (default: nproc), --skip-build, --skip-check,
# --engine candle,fused (lcm's engines to measure, default both: candle autograd and the fused
# engine, data parallel over the batch's sentences with one replica per thread;
# LCM_ENGINE_REPLICAS=1 gives it one engine with multi-threaded products). Each lcm engine
# and PyTorch run in their own process, so every peak RSS is that side's alone. Everything
# else is passed to both sides (see `bench/train_decoder.py --help`): --layers, --dim,
# --heads, --ffn, --vocab, --max-seq-len, --batch, --seq, --min-len, --lr, --clip,
# --weight-decay, --label-smoothing, --warmup, --steps, --seed. PyTorch-only
# options go in TORCH_ARGS, e.g. TORCH_ARGS="--adamw foreach --attention naive". PYTHON picks
# the interpreter (default: the pinned venv `bench/setup.sh` creates under target/, created on
# first use). Results: target/bench/train_decoder/.
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
ENGINES="candle,fused"
QUICK=0
PASS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --threads) THREADS="${2:?--threads needs a value}"; shift ;;
        --skip-build) BUILD=0 ;;
        --skip-check) CHECK=0 ;;
        --engine) ENGINES="${2:?--engine needs a value}"; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) PASS+=("$1") ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then
    # The default model (so the parameter counts are checked) on 8 sentences of <= 16 tokens.
    PASS=(--batch 8 --seq 16 --warmup 1 --steps 3 "${PASS[@]}")
fi

if ! "$PYTHON" -c 'import torch, safetensors' 2>/dev/null; then
    echo "error: PyTorch (with safetensors) is not importable with $PYTHON; run bash bench/setup.sh or set PYTHON=/path/to/python of a venv with torch" >&2
    exit 1
fi

if [[ $BUILD == 1 ]]; then
    cargo build --release -p lcm-decoder --example bench_decoder
fi
BIN="$ROOT/target/release/examples/bench_decoder"
[[ -x "$BIN" ]] || { echo "error: $BIN missing; run without --skip-build" >&2; exit 1; }

# Another busy process skews both sides, PyTorch's most (its OpenMP threads wait at barriers).
LOAD_BEFORE="$(cut -d' ' -f1 /proc/loadavg)"
if awk -v l="$LOAD_BEFORE" -v n="$NCORES" 'BEGIN { exit !(l > 0.5 * n) }'; then
    echo "warning: load average $LOAD_BEFORE on $NCORES cores; results will be contended" >&2
fi

OUT="$ROOT/target/bench/train_decoder"
mkdir -p "$OUT"
# candle sizes its thread pool from RAYON_NUM_THREADS; PyTorch gets torch.set_num_threads.
export RAYON_NUM_THREADS="$THREADS"
export OMP_NUM_THREADS="$THREADS"

if [[ $CHECK == 1 ]]; then
    echo "== parity: same weights and batch through both implementations" >&2
    "$BIN" --dump-weights "$OUT/parity" "${PASS[@]}" >/dev/null
    "$PYTHON" bench/train_decoder.py --check "$OUT/parity" --threads "$THREADS"
fi

: >"$OUT/lcm.jsonl"
: >"$OUT/pytorch.jsonl"
for ENGINE in ${ENGINES//,/ }; do
    echo "== lcm ($ENGINE engine), $THREADS threads" >&2
    "$BIN" --engine "$ENGINE" "${PASS[@]}" >>"$OUT/lcm.jsonl"
done
echo "== PyTorch, $THREADS threads" >&2
# shellcheck disable=SC2086
"$PYTHON" bench/train_decoder.py --threads "$THREADS" "${PASS[@]}" ${TORCH_ARGS:-} >>"$OUT/pytorch.jsonl"
LOAD_AFTER="$(cut -d' ' -f1 /proc/loadavg)"

echo
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($NCORES cores), $(date -u +%Y-%m-%d)"
echo "Versions: $(rustc --version), candle $(grep -A1 '^name = "candle-core"' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p'), $("$PYTHON" -c 'import torch; print("torch", torch.__version__)')"
echo "Command: bash bench/train_decoder.sh $ORIG_ARGS"
echo "Load average before / after the runs: $LOAD_BEFORE / $LOAD_AFTER (idle machine: well below the core count)"
echo
"$PYTHON" bench/train_decoder.py --report "$OUT/lcm.jsonl" "$OUT/pytorch.jsonl"
