# shellcheck shell=bash
# Helpers shared by scripts/*.sh, .ci/run and bench/run.sh. Source it; it
# defines functions and variables only and changes no shell options.

# Debian packages the demo, the tests and the benchmark need on the host:
# runsc (gVisor), busybox-static (the tiny example base root filesystem) and
# debootstrap (the Debian python3 base the python example runs on),
# containerd (with ctr: the shim's tests run a private one), procps
# (kill, used by the test harness) and util-linux (flock, used by the rootfs
# scripts), nftables and iproute2 (the egress firewall and its tests),
# dnsmasq (the fake internet's resolver) and postgresql (a private server
# for the registry exporter's tests). The CRI suite (cri-tests/) also needs
# protobuf-compiler (protoc: the k8s-cri crate generates its CRI client at
# build time), runc (the control runtime handler its pods run under besides
# skillbox) and containernetworking-plugins (the bridge, host-local and
# loopback CNI plugins containerd's CRI plugin gives every pod), and gcc
# (already needed by cargo's linker) builds its static pause program; the
# pool's static launcher (launcher/build.rs) links against the same
# libc6-dev's libc.a.
# The Helm chart's tests (scripts/fetch-chart-tools.sh) need python3-venv
# (a venv for kubernetes-validate); they also need npm, left out here
# because Debian's npm package conflicts with the Node.js builds machines
# often carry: that script installs it only when no npm is found.
# shellcheck disable=SC2034 # used by the scripts that source this file
SKILLBOX_DEBIAN_PACKAGES=(runsc busybox-static debootstrap containerd procps util-linux python3 nftables iproute2 dnsmasq-base postgresql protobuf-compiler runc containernetworking-plugins python3-venv)

# Where build caches live (the rootfs caches, the demo's files, bench output).
# shellcheck disable=SC2034
SKILLBOX_CACHE="target/skillbox-cache"

# Prints a section header.
section() {
    if [ -t 1 ]; then
        printf '\n\033[1m==== %s ====\033[0m\n' "$*"
    else
        printf '\n==== %s ====\n' "$*"
    fi
}

# Prints a message to stderr and exits non-zero.
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Moves to the repository root (the parent of this file's directory).
cd_repo_root() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || die "cannot enter the repository root"
}

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        die "run this as root: runsc needs root to create sandboxes and cgroups"
    fi
}

# Whether the Debian package $1 is installed.
package_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Installs the given Debian packages, running apt-get update and install only
# when one of them is missing. Idempotent and non-interactive.
ensure_debian_packages() {
    local missing=() package
    for package in "$@"; do
        package_installed "$package" || missing+=("$package")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "Debian packages present: $*"
        return 0
    fi
    echo "Installing missing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${missing[@]}"
}

# Checks that cargo is there; it comes from rustup, not from Debian
# (bookworm's own cargo is older than the workspace's rust-version).
require_cargo() {
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install a Rust toolchain >= 1.85 (rustup) and put ~/.cargo/bin on PATH"
}

# Makes sure npm is there: Node.js builds bring their own; without one,
# Debian's npm package. (It is not in SKILLBOX_DEBIAN_PACKAGES: Debian's npm
# conflicts with the Node.js builds machines often carry.) $1 says what
# needs it, for the error.
ensure_npm() {
    if ! command -v npm >/dev/null 2>&1; then
        ensure_debian_packages npm
    fi
    command -v npm >/dev/null 2>&1 || die "npm not found: $1 (install Node.js and npm)"
}

# Prints the median of the numbers on stdin (one per line) with $1 decimals
# (default 2). For the benchmarks.
median() {
    sort -g | awk -v d="${1:-2}" '{ v[NR] = $1 } END {
        if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%." d "f\n", m }'
}

# Runs "$@" with its stdout discarded and prints how long it took in ms (3
# decimals); returns its status. For the benchmarks.
# percentile P: the P-th percentile of the numbers on stdin (nearest rank).
percentile() {
    sort -g | awk -v p="$1" '{ v[NR] = $1 } END { i = int((p / 100) * NR + 0.999999); if (i < 1) i = 1; printf "%.1f\n", v[i] }'
}

