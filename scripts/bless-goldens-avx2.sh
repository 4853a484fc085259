#!/usr/bin/env bash
# Re-blesses the pinned CLI outputs of AVX2-only hosts (crates/cli/tests/golden/avx2/) on a
# host with AVX-512, by running the test and every `lcm` it spawns under qemu-user with an
# AVX2 + FMA CPU model (Haswell): feature detection then picks the same kernels (gemm's
# and ours) as on a real AVX2 machine, and TCG's AVX2/FMA arithmetic is IEEE-exact.
#
#   bash scripts/bless-goldens-avx2.sh                 # eval / generate / plan-cases (~3 min)
#   bash scripts/bless-goldens-avx2.sh wm_eval         # the world-model table (slow: >30 min)
#   CHECK=1 bash scripts/bless-goldens-avx2.sh ...     # compare instead of writing
#
# Regenerate only for an intended change (tests/pinned.rs says why the goldens exist).
# Needs qemu-user (apt-get install qemu-user). The test binary has the path of `lcm` baked
# in; a copy with that path rewritten (same length) to a wrapper that runs `lcm` under qemu
# is what runs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FILTER="${1:-eval_generate_and_plan}"
command -v qemu-x86_64 >/dev/null || { echo "error: qemu-x86_64 not found: apt-get install qemu-user" >&2; exit 1; }

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
TEST_BIN="$(cargo test -p lcm-cli --test pinned --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "pinned" and m.get("executable"):
        print(m["executable"])')"
LCM_BIN="$TARGET/debug/lcm"
[ -x "$TEST_BIN" ] && [ -x "$LCM_BIN" ] || { echo "error: test binary or $LCM_BIN missing" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp "$LCM_BIN" "$WORK/lcm.real"
# A wrapper directory whose path has exactly the length of the baked-in one.
WRAP_DIR="$WORK/w"
PAD=$(( ${#LCM_BIN} - ${#WRAP_DIR} - 4 ))
[ "$PAD" -ge 1 ] || { echo "error: the target path is too short to rewrite" >&2; exit 1; }
WRAP_DIR="$WRAP_DIR$(printf 'x%.0s' $(seq 1 "$PAD"))"
mkdir -p "$WRAP_DIR"
printf '#!/bin/sh\nexec qemu-x86_64 -cpu Haswell-v4 %s "$@" 2>>%s\n' "$WORK/lcm.real" "$WORK/lcm.stderr" >"$WRAP_DIR/lcm"
chmod +x "$WRAP_DIR/lcm"
python3 - "$TEST_BIN" "$LCM_BIN" "$WRAP_DIR/lcm" "$WORK/pinned" <<'PY'
import sys
src, old, new, dst = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode(), sys.argv[4]
assert len(old) == len(new), (old, new)
data = open(src, "rb").read()
assert data.count(old) == 1, f"expected the lcm path once in {src}, found {data.count(old)}"
open(dst, "wb").write(data.replace(old, new))
PY
chmod +x "$WORK/pinned"
if [ "${CHECK:-0}" = 1 ]; then unset LCM_BLESS; else export LCM_BLESS=1; fi
cd crates/cli
qemu-x86_64 -cpu Haswell-v4 "$WORK/pinned" "$FILTER" --test-threads 1 2>&1 | grep -v 'TCG doesn.t support'
git -C "$ROOT" status --short crates/cli/tests/golden
