#!/bin/sh
# Installs the peers kflow's benches are measured against. Safe to run
# again: it installs only what is missing.
#
#   benches/install-peers.sh            all of the below
#   benches/install-peers.sh ninja      from Debian's archive: ninja-build
#                                       (required by `cargo bench --bench noop`)
#                                       and hyperfine (optional, for timing
#                                       commands by hand); sudo only when not root
#   benches/install-peers.sh torch      PyTorch (pinned below) from PyPI into its
#                                       own venv, for `cargo bench --bench
#                                       train_vs_torch`; no root needed
#
# The venv lives outside the repository, at $KFLOW_BENCH_VENV or else
# ${XDG_CACHE_HOME:-$HOME/.cache}/kflow-bench/torch-venv (the bench looks
# in the same place). PyPI's Linux torch wheel is the CUDA build and pulls
# the nvidia-* libraries, about 5 GB installed; the bench runs it on CPU.
# PYTHON names the interpreter that makes the venv (default python3, 3.10+).
set -eu

# Keep in step with TORCH_PIN in benches/train_vs_torch.rs.
TORCH_VERSION=2.15.0
NUMPY_VERSION=2.4.4

install_ninja() {
    missing=""
    command -v ninja >/dev/null 2>&1 || missing="ninja-build"
    if ! command -v hyperfine >/dev/null 2>&1; then
        want_hyperfine=1
    else
        want_hyperfine=0
    fi

    if [ -z "$missing" ] && [ "$want_hyperfine" -eq 0 ]; then
        echo "install-peers: ninja $(ninja --version) and $(hyperfine --version) are already installed"
        return 0
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
}

install_torch() {
    if [ -n "${KFLOW_BENCH_VENV:-}" ]; then
        venv="$KFLOW_BENCH_VENV"
    else
        venv="${XDG_CACHE_HOME:-$HOME/.cache}/kflow-bench/torch-venv"
    fi
    python="${PYTHON:-python3}"

    if [ -x "$venv/bin/python" ] &&
        [ "$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)" = "$TORCH_VERSION" ] &&
        [ "$("$venv/bin/python" -c 'import numpy; print(numpy.__version__)' 2>/dev/null)" = "$NUMPY_VERSION" ]; then
        echo "install-peers: torch $TORCH_VERSION is already installed in $venv"
        return 0
    fi

    if ! command -v "$python" >/dev/null 2>&1; then
        echo "install-peers: $python not found; install Python 3.10 or later (or set PYTHON) and rerun." >&2
        exit 1
    fi
    if [ ! -x "$venv/bin/python" ]; then
        echo "install-peers: creating a venv at $venv with $("$python" --version 2>&1)"
        mkdir -p "$(dirname "$venv")"
        if ! "$python" -m venv "$venv"; then
            echo "install-peers: '$python -m venv' failed; on Debian install python3-venv and rerun." >&2
            exit 1
        fi
    fi
    # torch from PyPI (the only index this needs); numpy only keeps torch
    # from warning that it is missing.
    "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade \
        "torch==$TORCH_VERSION" "numpy==$NUMPY_VERSION"
    echo "install-peers: $("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)') in $venv"
}

if [ "$#" -eq 0 ]; then
    set -- ninja torch
fi
for peer in "$@"; do
    case "$peer" in
    ninja) install_ninja ;;
    torch) install_torch ;;
    *)
        echo "install-peers: unknown peer '$peer' (expected: ninja, torch, or nothing for both)" >&2
        exit 2
        ;;
    esac
done
