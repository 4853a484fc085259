"""The outer optimiser, aggregation, screening and checkpoints, without Flower."""

import math

import numpy as np
import pytest

from lcm_federated import safetensors_io
from lcm_federated.diloco import (
    Checkpoints,
    OuterSgd,
    aggregate,
    outer_round,
    pseudo_gradients,
    screen,
    space_fingerprint,
)


def arrays(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return {"a": (scale * rng.standard_normal((3, 4))).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}


def test_fedavg_is_the_weighted_mean_of_the_local_models():
    g = arrays(0)
    locals_ = [arrays(1), arrays(2), arrays(3)]
    weights = [10.0, 30.0, 60.0]
    new = outer_round(g, locals_, weights, OuterSgd(lr=1.0, momentum=0.0))
    for name in g:
        expected = sum(w * l[name].astype(np.float64) for w, l in zip(weights, locals_)) / 100.0
        np.testing.assert_allclose(new[name], expected, rtol=1e-6, atol=1e-7)


def test_one_site_fedavg_returns_its_local_model():
    g, local = arrays(0), arrays(1)
    new = outer_round(g, [local], [7.0], OuterSgd(lr=1.0, momentum=0.0))
    for name in g:
        np.testing.assert_array_equal(new[name], local[name])


def test_nesterov_matches_pytorch_sgd_by_hand():
    # torch.optim.SGD(nesterov=True, dampening=0): buf = mu*buf + g; step = g + mu*buf.
    lr, mu = 0.7, 0.9
    theta = {"w": np.array([1.0, -2.0], dtype=np.float32)}
    grads = [np.array([0.5, 0.25]), np.array([-1.0, 0.5]), np.array([0.2, 0.2])]
    opt = OuterSgd(lr=lr, momentum=mu)
    expected = np.array([1.0, -2.0])
    buf = None
    for g in grads:
        buf = g.copy() if buf is None else mu * buf + g
        expected = expected - lr * (g + mu * buf)
        theta = opt.step(theta, {"w": g})
    np.testing.assert_allclose(theta["w"], expected, rtol=1e-6)
    np.testing.assert_allclose(opt.velocity["w"], buf)
    # Heavy ball (not Nesterov) takes another path: the test can tell them apart.
    heavy = OuterSgd(lr=lr, momentum=mu, nesterov=False)
    t = {"w": np.array([1.0, -2.0], dtype=np.float32)}
    for g in grads:
        t = heavy.step(t, {"w": g})
    assert not np.allclose(t["w"], theta["w"])


def test_pseudo_gradient_is_global_minus_local():
    g, local = arrays(0), arrays(1)
    d = pseudo_gradients(g, local)
    np.testing.assert_allclose(d["a"], g["a"].astype(np.float64) - local["a"])


@pytest.mark.parametrize("attack", ["scaled", "sign-flipped"])
def test_robust_aggregation_resists_a_malicious_site_that_the_mean_does_not(attack):
    rng = np.random.default_rng(5)
    true = rng.standard_normal(1000)
    honest = [{"w": true + 0.05 * rng.standard_normal(1000)} for _ in range(4)]
    bad = {"w": 100.0 * true} if attack == "scaled" else {"w": -true}
    updates = honest + [bad]
    weights = [1.0] * 5
    err = {}
    for method in ("mean", "median", "trimmed-mean"):
        agg = aggregate(updates, weights, method, trim_fraction=0.2)["w"]
        err[method] = np.linalg.norm(agg - true) / np.linalg.norm(true)
    assert err["median"] < 0.1 and err["trimmed-mean"] < 0.1, err
    assert err["mean"] > 0.3, err


def test_trimming_that_leaves_nothing_is_refused():
    with pytest.raises(ValueError, match="leaves none"):
        aggregate([{"w": np.zeros(2)}] * 2, [1, 1], "trimmed-mean", trim_fraction=0.5)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate([{"w": np.zeros(2)}], [1], "krum")


def test_screening_names_the_reason():
    g = arrays(0)
    fp = 1234
    assert screen(g, arrays(1), 10, fp, fp) is None
    assert "another embedding space" in screen(g, arrays(1), 10, 99, fp)
    nan = arrays(1)
    nan["a"][0, 0] = np.nan
    assert "non-finite" in screen(g, nan, 10, fp, fp)
    shaped = arrays(1)
    shaped["b"] = np.zeros(6, np.float32)
    assert "has shape [6], expected [5]" in screen(g, shaped, 10, fp, fp)
    missing = arrays(1)
    del missing["a"]
    assert "missing" in screen(g, missing, 10, fp, fp)
    extra = dict(arrays(1), c=np.zeros(1, np.float32))
    assert "not part of the model" in screen(g, extra, 10, fp, fp)
    assert "num-examples" in screen(g, arrays(1), 0, fp, fp)


def test_space_fingerprint_depends_on_every_space_key():
    meta = {"lcm.encoder_id": "e@1", "lcm.normalizer_hash": "h", "lcm.model_config": "{}"}
    base = space_fingerprint(meta)
    assert base == space_fingerprint(dict(meta))
    assert base < 2**48
    for key in meta:
        assert space_fingerprint(dict(meta, **{key: "other"})) != base


def test_safetensors_round_trip_keeps_tensors_and_metadata(tmp_path):
    t = arrays(3)
    safetensors_io.write(tmp_path / "x.safetensors", t, {"lcm.format": "lcm-federated/1"})
    back, meta = safetensors_io.read(tmp_path / "x.safetensors")
    assert meta == {"lcm.format": "lcm-federated/1"}
    for name in t:
        np.testing.assert_array_equal(back[name], t[name])


def test_checkpoints_resume_the_newest_round_with_its_momentum(tmp_path):
    ck = Checkpoints(tmp_path / "server", keep_last=2)
    assert ck.latest() is None
    opt = OuterSgd()
    g = arrays(0)
    for r in range(1, 4):
        g = outer_round(g, [arrays(r)], [1.0], opt)
        ck.save(r, g, {"lcm.format": "lcm-federated/1"}, opt)
    # A save killed before its rename leaves a .tmp directory that is never loaded.
    (tmp_path / "server" / "round-000009.tmp").mkdir()
    round_, back, meta, velocity = ck.latest()
    assert round_ == 3 and meta["lcm.format"] == "lcm-federated/1"
    for name in g:
        np.testing.assert_array_equal(back[name], g[name])
        np.testing.assert_array_equal(velocity[name], opt.velocity[name])
    assert sorted(p.name for p in (tmp_path / "server").glob("round-*[0-9]")) == ["round-000002", "round-000003"]


def test_gaussian_epsilon_matches_the_closed_form_of_its_rdp_bound():
    # min over α of rα/(2σ²) + L/(α−1) is r/(2σ²) + √(2rL)/σ (at α = 1 + σ√(2L/r)).
    from lcm_federated.diloco import gaussian_epsilon

    for sigma, rounds in ((1.0, 1), (2.0, 10), (5.0, 100)):
        L = math.log(1e5)
        closed = rounds / (2 * sigma**2) + math.sqrt(2 * rounds * L) / sigma
        assert gaussian_epsilon(sigma, rounds, 1e-5) == pytest.approx(closed, rel=1e-3)
    assert gaussian_epsilon(1.0, 20, 1e-5) > gaussian_epsilon(1.0, 10, 1e-5)
    assert gaussian_epsilon(2.0, 10, 1e-5) < gaussian_epsilon(1.0, 10, 1e-5)
    assert gaussian_epsilon(0.0, 3, 1e-5) == math.inf


def test_clip_scales_long_updates_to_the_norm_and_keeps_short_ones():
    from lcm_federated.diloco import clip, global_norm

    long = {"a": np.full(4, 3.0), "b": np.full(3, 4.0)}
    assert global_norm(clip(long, 2.0)) == pytest.approx(2.0)
    short = {"a": np.array([0.1, 0.2])}
    np.testing.assert_array_equal(clip(short, 2.0)["a"], short["a"])
