#!/usr/bin/env python3
"""The source-split experiment of EVALUATION.md: single-site training, centralised training
on the union (what nobody may do, the upper reference), FedAvg and DiLoCo at equal total inner
steps, each model evaluated with `lcm eval` on every site's held-out split and the union's.

The federated runs use the ClientApp's `run_round` (each round is `lcm fed-step` at each site,
in its own state directory) and the ServerApp's outer step (`diloco.outer_round`) in one
process, without Flower's transport: what a round sends over the wire is counted (the global
model down and the local model up, f32), its cost on loopback is measured by the deployment
tests instead.

    python federated/experiment.py --lcm target/release/lcm --work /tmp/fedexp \\
        --site sotu=stores/sotu --site web=stores/web ... --union stores/union \\
        --normalizer stores/normalizer.safetensors --preset tiny --steps-per-site 200 --h 10 --h 50
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lcm_federated import safetensors_io  # noqa: E402
from lcm_federated.client_app import run_round  # noqa: E402
from lcm_federated.diloco import OuterSgd, outer_round  # noqa: E402


def lcm(binary: Path, *args) -> str:
    done = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"lcm {args[0]} failed: {done.stderr[-2000:]}")
    return done.stdout


def evaluate(args, checkpoint: Path, stores: dict[str, Path]) -> dict[str, dict]:
    """`lcm eval --json` of a checkpoint directory on each store's held-out split."""
    out = {}
    for name, store in stores.items():
        text = lcm(
            args.lcm, "eval", checkpoint, "--store", store, "--normalizer", args.normalizer,
            "--valid-fraction", args.valid_fraction, "--json",
        )
        report = json.loads(text)
        rows = {row["predictor"]: row for row in report["rows"]}
        model = report["rows"][0]
        out[name] = {
            "l2": model["l2"],
            "ca": model["ca"],
            "mean_concept_l2": rows.get("mean concept", {}).get("l2"),
            "held_out_concepts": report["held_out_concepts"],
        }
    return out


def newest_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*[0-9]"))[-1]


def as_checkpoint(arrays: dict, template: Path, out: Path) -> Path:
    """A checkpoint directory `lcm eval` reads: the arrays as model.safetensors beside a site
    checkpoint's state.json (same model, space and normaliser)."""
    out.mkdir(parents=True, exist_ok=True)
    safetensors_io.write(out / "model.safetensors", arrays, {})
    shutil.copy(template / "state.json", out / "state.json")
    return out


def train_flags(args) -> list:
    return [
        "--preset", args.preset, "--max-concepts", args.max_concepts, "--lr", args.lr,
        "--seed", args.seed, "--valid-fraction", args.valid_fraction,
    ]


def centralised(args, name: str, store: Path, steps: int) -> Path:
    run = args.work / "runs" / name
    if not (run / "checkpoints").exists():
        lcm(
            args.lcm, "train", store, "--model", "base", "--steps", steps, "--out", run,
            "--normalizer", args.normalizer, "--eval-every", 0, "--checkpoint-every", 0, "--quiet",
            *train_flags(args),
        )
    return newest_checkpoint(run)


def attacked(arrays: dict, local: dict, attack: str) -> dict:
    """What a malicious site sends instead of its local model: its pseudo-gradient scaled by
    100 or with its sign flipped."""
    factor = {"scaled": 100.0, "sign-flipped": -1.0}[attack]
    return {k: (arrays[k] - factor * (arrays[k].astype("float64") - local[k])).astype("float32") for k in arrays}


def federated(
    args, name: str, sites: dict[str, Path], h: int, outer_lr: float, momentum: float,
    aggregation: str = "mean", attack: str | None = None,
) -> tuple[Path, dict]:
    root = args.work / "runs" / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    initial = root / "global-0.safetensors"
    first = next(iter(sites.values()))
    lcm(args.lcm, "fed-init", first, "--normalizer", args.normalizer, "--out", initial,
        "--total-steps", args.steps_per_site, *train_flags(args))
    arrays, meta = safetensors_io.read(initial)
    optimizer = OuterSgd(lr=outer_lr, momentum=momentum)
    rounds = args.steps_per_site // h
    started = time.time()
    train_seconds = 0.0
    for round_ in range(1, rounds + 1):
        locals_, weights = [], []
        for site, store in sites.items():
            node = {"lcm-bin": str(args.lcm), "store": str(store), "state-dir": str(root / site),
                    "normalizer": str(args.normalizer), "threads": "2"}
            local, metrics = run_round(node, arrays, meta, h, round_, timeout=3600)
            if attack is not None and site == next(iter(sites)):
                local = attacked(arrays, local, attack)
            locals_.append(local)
            weights.append(metrics["num-examples"])
            train_seconds += metrics["seconds"]
        arrays = outer_round(arrays, locals_, weights, optimizer, aggregation, trim_fraction=0.2)
    wall = time.time() - started
    params = sum(v.size for v in arrays.values())
    per_round = 2 * 4 * params  # f32 down and up, per site
    stats = {
        "rounds": rounds, "h": h, "parameters": params,
        "bytes_per_site_per_round": per_round,
        "bytes_total": per_round * rounds * len(sites),
        "wall_seconds_per_round": wall / rounds,
        "fed_step_seconds_per_round": train_seconds / rounds,
    }
    template = newest_checkpoint(root / next(iter(sites)))
    return as_checkpoint(arrays, template, root / "global-checkpoint"), stats


