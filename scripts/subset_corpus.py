#!/usr/bin/env python3
"""Seeded per-source subset of a JSONL corpus ({"id", "source", "text"} per line).

Keeps each document with probability --fraction, drawn per source with one seeded RNG so
every source keeps its share of documents. Used for the generation-quality measurement of
EVALUATION.md (issue 17 items 2 and 4) when preparing the whole default corpus is too slow.

    python3 scripts/subset_corpus.py ~/.lcm/corpus/default.jsonl out.jsonl --fraction 0.2 --seed 17
"""
import argparse
import collections
import json
import random
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("out")
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    if not 0.0 < args.fraction <= 1.0:
        parser.error("--fraction must be in (0, 1]")
    rng = random.Random(args.seed)
    kept = collections.Counter()
    total = collections.Counter()
    with open(args.corpus, encoding="utf-8") as src, open(args.out, "w", encoding="utf-8") as dst:
        for line_no, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"{args.corpus}:{line_no}: not JSON ({e})", file=sys.stderr)
                return 1
            source = doc.get("source", "-")
            total[source] += 1
            if rng.random() < args.fraction:
                kept[source] += 1
                dst.write(line if line.endswith("\n") else line + "\n")
    for source in sorted(total):
        print(f"{source}\t{kept[source]}/{total[source]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
