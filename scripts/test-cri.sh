#!/usr/bin/env bash
# Runs the CRI suite (cri-tests/) on Debian's containerd 1.6, on containerd
# 2.1 (fetched by scripts/fetch-containerd.sh), or on both, after building
# the shim it drives. Timings are printed as `cri-timing:` lines.
#
#   bash scripts/test-cri.sh [1.6|2.1|both] [extra cargo test arguments]
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd_repo_root
require_root
require_cargo

which="${1:-1.6}"
shift || true
case "$which" in
    1.6) versions=(1.6) ;;
    2.1) versions=(2.1) ;;
    both) versions=(1.6 2.1) ;;
    *) die "usage: scripts/test-cri.sh [1.6|2.1|both] [cargo test arguments]" ;;
esac

cargo build -p skillbox-shim
status=0
for version in "${versions[@]}"; do
    [ "$version" = 2.1 ] && bash scripts/fetch-containerd.sh
    section "CRI suite on containerd $version"
    SKILLBOX_CRI_CONTAINERD="$version" cargo test -p skillbox-cri-tests --no-fail-fast "$@" -- --nocapture || status=$?
done
exit "$status"
