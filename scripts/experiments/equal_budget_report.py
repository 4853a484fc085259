#!/usr/bin/env python3
"""Tables of scripts/experiments/equal_budget.sh's outputs (markdown on stdout).

    python3 scripts/experiments/equal_budget_report.py OUT
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ORDER = ["base", "one-tower", "two-tower"]


def fmt(v, scale=1.0, digits=3):
    return "—" if v is None else f"{v * scale:.{digits}f}"


def metrics_row(row):
    return f"{fmt(row['l2'])} | {fmt(row['ca'], 100, 1)} | {fmt(row['par'])} | {fmt(row.get('mi'))}"


def wall_seconds(time_file: Path):
    if not time_file.exists():
        return None
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", time_file.read_text())
    if not m:
        return None
    parts = [float(p) for p in m.group(1).split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


def main() -> None:
    out = Path(sys.argv[1])
    models = [m for m in ORDER if (out / "runs" / m / "metrics.jsonl").exists()]
    evals = {p.stem: json.loads(p.read_text()) for p in sorted((out / "eval").glob("*.json"))}

    print("### Training (same wall-clock budget each, one after another)\n")
    print("| model | steps | concepts seen | wall time | concepts/s | final train loss | held-out loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    seen_at = {}
    for m in models:
        rows = [json.loads(l) for l in (out / "runs" / m / "metrics.jsonl").read_text().splitlines() if l.strip()]
        total, cumulative = 0, {}
        for r in rows:
            total += r["concepts"]
            cumulative[r["step"]] = total
        seen_at[m] = cumulative
        valid = [r["valid_loss"] for r in rows if "valid_loss" in r]
        wall = wall_seconds(out / "runs" / f"{m}.time")
        rate = sum(r["concepts"] for r in rows) / sum(r["concepts"] / r["concepts_per_s"] for r in rows)
        print(f"| {m} | {rows[-1]['step']:,} | {total / 1e6:.2f} M | "
              f"{'—' if wall is None else f'{wall / 60:.1f} min'} | {rate:,.0f} | "
              f"{rows[-1]['loss']:.1f} | {fmt(valid[-1] if valid else None, digits=1)} |")

    def final_step(m):
        steps = sorted(k.split("-step-")[1].split("-")[0] for k in evals if k.startswith(f"{m}-step-"))
        return steps[-1] if steps else None

    for split, title in (("heldout", "held-out documents of the training corpus"),
                         ("domain", "held-out domain (never trained on)")):
        print(f"\n### Teacher-forced, {title}, last checkpoint\n")
        print("| predictor | ℓ2 ↓ | CA (%) ↑ | PAR | MI (nats) | positions |")
        print("|---|---:|---:|---:|---:|---:|")
        baselines = None
        for m in models:
            step = final_step(m)
            e = evals.get(f"{m}-step-{step}-{split}")
            if e is None:
                continue
            model_row, *rest = e["rows"]
            print(f"| {e['model']} | {metrics_row(model_row)} | {model_row['positions']} |")
            baselines = rest
        for row in baselines or []:
            print(f"| baseline: {row['predictor']} | {metrics_row(row)} | {row['positions']} |")

    print("\n### Learning curve (checkpoints at a third, two thirds and the end of each schedule)\n")
    print("| model | step | concepts seen | held-out ℓ2 | held-out CA (%) | domain ℓ2 | domain CA (%) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m in models:
        steps = sorted({k.split("-step-")[1].split("-")[0] for k in evals if k.startswith(f"{m}-step-")})
        for step in steps:
            h = evals.get(f"{m}-step-{step}-heldout")
            d = evals.get(f"{m}-step-{step}-domain")
            n = int(step)
            seen = seen_at.get(m, {}).get(n)
            cells = []
            for e in (h, d):
                r = e["rows"][0] if e else None
                cells += [fmt(r["l2"]) if r else "—", fmt(r["ca"], 100, 1) if r else "—"]
            print(f"| {m} | {n:,} | {'—' if seen is None else f'{seen / 1e6:.2f} M'} | " + " | ".join(cells) + " |")

    sweep = [(k, e) for k, e in evals.items() if "-guidance-" in k]
    if sweep:
        print("\n### Guidance scale (diffusion models, last checkpoint, held-out documents; 3 is the default row above)\n")
        print("| model | guidance | ℓ2 | CA (%) | PAR | MI |")
        print("|---|---:|---:|---:|---:|---:|")
        for k, e in sorted(sweep, key=lambda kv: (kv[0].split("-guidance-")[0], float(kv[0].split("-guidance-")[1]))):
            m, g = k.split("-guidance-")
            print(f"| {m} | {g} | {metrics_row(e['rows'][0])} |")


if __name__ == "__main__":
    main()
