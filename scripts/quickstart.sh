#!/usr/bin/env bash
# The end-to-end job on the default setup, from a fresh machine:
#   fetch the default encoder (all-MiniLM-L6-v2) → build the default English corpus →
#   `lcm prepare` it into a Parquet concept store → fit the normaliser → print a summary.
# Later stages (train, generate) join this script as they land.
#
#   bash scripts/quickstart.sh            # whole corpus (~3,900 documents, ~210k sentences)
#   LIMIT=200 bash scripts/quickstart.sh  # first 200 documents only, for a quick look
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LCM_HOME="${LCM_HOME:-$HOME/.lcm}"
STORE="$LCM_HOME/stores/default-minilm"
LIMIT_ARGS=()
if [[ -n "${LIMIT:-}" ]]; then
    STORE="$STORE-limit$LIMIT"
    LIMIT_ARGS=(--limit "$LIMIT")
fi

bash scripts/fetch-models.sh minilm
bash scripts/corpus/default.sh "$LCM_HOME/corpus"
cargo build --release -p lcm-cli
# Honour CARGO_TARGET_DIR: the binary is built wherever cargo puts its output.
LCM="${CARGO_TARGET_DIR:-target}/release/lcm"

# Resumable: re-running after an interruption keeps the finished shards.
"$LCM" prepare "$LCM_HOME/corpus/default.jsonl" --out "$STORE" --encoder minilm "${LIMIT_ARGS[@]}"
"$LCM" fit-normalizer "$STORE" --out "$STORE/normalizer.safetensors"
"$LCM" inspect "$STORE"
