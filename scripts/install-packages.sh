#!/usr/bin/env bash
# Debian packages kflow needs and a fresh machine lacks, installed when
# missing (with sudo unless root).
#   scripts/install-packages.sh run    what the repository's graphs run:
#                                      the Arm cross compiler and its C
#                                      library build kflow's Cortex-M
#                                      firmware, qemu-system-arm runs it
#   scripts/install-packages.sh test   those, and what the tests add: nginx
#                                      serves as the remote cache, socat
#                                      makes pseudo-terminal pairs, headless
#                                      chromium renders the report (with
#                                      one font, as recommends are skipped),
#                                      qemu-user runs kflow on an older CPU,
#                                      python3-venv holds BuildGrid, and
#                                      PostgreSQL is its scheduler's database
set -euo pipefail

missing=()
need() { # need PACKAGE TEST-COMMAND...
    local package=$1
    shift
    "$@" >/dev/null 2>&1 || missing+=("$package")
}
need qemu-system-arm command -v qemu-system-arm
need gcc-arm-none-eabi command -v arm-none-eabi-gcc
need libnewlib-arm-none-eabi test -e /usr/lib/arm-none-eabi/include/stdint.h
case "${1:-run}" in
run) ;;
test)
    need socat command -v socat
    need nginx sh -c '[ -x /usr/sbin/nginx ] || command -v nginx'
    need chromium command -v chromium
    need fonts-dejavu-core test -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
    need qemu-user command -v qemu-x86_64
    need python3-venv python3 -c 'import ensurepip'
    need postgresql sh -c 'ls /usr/lib/postgresql/*/bin/initdb'
    ;;
*)
    echo "usage: $0 run|test" >&2
    exit 2
    ;;
esac
[ ${#missing[@]} -eq 0 ] && exit 0

echo "==> installing ${missing[*]}" >&2
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
