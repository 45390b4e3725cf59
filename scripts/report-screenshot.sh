#!/usr/bin/env bash
# docs/report.png, the picture of the report that README.md shows: builds
# the main job (cached after the first time) and photographs its
# report.html in headless Chromium (installed when missing, with the test
# packages).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/install-packages.sh test
scripts/kflow build target//max78002:anomaly
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,3400 \
    --screenshot="$root/docs/report.png" "file://$root/kflow-out/max78002/anomaly/report/report.html" 2>/dev/null
echo "docs/report.png"
