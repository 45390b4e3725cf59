#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run): formatting, lints, unit
# tests beside the code and end-to-end tests that drive the real `kflow`
# binary. Whatever the tests need and a fresh machine lacks is installed
# here, so that this one command works on a clean checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# The Debian packages the graphs and tests need (cross compiler, QEMU,
# nginx, socat, chromium, qemu-user), then ONNX Runtime.
scripts/install-packages.sh test
scripts/install-onnxruntime.sh
# BuildGrid, the Remote Execution API server the gRPC remote-cache tests use.
KFLOW_BUILDGRID_BGD="$(scripts/install-buildgrid.sh)"
export KFLOW_BUILDGRID_BGD

# A cold build gains nothing from incremental state, which would double the
# target directory's size on disk.
export CARGO_INCREMENTAL=0
# QEMU and the cross compiler are installed above: tests that need them
# must not skip.
export KFLOW_REQUIRE_QEMU=1
export KFLOW_REQUIRE_CHROMIUM=1
export KFLOW_REQUIRE_BUILDGRID=1

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (cargo test)"
cargo test --workspace --locked
