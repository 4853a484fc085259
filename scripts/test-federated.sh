#!/usr/bin/env bash
# The federated tests (federated/tests): the DiLoCo strategy's math and a real loopback
# deployment of stock Flower (superlink + 2 supernodes, 2 rounds) over `lcm fed-step`.
# Creates a pinned virtual environment in target/fed-venv on first use (flwr 1.42.0, pytest)
# and builds `lcm` (test profile, as `cargo test` does); LCM_BIN=path uses another one.
# About three minutes on 2 cores (the deployment and the two fault tests start real
# Flower processes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=target/fed-venv
if ! "$VENV/bin/python" -c 'import flwr, pytest, numpy; assert flwr.__version__ == "1.42.0"' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check flwr==1.42.0 numpy==2.4.6 pytest==9.2.0
fi
if [ -z "${LCM_BIN:-}" ]; then
    # The test profile: what `cargo test --workspace` already built for the CLI tests.
    cargo build --quiet --profile test -p lcm-cli --bin lcm
    LCM_BIN=target/debug/lcm
fi
LCM_BIN="$(realpath "$LCM_BIN")"
export LCM_BIN
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
cd federated
exec "../$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
