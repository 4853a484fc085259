#!/usr/bin/env bash
# Equal-budget comparison of the LCM variants (issue 17, item 1): Base-LCM, One-Tower and
# Two-Tower, each trained for the same wall-clock budget on the fused engine, one after the
# other, then evaluated teacher-forced (ℓ2, CA, PAR, MI with the trivial baselines) on the
# store's held-out documents and on a held-out domain, at each saved checkpoint (the learning
# curve; the held-out domain at the last one unless DOMAIN_CURVE=1), and for the diffusion
# models under other guidance scales (GUIDANCE, default "1 5"; 3 is the default row).
#
#   scripts/experiments/equal_budget.sh STORE DOMAIN_STORE OUT [MINUTES] [PRESET]
#
# STORE: the training store (e.g. the default corpus prepared with all-MiniLM-L6-v2 and its
# normaliser); DOMAIN_STORE: documents of a domain none of the models trains on, prepared with
# the same encoder (half of its documents are evaluated, `--valid-fraction 0.5`, so that its
# mean-concept baseline is the domain's own, a stronger baseline than anything the models can
# know). MINUTES (default 15) is each model's training budget; PRESET defaults to `small`.
#
# So that every model's learning-rate schedule ends inside the budget (rather than being cut
# mid-schedule), each model first runs a 60-second probe; its steady throughput (steps/s over
# the probe's second half) sets `--steps` to what fits in MINUTES. `--max-minutes` still
# bounds the run. Checkpoints at a third, two thirds and the end of the schedule give the
# learning curve. Run it on an idle machine: the budget is wall-clock time.
#
# Outputs under OUT: runs/<model>/ (the training runs), eval/*.json (every `lcm eval --json`),
# probes/, and summary.md (the tables, made by scripts/experiments/equal_budget_report.py).
set -euo pipefail

if [ $# -lt 3 ]; then
    sed -n 2,22p "$0"
    exit 2
fi
STORE=$1
DOMAIN=$2
OUT=$3
MINUTES=${4:-15}
PRESET=${5:-small}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LCM=${LCM:-$ROOT/target/release/lcm}
MODELS=${MODELS:-"base one-tower two-tower"}
SEED=${SEED:-0}
STAGES=${STAGES:-"train eval"}   # STAGES=train or STAGES=eval runs one half
[ -x "$LCM" ] || { echo "no lcm binary at $LCM: cargo build --release -p lcm-cli (or set LCM)" >&2; exit 1; }
for s in "$STORE" "$DOMAIN"; do
    [ -e "$s" ] || { echo "$s: no such store (lcm prepare CORPUS --out $s)" >&2; exit 1; }
done
mkdir -p "$OUT/runs" "$OUT/eval" "$OUT/probes"

steps_for() { # probe dir → steps fitting MINUTES, from the steady rate of the probe's 2nd half
    python3 - "$1/metrics.jsonl" "$MINUTES" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
half = rows[len(rows) // 2:]
# concepts_per_s is per step: seconds per step = concepts / concepts_per_s
seconds = sum(r["concepts"] / r["concepts_per_s"] for r in half)
steps_per_s = len(half) / seconds
# 3% of the budget is kept for validation passes and checkpoints
print(max(30, int(float(sys.argv[2]) * 60 * 0.97 * steps_per_s)))
EOF
}

for model in $MODELS; do
    case " $STAGES " in *" train "*) ;; *) break ;; esac
    run=$OUT/runs/$model
    if [ -e "$run/checkpoints/latest" ] && [ -e "$run/done" ]; then
        echo "$model: trained already ($run)"
        continue
    fi
    probe=$OUT/probes/$model
    rm -rf "$probe"
    "$LCM" train "$STORE" --model "$model" --preset "$PRESET" --steps 100000 --max-minutes 1 \
        --eval-every 0 --checkpoint-every 0 --seed "$SEED" --quiet --out "$probe" >/dev/null
    steps=$(steps_for "$probe")
    third=$(( (steps + 2) / 3 ))
    echo "$model: $steps steps in $MINUTES min (checkpoints every $third)"
    rm -rf "$run"
    /usr/bin/time -v "$LCM" train "$STORE" --model "$model" --preset "$PRESET" --steps "$steps" \
        --max-minutes "$MINUTES" --eval-every "$third" --checkpoint-every "$third" --keep-last 0 \
        --seed "$SEED" --quiet --out "$run" 2> "$OUT/runs/$model.time"
    touch "$run/done"
done

evaluate() { # output.json, then the lcm eval arguments; skipped when the output exists
    local out=$1
    shift
    if [ ! -s "$out" ]; then
        "$LCM" eval "$@" --json --mi > "$out.tmp"
        mv "$out.tmp" "$out"
    fi
}

case " $STAGES " in *" eval "*) ;; *) exit 0 ;; esac
for model in $MODELS; do
    checkpoints=$OUT/runs/$model/checkpoints
    last=$checkpoints/$(cat "$checkpoints/latest")
    for ckpt in "$checkpoints"/step-*; do
        e=$OUT/eval/$model-$(basename "$ckpt")
        evaluate "$e-heldout.json" "$ckpt" --store "$STORE"
        if [ "$ckpt" = "$last" ] || [ -n "${DOMAIN_CURVE:-}" ]; then
            evaluate "$e-domain.json" "$ckpt" --store "$DOMAIN" --valid-fraction 0.5 --max-concepts 2560
        fi
    done
    if [ "$model" != base ]; then
        for g in ${GUIDANCE:-1 5}; do
            evaluate "$OUT/eval/$model-guidance-$g.json" "$last" --store "$STORE" --guidance-scale "$g"
        done
    fi
done
python3 "$ROOT/scripts/experiments/equal_budget_report.py" "$OUT" > "$OUT/summary.md"
cat "$OUT/summary.md"
