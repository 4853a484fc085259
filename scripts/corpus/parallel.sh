#!/usr/bin/env bash
# Build the multilingual parallel corpus as OUT_DIR/parallel-bible.jsonl and
# OUT_DIR/parallel-debian.jsonl.
#
#   scripts/corpus/parallel.sh [OUT_DIR]      (default: ${LCM_HOME:-$HOME/.lcm}/corpus)
#
# Sources (all pinned, sha256-verified, cached in OUT_DIR/.cache/):
#   Bible verses: World English Bible and King James Version (en), Reina-Valera 1909 (es)
#   from Debian's sword-text-* packages, aligned by verse reference;
#   Debian package descriptions (DDTP): English and da it fr de pt_BR ja ko uk pl ru cs es
#   zh_CN from the bookworm 12.15 archive's Translation-* indexes, aligned exactly by the
#   md5 of the English description.
# See scripts/corpus/README.md for licences, the output schema and the counts.
# Needs: bash, python3 (>= 3.8, standard library only), Debian's apt-get/dpkg-deb, and HTTP
# access to deb.debian.org (override with DEBIAN_MIRROR).  Installs libsword-utils (for
# mod2imp) with apt-get when it is missing, which needs root or sudo.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${1:-${LCM_HOME:-$HOME/.lcm}/corpus}"
CACHE="$OUT_DIR/.cache"
DL="$CACHE/downloads"
EX="$CACHE/extract"
PYTHON="${PYTHON:-python3}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
START=$(date +%s)

# ---- helpers (shared with summarisation.sh) ------------------------------------------------
SCRIPT=parallel.sh
# shellcheck source=debian-fetch.sh
. "$HERE/debian-fetch.sh"

# ---- pinned sources: name | version | sha256 | file name ---------------------------------
SWORD_DEBS=(
  "sword-text-web|426.0-1|930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1|sword-text-web_426.0-1_all.deb"
  "sword-text-kjv|14.3-1|9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57|sword-text-kjv_14.3-1_all.deb"
  "sword-text-sparv|2.60-1|5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf|sword-text-sparv_2.60-1_all.deb"
)
# module name inside each package, and the variant it becomes
SWORD_MODULES=(
  "sword-text-web|engWEB2015eb|en-web"
  "sword-text-kjv|engKJV2006eb|en-kjv"
  "sword-text-sparv|spaRV1909eb|es-rv1909"
)
# Debian 12.15 (bookworm, archive date 2026-07-11) main/i18n indexes: language | sha256 | file
# (the checksums of the archive's signed InRelease)
TRANSLATIONS=(
  "$TRANSLATION_EN"
  "da|2e721d886e2830ab7dfd2c57142bbcbdcca936a17f06c8354cdbcb1bd38c479d|Translation-da.bz2"
  "it|f01a5f14992838ff8140da6e025c514c900c4f55d3169d5ef1710ed2deee2bde|Translation-it.bz2"
  "fr|3248f0206d704300067e35cc2d4380dc1f1b418b5b9f446c3d42424b98d0abad|Translation-fr.bz2"
  "de|2cc65c7f8b85d8a2964c3735bbf86be79bfd3342ef8908150e268137fe5dac7f|Translation-de.bz2"
  "pt_BR|5b4b88bc3b09834b5579688c2e98bc14fb9005950c6e428001f47a010828b465|Translation-pt_BR.bz2"
  "ja|faae0d44702fdb794a53aa689e1334d9b1ecd96f9d042b89bd67fa97a86e7c6c|Translation-ja.bz2"
  "ko|154cb892046314435ce8e427debe4fb7176f18a0f215ba188581b428e0c0a1e1|Translation-ko.bz2"
  "uk|38cae54127841ee549148a76d84db30ce134590bee0622acdf778ebd4eab00d7|Translation-uk.bz2"
  "pl|99eef280a61a345b59c4958f9ecd680d157084b165d62392a30d94eca3bae86a|Translation-pl.bz2"
  "ru|ab6fafa41c806fc3189dd41767dfa4202bd8e80e9d0286f85b00bafadb620ec7|Translation-ru.bz2"
  "cs|af8d54fc9af9c3a72dfc9b937e33a38c977903f76ad33629860ac4493000b9c8|Translation-cs.bz2"
  "es|b093780b45057500d70ffaa61aaf2ec4ccb7cca2f7af7a678e79e0a5f49ab81f|Translation-es.bz2"
  "zh_CN|00b02957001a5061887e3af4a6800e2ac6739e6a04b55e54db90cf2c5c2539e3|Translation-zh_CN.bz2"
)
# mod2imp and the libraries Debian 12 does not already have (amd64), as in default.sh
TOOL_DEBS_AMD64=(
  "libclucene-core1v5|2.3.3.4+dfsg-1.1|1ff60c48f57ff22f3895579a6099ab47ca9f12baca85344866a245faaa40f71c|libclucene-core1v5_2.3.3.4+dfsg-1.1_amd64.deb"
  "libsword-common|1.9.0+dfsg-4|3bf0fc6153a7927abf8125342240c01ba10ca242497dc329475a54523f722873|libsword-common_1.9.0+dfsg-4_all.deb"
  "libsword1.9.0|1.9.0+dfsg-4+b4|07e8e129333230caea3d3a934c564a94a60980905df9488a246140d6241e2063|libsword1.9.0_1.9.0+dfsg-4+b4_amd64.deb"
  "libsword-utils|1.9.0+dfsg-4+b4|12cdc75de6efebc711fc39fe784f62361f4c817654158c744e424c1b2c35e8a6|libsword-utils_1.9.0+dfsg-4+b4_amd64.deb"
)

