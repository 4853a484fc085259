#!/usr/bin/env bash
# The Python package as users get it: `pip install ./crates/python` (maturin, release
# profile, abi3) into a fresh venv, then an import check that calls the library; with
# --wheel, also `maturin build --release` into target/wheels/ for distribution.
#
#   bash scripts/build-wheel.sh            # pip install from the checkout, smoke test
#   bash scripts/build-wheel.sh --wheel    # + target/wheels/lcm-*-cp39-abi3-*.whl
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$TARGET/wheel-venv"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q numpy==2.3.5
# pip builds the crate through pyproject.toml's maturin backend (fetched by pip, pinned to
# maturin>=1.9,<2 there), exactly as a user's `pip install ./crates/python` does.
CARGO_TARGET_DIR="$TARGET" "$VENV/bin/python" -m pip install --disable-pip-version-check -q ./crates/python
cd "$TARGET"  # import the installed package, not the source folder
"$VENV/bin/python" - <<'PY'
import numpy as np
import lcm
assert lcm.segment("Dr. Smith left. He came back at 5 p.m. today.") == ["Dr. Smith left.", "He came back at 5 p.m. today."]
try:
    lcm.Encoder("/nonexistent/model")
except lcm.LcmError as error:
    assert "/nonexistent/model" in str(error)
else:
    raise AssertionError("a missing model must raise LcmError")
print("installed:", lcm.__file__, "— segment and errors work")
PY
cd "$ROOT"
if [[ "${1:-}" == "--wheel" ]]; then
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q maturin==1.9.6
    "$VENV/bin/maturin" build --release -q -m crates/python/Cargo.toml -o "$TARGET/wheels"
    ls -l "$TARGET"/wheels/lcm-*.whl
fi
