"""Sentence segmentation speed: `lcm segment` next to pySBD on the same text.

Run through `bash bench/segment.sh` (it builds the release binary and the pinned pySBD venv).
Input: the default corpus' text (scripts/corpus/default.sh) concatenated, or, without it,
the licence texts under /usr/share/common-licenses, repeated to the size asked. `lcm segment`
is timed on the whole input (best of --repeat) with its peak memory; pySBD, far slower, on a
slice of --peer-mb, next to `lcm segment` on the same slice. Prints a markdown table.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def corpus_text(target_bytes: int) -> tuple[str, str]:
    home = Path(os.environ.get("LCM_HOME", Path.home() / ".lcm"))
    corpus = home / "corpus" / "default.jsonl"
    parts, source = [], ""
    if corpus.is_file():
        source = f"{corpus} (text of its documents)"
        with corpus.open(encoding="utf-8") as f:
            for line in f:
                parts.append(json.loads(line)["text"])
    else:
        source = "/usr/share/common-licenses (no default corpus found)"
        for path in sorted(Path("/usr/share/common-licenses").glob("*")):
            if path.is_file():
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
    base = "\n\n".join(parts)
    if not base:
        sys.exit("no input text found")
    text = base
    while len(text.encode()) < target_bytes:
        text += "\n\n" + base
    data = text.encode()[:target_bytes].decode("utf-8", errors="ignore")
    return data, source


def run_lcm(lcm: str, path: Path) -> tuple[float, int]:
    """Wall seconds and the sentence count of one `lcm segment` run."""
    start = time.perf_counter()
    out = subprocess.run([lcm, "segment", str(path)], check=True, capture_output=True).stdout
    return time.perf_counter() - start, out.count(b"\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lcm", required=True)
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--peer-mb", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "bench"
    work.mkdir(parents=True, exist_ok=True)
    text, source = corpus_text(int(args.mb * 1e6))
    full = work / "segment_input.txt"
    full.write_text(text, encoding="utf-8")
    peer_text = text.encode()[: int(args.peer_mb * 1e6)].decode("utf-8", errors="ignore")
    slice_path = work / "segment_slice.txt"
    slice_path.write_text(peer_text, encoding="utf-8")

    runs = [run_lcm(args.lcm, full) for _ in range(args.repeat)]
    lcm_seconds = min(s for s, _ in runs)
    lcm_sentences = runs[0][1]
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    lcm_slice = min(run_lcm(args.lcm, slice_path) for _ in range(args.repeat))

    import pysbd

    segmenter = pysbd.Segmenter(language="en", clean=False)
    start = time.perf_counter()
    peer_sentences = len(segmenter.segment(peer_text))
    peer_seconds = time.perf_counter() - start

    mb = len(text.encode()) / 1e6
    peer_mb = len(peer_text.encode()) / 1e6
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        platform.processor(),
    )
    print(f"Input: {source}; {datetime.date.today()}; {cpu}, {os.cpu_count()} cores; pysbd {pysbd.__version__}\n")
    print("| segmenter | input | sentences | seconds | MB/s | peak RSS | ratio |")
    print("|---|---|---|---|---|---|---|")
    print(f"| lcm segment | {mb:.1f} MB | {lcm_sentences:,} | {lcm_seconds:.2f} | {mb / lcm_seconds:.1f} | {peak_kib / 1024:.0f} MiB | |")
    print(f"| lcm segment | {peer_mb:.2f} MB | {lcm_slice[1]:,} | {lcm_slice[0]:.3f} | {peer_mb / lcm_slice[0]:.2f} | | {peer_seconds / lcm_slice[0]:.0f}× pySBD |")
    print(f"| pySBD (en, clean=False) | {peer_mb:.2f} MB | {peer_sentences:,} | {peer_seconds:.2f} | {peer_mb / peer_seconds:.3f} | | 1 |")


if __name__ == "__main__":
    main()
