#!/usr/bin/env bash
# End-to-end `lcm prepare` throughput on the default corpus (segment + encode + write Parquet).
#
#   bash bench/prepare.sh            # full default corpus
#   LIMIT=500 bash bench/prepare.sh  # first 500 documents
#
# Needs: bash scripts/fetch-models.sh minilm && bash scripts/corpus/default.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LCM_HOME="${LCM_HOME:-$HOME/.lcm}"
CORPUS="$LCM_HOME/corpus/default.jsonl"
[[ -f "$CORPUS" ]] || { echo "no corpus at $CORPUS: run bash scripts/corpus/default.sh" >&2; exit 1; }
cargo build --release -q -p lcm-cli
LCM="${CARGO_TARGET_DIR:-target}/release/lcm"
OUT="$(mktemp -d)/store"
ARGS=()
[[ -n "${LIMIT:-}" ]] && ARGS=(--limit "$LIMIT")
start=$(date +%s.%N)
"$LCM" prepare "$CORPUS" --out "$OUT" --encoder minilm --quiet "${ARGS[@]}" | tee "$OUT.log"
end=$(date +%s.%N)
sentences=$("$LCM" inspect --json "$OUT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["store"]["sentences"])')
python3 - "$start" "$end" "$sentences" <<'PY'
import sys, subprocess, datetime
start, end, sentences = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), "?")
wall = end - start
print(f"| {datetime.date.today()} | {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores | {sentences} | {wall:.1f} s | {sentences / wall:.0f} sentences/s |")
PY
rm -rf "$(dirname "$OUT")"
