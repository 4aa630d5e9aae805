# shellcheck shell=bash
# Helpers for scripts/*. Source this file; do not run it.

# The repository root (the parent of this file's directory).
repo_root() {
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
}

# Prints a line prefixed with the calling script's name, on stderr.
note() {
    echo "$(basename "$0"): $*" >&2
}

# ensure_packages CMD:PACKAGE...
# apt-get installs PACKAGE for every CMD not found on PATH, and nothing else.
# It runs `apt-get update` only when something is missing, and uses sudo when
# not root.
ensure_packages() {
    local pair cmd pkg
    local -a missing=()
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        if ! command -v "$cmd" >/dev/null 2>&1 && [[ " ${missing[*]} " != *" $pkg "* ]]; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    local -a sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null 2>&1; then
            note "missing packages: ${missing[*]}; not root and no sudo: install them and retry"
            return 1
        fi
        sudo=(sudo)
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        note "missing packages: ${missing[*]}; no apt-get here: install them and retry"
        return 1
    fi
    note "installing ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# What building Wharf needs from the system: pkg-config and libseccomp's
# headers (libcontainer's seccomp support links libseccomp). A library has
# no command to look for, so pkg-config is asked; packages are installed
# the way ensure_packages does.
ensure_build_packages() {
    ensure_packages pkg-config:pkg-config
    if ! pkg-config --exists libseccomp; then
        local -a sudo=()
        if [[ $(id -u) -ne 0 ]]; then
            sudo=(sudo)
        fi
        note "installing libseccomp-dev"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libseccomp-dev
    fi
}

# Fails with a hint when the Rust toolchain is not on PATH.
require_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        note "cargo not found: install the Rust toolchain (https://rustup.rs) and make sure ~/.cargo/bin is on PATH"
        return 1
    fi
}