# prepare_release_bench ROOTFS: a benchmark's setup: the Debian packages, a
# release build of skillbox, the busybox base root filesystem at ROOTFS,
# and what the machine and its runsc are.
prepare_release_bench() {
    section "Setup"
    ensure_debian_packages "${SKILLBOX_DEBIAN_PACKAGES[@]}"
    require_cargo
    cargo build --release -p skillbox
    bash examples/rootfs/make-busybox-rootfs.sh "$1"
    echo "host: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "runsc: $(runsc --version | head -n 1)"
}

# hello_with_full_cpus DEST: a copy of examples/hello at DEST with `cpus: 2`
# (the ceiling) instead of its 0.25: a quarter CPU quota would dominate
# the start-up of every path a benchmark compares.
hello_with_full_cpus() {
    cp -r examples/hello "$1"
    sed -i 's/cpus: 0.25/cpus: 2/' "$1/SKILL.md"
    grep -q 'cpus: 2,' "$1/SKILL.md" || die "examples/hello no longer declares cpus: 0.25"
}

# bundle_platform BUNDLE: the runsc platform a compiled bundle runs on.
bundle_platform() {
    jq -r '.annotations["io.skillbox.runsc.flags"] | fromjson | .platform' "$1/config.json"
}

# remove_runsc_containers ROOT: force-deletes every container runsc lists
# under the state root ROOT (a benchmark's raw runs).
remove_runsc_containers() {
    runsc --root "$1" list --quiet 2>/dev/null | xargs -r -n1 runsc --root "$1" delete --force >/dev/null 2>&1
}

# process_holdings PID: "open_files threads rss_kb anonymous_kb" of a
# long-lived process, compared before and after a load to show what it kept.
process_holdings() {
    echo "$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l)" \
        "$(awk '$1 == "Threads:" { print $2 }' "/proc/$1/status")" \
        "$(awk '$1 == "Rss:" { r = $2 } $1 == "Anonymous:" { a = $2 } END { print r, a }' "/proc/$1/smaps_rollup")"
}

time_ms() {
    local start end
    # EPOCHREALTIME without its dot: microseconds, read without a fork.
    start="${EPOCHREALTIME/[.,]/}"
    "$@" >/dev/null || return
    end="${EPOCHREALTIME/[.,]/}"
    awk -v us="$((end - start))" 'BEGIN { printf "%.3f\n", us / 1000 }'
}

# fetch_debian_package SUITE PACKAGE DEST: downloads PACKAGE from Debian's
# SUITE (trixie, sid…) and unpacks it into DEST, without touching the
# system: a private apt configuration (the system's mirror and keyring, its
# own lists and cache under $SKILLBOX_CACHE/apt-SUITE) and dpkg-deb -x. The
# tree is unpacked beside DEST and renamed into place. Prints the .deb's name.
fetch_debian_package() {
    local suite="$1" package="$2" dest="$3"
    local sources=/etc/apt/sources.list.d/debian.sources
    [ -r "$sources" ] || die "$sources not found: cannot tell which Debian mirror to use"
    local mirror keyring
    mirror="$(awk '/^URIs:/ { print $2; exit }' "$sources")"
    keyring="$(awk '/^Signed-By:/ { print $2; exit }' "$sources")"
    [ -n "$mirror" ] && [ -n "$keyring" ] || die "no URIs/Signed-By in $sources"
    local work="${CARGO_TARGET_DIR:-target}/skillbox-cache/apt-$suite"
    mkdir -p "$work/sources" "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
    cat >"$work/sources/$suite.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite
Components: main
Signed-By: $keyring
SOURCES
    local apt_private=(
        -o "Dir::Etc::SourceList=/dev/null"
        -o "Dir::Etc::SourceParts=$(realpath "$work/sources")"
        -o "Dir::State::Lists=$(realpath "$work/lists")"
        -o "Dir::Cache=$(realpath "$work/cache")"
        -o "APT::Sandbox::User=root"
    )
    apt-get "${apt_private[@]}" update >&2
    (cd "$work/debs" && apt-get "${apt_private[@]}" download "$package" >&2)
    local deb
    deb="$(ls "$work"/debs/"${package}"_*.deb | tail -n 1)"
    rm -rf "$dest.partial"
    mkdir -p "$dest.partial"
    dpkg-deb -x "$deb" "$dest.partial"
    rm -rf "$dest"
    mv "$dest.partial" "$dest"
    basename "$deb"
}
