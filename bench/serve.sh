#!/usr/bin/env bash
# Load test: `lcm serve` next to sentence-transformers behind a minimal Python server, both
# with all-MiniLM-L6-v2, the same client (32 concurrent connections, 20 s).
#
#   bash bench/serve.sh                              # builds target/release/lcm, venv via bench/setup.sh
#   bash bench/serve.sh --skip-build --seconds 5 --clients 8
#
# Needs: bash scripts/fetch-models.sh minilm (and, for realistic sentences, scripts/corpus/default.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ "${1:-}" == "--skip-build" ]]; then
    shift
else
    cargo build --release -q -p lcm-cli
fi
PY="$(bash bench/setup.sh)"
MODEL="${LCM_HOME:-$HOME/.lcm}/models/all-MiniLM-L6-v2"
[[ -d "$MODEL" ]] || { echo "no model at $MODEL: run bash scripts/fetch-models.sh minilm" >&2; exit 1; }
"$PY" bench/serve_load.py --lcm "${CARGO_TARGET_DIR:-target}/release/lcm" --model-dir "$MODEL" "$@"
