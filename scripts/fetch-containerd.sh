#!/usr/bin/env bash
# Fetches Debian sid's containerd (2.1) for the CRI tests, without touching
# the system (`fetch_debian_package` in common.sh): unpacked into
# target/skillbox-cache/containerd-2.1/. Idempotent: does nothing when
# the binary is already there. The CRI tests use it with
# SKILLBOX_CRI_CONTAINERD=2.1.
#
#   bash scripts/fetch-containerd.sh
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd_repo_root

target="${CARGO_TARGET_DIR:-target}"
dest="$target/skillbox-cache/containerd-2.1"
if [ -x "$dest/usr/bin/containerd" ]; then
    echo "containerd 2.1 present: $("$dest/usr/bin/containerd" --version)"
    exit 0
fi

deb="$(fetch_debian_package sid containerd "$dest")"
case "$deb" in
    containerd_2.1.*) ;;
    *) echo "warning: sid's containerd is $deb, not 2.1" >&2 ;;
esac
echo "containerd unpacked into $dest: $("$dest/usr/bin/containerd" --version)"
