#!/usr/bin/env bash
# Regenerate the committed test sample from the default corpus:
#   fixtures/corpus/sample.jsonl   4 documents per public-domain source (Brown excluded: not public domain) (the ones with the smallest
#                                  sha256(id) among documents of at most 12,000 bytes)
#   fixtures/corpus/sample-txt/    3 plain-text files (a few paragraphs each)
#
#   scripts/corpus/sample.sh [CORPUS_JSONL]   (default: ${LCM_HOME:-$HOME/.lcm}/corpus/default.jsonl;
#                                              built with default.sh first if missing)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CORPUS="${1:-${LCM_HOME:-$HOME/.lcm}/corpus/default.jsonl}"
PYTHON="${PYTHON:-python3}"
if [ ! -f "$CORPUS" ]; then
  "$HERE/default.sh" "$(dirname "$CORPUS")"
fi
"$PYTHON" "$HERE/corpus.py" sample --corpus "$CORPUS" \
  --out-jsonl "$REPO/fixtures/corpus/sample.jsonl" \
  --out-txt "$REPO/fixtures/corpus/sample-txt" \
  --per-source 4 --max-doc-bytes 12000 --txt-sources web,austen,mobydick --exclude-sources brown
