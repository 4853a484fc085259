"""The DiLoCo strategy's aggregate_train on replies as Flower hands them over (duck-typed
messages: a node id, an error or a RecordDict): bad replies are rejected with their reason,
the rest aggregated into the outer step and checkpointed."""

from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from lcm_federated.diloco import Checkpoints, OuterSgd, outer_round, space_fingerprint
from lcm_federated.server_app import DiLoCo

META = {"lcm.encoder_id": "e@1", "lcm.normalizer_hash": "h", "lcm.model_config": "{}"}
FP = space_fingerprint(META)


def reply(node, arrays=None, examples=10, fp=FP, error=None):
    if error is not None:
        return SimpleNamespace(
            metadata=SimpleNamespace(src_node_id=node), has_error=lambda: True, error=SimpleNamespace(reason=error)
        )
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": examples, "loss": 1.0, "space-fp": fp}),
        }
    )
    return SimpleNamespace(metadata=SimpleNamespace(src_node_id=node), has_error=lambda: False, content=content)


def test_bad_replies_are_rejected_with_their_reason_and_the_rest_aggregated(tmp_path):
    rng = np.random.default_rng(0)
    current = {"w": rng.standard_normal((2, 3)).astype(np.float32)}
    good = [{"w": current["w"] + 0.1 * rng.standard_normal((2, 3)).astype(np.float32)} for _ in range(2)]
    nan = {"w": np.full((2, 3), np.nan, np.float32)}
    shaped = {"w": np.zeros((3, 2), np.float32)}
    checkpoints = Checkpoints(tmp_path / "server")
    strategy = DiLoCo(
        metadata=META, optimizer=OuterSgd(), checkpoints=checkpoints, local_steps=5, round_offset=4, min_train_nodes=2
    )
    strategy.current = current
    arrays, metrics = strategy.aggregate_train(
        1,
        [
            reply(1, good[0], examples=10),
            reply(2, good[1], examples=30),
            reply(3, nan),
            reply(4, shaped),
            reply(5, good[0], fp=FP + 1),
            reply(6, error="lcm fed-step timed out after 540s"),
        ],
    )
    reasons = {node: why for round_, node, why in strategy.rejected}
    assert all(round_ == 5 for round_, _, _ in strategy.rejected)
    assert "non-finite" in reasons[3]
    assert "has shape [3, 2], expected [2, 3]" in reasons[4]
    assert "another embedding space" in reasons[5]
    assert "timed out" in reasons[6]
    assert set(reasons) == {3, 4, 5, 6}
    expected = outer_round(current, good, [10, 30], OuterSgd())
    np.testing.assert_allclose(arrays["w"].numpy(), expected["w"], rtol=1e-6)
    assert metrics["sites-accepted"] == 2 and metrics["sites-rejected"] == 4
    assert metrics["num-examples"] == 40
    round_, saved, meta, velocity = checkpoints.latest()
    assert round_ == 5 and meta == META
    np.testing.assert_array_equal(saved["w"], arrays["w"].numpy())
    assert "w" in velocity


def test_a_round_without_acceptable_updates_keeps_the_global_model(tmp_path):
    strategy = DiLoCo(metadata=META, optimizer=OuterSgd(), checkpoints=None, local_steps=5, min_train_nodes=1)
    strategy.current = {"w": np.zeros(2, np.float32)}
    arrays, metrics = strategy.aggregate_train(1, [reply(1, {"w": np.zeros(3)})])
    assert arrays is None and metrics is None
    assert strategy.rejected and strategy.optimizer.velocity == {}


def test_a_round_below_the_quorum_keeps_the_global_model():
    strategy = DiLoCo(metadata=META, optimizer=OuterSgd(), checkpoints=None, local_steps=5, min_train_nodes=3)
    strategy.current = {"w": np.zeros(2, np.float32)}
    good = {"w": np.ones(2, np.float32)}
    arrays, metrics = strategy.aggregate_train(1, [reply(1, good), reply(2, good)])
    assert arrays is None and metrics is None
    strategy.min_train_nodes = 2
    arrays, _ = strategy.aggregate_train(2, [reply(1, good), reply(2, good)])
    assert arrays is not None


def test_differential_privacy_clips_each_update_and_adds_calibrated_noise():
    from lcm_federated.diloco import clip, gaussian_epsilon

    n, dim, c = 4, 20_000, 0.5
    rng = np.random.default_rng(1)
    current = {"w": np.zeros(dim, np.float32)}
    locals_ = [{"w": rng.standard_normal(dim).astype(np.float32)} for _ in range(n)]
    replies = [reply(i, l, examples=10 * (i + 1)) for i, l in enumerate(locals_)]
    # No noise: the outer step of the unweighted mean of the clipped pseudo-gradients.
    quiet = DiLoCo(metadata=META, optimizer=OuterSgd(lr=1.0, momentum=0.0), checkpoints=None,
                   local_steps=1, min_train_nodes=1, dp_clipping_norm=c)
    quiet.current = current
    arrays, metrics = quiet.aggregate_train(1, replies)
    clipped = [clip({"w": current["w"] - l["w"]}, c)["w"] for l in locals_]
    np.testing.assert_allclose(arrays["w"].numpy(), -np.mean(clipped, axis=0), rtol=1e-5, atol=1e-7)
    assert metrics["dp-epsilon"] == float("inf")
    # Noise of std σ·C/n on top, and ε reported for the rounds so far.
    noisy = DiLoCo(metadata=META, optimizer=OuterSgd(lr=1.0, momentum=0.0), checkpoints=None,
                   local_steps=1, min_train_nodes=1, dp_clipping_norm=c, dp_noise_multiplier=2.0, seed=3)
    noisy.current = current
    arrays2, metrics2 = noisy.aggregate_train(1, replies)
    noise = arrays2["w"].numpy() - arrays["w"].numpy()
    assert np.std(noise) == pytest.approx(2.0 * c / n, rel=0.05)
    assert metrics2["dp-epsilon"] == pytest.approx(gaussian_epsilon(2.0, 1, 1e-5))
    noisy.aggregate_train(2, replies)
    assert noisy.dp_rounds == 2
    with pytest.raises(ValueError, match="aggregation = mean"):
        DiLoCo(metadata=META, optimizer=OuterSgd(), checkpoints=None, local_steps=1,
               aggregation="median", dp_clipping_norm=1.0)
