#!/bin/sh
# Builds a minimal Debian bookworm root filesystem with python3 at <dir>:
#   debootstrap --variant=minbase --include=python3-minimal bookworm ...
# It takes about 30 s and downloads about 40 MB from deb.debian.org, so it is
# built once and cached: the integration tests keep it under
# target/skillbox-cache/debian-python3 and `cargo clean` removes it.
#
# Idempotent: does nothing when <dir>/.complete exists. Built in a temporary
# sibling directory and renamed into place under a lock file, so concurrent
# callers never see or produce a half-built tree. Needs root.
#
# Usage: make-debian-python-rootfs.sh <dir>   (env DEBIAN_MIRROR overrides the mirror)
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 <dir>" >&2
    exit 2
fi
dir=$1
[ -e "$dir/.complete" ] && exit 0

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "$0: debootstrap is not installed" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$0: debootstrap needs root" >&2
    exit 1
fi

parent=$(dirname "$dir")
mkdir -p "$parent"
exec 9>"$dir.lock"
flock 9
[ -e "$dir/.complete" ] && exit 0

tmp=$(mktemp -d "$dir.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
debootstrap --variant=minbase --include=python3-minimal bookworm "$tmp" "$mirror" >"$tmp.log" 2>&1 || {
    echo "$0: debootstrap failed; last lines of its log:" >&2
    tail -n 20 "$tmp.log" >&2
    rm -f "$tmp.log"
    exit 1
}
rm -f "$tmp.log"
# skillbox mounts the skill at /skill; the rootfs is read-only, so the mount
# point must exist beforehand.
mkdir -p "$tmp/skill"
chmod 755 "$tmp"
touch "$tmp/.complete"

rm -rf "$dir"
mv -T "$tmp" "$dir"
trap - EXIT
