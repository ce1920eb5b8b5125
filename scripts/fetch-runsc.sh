#!/usr/bin/env bash
# Fetches Debian trixie's runsc (gVisor release 20240729, a static binary
# that runs on bookworm) without touching the system (`fetch_debian_package`
# in common.sh): unpacked into target/skillbox-cache/runsc-trixie/, binary
# at usr/bin/runsc. Idempotent: does nothing when the binary is already
# there. scripts/test.sh runs the workspace again with its usr/bin first on
# PATH, where `[runsc] platform = "auto"` picks systrap.
#
#   bash scripts/fetch-runsc.sh
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd_repo_root

target="${CARGO_TARGET_DIR:-target}"
dest="$target/skillbox-cache/runsc-trixie"
if [ -x "$dest/usr/bin/runsc" ]; then
    echo "runsc present: $("$dest/usr/bin/runsc" --version | head -n 1)"
    exit 0
fi
deb="$(fetch_debian_package trixie runsc "$dest")"
echo "runsc ($deb) unpacked into $dest: $("$dest/usr/bin/runsc" --version | head -n 1)"
