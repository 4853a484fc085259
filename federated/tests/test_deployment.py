"""A real deployment on loopback: stock `flower-superlink`, one `flower-supernode` per site,
`flwr run` of this app, `lcm fed-step` at each site. Also what a ClientApp returns, and the
ClientApp's refusals, without Flower."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CANARY, CANARY_TOKEN, TINY_BERT, fed_init, federation, lcm_binary, run_config, run_to_end

from lcm_federated import safetensors_io
from lcm_federated.client_app import REPLY_METRICS, run_round
from lcm_federated.diloco import gaussian_epsilon, space_fingerprint


def node(site_store: Path, state: Path, normalizer: Path) -> dict:
    return {
        "lcm-bin": str(lcm_binary()),
        "store": str(site_store),
        "state-dir": str(state),
        "normalizer": str(normalizer),
        "encoder": str(TINY_BERT),
        "threads": "1",
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def received(state: Path) -> dict[int, str]:
    lines = (state / "received.jsonl").read_text().splitlines()
    return {json.loads(line)["round"]: json.loads(line)["sha256"] for line in lines}


def test_a_client_round_returns_numbers_and_tensors_only(sites, normalizer, tmp_path):
    global_path = fed_init(tmp_path / "global.safetensors", sites[0], normalizer, total_steps=4)
    arrays, meta = safetensors_io.read(global_path)
    local, metrics = run_round(node(sites[0], tmp_path / "state", normalizer), arrays, meta, 2, 1, 300)
    assert set(metrics) == set(REPLY_METRICS)
    assert all(isinstance(v, (int, float)) for v in metrics.values()), metrics
    assert metrics["num-examples"] > 0 and metrics["to-step"] == 2
    assert metrics["space-fp"] == space_fingerprint(meta)
    assert set(local) == set(arrays)
    assert all(v.dtype == np.float32 and v.shape == arrays[k].shape for k, v in local.items())
    assert any(not np.array_equal(local[k], arrays[k]) for k in arrays), "the round trained nothing"
    # Neither the canary nor any of its words is anywhere in the reply.
    payload = b"".join(v.tobytes() for v in local.values()) + json.dumps(metrics).encode()
    assert CANARY.encode() not in payload and CANARY_TOKEN.encode() not in payload


def test_a_site_in_another_space_fails_with_the_reason(sites, normalizer, tmp_path):
    global_path = fed_init(tmp_path / "global.safetensors", sites[0], normalizer, total_steps=4)
    arrays, meta = safetensors_io.read(global_path)
    foreign = dict(meta, **{"lcm.normalizer_hash": "fnv1a64:0000000000000000"})
    with pytest.raises(RuntimeError, match="normaliser"):
        run_round(node(sites[1], tmp_path / "state", normalizer), arrays, foreign, 2, 1, 300)
    # A valid round (a refused one can exit within the deadline on a warm machine) that
    # cannot finish in 10 ms.
    with pytest.raises(RuntimeError, match="timed out"):
        run_round(node(sites[1], tmp_path / "state-timeout", normalizer), arrays, meta, 2, 1, 0.01)


def test_two_supernodes_complete_two_rounds_with_identical_global_models_under_dp(sites, normalizer, tmp_path):
    work = tmp_path / "federation"
    fed, initial = federation(sites, normalizer, work, total_steps=4)
    done, log = run_to_end(
        fed,
        # Differential privacy on: Flower's fixedclipping_mod at the sites, noise and the ε
        # it spends at the server.
        run_config(initial, work / "server", rounds=2, local_steps=2,
                   dp_clipping_norm=1.0, dp_noise_multiplier=0.5),
    )
    assert done.returncode == 0, log[-3000:]
    server = work / "server"
    assert (server / "round-000002" / "global.safetensors").exists(), log[-3000:]
    # Every site received the same global model in every round, and round 2's is the
    # server's checkpoint of round 1.
    seen = [received(fed.site_state(i)) for i in range(len(sites))]
    assert seen[0] == seen[1], seen
    assert set(seen[0]) == {1, 2}
    assert seen[0][2] == sha256(server / "round-000001" / "global.safetensors")
    assert seen[0][1] == sha256(server / "round-000000" / "global.safetensors")
    # Each site took 2 inner steps per round, in its own state.
    for i in range(len(sites)):
        steps = sorted(p.name for p in (fed.site_state(i) / "checkpoints").glob("step-*"))
        assert steps[-1] == "step-00000004", steps
    # Each round reported the privacy it spent.
    for round_ in (1, 2):
        state = json.loads((server / f"round-{round_:06d}" / "state.json").read_text())
        assert state["summary"]["dp-epsilon"] == pytest.approx(gaussian_epsilon(0.5, round_, 1e-5))
    # The model moved, and the aggregated weights are finite.
    g0, _ = safetensors_io.read(server / "round-000000" / "global.safetensors")
    g2, meta = safetensors_io.read(server / "round-000002" / "global.safetensors")
    assert meta["lcm.format"] == "lcm-federated/1"
    assert all(np.all(np.isfinite(v)) for v in g2.values())
    assert any(not np.allclose(g0[k], g2[k]) for k in g0)
    # The canary of site 0 reached nothing outside it: not the superlink's database,
    # the server's checkpoints or the logs of the superlink and the run.
    outside = [work / "superlink.db", work / "logs" / "superlink.log", work / "logs" / "flwr-run.log"]
    outside += list(server.rglob("*.safetensors"))
    for path in outside:
        if path.exists():
            assert CANARY_TOKEN.encode() not in path.read_bytes(), path
