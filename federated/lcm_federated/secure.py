"""Secure aggregation: DiLoCo's outer step on the SecAgg+ sum of the sites' updates.

In flwr 1.42, SecAgg+ exists only as a legacy-API workflow (`SecAggPlusWorkflow` inside a
`DefaultWorkflow`, driven by a `LegacyContext` and a legacy `Strategy`), and its client half
(`secaggplus_mod`) expects the legacy FitIns / FitRes message layout. So with
`secure-aggregation = true` the ServerApp runs that workflow with `SecureDiLoCo` below, and the
ClientApp answers the round in the legacy layout (`client_app.train`).

What changes against the plain path, by construction of SecAgg+:
- the server sees only the masked sum, so it cannot screen or reject one site's update, and
  median / trimmed mean are impossible: only `aggregation = mean` is accepted;
- sites send their update `local − global` (not their weights), clipped to
  `[−secagg-clipping-range, secagg-clipping-range]` and quantised to
  `secagg-quantization-range` levels; the resolution is 2·range / levels per coordinate;
- the mean is unweighted (every site counts once): SecAgg+ quantises weight × update, so a
  weight below its `max_weight` costs resolution in proportion. DiLoCo averages its workers
  the same way.
The outer step, checkpoints and resume are the plain path's.
"""

from __future__ import annotations

import json
from logging import INFO, WARNING

import numpy as np
from flwr.common import (
    EvaluateIns,
    FitIns,
    FitRes,
    Parameters,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.logger import log
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from .diloco import Checkpoints, OuterSgd

#: Config key of the tensor names, in the order of the legacy `Parameters` list.
KEY_NAMES = "tensor-names"
#: Config key of the clipping range, so a site refuses an update SecAgg+ would clip.
KEY_RANGE = "secagg-clipping-range"


def check_config(aggregation: str, dp_clipping_norm: float) -> None:
    """Refuses what the secure sum cannot do, with the reason."""
    if aggregation != "mean":
        raise ValueError(
            f"secure-aggregation reveals only the sum of the updates: aggregation {aggregation!r} "
            "needs each one; use aggregation = mean"
        )
    if dp_clipping_norm > 0:
        raise ValueError(
            "secure-aggregation with dp-clipping-norm is not supported: the server-side DP noise "
            "here needs each site's clipped update; turn one of them off"
        )


class SecureDiLoCo(Strategy):
    """DiLoCo's outer step on the mean update that SecAgg+ reveals, as a legacy strategy."""

    def __init__(
        self,
        *,
        arrays: dict[str, np.ndarray],
        metadata: dict[str, str],
        optimizer: OuterSgd,
        checkpoints: Checkpoints | None,
        local_steps: int,
        round_offset: int = 0,
        min_train_nodes: int = 2,
        min_available_nodes: int = 2,
        clipping_range: float = 1.0,
    ) -> None:
        super().__init__()
        self.clipping_range = clipping_range
        self.names = sorted(arrays)
        self.initial = arrays
        self.metadata = metadata
        self.optimizer = optimizer
        self.checkpoints = checkpoints
        self.local_steps = local_steps
        self.round_offset = round_offset
        self.min_train_nodes = min_train_nodes
        self.min_available_nodes = min_available_nodes
        self.current: dict[str, np.ndarray] = {}

    def _parameters(self, arrays: dict[str, np.ndarray]) -> Parameters:
        return ndarrays_to_parameters([np.ascontiguousarray(arrays[n], dtype=np.float32) for n in self.names])

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self._parameters(self.initial)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        self.current = dict(zip(self.names, parameters_to_ndarrays(parameters)))
        config = {
            "round": self.round_offset + server_round,
            "local-steps": self.local_steps,
            KEY_NAMES: json.dumps(self.names),
            KEY_RANGE: self.clipping_range,
            **{f"meta.{k}": v for k, v in self.metadata.items()},
        }
        wanted = max(client_manager.num_available(), self.min_available_nodes)
        clients = client_manager.sample(num_clients=wanted, min_num_clients=self.min_available_nodes)
        return [(client, FitIns(parameters, dict(config))) for client in clients]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures):
        round_ = self.round_offset + server_round
        if len(results) < max(1, self.min_train_nodes):
            log(
                WARNING,
                "round %s: %s sites in the secure sum, below the quorum of %s; the global model is unchanged",
                round_,
                len(results),
                self.min_train_nodes,
            )
            return None, {}
        # Every FitRes carries the same unmasked mean (SecAgg+ replaced each site's vector).
        mean_update = parameters_to_ndarrays(results[0][1].parameters)
        if len(mean_update) != len(self.names) or any(
            u.shape != self.current[n].shape for n, u in zip(self.names, mean_update)
        ):
            log(WARNING, "round %s: the secure sum has the wrong tensors; the global model is unchanged", round_)
            return None, {}
        if not all(np.all(np.isfinite(u)) for u in mean_update):
            log(WARNING, "round %s: the secure sum is not finite; the global model is unchanged", round_)
            return None, {}
        # The pseudo-gradient is global − local: the negated mean update.
        gradient = {n: -u.astype(np.float64) for n, u in zip(self.names, mean_update)}
        new = self.optimizer.step(self.current, gradient)
        examples = [float(res.metrics.get("lcm-examples", 0.0)) for _, res in results]
        total = sum(examples)
        losses = [float(res.metrics.get("loss", 0.0)) for _, res in results]
        summary = {
            "num-examples": total,
            "sites-accepted": len(results),
            "sites-rejected": len(failures),
            "loss": sum(l * e for l, e in zip(losses, examples)) / total if total > 0 else float("nan"),
            "secure-aggregation": 1,
        }
        if self.checkpoints is not None:
            path = self.checkpoints.save(round_, new, self.metadata, self.optimizer, summary)
            log(INFO, "round %s: checkpointed %s", round_, path)
        return self._parameters(new), summary

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        return []

    def aggregate_evaluate(self, server_round: int, results, failures):
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters):
        return None


def run(grid, context, *, strategy: SecureDiLoCo, num_rounds: int, round_timeout: float) -> None:
    """Runs `num_rounds` rounds of SecAgg+ with `strategy` (run config `secagg-*` keys)."""
    cfg = context.run_config
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=num_rounds, round_timeout=round_timeout),
        strategy=strategy,
    )
    secagg = SecAggPlusWorkflow(
        # Shares of each site's key and how many of them rebuild it, as fractions of the
        # sites in the round (Flower rounds them; 1.0 / 1.0 with two sites).
        num_shares=float(cfg.get("secagg-num-shares", 1.0)),
        reconstruction_threshold=float(cfg.get("secagg-reconstruction-threshold", 1.0)),
        # Every site sends weight 1 (an unweighted mean): no resolution lost to the weight.
        max_weight=1.0,
        clipping_range=strategy.clipping_range,
        quantization_range=int(cfg.get("secagg-quantization-range", 1 << 22)),
        timeout=round_timeout,
    )
    DefaultWorkflow(fit_workflow=secagg)(grid, legacy)
