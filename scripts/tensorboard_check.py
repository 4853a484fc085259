"""Reads the TensorBoard event files of lcm run directories back with TensorBoard itself and
checks them against each run's metrics.jsonl (run by scripts/test-tensorboard.sh).

usage: tensorboard_check.py RUN[:TAG,TAG...] ...

For every run: TensorBoard's EventAccumulator loads the directory (all event files, in
name order, CRCs checked); every scalar it reports maps back to one numeric field of
metrics.jsonl (the naming of crates/train/src/tensorboard.rs) with the same steps and the
same values as float32; every numeric field of metrics.jsonl is shown; each step appears
once per tag; the listed TAGs must be present. Then a real `tensorboard --logdir` server is
asked, over loopback, which runs and scalar tags it shows.
"""

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

GROUPS = ("optim", "throughput", "batch", "time", "train")


def metrics_field(tag, line):
    """The value of metrics line `line` that TensorBoard tag `tag` was written from."""
    parts = tag.split("/")
    if parts[0] == "valid" and len(parts) == 2:
        return line.get("valid_" + parts[1])
    if parts[0] in GROUPS and len(parts) == 2:
        return line.get(parts[1])
    value = line
    for part in parts:  # a nested object: collapse/effective_rank, collapse/per_dim_std/07
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list):
            value = value[int(part)]
        else:
            return None
    return value


def numeric_leaves(line, prefix=""):
    """Paths of the numbers in a metrics line (the fields that must be shown)."""
    for key, value in line.items() if isinstance(line, dict) else enumerate(line):
        path = f"{prefix}{key}"
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, (dict, list)):
            yield from numeric_leaves(value, path + "/")
        elif path != "step":
            yield path


def check_run(run, required):
    lines = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl")) if l.strip()]
    assert lines, f"{run}: empty metrics.jsonl"
    acc = EventAccumulator(run, size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    missing = [t for t in required if t not in tags]
    assert not missing, f"{run}: tags {missing} missing from {sorted(tags)}"
    by_step = {line["step"]: line for line in lines}
    shown = set()
    records = 0
    for tag in tags:
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        assert len(steps) == len(set(steps)), f"{run}: {tag} repeats steps {steps}"
        expected_steps = [s for s, l in by_step.items() if metrics_field(tag, l) is not None]
        assert sorted(steps) == sorted(expected_steps), (
            f"{run}: {tag} at steps {steps}, metrics.jsonl has {expected_steps}"
        )
        for e in events:
            want = np.float32(metrics_field(tag, by_step[e.step]))
            assert np.float32(e.value) == want or (math.isnan(e.value) and math.isnan(want)), (
                f"{run}: {tag} at step {e.step} is {e.value}, metrics.jsonl has {want}"
            )
            assert e.wall_time > 1.5e9, f"{run}: {tag} wall_time {e.wall_time}"
        records += len(events)
        shown.add(tag)
    # Every number of every line is shown under some tag.
    for line in lines:
        for path in numeric_leaves(line):
            assert any(metrics_field(t, line) is not None and _same_path(t, path) for t in shown), (
                f"{run}: metrics field {path} (step {line['step']}) has no TensorBoard tag"
            )
    print(f"{run}: {len(tags)} tags, {records} scalars over {len(lines)} steps match metrics.jsonl")
    return set(tags)


def _same_path(tag, path):
    parts = tag.split("/")
    if parts[0] == "valid" and len(parts) == 2:
        return path == "valid_" + parts[1]
    if parts[0] in GROUPS and len(parts) == 2:
        return path == parts[1]
    # Array indices are zero-padded in tags (collapse/per_dim_std/07).
    norm = lambda p: [str(int(x)) if x.isdigit() else x for x in p.split("/")]
    return norm(path) == norm(tag)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_server(logdir, runs):
    """`tensorboard --logdir` itself (its default loader) lists the runs and their tags."""
    port = free_port()
    server = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "tensorboard"),
            "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
        deadline = time.time() + 60
        while True:
            try:
                shown = json.load(urllib.request.urlopen(url, timeout=5))
                if all(name in shown and set(shown[name]) >= tags for name, tags in runs.items()):
                    break
            except OSError:
                shown = None
            if time.time() > deadline or server.poll() is not None:
                err = server.stderr.read().decode() if server.poll() is not None else ""
                raise AssertionError(f"tensorboard --logdir {logdir} shows {shown}; {err}")
            time.sleep(0.5)
        for name, tags in runs.items():
            tag = "train/loss" if "train/loss" in tags else sorted(tags)[0]
            q = urllib.parse.urlencode({"run": name, "tag": tag})
            points = json.load(urllib.request.urlopen(
                f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?{q}", timeout=5))
            steps = [p[1] for p in points]
            assert len(steps) == len(set(steps)), f"server: {name}/{tag} repeats steps {steps}"
        print(f"tensorboard --logdir {logdir}: runs {sorted(runs)} with all their tags")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(args):
    runs = {}
    for arg in args:
        run, _, required = arg.partition(":")
        runs[run] = check_run(run, [t for t in required.split(",") if t])
    parents = {os.path.dirname(os.path.abspath(r)) for r in runs}
    if len(parents) == 1:
        parent = parents.pop()
        check_server(parent, {os.path.relpath(os.path.abspath(r), parent): t for r, t in runs.items()})


if __name__ == "__main__":
    main(sys.argv[1:])
