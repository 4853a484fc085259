#!/usr/bin/env bash
# Creates (or completes) the pinned Python venv of the benchmarks' PyTorch peers, under
# target/ so it never depends on a path of one machine:
#
#   bash bench/setup.sh                  # venv at target/bench-venv; prints its python
#   BENCH_VENV=/some/dir bash bench/setup.sh
#
# Idempotent: a complete venv is checked in seconds. Everything comes from PyPI with pip's
# default index; torch from PyPI is the CUDA build (several GB) and runs fine on CPU.
# `bench/train_lcm.sh` and the commands in bench/README.md use this venv by default.
# (The SONAR peer needs fairseq2, pinned to another torch: `scripts/sonar/setup-venv.sh`.)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/target/bench-venv}"
PY="${PYTHON:-python3}"

# The versions BENCHMARKS.md's tables were measured with.
PINS=(torch==2.15.0 sentence-transformers==6.2.0)

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if ! "$VENV/bin/python" - "${PINS[@]}" <<'PY' 2>/dev/null
import importlib.metadata as md, sys
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    assert md.version(name) == version, pin
PY
then
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PINS[@]}"
fi
"$VENV/bin/python" -c 'import torch, sentence_transformers; print("torch", torch.__version__, "sentence-transformers", sentence_transformers.__version__)' >&2
echo "$VENV/bin/python"
