#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run): formatting, lints, unit
# tests beside the code and end-to-end tests that drive the real `kflow`
# binary. Whatever the tests need and a fresh machine lacks is installed
# here, so that this one command works on a clean checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Debian packages the tests need: nginx serves as the remote cache in
# tests/remote_cache.rs; the Arm cross compiler and its C library compile
# the generated accelerator code for the Cortex-M4; socat makes the
# pseudo-terminal pair tests/device_sim.rs serves a board over.
install_packages() {
    local missing=()
    command -v socat >/dev/null || missing+=(socat)
    [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx)
    command -v arm-none-eabi-gcc >/dev/null || missing+=(gcc-arm-none-eabi)
    [ -e /usr/lib/arm-none-eabi/include/stdint.h ] || missing+=(libnewlib-arm-none-eabi)
    [ ${#missing[@]} -eq 0 ] && return
    step "installing ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_packages
scripts/install-onnxruntime.sh

# A cold build gains nothing from incremental state, which would double the
# target directory's size on disk.
export CARGO_INCREMENTAL=0

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (cargo test)"
cargo test --workspace --locked