# ---- checks --------------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "python3 not found"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 8))' || die "python3 >= 3.8 needed"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (a Debian system is needed)"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found (a Debian system is needed)"
mkdir -p "$DL" "$EX" "$CACHE/i18n"

# ---- downloads -----------------------------------------------------------------------------
for spec in "${SWORD_DEBS[@]}"; do
  IFS='|' read -r name ver sha file <<<"$spec"
  fetch_deb "$name" "$ver" "$sha" "$file"
  unpack_deb "$file" "$sha" "$name"
done
TR_ARGS=()
for spec in "${TRANSLATIONS[@]}"; do
  lang="${spec%%|*}"
  plain="$(fetch_translation "$spec")"
  TR_ARGS+=("--translation-$(echo "$lang" | tr 'A-Z' 'a-z')" "$plain")
done

# ---- mod2imp (libsword-utils) --------------------------------------------------------------
if ! command -v mod2imp >/dev/null 2>&1; then
  if [ "$(dpkg --print-architecture)" = amd64 ]; then
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
    log "warning: no pinned libsword-utils for $(dpkg --print-architecture); installing Debian's current one"
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libsword-utils >/dev/null \
      || die "could not install libsword-utils"
  fi
  command -v mod2imp >/dev/null 2>&1 || die "mod2imp still not found after installing libsword-utils"
fi

# ---- export the pinned modules (not any system-wide one) ---------------------------------------
SWHOME="$(mktemp -d)"
trap 'rm -rf "$SWHOME"' EXIT
BIBLE_ARGS=()
for spec in "${SWORD_MODULES[@]}"; do
  IFS='|' read -r pkg module variant <<<"$spec"
  root="$EX/$pkg/usr/share/sword"
  [ -f "$root/mods.d/$module.conf" ] || die "$module not found under $root"
  imp="$CACHE/$variant-$module.imp"
  log "mod2imp $module"
  (cd "$root" && HOME="$SWHOME" SWORD_PATH="$root" mod2imp "$module") > "$imp.tmp" 2>"$CACHE/mod2imp-$module.log" \
    || die "mod2imp failed; see $CACHE/mod2imp-$module.log"
  [ -s "$imp.tmp" ] || die "mod2imp produced no output; see $CACHE/mod2imp-$module.log"
  mv "$imp.tmp" "$imp"
  BIBLE_ARGS+=("--$variant" "$imp")
done

# ---- build ---------------------------------------------------------------------------------
"$PYTHON" "$HERE/parallel.py" build "${BIBLE_ARGS[@]}" "${TR_ARGS[@]}" --out-dir "$OUT_DIR"
log "done in $(( $(date +%s) - START )) s: $OUT_DIR/parallel-bible.jsonl, $OUT_DIR/parallel-debian.jsonl"
