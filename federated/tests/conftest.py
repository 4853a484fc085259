"""Shared fixtures: the `lcm` binary and source-split site stores prepared with the tiny
test encoder from the committed corpus sample, one of them holding a canary sentence."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parents[1]
REPO = APP_DIR.parent
sys.path.insert(0, str(APP_DIR))

TINY_BERT = REPO / "fixtures" / "encoder" / "tiny-bert"
CORPUS = REPO / "fixtures" / "corpus" / "sample.jsonl"
#: Placed only in site 0's corpus; must never leave that site. Drawn afresh on every run,
#: so no file can hold it unless it came from the site's data.
CANARY_TOKEN = secrets.token_hex(12)
CANARY = f"The lighthouse keeper wrote {CANARY_TOKEN} in the violet ledger."
#: Sources of each site (the committed sample holds these).
SITES = (("austen", "sotu"), ("mobydick", "web"))


def lcm_binary() -> Path:
    path = Path(os.environ.get("LCM_BIN", REPO / "target" / "debug" / "lcm"))
    if not path.exists():
        pytest.fail(f"no lcm binary at {path}: run `cargo build -p lcm-cli` or set LCM_BIN")
    return path


def lcm_env() -> dict:
    env = dict(os.environ)
    env.update(RAYON_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("RUST_LOG", None)
    return env


def run_lcm(*args) -> str:
    done = subprocess.run([str(lcm_binary()), *map(str, args)], capture_output=True, text=True, env=lcm_env())
    assert done.returncode == 0, f"lcm {args[0]} failed: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def sites(tmp_path_factory) -> list[Path]:
    """Site stores split by source; site 0 also holds the canary; the federation's
    normaliser is site 0's (sites/normalizer.safetensors)."""
    root = tmp_path_factory.mktemp("sites")
    docs = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    stores = []
    for i, sources in enumerate(SITES):
        mine = [d for d in docs if d["source"] in sources]
        assert mine, f"the sample has no documents of {sources}"
        if i == 0:
            mine.append({"id": "canary/1", "source": "canary", "text": CANARY + " " + mine[0]["text"]})
        corpus = root / f"site-{i}.jsonl"
        corpus.write_text("".join(json.dumps(d) + "\n" for d in mine))
        store = root / f"store-{i}"
        run_lcm("prepare", corpus, "--out", store, "--encoder", TINY_BERT, "--quiet", "--threads", "1")
        stores.append(store)
    run_lcm("fit-normalizer", stores[0], "--out", root / "normalizer.safetensors")
    return stores


@pytest.fixture(scope="session")
def normalizer(sites) -> Path:
    return sites[0].parent / "normalizer.safetensors"


def fed_init(out: Path, store: Path, normalizer: Path, total_steps: int) -> Path:
    run_lcm(
        "fed-init", store, "--normalizer", normalizer, "--out", out,
        "--preset", "tiny", "--total-steps", total_steps, "--max-concepts", 64,
        "--valid-fraction", 0.2, "--lr", 3e-3,
    )
    return out


def federation(sites, normalizer, work: Path, total_steps: int):
    """A loopback federation of `sites` in `work` (created) and its first global model."""
    from run_local import Federation

    work.mkdir()
    initial = fed_init(work / "global-0.safetensors", sites[0], normalizer, total_steps=total_steps)
    return Federation(work, lcm_binary(), sites, normalizer, threads=1, encoder=str(TINY_BERT)), initial


def run_config(initial: Path, server: Path, *, rounds: int, local_steps: int, min_train_nodes: int = 2,
               round_timeout: float = 120.0, **extra) -> dict:
    """The run config of a two-site loopback run from `initial`, checkpointing to `server`;
    `extra` adds keys (with `_` for `-`, e.g. `dp_clipping_norm=1.0`)."""
    return {
        "initial-global": str(initial),
        "checkpoint-dir": str(server),
        "num-server-rounds": rounds,
        "local-steps": local_steps,
        "min-train-nodes": min_train_nodes,
        "min-available-nodes": 2,
        "round-timeout": round_timeout,
        **{key.replace("_", "-"): value for key, value in extra.items()},
    }


def run_to_end(fed, config: dict, timeout: float = 240) -> tuple[subprocess.CompletedProcess, str]:
    """Starts the superlink and one supernode per site, runs the app to its end, stops
    everything; returns `flwr run`'s result and its log."""
    try:
        fed.start_superlink()
        for i in range(len(fed.sites)):
            fed.start_supernode(i)
        done = fed.run(config, timeout=timeout)
    finally:
        fed.stop()
    return done, (fed.work / "logs" / "flwr-run.log").read_text(errors="replace")
