#!/usr/bin/env python3
"""Starts a whole federation on this machine and runs it: a stock `flower-superlink`, one
`flower-supernode` per site store (each with its own state directory), then `flwr run`
of the app in this folder. Everything it starts it stops again, by PID, also on failure.

    python federated/run_local.py --lcm target/release/lcm --work /tmp/fed \\
        --site store-a --site store-b --rounds 2 --local-steps 10 \\
        --init '--preset tiny --total-steps 20'

Loopback and insecure (no TLS, no node authentication): for trying and testing only; see
README.md ("Federated training") for how real sites join.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 30.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {seconds:.0f}s")


#: The running interpreter's environment, where Flower's executables are.
BIN_DIR = Path(sys.executable).absolute().parent


def flower_env(flwr_home: Path) -> dict:
    env = dict(os.environ)
    # The superlink and supernodes start further Flower executables by name.
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env.update(FLWR_HOME=str(flwr_home), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    return env


def tool(name: str) -> str:
    """A Flower executable of the running interpreter's environment."""
    candidate = BIN_DIR / name
    return str(candidate) if candidate.exists() else name


class Federation:
    """The processes of a local federation; `stop()` ends each one it started."""

    def __init__(
        self, work: Path, lcm: Path, sites: list[Path], normalizer: Path | None, threads: int, encoder: str | None = None
    ):
        self.work = work
        self.encoder = encoder
        self.lcm = lcm
        self.sites = sites
        self.normalizer = normalizer
        self.threads = threads
        self.flwr_home = work / "flwr-home"
        self.env = flower_env(self.flwr_home)
        self.superlink: subprocess.Popen | None = None
        self.supernodes: list[subprocess.Popen | None] = []
        self.port = free_port()
        self.logs = work / "logs"

    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / log_name, "ab")
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )

    def start_superlink(self) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "local-federation"\n\n'
            f'[superlink.local-federation]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        self.superlink = self._spawn(
            [
                tool("flower-superlink"),
                "--insecure",
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--database", str(self.work / "superlink.db"),
                "--disable-runtime-dependency-installation",
            ],
            "superlink.log",
        )
        wait_for_port(self.port, self.superlink)

    def site_state(self, index: int) -> Path:
        return self.work / f"site-{index}" / "state"

    def start_supernode(self, index: int) -> subprocess.Popen:
        node = {
            "lcm-bin": str(self.lcm),
            "store": str(self.sites[index]),
            "state-dir": str(self.site_state(index)),
            "threads": str(self.threads),
        }
        if self.normalizer is not None:
            node["normalizer"] = str(self.normalizer)
        if self.encoder is not None:
            node["encoder"] = self.encoder
        node_config = " ".join(f'{k}="{v}"' for k, v in node.items())
        process = self._spawn(
            [
                tool("flower-supernode"),
                "--insecure",
                "--superlink", f"127.0.0.1:{self.port}",
                "--port", str(free_port()),
                "--node-config", node_config,
            ],
            f"supernode-{index}.log",
        )
        while len(self.supernodes) <= index:
            self.supernodes.append(None)
        self.supernodes[index] = process
        return process

    def kill_supernode(self, index: int) -> None:
        process = self.supernodes[index]
        if process is not None:
            _stop(process, signal.SIGKILL)
            self.supernodes[index] = None

    def run(self, run_config: dict, timeout: float) -> subprocess.CompletedProcess:
        """`flwr run` of the app, its output streamed to logs/flwr-run.log, until the run ends."""
        overrides = " ".join(f"{k}={_toml(v)}" for k, v in run_config.items())
        command = [tool("flwr"), "run", str(APP_DIR), "local-federation", "--stream", "--run-config", overrides]
        with open(self.logs / "flwr-run.log", "ab") as log:
            return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=self.env, timeout=timeout, check=False)

    def flwr(self, *args: str) -> str:
        """Another `flwr` command against this federation's SuperLink; its standard output."""
        done = subprocess.run(
            [tool("flwr"), *args], capture_output=True, text=True, env=self.env, timeout=60, check=True
        )
        return done.stdout

    def stop(self) -> None:
        for process in self.supernodes:
            if process is not None:
                _stop(process, signal.SIGTERM)
        self.supernodes = []
        if self.superlink is not None:
            _stop(self.superlink, signal.SIGTERM)
            self.superlink = None


def _stop(process: subprocess.Popen, sig: int) -> None:
    """Ends a process we started and the children in its session (by its PID's group)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lcm", type=Path, required=True, help="the lcm binary")
    parser.add_argument("--work", type=Path, required=True, help="directory for state, checkpoints and logs")
    parser.add_argument("--site", type=Path, action="append", required=True, help="a site's concept store (repeat)")
    parser.add_argument("--normalizer", type=Path, help="the federation's normaliser (default: the first site's)")
    parser.add_argument("--init", default="", help="extra flags for `lcm fed-init` (e.g. '--preset tiny --total-steps 20')")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=10)
    parser.add_argument("--outer-lr", type=float, default=0.7)
    parser.add_argument("--outer-momentum", type=float, default=0.9)
    parser.add_argument("--aggregation", default="mean")
    parser.add_argument("--secure-aggregation", action="store_true", help="SecAgg+: the server sees only the mean update")
    parser.add_argument("--encoder", help="the sites' encoder (default: lcm's, minilm)")
    parser.add_argument("--threads", type=int, default=1, help="threads per site's lcm fed-step")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole run")
    args = parser.parse_args()

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    lcm = args.lcm.resolve()
    sites = [s.resolve() for s in args.site]
    normalizer = (args.normalizer or sites[0] / "normalizer.safetensors").resolve()
    initial = work / "global-0.safetensors"
    if not initial.exists():
        subprocess.run(
            [str(lcm), "fed-init", str(sites[0]), "--normalizer", str(normalizer), "--out", str(initial)]
            + shlex.split(args.init),
            check=True,
        )
    federation = Federation(work, lcm, sites, normalizer, args.threads, args.encoder)
    try:
        federation.start_superlink()
        for i in range(len(sites)):
            federation.start_supernode(i)
        done = federation.run(
            {
                "initial-global": str(initial),
                "checkpoint-dir": str(work / "server"),
                "num-server-rounds": args.rounds,
                "local-steps": args.local_steps,
                "outer-lr": args.outer_lr,
                "outer-momentum": args.outer_momentum,
                "aggregation": args.aggregation,
                "secure-aggregation": args.secure_aggregation,
                "min-train-nodes": len(sites),
                "min-available-nodes": len(sites),
            },
            args.timeout,
        )
    finally:
        federation.stop()
    print(f"flwr run exited with {done.returncode}; logs in {federation.logs}; global models in {work / 'server'}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
