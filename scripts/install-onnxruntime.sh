#!/usr/bin/env bash
# ONNX Runtime's shared library, from its Python wheel (Debian has none):
# host evaluation loads it at run time (rules/host/src/runtime.rs). Does
# nothing when Python can already import it.
set -euo pipefail
ORT_VERSION=1.32.0
python3 -c "import onnxruntime" 2>/dev/null && exit 0
printf '\n==> installing onnxruntime==%s (pip)\n' "$ORT_VERSION"
python3 -m pip install --quiet "onnxruntime==$ORT_VERSION" ||
    # A Debian-managed Python refuses system-wide installs.
    python3 -m pip install --quiet --user --break-system-packages "onnxruntime==$ORT_VERSION"
