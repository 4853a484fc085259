"""The ClientApp: one round at a site, handed to `lcm fed-step` as a subprocess.

Flower starts a new ClientApp process for every message, so nothing is kept in memory
between rounds: the site's optimiser state, data position and RNG live in its state
directory, owned by `lcm`. The ClientApp writes the received global model (tensors plus the
`meta.*` strings of the round's config) to a file, runs `lcm fed-step` with a timeout and
returns the local tensors and numbers only: examples, losses, seconds and the fingerprint
of the space the weights live in. Nothing of the site's text leaves it.

Per-site settings come from `flower-supernode --node-config`:
`lcm-bin`, `store`, `state-dir` (required), `normalizer`, `encoder`, `threads` (optional).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.app import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from . import safetensors_io
from .diloco import space_fingerprint
from .secure import KEY_NAMES, KEY_RANGE

#: The legacy layout of a secure-aggregation round (`secure.py`).
LEGACY_CONFIG = "fitins.config"


def clip_when_asked(msg: Message, context: Context, call_next) -> Message:
    """Flower's client-side `fixedclipping_mod` for the rounds whose config carries a
    clipping norm (differential privacy on); other rounds pass through unchanged."""
    if (
        msg.metadata.message_type == MessageType.TRAIN
        and "config" in msg.content.config_records
        and "clipping_norm" in msg.content["config"]
    ):
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def secure_when_asked(msg: Message, context: Context, call_next) -> Message:
    """Flower's `secaggplus_mod` for the messages of a SecAgg+ round (they carry its stage
    config); plain rounds pass through unchanged."""
    if msg.metadata.message_type == MessageType.TRAIN and RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


app = ClientApp(mods=[secure_when_asked, clip_when_asked])

#: Metric keys a reply carries (all numbers).
REPLY_METRICS = ("num-examples", "loss", "valid-loss", "seconds", "from-step", "to-step", "space-fp")


def fed_step_command(node: dict, global_path: Path, out: Path, steps: int, round_: int) -> list[str]:
    """The `lcm fed-step` call of a round at the site described by `node`."""
    command = [
        str(node["lcm-bin"]),
        "fed-step",
        "--global", str(global_path),
        "--store", str(node["store"]),
        "--state-dir", str(node["state-dir"]),
        "--steps", str(steps),
        "--round", str(round_),
        "--out", str(out),
    ]
    for key in ("normalizer", "encoder", "threads"):
        if node.get(key):
            command += [f"--{key}", str(node[key])]
    return command


def run_round(node: dict, arrays: dict, metadata: dict[str, str], steps: int, round_: int, timeout: float) -> tuple[dict, dict]:
    """Runs one round; returns (local tensors, numeric metrics). Raises with the reason on
    a failed or timed-out `lcm fed-step`."""
    state_dir = Path(node["state-dir"])
    state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=state_dir, prefix="round-") as tmp:
        global_path = Path(tmp) / "global.safetensors"
        out = Path(tmp) / "local.safetensors"
        safetensors_io.write(global_path, arrays, metadata)
        digest = hashlib.sha256(global_path.read_bytes()).hexdigest()
        with open(state_dir / "received.jsonl", "a") as log:
            log.write(json.dumps({"round": round_, "sha256": digest}) + "\n")
        command = fed_step_command(node, global_path, out, steps, round_)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"lcm fed-step timed out after {timeout:.0f}s") from err
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1][:500]
            raise RuntimeError(f"lcm fed-step exited with {done.returncode}: {last}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        local, local_meta = safetensors_io.read(out)
    metrics = {
        "num-examples": int(report["examples"]),
        "loss": float(report["loss"]),
        "valid-loss": float(report["valid_loss"]) if report.get("valid_loss") is not None else -1.0,
        "seconds": float(report["seconds"]),
        "from-step": int(report["from_step"]),
        "to-step": int(report["to_step"]),
        "space-fp": space_fingerprint(local_meta),
    }
    return local, metrics


def round_metadata(config) -> dict[str, str]:
    """The global model's metadata, sent as the round config's `meta.*` strings."""
    return {key[len("meta.") :]: str(value) for key, value in config.items() if key.startswith("meta.")}


def secure_update(arrays: dict, local: dict, names: list[str], clipping_range: float) -> list[np.ndarray]:
    """The site's update `local − global` in the order of `names`, refused (with the fix) if
    SecAgg+ would clip it."""
    update = [local[n].astype(np.float32) - arrays[n].astype(np.float32) for n in names]
    largest = max((float(np.max(np.abs(u))) for u in update if u.size), default=0.0)
    if not np.isfinite(largest):
        raise RuntimeError("the site's update is not finite")
    if largest > clipping_range:
        raise RuntimeError(
            f"the site's update reaches {largest:.3g}, beyond secagg-clipping-range = {clipping_range:g}: "
            "raise secagg-clipping-range (or take fewer local steps) so that SecAgg+ does not clip it"
        )
    return update


def train_legacy(msg: Message, context: Context, node: dict, timeout: float) -> Message:
    """A secure-aggregation round: legacy FitIns in, FitRes with the update out."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    config = fitins.config
    names = json.loads(str(config[KEY_NAMES]))
    arrays = dict(zip(names, parameters_to_ndarrays(fitins.parameters)))
    metadata = round_metadata(config)
    local, metrics = run_round(node, arrays, metadata, int(config["local-steps"]), int(config["round"]), timeout)
    if set(local) != set(names):
        raise RuntimeError("lcm fed-step returned other tensors than the global model's")
    update = secure_update(arrays, local, names, float(config[KEY_RANGE]))
    # num_examples 1: SecAgg+ weights by it, and the secure mean is unweighted (secure.py).
    fitres = FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters(update),
        num_examples=1,
        metrics={"lcm-examples": float(metrics["num-examples"]), "loss": metrics["loss"]},
    )
    return Message(content=compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    timeout = float(context.run_config.get("fed-step-timeout", 540.0))
    node = dict(context.node_config)
    os.environ.setdefault("RAYON_NUM_THREADS", str(node.get("threads", "") or os.cpu_count() or 1))
    if LEGACY_CONFIG in msg.content.config_records:
        return train_legacy(msg, context, node, timeout)
    config = msg.content["config"]
    arrays = {name: array.numpy() for name, array in msg.content["arrays"].items()}
    metadata = round_metadata(config)
    local, metrics = run_round(node, arrays, metadata, int(config["local-steps"]), int(config["round"]), timeout)
    content = RecordDict(
        {
            # In the order received: Flower's clipping mods compare the keys in order.
            "arrays": ArrayRecord({k: Array(local[k]) for k in arrays if k in local}),
            "metrics": MetricRecord(metrics),
        }
    )
    return Message(content=content, reply_to=msg)
