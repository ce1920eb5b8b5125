#!/usr/bin/env bash
# Builds the node image the Helm chart (charts/skillbox) runs, as an OCI
# image layout tar that `ctr images import` takes and registry tools push.
# No image is published: build it from the repository.
#
# It prepares a root filesystem directory, then `skillbox image build-node`
# turns it into a one-layer, deterministic image:
#
#   /opt/skillbox/bin/skillbox                       the CLI (--bin-dir)
#   /opt/skillbox/bin/containerd-shim-skillbox-v1    the shim (--bin-dir)
#   /opt/skillbox/bin/runsc                          --runsc, default Debian trixie's
#                                                    runsc 20240729 (scripts/fetch-runsc.sh;
#                                                    static; systrap)
#   /usr/bin/nsenter                                 util-linux's
#   /bin/busybox and its applets                     busybox-static: a shell
#   the shared libraries ldd lists for each binary, and the dynamic loader
#
#   bash scripts/build-node-image.sh [-o FILE] [--bin-dir DIR] [--runsc PATH]
#                                    [--name NAME] [--rootfs DIR]
#
# -o        the image tar (default: target/skillbox-cache/node-image.oci.tar)
# --bin-dir where skillbox and containerd-shim-skillbox-v1 are; default:
#           build them with `cargo build --release` and take target/release
# --name    the image name (default: localhost/skillbox/node:<version>, the
#           chart's default image)
# --rootfs  where to prepare the root filesystem (replaced; default:
#           target/skillbox-cache/node-rootfs)
#
# Run as root, so the files are owned by root in the image. The binaries'
# shared libraries come from this machine (Debian bookworm): the host's own
# libraries are not used inside the image, but the installer copies
# skillbox, the shim and runsc onto the host, where they need a glibc at
# least as new as this machine's (docs/helm.md).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd_repo_root

target="${CARGO_TARGET_DIR:-target}"
output="$target/skillbox-cache/node-image.oci.tar"
rootfs="$target/skillbox-cache/node-rootfs"
bin_dir=""
runsc=""
name=""
while [ $# -gt 0 ]; do
    case "$1" in
        -o | --output) output="$2"; shift 2 ;;
        --bin-dir) bin_dir="$2"; shift 2 ;;
        --runsc) runsc="$2"; shift 2 ;;
        --name) name="$2"; shift 2 ;;
        --rootfs) rootfs="$2"; shift 2 ;;
        *) die "unknown argument $1 (see the top of $0)" ;;
    esac
done

if [ -z "$bin_dir" ]; then
    require_cargo
    section "cargo build --release -p skillbox -p skillbox-shim"
    cargo build --release -p skillbox -p skillbox-shim
    bin_dir="$target/release"
fi
if [ -z "$runsc" ]; then
    bash scripts/fetch-runsc.sh
    runsc="$target/skillbox-cache/runsc-trixie/usr/bin/runsc"
fi
nsenter="$(command -v nsenter)" || die "nsenter not found: install Debian's util-linux"
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox not found: install Debian's busybox-static"
for binary in skillbox containerd-shim-skillbox-v1; do
    [ -x "$bin_dir/$binary" ] || die "$bin_dir/$binary not found (--bin-dir)"
done

section "Node root filesystem in $rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs/opt/skillbox/bin" "$rootfs/usr/bin" "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"

# The Rust binaries, stripped of debug information (a release build already
# is); runsc and nsenter as Debian ships them.
for binary in skillbox containerd-shim-skillbox-v1; do
    install -m 0755 "$bin_dir/$binary" "$rootfs/opt/skillbox/bin/$binary"
    if command -v strip >/dev/null 2>&1; then
        strip --strip-debug "$rootfs/opt/skillbox/bin/$binary"
    fi
done
install -m 0755 "$runsc" "$rootfs/opt/skillbox/bin/runsc"
install -m 0755 "$nsenter" "$rootfs/usr/bin/nsenter"

# busybox-static, with a link per applet that names no program already
# there (nsenter is util-linux's: busybox's lacks options). Note that
# busybox's own sh prefers its applets to programs on PATH: name
# /usr/bin/nsenter in full from a shell.
install -m 0755 "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || [ -e "$rootfs/usr/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done

# Shared libraries: each file ldd resolves, at the same path, symlinks
# followed; and the dynamic loader.
copy_libraries() {
    local binary="$1" library
    if ! ldd "$binary" >/dev/null 2>&1; then
        return 0 # static
    fi
    for library in $(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        if [ ! -e "$rootfs$library" ]; then
            mkdir -p "$rootfs$(dirname "$library")"
            # Modes as on this machine: the loader must stay executable.
            cp -L --preserve=mode "$library" "$rootfs$library"
        fi
    done
}
for binary in "$rootfs"/opt/skillbox/bin/* "$rootfs/usr/bin/nsenter"; do
    copy_libraries "$binary"
done
# Directories 0755 whatever the umask; /tmp sticky and world-writable.
find "$rootfs" -type d -exec chmod 0755 {} +
chmod 1777 "$rootfs/tmp"

section "skillbox image build-node"
args=(image build-node --rootfs "$rootfs" -o "$output")
[ -z "$name" ] || args+=(--name "$name")
mkdir -p "$(dirname "$output")"
"$bin_dir/skillbox" "${args[@]}"
