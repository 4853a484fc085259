"""The ServerApp: DiLoCo's outer step as a Flower strategy over `lcm` global model files.

The first global model comes from `lcm fed-init` (run config `initial-global`); its
metadata (encoder id, normaliser hash, model and training configuration) travels to every
site in the round's ConfigRecord as `meta.*` strings, the tensors as the ArrayRecord. Every
round the strategy screens the replies (another space, wrong names or shapes, non-finite
values, no examples: refused with the reason logged), aggregates the pseudo-gradients and
takes the outer step, then checkpoints the global model and the momentum atomically under
`checkpoint-dir`. A restarted ServerApp resumes from the newest checkpoint.
"""

from __future__ import annotations

from logging import INFO, WARNING
from typing import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from . import safetensors_io, secure
from .diloco import (
    AGGREGATIONS,
    Checkpoints,
    OuterSgd,
    add_noise,
    aggregate,
    clip,
    gaussian_epsilon,
    pseudo_gradients,
    screen,
    space_fingerprint,
)

#: The config key Flower's `fixedclipping_mod` reads the clipping norm from.
KEY_CLIPPING_NORM = "clipping_norm"

app = ServerApp()


class DiLoCo(FedAvg):
    """FedAvg's sampling and messaging; DiLoCo's outer step instead of its average."""

    def __init__(
        self,
        *,
        metadata: dict[str, str],
        optimizer: OuterSgd,
        checkpoints: Checkpoints | None,
        local_steps: int,
        aggregation: str = "mean",
        trim_fraction: float = 0.2,
        round_offset: int = 0,
        min_train_nodes: int = 2,
        min_available_nodes: int = 2,
        dp_clipping_norm: float = 0.0,
        dp_noise_multiplier: float = 0.0,
        dp_delta: float = 1e-5,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=min_train_nodes,
            min_available_nodes=min_available_nodes,
        )
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.metadata = metadata
        self.fingerprint = space_fingerprint(metadata)
        self.optimizer = optimizer
        self.checkpoints = checkpoints
        self.local_steps = local_steps
        self.aggregation = aggregation
        self.trim_fraction = trim_fraction
        self.round_offset = round_offset
        if dp_clipping_norm > 0 and aggregation != "mean":
            raise ValueError("differential privacy needs aggregation = mean (its noise is calibrated to the mean)")
        self.dp_clipping_norm = dp_clipping_norm
        self.dp_noise_multiplier = dp_noise_multiplier
        self.dp_delta = dp_delta
        self.dp_rounds = round_offset
        self.rng = np.random.default_rng(seed)
        self.current: dict[str, np.ndarray] = {}
        self.rejected: list[tuple[int, int, str]] = []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        self.current = {name: array.numpy() for name, array in arrays.items()}
        config["round"] = self.round_offset + server_round
        config["local-steps"] = self.local_steps
        for key, value in self.metadata.items():
            config[f"meta.{key}"] = value
        if self.dp_clipping_norm > 0:
            config[KEY_CLIPPING_NORM] = self.dp_clipping_norm
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        round_ = self.round_offset + server_round
        accepted, weights, reports = [], [], []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                self._reject(round_, node, f"the site failed: {msg.error.reason}")
                continue
            content = msg.content
            if len(content.array_records) != 1 or len(content.metric_records) != 1:
                self._reject(round_, node, "expected one ArrayRecord and one MetricRecord")
                continue
            local = {k: v.numpy() for k, v in next(iter(content.array_records.values())).items()}
            metrics = next(iter(content.metric_records.values()))
            examples = float(metrics.get("num-examples", 0))
            why = screen(self.current, local, examples, float(metrics.get("space-fp", -1)), self.fingerprint)
            if why is not None:
                self._reject(round_, node, why)
                continue
            accepted.append(local)
            weights.append(examples)
            reports.append(metrics)
        if len(accepted) < max(1, self.min_train_nodes):
            log(
                WARNING,
                "round %s: %s acceptable updates, below the quorum of %s; the global model is unchanged",
                round_,
                len(accepted),
                self.min_train_nodes,
            )
            return None, None
        grads = [pseudo_gradients(self.current, local) for local in accepted]
        dp = {}
        if self.dp_clipping_norm > 0:
            # Clipped again here so the sensitivity holds even for a site without the mod;
            # the unweighted mean, so that one site moves it by at most C/n.
            grads = [clip(g, self.dp_clipping_norm) for g in grads]
            mean = aggregate(grads, [1.0] * len(grads), "mean")
            std = self.dp_noise_multiplier * self.dp_clipping_norm / len(grads)
            gradient = add_noise(mean, std, self.rng) if std > 0 else mean
            self.dp_rounds += 1
            dp = {"dp-epsilon": gaussian_epsilon(self.dp_noise_multiplier, self.dp_rounds, self.dp_delta)}
            log(INFO, "round %s: (ε = %.3g, δ = %g)-DP at the level of a site's update", round_, dp["dp-epsilon"], self.dp_delta)
        else:
            gradient = aggregate(grads, weights, self.aggregation, self.trim_fraction)
        new = self.optimizer.step(self.current, gradient)
        total = sum(weights)
        summary = {
            "num-examples": total,
            "sites-accepted": len(accepted),
            "sites-rejected": sum(1 for r in self.rejected if r[0] == round_),
            "loss": sum(float(m.get("loss", 0.0)) * w for m, w in zip(reports, weights)) / total,
            **dp,
        }
        if self.checkpoints is not None:
            path = self.checkpoints.save(round_, new, self.metadata, self.optimizer, summary)
            log(INFO, "round %s: checkpointed %s", round_, path)
        return ArrayRecord({k: _array(v) for k, v in new.items()}), MetricRecord(summary)

    def _reject(self, round_: int, node: int, why: str) -> None:
        self.rejected.append((round_, node, why))
        log(WARNING, "round %s: update of node %s rejected: %s", round_, node, why)


