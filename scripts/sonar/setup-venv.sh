#!/usr/bin/env bash
# Creates (or completes) the Python venv used to regenerate the SONAR parity fixtures.
#
#   bash scripts/sonar/setup-venv.sh            # venv at /work/py/sonar-venv
#   SONAR_VENV=/some/dir bash scripts/sonar/setup-venv.sh
#
# Idempotent: re-running only installs what is missing (~15 s when complete). Versions are
# pinned. Everything comes from PyPI with pip's default index; torch 2.8.0 from PyPI is the
# CUDA build (~6.7 GB venv in all, ~2.5 min here) and runs fine on CPU. fairseq2n 0.5.2 is
# built against torch 2.8.0, so the torch pin must not move on its own.
set -euo pipefail

VENV="${SONAR_VENV:-/work/py/sonar-venv}"
PY="${PYTHON:-python3}"

# libsndfile1: fairseq2n links it (audio support); importing fairseq2/sonar fails without it.
if ! ldconfig -p 2>/dev/null | grep -q 'libsndfile\.so\.1'; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq libsndfile1
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo apt-get install -y -qq libsndfile1
  else
    echo "warning: libsndfile1 missing and no root/sudo; install it before importing sonar" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c 'import torch, torchaudio; assert torch.__version__.startswith("2.8.0")' 2>/dev/null; then
  "${PIP[@]}" torch==2.8.0 torchaudio==2.8.0
fi
"${PIP[@]}" fairseq2n==0.5.2 fairseq2==0.5.2 sonar-space==0.5.0 \
  sentencepiece==0.2.0 sacrebleu==2.5.1 safetensors==0.6.2 numpy==1.26.4

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for p in ["torch", "torchaudio", "fairseq2", "fairseq2n", "sonar-space", "sentencepiece", "sacrebleu", "safetensors", "numpy"]:
    print(f"{p}=={md.version(p)}")
import sonar.models.sonar_text  # noqa: F401  (fails here if fairseq2n/libsndfile is broken)
print("sonar import ok")
PY
