#!/usr/bin/env python3
"""Register drift from `lcm eval-generation --json-out` files (issue 17 item 4).

For every (model, setting): the share of generated sentences retrieved from a document of
--register (default `web`, the World English Bible) among continuations of prompts from
*other* sources (drift into that register), the same share among prompts *from* it, and
the share of generated sentences in the prompt's own register. Prints a markdown table.

    python3 scripts/generation_registers.py out/tt.json out/tt-mix.json --register web
"""
import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--register", default="web")
    args = parser.parse_args()
    reg = args.register
    print(f"| model | g | S | {reg} share, other prompts % | {reg} share, {reg} prompts % | own register % | sentences (other / {reg} prompts) |")
    print("|---|---|---|---|---|---|---|")
    for path in args.files:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 1
        for s in doc["settings"]:
            gens = s.get("generations")
            if gens is None:
                print(f"{path}: no generations (write it with --json-out)", file=sys.stderr)
                return 1
            other = [r for g in gens if g["source"] != reg for r in g["registers"]]
            own = [r for g in gens if g["source"] == reg for r in g["registers"]]
            same = sum(r == g["source"] for g in gens for r in g["registers"])
            total = sum(len(g["registers"]) for g in gens)

            def pct(a, b):
                return f"{100 * a / b:.1f}" if b else "–"

            g = s["guidance_scale"]
            st = s["ddim_steps"]
            print(
                f"| {s['model']} | {'–' if g is None else g} | {'–' if st is None else st} "
                f"| {pct(sum(r == reg for r in other), len(other))} "
                f"| {pct(sum(r == reg for r in own), len(own))} "
                f"| {pct(same, total)} | {len(other)} / {len(own)} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
