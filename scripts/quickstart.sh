#!/usr/bin/env bash
# The end-to-end job on the default setup, from a fresh machine:
#   fetch the default encoder (all-MiniLM-L6-v2) → build the default English corpus →
#   `lcm prepare` it into a Parquet concept store → fit the normaliser → train a `small`
#   Two-Tower diffusion LCM for a bounded time → teacher-forced evaluation table against
#   the trivial baselines → generate a continuation of a prompt (retrieval decoder).
#
#   bash scripts/quickstart.sh            # whole corpus (~3,900 documents, ~236k sentences)
#   LIMIT=200 bash scripts/quickstart.sh  # first 200 documents only, for a quick look
#   MODEL=base TRAIN_MINUTES=5 STEPS=100 bash scripts/quickstart.sh
#   MIX= bash scripts/quickstart.sh       # the corpus's own proportions (no mixture)
#
# The training data is drawn by source with MIX (default `web=0.3,*=1`: the World English
# Bible at 0.3, every other source at 1 — chosen by measurement, EVALUATION.md "Generation
# quality and the data mixture"; none with LIMIT); the mixture is recorded in the run's
# config.json.
#
# Training stops at STEPS optimiser steps (default 300) or after TRAIN_MINUTES minutes
# (default 20), whichever comes first, with a checkpoint; re-running resumes it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LCM_HOME="${LCM_HOME:-$HOME/.lcm}"
STORE="$LCM_HOME/stores/default-minilm"
MODEL="${MODEL:-two-tower}"
STEPS="${STEPS:-300}"
TRAIN_MINUTES="${TRAIN_MINUTES:-20}"
# LIMIT keeps the first documents only (one or two sources), where the mixture's sources
# may be missing (`lcm train --mix` refuses a source the store lacks): no default mixture.
if [[ -n "${LIMIT:-}" ]]; then MIX="${MIX-}"; else MIX="${MIX-web=0.3,*=1}"; fi
PROMPT="${PROMPT:-The old man walked slowly along the river. He had lived in the village all his life.}"
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

RUN="$STORE-runs/$MODEL-small"
MIX_ARGS=()
if [[ -n "$MIX" ]]; then
    # Another mixture is another run (resuming across mixtures is refused).
    RUN="$RUN-mix-$(printf '%s' "$MIX" | tr -c 'A-Za-z0-9.=' '_')"
    MIX_ARGS=(--mix "$MIX")
fi
RESUME=()
if [[ -d "$RUN/checkpoints" ]]; then RESUME=(--resume); fi
"$LCM" train "$STORE" --model "$MODEL" --preset small --steps "$STEPS" \
    --max-minutes "$TRAIN_MINUTES" --eval-every 50 --checkpoint-every 50 --out "$RUN" \
    "${MIX_ARGS[@]}" "${RESUME[@]}"
"$LCM" plot "$RUN/metrics.jsonl" --out "$RUN/loss.png"
"$LCM" eval "$RUN" --store "$STORE" --out "$RUN/eval.md"
"$LCM" generate --model "$RUN" --store "$STORE" --max-sentences 6 "$PROMPT"