def is_robustness_run(name: str) -> bool:
    """`diloco-h20-median-scaled` and the like: the --robustness runs, tabled apart."""
    return "-h" in name and "-" in name.split("-h", 1)[1]


def table(results: dict, sites: list[str]) -> str:
    """The markdown table of EVALUATION.md: ℓ2 per site and on the union, CA on the union,
    rounds, MB sent per site, wall seconds per round (the part inside `lcm fed-step`)."""
    cols = sites + ["union"]
    lines = [
        "| model | " + " | ".join(f"ℓ2 {c}" for c in cols)
        + " | CA union | rounds | MB sent per site | wall s / round (fed-step s) |",
        "|---" * (len(cols) + 5) + "|",
    ]
    ref = results.get("centralised") or next(iter(results.values()))
    mean = {c: ref["eval"][c]["mean_concept_l2"] for c in cols}
    lines.append("| mean concept (baseline) | " + " | ".join(f"{mean[c]:.4f}" for c in cols)
                 + " | – | – | – | – |")
    for name, v in results.items():
        if is_robustness_run(name):
            continue
        e = v["eval"]
        if "rounds" in v:
            mb = f"{v['bytes_per_site_per_round'] * v['rounds'] / 1e6:.2f}"
            wall = f"{v['wall_seconds_per_round']:.2f} ({v['fed_step_seconds_per_round']:.2f})"
            rounds = str(v["rounds"])
        else:
            mb = "0 (data pooled)" if name == "centralised" else "0"
            wall = rounds = "–"
        lines.append(f"| {name} | " + " | ".join(f"{e[c]['l2']:.4f}" for c in cols)
                     + f" | {e['union']['ca']:.3f} | {rounds} | {mb} | {wall} |")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    """Held-out ℓ2 on the union against the MB each site sent, log x axis, as a plain SVG (no
    plotting package in the federation's pinned venv): one point per federated run, FedAvg
    and DiLoCo joined across H, centralised and the mean concept as horizontal lines."""
    runs = {k: v for k, v in results.items() if "rounds" in v and not is_robustness_run(k)}
    if not runs:
        raise SystemExit("no federated run in the results to plot")
    import math

    mb = {k: v["bytes_per_site_per_round"] * v["rounds"] / 1e6 for k, v in runs.items()}
    loss = {k: v["eval"]["union"]["l2"] for k, v in runs.items()}
    refs = {}
    if "centralised" in results:
        refs["centralised"] = results["centralised"]["eval"]["union"]["l2"]
        refs["mean concept"] = results["centralised"]["eval"]["union"]["mean_concept_l2"]
    w, h, left, right, top, bottom = 640, 400, 70, 150, 30, 50
    xs = [math.log10(v) for v in mb.values()]
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs))
    x1 = max(x1, x0 + 1)
    ys = list(loss.values()) + list(refs.values())
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or 0.01
    y0, y1 = y0 - pad, y1 + pad

    def px(v: float) -> float:
        return left + (math.log10(v) - x0) / (x1 - x0) * (w - left - right)

    def py(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * (h - top - bottom)

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="18" text-anchor="middle">held-out ℓ2 (union) vs data sent per site</text>',
           f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
           f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">MB sent per site (log scale)</text>',
           f'<text x="16" y="{(top + h - bottom) / 2}" transform="rotate(-90 16 {(top + h - bottom) / 2})" text-anchor="middle">ℓ2</text>']
    for e in range(x0, x1 + 1):
        x = px(10.0 ** e)
        svg.append(f'<line x1="{x}" y1="{h - bottom}" x2="{x}" y2="{h - bottom + 5}" stroke="black"/>')
        svg.append(f'<text x="{x}" y="{h - bottom + 18}" text-anchor="middle">{10.0 ** e:g}</text>')
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        svg.append(f'<text x="{left - 6}" y="{py(v) + 4}" text-anchor="end">{v:.3f}</text>')
    for (name, v), dash in zip(refs.items(), ("6,3", "2,3")):
        svg.append(f'<line x1="{left}" y1="{py(v)}" x2="{w - right}" y2="{py(v)}" stroke="gray" stroke-dasharray="{dash}"/>')
        svg.append(f'<text x="{w - right + 4}" y="{py(v) + 4}" fill="gray">{name}</text>')
    for method, colour in (("fedavg", "#d62728"), ("diloco", "#1f77b4")):
        points = sorted((mb[k], loss[k], k) for k in runs if k.startswith(method + "-h"))
        if not points:
            continue
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in points)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{colour}"/>')
        for x, y, k in points:
            svg.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}"/>')
            svg.append(f'<text x="{px(x) + 5:.1f}" y="{py(y) - 5:.1f}" fill="{colour}">H={k.split("-h", 1)[1]}</text>')
        lx, ly = w - right + 4, py(points[-1][1]) + 16
        svg.append(f'<text x="{lx}" y="{ly:.1f}" fill="{colour}">{method}</text>')
    svg.append("</svg>")
    out.write_text("\n".join(svg) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lcm", type=Path)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--site", action="append", required=True, help="NAME=STORE")
    p.add_argument("--union", type=Path)
    p.add_argument("--normalizer", type=Path)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps-per-site", type=int, default=200)
    p.add_argument("--h", type=int, action="append", default=None)
    p.add_argument("--max-concepts", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--valid-fraction", type=float, default=0.1)
    p.add_argument("--skip-single", action="store_true")
    p.add_argument(
        "--robustness", type=int, metavar="H",
        help="only the robustness runs: DiLoCo with H inner steps, the first site honest or sending "
        "x100 / sign-flipped updates, aggregated by mean, median and trimmed mean",
    )
    p.add_argument(
        "--outer", default="fedavg,diloco",
        help="outer optimisers to run at each H: fedavg (lr 1, momentum 0), diloco (Nesterov, lr 0.7, "
        "momentum 0.9), comma-separated",
    )
    p.add_argument("--report", action="store_true",
                   help="run nothing: print the markdown table of WORK/results.json and write WORK/loss-vs-bytes.svg")
    args = p.parse_args()
    if args.report:
        results = json.loads((args.work / "results.json").read_text())
        print(table(results, [s.split("=", 1)[0] for s in args.site]))
        plot(results, args.work / "loss-vs-bytes.svg")
        print(f"\nplot: {args.work / 'loss-vs-bytes.svg'}")
        return 0
    missing = [f"--{k}" for k in ("lcm", "union", "normalizer") if getattr(args, k) is None]
    if missing:
        p.error(f"the following arguments are required: {', '.join(missing)}")
    args.lcm = args.lcm.resolve()
    args.work = args.work.resolve()
    sites = {name: Path(store).resolve() for name, store in (s.split("=", 1) for s in args.site)}
    stores = dict(sites, union=args.union.resolve())
    total = args.steps_per_site * len(sites)
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    def record(name, checkpoint, **extra):
        results[name] = {"eval": evaluate(args, checkpoint, stores), **extra}
        print(json.dumps({name: results[name]}), flush=True)
        results_path.write_text(json.dumps(results, indent=1))

    if args.robustness:
        for attack in (None, "scaled", "sign-flipped"):
            for aggregation in ("mean", "median", "trimmed-mean"):
                name = f"diloco-h{args.robustness}-{aggregation}-{attack or 'honest'}"
                ck, stats = federated(args, name, sites, args.robustness, 0.7, 0.9, aggregation, attack)
                record(name, ck, **stats)
        return 0
    # Resumable: a condition already in results.json is kept.
    if "centralised" not in results:
        started = time.time()
        record("centralised", centralised(args, "centralised", args.union, total), steps=total,
               seconds=time.time() - started)
    if not args.skip_single:
        for name, store in sites.items():
            if f"alone-{name}" in results:
                continue
            started = time.time()
            record(f"alone-{name}", centralised(args, f"alone-{name}", store, total), steps=total,
                   seconds=time.time() - started)
    outers = {"fedavg": (1.0, 0.0), "diloco": (0.7, 0.9)}
    chosen = [o for o in args.outer.split(",") if o]
    unknown = [o for o in chosen if o not in outers]
    if unknown:
        p.error(f"--outer: unknown {unknown}; choose from {sorted(outers)}")
    for h in args.h or [10, 50]:
        if args.steps_per_site % h:
            p.error(f"--h {h} does not divide --steps-per-site {args.steps_per_site}")
        for outer in chosen:
            name = f"{outer}-h{h}"
            if name in results:
                continue  # resumable: a finished condition is kept
            lr, momentum = outers[outer]
            ck, stats = federated(args, name, sites, h, lr, momentum)
            record(name, ck, **stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
