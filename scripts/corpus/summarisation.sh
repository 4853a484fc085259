#!/usr/bin/env bash
# Build the summarisation pairs of issue 17 item 5 as OUT_DIR/summarisation/*.jsonl.
#
#   scripts/corpus/summarisation.sh [OUT_DIR]   (default: ${LCM_HOME:-$HOME/.lcm}/corpus)
#
# Sources (pinned, sha256-verified, cached in OUT_DIR/.cache/ — the cache parallel.sh uses):
#   Debian package descriptions: the bookworm 12.15 English DDTP index (Translation-en),
#   long description -> one-line synopsis;
#   man pages of Debian's manpages and manpages-dev 6.03-2 (downloaded and unpacked, never
#   installed): DESCRIPTION section -> the NAME line's description.
# Writes debian-{train,test}.jsonl, debian5-{train,test}.jsonl (long descriptions of >= 5
# sentences), man-{train,test}.jsonl and counts.json; the held-out split is by package (see
# summarisation.py).  Regenerate the committed test sample with
#   python3 scripts/corpus/summarisation.py sample --in-dir OUT_DIR/summarisation \
#     --out-dir fixtures/corpus/summarisation-sample
# Needs: bash, python3 (>= 3.8, standard library only), Debian's apt-get/dpkg-deb, HTTP access
# to deb.debian.org (override with DEBIAN_MIRROR).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${1:-${LCM_HOME:-$HOME/.lcm}/corpus}"
CACHE="$OUT_DIR/.cache"
DL="$CACHE/downloads"
EX="$CACHE/extract"
PYTHON="${PYTHON:-python3}"
START=$(date +%s)
SCRIPT=summarisation.sh
# shellcheck source=debian-fetch.sh
. "$HERE/debian-fetch.sh"

# name | version | sha256 | file (bookworm; the sha256 of the archive's Packages index)
MAN_DEBS=(
  "manpages|6.03-2|efa1ba4cd19ad7baeae959c9209a7eb74be2ebb858bcabb412597bfc9f588c91|manpages_6.03-2_all.deb"
  "manpages-dev|6.03-2|96f55cb5e26231d5567c89b692bced63825a14a2d5bd18fdf16ea2ed44eb9838|manpages-dev_6.03-2_all.deb"
)

command -v "$PYTHON" >/dev/null 2>&1 || die "python3 not found"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (a Debian system is needed)"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found (a Debian system is needed)"
mkdir -p "$DL" "$EX" "$OUT_DIR/summarisation"

translation_en="$(fetch_translation "$TRANSLATION_EN")"
MAN_ARGS=()
for spec in "${MAN_DEBS[@]}"; do
  IFS='|' read -r name ver sha file <<<"$spec"
  fetch_deb "$name" "$ver" "$sha" "$file"
  unpack_deb "$file" "$sha" "$name"
  MAN_ARGS+=(--man-root "$name=$EX/$name")
done

"$PYTHON" "$HERE/summarisation.py" build --translation-en "$translation_en" "${MAN_ARGS[@]}" \
  --out-dir "$OUT_DIR/summarisation"
log "done in $(( $(date +%s) - START )) s: $OUT_DIR/summarisation/"
