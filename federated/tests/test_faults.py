"""Faults on a real loopback deployment: a site killed mid-round and a ServerApp stopped
mid-run, then restarted. Each test takes well under a minute and a half."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

from conftest import federation, run_config

from run_local import Federation


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def received(state: Path) -> dict[int, str]:
    path = state / "received.jsonl"
    if not path.exists():
        return {}
    return {json.loads(line)["round"]: json.loads(line)["sha256"] for line in path.read_text().splitlines()}


def summary(server: Path, round_: int) -> dict:
    return json.loads((server / f"round-{round_:06d}" / "state.json").read_text())["summary"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_in_background(fed: Federation, config: dict) -> tuple[threading.Thread, dict]:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(done=fed.run(config, timeout=240)))
    thread.start()
    return thread, result


def test_a_site_killed_mid_round_is_left_out_and_rejoins_the_next_round(sites, normalizer, tmp_path):
    fed, initial = federation(sites, normalizer, tmp_path / "federation", total_steps=40)
    server = fed.work / "server"
    try:
        fed.start_superlink()
        fed.start_supernode(0)
        fed.start_supernode(1)
        thread, result = run_in_background(
            fed,
            # Explicit quorum and round timeout: a round aggregates what arrived within 20 s
            # if at least one site answered.
            run_config(initial, server, rounds=2, local_steps=20, min_train_nodes=1, round_timeout=20.0),
        )
        # Site 1 got round 1's model and started `lcm fed-step`: kill its supernode (and the
        # ClientApp under it), then bring the site back at once.
        wait_until(lambda: 1 in received(fed.site_state(1)), 120, "site 1 to start round 1")
        fed.kill_supernode(1)
        fed.start_supernode(1)
        thread.join(timeout=240)
    finally:
        fed.stop()
    log = (fed.logs / "flwr-run.log").read_text(errors="replace")
    assert not thread.is_alive() and result["done"].returncode == 0, log[-3000:]
    # Round 1 completed with the quorum that remained; in round 2 the site took part again,
    # with the global model every other site got.
    assert summary(server, 1)["sites-accepted"] == 1, log[-3000:]
    assert summary(server, 2)["sites-accepted"] == 2, log[-3000:]
    assert received(fed.site_state(1))[2] == received(fed.site_state(0))[2]
    assert received(fed.site_state(0))[2] == sha256(server / "round-000001" / "global.safetensors")


def test_a_stopped_server_app_resumes_from_its_last_round(sites, normalizer, tmp_path):
    fed, initial = federation(sites, normalizer, tmp_path / "federation", total_steps=40)
    server = fed.work / "server"
    config = run_config(initial, server, rounds=3, local_steps=2, round_timeout=60.0)
    try:
        fed.start_superlink()
        fed.start_supernode(0)
        fed.start_supernode(1)
        thread, result = run_in_background(fed, config)
        # Stop the run (its ServerApp) once round 1 is checkpointed, before round 3.
        wait_until(lambda: (server / "round-000001").is_dir(), 120, "round 1's checkpoint")
        runs = json.loads(fed.flwr("ls", "local-federation", "--format", "json"))["runs"]
        for run in runs:
            if "running" in run["status"].lower():
                fed.flwr("stop", run["run-id"], "local-federation")
        thread.join(timeout=120)
        assert not thread.is_alive()
        stopped_at = max(int(p.name.split("-")[1]) for p in server.glob("round-[0-9]*") if p.is_dir())
        assert stopped_at < 3, "the run finished before it was stopped"
        # A new ServerApp with the same settings continues after the last checkpoint.
        done = fed.run(config, timeout=240)
    finally:
        fed.stop()
    log = (fed.logs / "flwr-run.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert f"resuming after round {stopped_at}" in log, log[-3000:]
    assert (server / "round-000003").is_dir(), log[-3000:]
    # The resumed rounds were sent the model checkpointed the round before, to every site.
    for round_ in range(stopped_at + 1, 4):
        expected = sha256(server / f"round-{round_ - 1:06d}" / "global.safetensors")
        assert received(fed.site_state(0))[round_] == expected
    assert received(fed.site_state(0)) == received(fed.site_state(1))
