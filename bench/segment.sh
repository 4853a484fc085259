#!/usr/bin/env bash
# Sentence segmentation speed: `lcm segment` on 10 MB and next to pySBD on a slice.
#
#   bash bench/segment.sh                 # builds target/release/lcm, venv target/segment-venv
#   bash bench/segment.sh --skip-build --mb 20 --peer-mb 1
#
# The peer is pinned (pysbd==0.3.4, pure Python, from PyPI) in its own small venv under
# target/; the input is the default corpus' text when scripts/corpus/default.sh has built it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${SEGMENT_VENV:-$ROOT/target/segment-venv}"
if [[ "${1:-}" == "--skip-build" ]]; then
    shift
else
    cargo build --release -q -p lcm-cli
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("pysbd") == "0.3.4"' 2>/dev/null \
    || "$VENV/bin/python" -m pip install --disable-pip-version-check -q pysbd==0.3.4
"$VENV/bin/python" bench/segment.py --lcm "${CARGO_TARGET_DIR:-target}/release/lcm" "$@"
