#!/usr/bin/env bash
# Fetches Debian sid's containerd (2.1) for the CRI tests, without touching
# the system: a private apt configuration (the system's mirror and keyring,
# its own lists and cache) downloads the .deb, and dpkg-deb -x unpacks it
# into target/skillbox-cache/containerd-2.1/. Idempotent: does nothing when
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

sources=/etc/apt/sources.list.d/debian.sources
[ -r "$sources" ] || die "$sources not found: cannot tell which Debian mirror to use"
mirror="$(awk '/^URIs:/ { print $2; exit }' "$sources")"
keyring="$(awk '/^Signed-By:/ { print $2; exit }' "$sources")"
[ -n "$mirror" ] && [ -n "$keyring" ] || die "no URIs/Signed-By in $sources"

work="$target/skillbox-cache/apt-sid"
mkdir -p "$work/sources" "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
cat >"$work/sources/sid.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: sid
Components: main
Signed-By: $keyring
SOURCES
apt_private=(
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::Etc::SourceParts=$(realpath "$work/sources")"
    -o "Dir::State::Lists=$(realpath "$work/lists")"
    -o "Dir::Cache=$(realpath "$work/cache")"
    -o "APT::Sandbox::User=root"
)
apt-get "${apt_private[@]}" update
(cd "$work/debs" && apt-get "${apt_private[@]}" download containerd)
deb="$(ls "$work"/debs/containerd_*.deb | tail -n 1)"
case "$(basename "$deb")" in
    containerd_2.1.*) ;;
    *) echo "warning: sid's containerd is $(basename "$deb"), not 2.1" >&2 ;;
esac
rm -rf "$dest.partial"
mkdir -p "$dest.partial"
dpkg-deb -x "$deb" "$dest.partial"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "containerd unpacked into $dest: $("$dest/usr/bin/containerd" --version)"
