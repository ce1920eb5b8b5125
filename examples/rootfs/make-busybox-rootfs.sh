#!/bin/sh
# Builds a tiny root filesystem for busybox skills at <dir>:
#   /bin/busybox (Debian's static busybox) plus one symlink per applet,
#   /usr/bin, /sbin and /usr/sbin pointing at /bin (so the sandbox PATH
#   /usr/local/bin:/usr/bin:/bin finds every applet), /etc/passwd and
#   /etc/group with root and nobody/nogroup (65534), and the empty mount
#   points skillbox needs (/proc, /dev, /sys, /tmp, /skill).
#
# Idempotent: does nothing when <dir>/.complete exists. The tree is built in
# a temporary sibling directory and renamed into place, so a reader never sees
# a half-built rootfs and concurrent callers (parallel test binaries) cannot
# corrupt each other; a lock file avoids building twice.
#
# Usage: make-busybox-rootfs.sh <dir>      (env BUSYBOX overrides the binary)
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 <dir>" >&2
    exit 2
fi
dir=$1
[ -e "$dir/.complete" ] && exit 0

busybox=${BUSYBOX:-/bin/busybox}
if ! "$busybox" --list >/dev/null 2>&1; then
    echo "$0: $busybox is not a working busybox (install busybox-static)" >&2
    exit 1
fi
case $(file -L "$busybox" 2>/dev/null || echo static) in
    *dynamically*) echo "$0: $busybox is dynamically linked; install busybox-static" >&2; exit 1 ;;
esac

parent=$(dirname "$dir")
mkdir -p "$parent"
exec 9>"$dir.lock"
flock 9
# Another caller may have finished while we waited for the lock.
[ -e "$dir/.complete" ] && exit 0

tmp=$(mktemp -d "$dir.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/bin" "$tmp/usr" "$tmp/etc" "$tmp/proc" "$tmp/dev" "$tmp/sys" "$tmp/skill" "$tmp/root"
install -d -m 1777 "$tmp/tmp"
chmod 700 "$tmp/root"
install -m 755 "$busybox" "$tmp/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$tmp/bin/$applet"
done
ln -s ../bin "$tmp/usr/bin"
ln -s ../bin "$tmp/usr/sbin"
ln -s bin "$tmp/sbin"

cat >"$tmp/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$tmp/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
echo "127.0.0.1 localhost" >"$tmp/etc/hosts"
chmod 755 "$tmp"
touch "$tmp/.complete"

rm -rf "$dir"   # only ever a leftover without .complete
mv -T "$tmp" "$dir"
trap - EXIT
