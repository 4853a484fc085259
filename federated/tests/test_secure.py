"""Secure aggregation (SecAgg+ through Flower's legacy workflow, `lcm_federated.secure`): a
real loopback deployment whose global model equals DiLoCo's outer step on the unweighted mean
of the sites' updates, replayed outside Flower; and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import federation, run_config, run_to_end
from test_deployment import node

from lcm_federated import safetensors_io
from lcm_federated.client_app import run_round, secure_update
from lcm_federated.diloco import OuterSgd
from lcm_federated.secure import check_config


def test_the_secure_sum_gives_the_outer_step_on_the_mean_update(sites, normalizer, tmp_path):
    work = tmp_path / "federation"
    fed, initial = federation(sites, normalizer, work, total_steps=4)
    done, log = run_to_end(
        fed,
        run_config(initial, work / "server", rounds=1, local_steps=2, secure_aggregation=True),
    )
    assert done.returncode == 0, log[-3000:]
    assert "Secure aggregation completed." in log, log[-3000:]
    round_1 = work / "server" / "round-000001"
    assert (round_1 / "global.safetensors").exists(), log[-3000:]
    summary = json.loads((round_1 / "state.json").read_text())["summary"]
    assert summary["secure-aggregation"] == 1 and summary["sites-accepted"] == 2, summary

    # Each site's round replayed outside Flower: same global model, fresh state, same seed.
    g0, meta = safetensors_io.read(initial)
    updates = []
    for i, store in enumerate(sites):
        local, _ = run_round(node(store, tmp_path / f"replay-{i}", normalizer), g0, meta, 2, 1, 300)
        updates.append({k: local[k].astype(np.float64) - g0[k].astype(np.float64) for k in g0})
    mean_gradient = {k: -sum(u[k] for u in updates) / len(updates) for k in g0}
    expected = OuterSgd(lr=0.7, momentum=0.9).step(g0, mean_gradient)
    g1, meta1 = safetensors_io.read(round_1 / "global.safetensors")
    assert meta1["lcm.format"] == meta["lcm.format"]
    assert any(not np.allclose(g0[k], g1[k]) for k in g0), "the round moved nothing"
    # Quantisation: 2 · 1.0 / 2²² per coordinate of an update, through lr 0.7 × (1 + 0.9).
    worst = max(float(np.max(np.abs(g1[k].astype(np.float64) - expected[k]))) for k in g0)
    assert worst < 3e-6, worst


def test_a_site_refuses_an_update_the_secure_sum_would_clip():
    arrays = {"w": np.zeros(3, np.float32)}
    update = secure_update(arrays, {"w": np.array([0.5, -0.9, 0.0], np.float32)}, ["w"], 1.0)
    assert np.allclose(update[0], [0.5, -0.9, 0.0])
    with pytest.raises(RuntimeError, match="raise secagg-clipping-range"):
        secure_update(arrays, {"w": np.array([0.5, -1.5, 0.0], np.float32)}, ["w"], 1.0)
    with pytest.raises(RuntimeError, match="not finite"):
        secure_update(arrays, {"w": np.array([np.nan, 0.0, 0.0], np.float32)}, ["w"], 1.0)


def test_the_server_refuses_what_a_secure_sum_cannot_do():
    check_config("mean", 0.0)
    with pytest.raises(ValueError, match="use aggregation = mean"):
        check_config("median", 0.0)
    with pytest.raises(ValueError, match="dp-clipping-norm"):
        check_config("mean", 1.0)
