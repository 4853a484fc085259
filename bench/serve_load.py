"""Load test of `lcm serve` next to sentence-transformers behind a minimal Python server.

Run through `bash bench/serve.sh`. Both servers embed with all-MiniLM-L6-v2 on the same
machine and answer the same JSON API (`POST /embed {"inputs": [...]}` → rows); the same
client — N concurrent connections (threads with keep-alive) sending requests of K held-out
style sentences for S seconds — measures each in turn: requests/s, sentences/s, p50/p99
latency, and failed or lost requests (a wrong status, a malformed body, a wrong row count).

The peer is what a Python user would write: `http.server.ThreadingHTTPServer` calling
`SentenceTransformer.encode` on each request (under a lock: one forward at a time, torch using
the cores inside it), pinned in target/bench-venv (bench/setup.sh).
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


def sentences(count: int) -> list[str]:
    home = Path(os.environ.get("LCM_HOME", Path.home() / ".lcm"))
    corpus = home / "corpus" / "default.jsonl"
    out: list[str] = []
    if corpus.is_file():
        with corpus.open(encoding="utf-8") as f:
            for line in f:
                for s in json.loads(line)["text"].replace("\n", " ").split(". "):
                    s = s.strip()
                    if 20 <= len(s) <= 300:
                        out.append(s + ".")
                if len(out) >= count:
                    break
    while len(out) < count:
        out.append(f"Fallback sentence number {len(out)} about the sea and a whale.")
    return out[:count]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"server on port {port} did not become ready")


def load(port: int, pool: list[str], clients: int, per_request: int, seconds: float) -> dict:
    deadline = time.time() + seconds
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = c
        local: list[float] = []
        bad = 0
        while time.time() < deadline:
            batch = [pool[(i * per_request + k) % len(pool)] for k in range(per_request)]
            body = json.dumps({"inputs": batch})
            start = time.perf_counter()
            try:
                conn.request("POST", "/embed", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                rows = json.loads(payload)
                ok = response.status == 200 and len(rows) == per_request and len(rows[0]) == 384
            except (OSError, ValueError, http.client.HTTPException):
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if ok:
                local.append(time.perf_counter() - start)
            else:
                bad += 1
            i += clients
        with lock:
            latencies.extend(local)
            failures[0] += bad

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    pct = lambda p: latencies[min(n - 1, int(n * p))] * 1e3 if n else float("nan")
    return {
        "requests": n,
        "failed": failures[0],
        "rps": n / wall,
        "sps": n * per_request / wall,
        "p50": pct(0.5),
        "p99": pct(0.99),
        "mean": statistics.fmean(latencies) * 1e3 if n else float("nan"),
    }


PEER = r'''
import json, sys, threading, torch
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from sentence_transformers import SentenceTransformer
torch.set_num_threads(int(sys.argv[3]))
model = SentenceTransformer(sys.argv[2], device="cpu")
lock = threading.Lock()
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def reply(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.reply(200, {"status": "ok"})
    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        inputs = request["inputs"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        with lock:
            rows = model.encode(inputs, batch_size=32, normalize_embeddings=True)
        self.reply(200, rows.tolist())
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lcm", required=True)
    parser.add_argument("--model-dir", required=True, help="all-MiniLM-L6-v2 folder")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-request", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    pool = sentences(4000)
    results = {}
    for name in ["lcm serve", "sentence-transformers + http.server"]:
        port = free_port()
        if name == "lcm serve":
            command = [args.lcm, "serve", "--port", str(port), "--encoder", args.model_dir,
                       "--threads", str(args.threads), "--max-queue", "1024"]
        else:
            command = [sys.executable, "-c", PEER, str(port), args.model_dir, str(args.threads)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_ready(port)
            load(port, pool, args.clients, args.per_request, 2.0)  # warm-up
            results[name] = load(port, pool, args.clients, args.per_request, args.seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)
    import sentence_transformers, torch
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"{datetime.date.today()}; {cpu}, {os.cpu_count()} cores; {args.clients} clients × "
          f"{args.per_request} sentences per request for {args.seconds:.0f} s; torch {torch.__version__}, "
          f"sentence-transformers {sentence_transformers.__version__}\n")
    print("| server | requests/s | sentences/s | p50 ms | p99 ms | failed or lost |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['rps']:.0f} | {r['sps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['failed']} |")
    a, b = results["lcm serve"], results["sentence-transformers + http.server"]
    print(f"\nratio lcm/peer: throughput {a['rps'] / b['rps']:.2f}×, p50 latency {b['p50'] / a['p50']:.2f}× lower")


if __name__ == "__main__":
    main()
