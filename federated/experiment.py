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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lcm", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--site", action="append", required=True, help="NAME=STORE")
    p.add_argument("--union", type=Path, required=True)
    p.add_argument("--normalizer", type=Path, required=True)
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
    args = p.parse_args()
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
    started = time.time()
    record("centralised", centralised(args, "centralised", args.union, total), steps=total,
           seconds=time.time() - started)
    if not args.skip_single:
        for name, store in sites.items():
            started = time.time()
            record(f"alone-{name}", centralised(args, f"alone-{name}", store, total), steps=total,
                   seconds=time.time() - started)
    for h in args.h or [10, 50]:
        ck, stats = federated(args, f"fedavg-h{h}", sites, h, 1.0, 0.0)
        record(f"fedavg-h{h}", ck, **stats)
        ck, stats = federated(args, f"diloco-h{h}", sites, h, 0.7, 0.9)
        record(f"diloco-h{h}", ck, **stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
