#!/usr/bin/env bash
# The Python package's tests: builds crates/python with maturin into a pinned venv
# (target/py-venv) and runs pytest against the `lcm` binary (LCM_BIN, default
# target/debug/lcm, which `cargo test` builds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${PY_VENV:-$ROOT/target/py-venv}"
PINS=(maturin==1.9.6 numpy==2.3.5 pytest==8.4.2 pyarrow==22.0.0)
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PINS[@]}"
[ -x "${LCM_BIN:-target/debug/lcm}" ] || cargo build -q -p lcm-cli
# `maturin develop` builds the extension (debug profile) and installs it into the venv.
VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" maturin develop -q -m crates/python/Cargo.toml
LCM_BIN="${LCM_BIN:-$ROOT/target/debug/lcm}" "$VENV/bin/python" -m pytest -q crates/python/tests "$@"
