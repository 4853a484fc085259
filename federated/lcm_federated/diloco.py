"""DiLoCo's outer optimiser on numpy, independent of Flower (unit-tested on its own).

- `aggregate`: the pseudo-gradients of the sites (global − local) combined by a mean
  weighted by examples, a coordinate-wise median or a coordinate-wise trimmed mean.
- `OuterSgd`: SGD with Nesterov momentum on the aggregated pseudo-gradient, with PyTorch's
  semantics (as DiLoCo, arXiv 2311.08105, uses it): `v ← μ·v + g`, step `g + μ·v`
  (Nesterov) or `v`, `θ ← θ − lr·step`. FedAvg is lr 1, μ 0: θ becomes the weighted
  mean of the local models.
- `screen`: the reasons an update is refused (another space, missing or extra tensors,
  other shapes, non-finite values, no examples), each worded for the log.
- `clip` / `gaussian_epsilon`: differential privacy at the level of a site's whole update
  (client-side fixed clipping to norm C, Gaussian noise of std σ·C/n on the mean of the n
  clipped pseudo-gradients), and the ε it spends after r rounds at a given δ (Rényi DP of
  the Gaussian mechanism composed r times, every site in every round: no subsampling).
- `Checkpoints`: the global model, the outer momentum and the round, written atomically
  every round; `latest()` is what a restarted ServerApp resumes from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import safetensors_io

AGGREGATIONS = ("mean", "median", "trimmed-mean")
SPACE_KEYS = ("lcm.encoder_id", "lcm.normalizer_hash", "lcm.model_config")

Arrays = dict[str, np.ndarray]


def space_fingerprint(metadata: dict[str, str]) -> int:
    """A number naming the embedding space and model of a global file's metadata (48 bits
    of SHA-256, exact in a float): what a ClientApp returns instead of strings."""
    text = "\n".join(metadata.get(key, "") for key in SPACE_KEYS)
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def aggregate(
    updates: list[Arrays], weights: list[float], method: str = "mean", trim_fraction: float = 0.2
) -> Arrays:
    """Combines updates (same names and shapes) coordinate by coordinate, in float64.

    `mean` weights each update by its weight; `median` and `trimmed-mean` ignore the weights
    (a site could inflate its count), the trimmed mean dropping ⌊trim·n⌋ values at each end.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {method!r}; use one of {AGGREGATIONS}")
    if not updates:
        raise ValueError("nothing to aggregate")
    total = float(sum(weights))
    if method == "mean" and not (total > 0 and math.isfinite(total)):
        raise ValueError(f"the weights sum to {total}")
    out = {}
    for name in updates[0]:
        stack = np.stack([u[name].astype(np.float64) for u in updates])
        if method == "mean":
            w = np.asarray(weights, dtype=np.float64).reshape((-1,) + (1,) * (stack.ndim - 1))
            out[name] = (stack * w).sum(axis=0) / total
        elif method == "median":
            out[name] = np.median(stack, axis=0)
        else:
            k = int(math.floor(trim_fraction * len(updates)))
            if 2 * k >= len(updates):
                raise ValueError(f"trimming {k} of {len(updates)} updates at each end leaves none")
            ordered = np.sort(stack, axis=0)
            out[name] = ordered[k : len(updates) - k].mean(axis=0)
    return out


@dataclass
class OuterSgd:
    """SGD with (Nesterov) momentum on pseudo-gradients."""

    lr: float = 0.7
    momentum: float = 0.9
    nesterov: bool = True
    velocity: Arrays = field(default_factory=dict)

    def step(self, params: Arrays, gradient: Arrays) -> Arrays:
        new = {}
        for name, theta in params.items():
            g = gradient[name].astype(np.float64)
            if self.momentum != 0.0:
                v = self.velocity.get(name)
                v = g.copy() if v is None else self.momentum * v.astype(np.float64) + g
                self.velocity[name] = v
                direction = g + self.momentum * v if self.nesterov else v
            else:
                direction = g
            new[name] = (theta.astype(np.float64) - self.lr * direction).astype(np.float32)
        return new


def pseudo_gradients(global_arrays: Arrays, local: Arrays) -> Arrays:
    """global − local, in float64."""
    return {k: global_arrays[k].astype(np.float64) - local[k].astype(np.float64) for k in global_arrays}


