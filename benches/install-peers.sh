#!/bin/sh
# Installs the peers kflow's benches are measured against, from Debian's
# archive: ninja-build (required by `cargo bench --bench noop`) and
# hyperfine (optional, for timing commands by hand). Safe to run again:
# it installs only what is missing. Uses sudo only when not root.
set -eu

missing=""
command -v ninja >/dev/null 2>&1 || missing="ninja-build"
if ! command -v hyperfine >/dev/null 2>&1; then
    want_hyperfine=1
else
    want_hyperfine=0
fi

if [ -z "$missing" ] && [ "$want_hyperfine" -eq 0 ]; then
    echo "install-peers: ninja $(ninja --version) and $(hyperfine --version) are already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-peers: apt-get not found; this script supports Debian and Ubuntu." >&2
    echo "install-peers: install ninja (https://ninja-build.org) with your package manager and rerun the bench." >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "install-peers: not root and sudo is not installed; rerun this script as root." >&2
    exit 1
fi

$sudo apt-get update
if [ -n "$missing" ]; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ninja-build
fi
if [ "$want_hyperfine" -eq 1 ]; then
    # Optional: hyperfine is in Debian from bookworm (12) on.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends hyperfine ||
        echo "install-peers: hyperfine is not available here (optional; the benches do not need it)" >&2
fi

echo "install-peers: ninja $(ninja --version)"
if command -v hyperfine >/dev/null 2>&1; then
    echo "install-peers: $(hyperfine --version)"
fi