def _flag(value) -> bool:
    """A run-config boolean (`true`, or 1 / "true" from older configs)."""
    return value is True or str(value).lower() in ("1", "true", "yes")


def _array(values: np.ndarray):
    from flwr.app import Array

    return Array(np.ascontiguousarray(values, dtype=np.float32))


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    num_rounds = int(cfg["num-server-rounds"])
    checkpoints = Checkpoints(cfg["checkpoint-dir"]) if cfg.get("checkpoint-dir") else None
    optimizer = OuterSgd(lr=float(cfg["outer-lr"]), momentum=float(cfg["outer-momentum"]))
    resumed = checkpoints.latest() if checkpoints is not None else None
    if resumed is not None:
        done, arrays, metadata, velocity = resumed
        optimizer.velocity = velocity
        log(INFO, "resuming after round %s from %s", done, checkpoints.dir)
    else:
        done = 0
        arrays, metadata = safetensors_io.read(cfg["initial-global"])
        if checkpoints is not None:
            checkpoints.save(0, arrays, metadata, optimizer)
    if done >= num_rounds:
        log(INFO, "all %s rounds are done", num_rounds)
        return
    if _flag(cfg.get("secure-aggregation", False)):
        secure.check_config(str(cfg["aggregation"]), float(cfg.get("dp-clipping-norm", 0.0)))
        strategy = secure.SecureDiLoCo(
            arrays=arrays,
            metadata=metadata,
            optimizer=optimizer,
            checkpoints=checkpoints,
            local_steps=int(cfg["local-steps"]),
            round_offset=done,
            min_train_nodes=int(cfg["min-train-nodes"]),
            min_available_nodes=int(cfg["min-available-nodes"]),
            clipping_range=float(cfg.get("secagg-clipping-range", 1.0)),
        )
        secure.run(grid, context, strategy=strategy, num_rounds=num_rounds - done, round_timeout=float(cfg["round-timeout"]))
        return
    strategy = DiLoCo(
        metadata=metadata,
        optimizer=optimizer,
        checkpoints=checkpoints,
        local_steps=int(cfg["local-steps"]),
        aggregation=str(cfg["aggregation"]),
        trim_fraction=float(cfg["trim-fraction"]),
        round_offset=done,
        min_train_nodes=int(cfg["min-train-nodes"]),
        min_available_nodes=int(cfg["min-available-nodes"]),
        dp_clipping_norm=float(cfg.get("dp-clipping-norm", 0.0)),
        dp_noise_multiplier=float(cfg.get("dp-noise-multiplier", 0.0)),
        dp_delta=float(cfg.get("dp-delta", 1e-5)),
    )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({k: _array(v) for k, v in arrays.items()}),
        num_rounds=num_rounds - done,
        timeout=float(cfg["round-timeout"]),
    )
