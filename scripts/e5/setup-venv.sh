#!/usr/bin/env bash
# Creates (or completes) the Python venv used to regenerate the XLM-R / e5 parity fixtures
# (scripts/e5/make_fixtures.py).
#
#   bash scripts/e5/setup-venv.sh                 # venv at target/xlmr-venv
#   XLMR_VENV=/some/dir bash scripts/e5/setup-venv.sh
#
# Everything comes from PyPI with pip's default index. torch from PyPI is the CUDA build
# (~5.6 GB venv in all) and runs fine on CPU. Versions are those the committed fixtures were
# made with.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

VENV="${XLMR_VENV:-target/xlmr-venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q \
  torch==2.15.0 transformers==5.25.0 sentencepiece==0.2.3 safetensors==0.8.0 numpy==2.4.6
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for p in ["torch", "transformers", "sentencepiece", "safetensors", "numpy"]:
    print(f"{p}=={md.version(p)}")
PY
