# Shared helpers of the Debian-sourced corpus scripts (parallel.sh, summarisation.sh): pinned,
# sha256-verified downloads of .deb files (apt-get download, never installed unless a script
# says so) and of archive files, unpacking, and the bookworm 12.15 English DDTP index.
#
# Source it after setting SCRIPT (the caller's name, for messages), DL (downloads), EX
# (extracted packages), CACHE and PYTHON; MIRROR defaults to deb.debian.org.
# shellcheck shell=bash

MIRROR="${MIRROR:-${DEBIAN_MIRROR:-http://deb.debian.org/debian}}"

# Debian 12.15 (bookworm, archive date 2026-07-11) English descriptions index: lang | sha256 |
# file (the checksum of the archive's signed InRelease)
TRANSLATION_EN="en|a3d4a0bfd8e9242810b0885eda7c1a6e05dac15b333ddbaab03ba56f2dfa4bf0|Translation-en.xz"

die() { echo "$SCRIPT: error: $*" >&2; exit 1; }
log() { echo "$SCRIPT: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "root (or sudo) is needed to run: $*"; fi
}
APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
}
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
verify() {  # file sha256: a mismatching file is moved aside and we stop
  local file="$1" want="$2" got
  got="$(sha256_of "$file")"
  if [ "$got" != "$want" ]; then
    mv -f "$file" "$file.bad"
    die "sha256 mismatch for $(basename "$file"):
  expected $want
  got      $got
The file was moved to $file.bad.  For the Translation-* indexes this means Debian published
a new bookworm point release (the indexes change with it); do not update the pinned
checksums without reviewing the new files against the archive's signed InRelease."
  fi
}
fetch_deb() {  # name version sha file
  local name="$1" ver="$2" sha="$3" file="$4"
  if [ ! -f "$DL/$file" ]; then
    log "apt-get download $name=$ver"
    local sandbox=()
    [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
    if ! (cd "$DL" && apt-get "${sandbox[@]}" -qq download "$name=$ver" 2>/dev/null); then
      apt_update_once
      (cd "$DL" && apt-get "${sandbox[@]}" -qq download "$name=$ver") \
        || die "apt-get download $name=$ver failed (is this Debian 12 'bookworm' with that version available?)"
    fi
    [ -f "$DL/$file" ] || die "apt-get download $name=$ver did not produce $file"
  fi
  verify "$DL/$file" "$sha"
}
fetch_url() {  # url sha file
  local url="$1" sha="$2" file="$3"
  if [ ! -f "$DL/$file" ]; then
    log "download $url"
    "$PYTHON" - "$url" "$DL/$file.part" <<'PY' || die "download of $url failed"
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=300) as r, open(sys.argv[2], 'wb') as f:
    f.write(r.read())
PY
    mv "$DL/$file.part" "$DL/$file"
  fi
  verify "$DL/$file" "$sha"
}
unpack_deb() {  # file sha dir
  local file="$1" sha="$2" dir="$EX/$3"
  if [ -f "$dir/.sha256" ] && [ "$(cat "$dir/.sha256")" = "$sha" ]; then return; fi
  rm -rf "$dir" "$dir.tmp"
  mkdir -p "$dir.tmp"
  dpkg-deb -x "$DL/$file" "$dir.tmp"
  echo "$sha" > "$dir.tmp/.sha256"
  mv "$dir.tmp" "$dir"
}
# fetch_translation "lang|sha|file": downloads, verifies and decompresses one bookworm 12.15
# Translation-* index to $CACHE/i18n/Translation-<lang>; prints that path.
fetch_translation() {
  local lang sha file plain
  IFS='|' read -r lang sha file <<<"$1"
  mkdir -p "$CACHE/i18n"
  fetch_url "$MIRROR/dists/bookworm/main/i18n/$file" "$sha" "bookworm-12.15-$file"
  plain="$CACHE/i18n/Translation-$lang"
  if [ ! -f "$plain.sha256" ] || [ "$(cat "$plain.sha256")" != "$sha" ]; then
    "$PYTHON" - "$DL/bookworm-12.15-$file" "$plain" <<'PY' || die "decompressing $file failed"
import bz2, lzma, os, sys
src, dst = sys.argv[1], sys.argv[2]
opener = lzma.open if src.endswith('.xz') else bz2.open
with opener(src, 'rb') as f, open(dst + '.tmp', 'wb') as g:
    g.write(f.read())
os.replace(dst + '.tmp', dst)
PY
    echo "$sha" > "$plain.sha256"
  fi
  echo "$plain"
}