def outer_round(
    global_arrays: Arrays,
    locals_: list[Arrays],
    weights: list[float],
    optimizer: OuterSgd,
    method: str = "mean",
    trim_fraction: float = 0.2,
) -> Arrays:
    """One outer step from the sites' local models."""
    grads = [pseudo_gradients(global_arrays, local) for local in locals_]
    return optimizer.step(global_arrays, aggregate(grads, weights, method, trim_fraction))


def screen(global_arrays: Arrays, local: Arrays, examples: float, fingerprint: float, expected_fp: int) -> str | None:
    """Why an update must not be aggregated, or None when it may."""
    if int(fingerprint) != expected_fp:
        return (
            f"update from another embedding space or model (fingerprint {int(fingerprint):x}, "
            f"expected {expected_fp:x})"
        )
    missing = sorted(set(global_arrays) - set(local))
    if missing:
        return f"tensor {missing[0]} is missing ({len(missing)} missing)"
    extra = sorted(set(local) - set(global_arrays))
    if extra:
        return f"tensor {extra[0]} is not part of the model"
    for name, theta in global_arrays.items():
        if local[name].shape != theta.shape:
            return f"tensor {name} has shape {list(local[name].shape)}, expected {list(theta.shape)}"
        if not np.all(np.isfinite(local[name])):
            return f"tensor {name} holds non-finite values"
    if not (math.isfinite(examples) and examples > 0):
        return f"num-examples is {examples}"
    return None


def global_norm(arrays: Arrays) -> float:
    return math.sqrt(sum(float(np.sum(np.square(a.astype(np.float64)))) for a in arrays.values()))


def clip(update: Arrays, norm: float) -> Arrays:
    """`update` scaled down to global ℓ2 norm `norm` if it is longer (Flower's FlatClip)."""
    length = global_norm(update)
    scale = min(1.0, norm / length) if length > 0 else 1.0
    return {k: v.astype(np.float64) * scale for k, v in update.items()}


def add_noise(mean: Arrays, std: float, rng: np.random.Generator) -> Arrays:
    return {k: v + rng.normal(0.0, std, size=v.shape) for k, v in mean.items()}


def gaussian_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """ε after `rounds` releases of the Gaussian mechanism with noise multiplier σ (std over
    sensitivity), at δ: min over orders α of r·α/(2σ²) + ln(1/δ)/(α − 1)."""
    if noise_multiplier <= 0 or rounds <= 0:
        return math.inf if rounds > 0 else 0.0
    orders = np.concatenate([np.linspace(1.01, 10, 900), np.linspace(10, 10_000, 20_000)])
    rdp = rounds * orders / (2 * noise_multiplier**2)
    return float(np.min(rdp + math.log(1 / delta) / (orders - 1)))


class Checkpoints:
    """`round-N/` directories (global.safetensors with the space metadata, momentum.safetensors,
    state.json with the round's summary: sites accepted and rejected, examples, loss), each
    written as `round-N.tmp/` and renamed whole, then `latest` updated."""

    def __init__(self, directory: str | os.PathLike, keep_last: int = 3):
        self.dir = Path(directory)
        self.keep_last = keep_last

    def save(
        self, round_: int, arrays: Arrays, metadata: dict[str, str], optimizer: OuterSgd, summary: dict | None = None
    ) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"round-{round_:06d}"
        tmp = self.dir / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        safetensors_io.write(tmp / "global.safetensors", arrays, metadata)
        safetensors_io.write(tmp / "momentum.safetensors", optimizer.velocity, {})
        state = {
            "round": round_,
            "outer_lr": optimizer.lr,
            "outer_momentum": optimizer.momentum,
            "summary": summary or {},
        }
        (tmp / "state.json").write_text(json.dumps(state))
        final = self.dir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer = self.dir / "latest.tmp"
        pointer.write_text(name + "\n")
        os.replace(pointer, self.dir / "latest")
        rounds = sorted(p for p in self.dir.glob("round-*") if p.is_dir() and not p.name.endswith(".tmp"))
        for old in rounds[: max(0, len(rounds) - self.keep_last)]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def latest(self) -> tuple[int, Arrays, dict[str, str], Arrays] | None:
        """(round, global arrays, metadata, momentum) of the newest complete round."""
        rounds = sorted(p for p in self.dir.glob("round-*") if p.is_dir() and not p.name.endswith(".tmp"))
        if not rounds:
            return None
        newest = rounds[-1]
        state = json.loads((newest / "state.json").read_text())
        arrays, metadata = safetensors_io.read(newest / "global.safetensors")
        velocity, _ = safetensors_io.read(newest / "momentum.safetensors")
        return int(state["round"]), arrays, metadata, velocity
