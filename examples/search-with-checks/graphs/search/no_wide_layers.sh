#!/bin/sh
# An external check: the candidate arrives on stdin as JSON,
# {"model": <model IR>, "resources": {...}}. A non-zero exit rejects it,
# with stderr as the reason.
python3 -c '
import json, sys
model = json.load(sys.stdin)["model"]
wide = [l["name"] for l in model["layers"] if l.get("out_channels", 0) > 32]
if wide:
    sys.exit("too wide for our firmware: " + ", ".join(wide))
'
