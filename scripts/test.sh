#!/usr/bin/env bash
# The project's test command (README.md). Needs the default encoder: bash scripts/fetch-models.sh minilm
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
