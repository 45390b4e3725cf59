#!/usr/bin/env bash
# BuildGrid 0.4.4 (a Remote Execution API server) in a private venv, for
# the tests that use it as a remote cache and a remote executor (its
# scheduler keeps its state in PostgreSQL); installed when missing. Prints
# the path of its `bgd` on stdout. The venv lives outside the repository:
# $KFLOW_BUILDGRID_VENV, else ${XDG_CACHE_HOME:-$HOME/.cache}/kflow-test/buildgrid.
set -euo pipefail
venv="${KFLOW_BUILDGRID_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kflow-test/buildgrid}"
if [ ! -x "$venv/bin/bgd" ] || ! "$venv/bin/python" -c 'import psycopg2' 2>/dev/null; then
    echo "==> installing BuildGrid 0.4.4 into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q 'buildgrid[database]==0.4.4' >&2
fi
echo "$venv/bin/bgd"
