#!/usr/bin/env bash
# Is a booted sandbox a faster start for a container? gVisor starts a
# container inside an already-booted sandbox as a subcontainer (how a pod's
# application containers join its pause sandbox under CRI). This measures,
# in one run, start-to-exit of examples/hello (`cpus: 2`) as:
#
#   raw:    runsc run of its compiled bundle (boots a sandbox);
#   joined: runsc create + start + wait of the same spec as a subcontainer
#           of a sandbox booted beforehand (a `sleep` pause container).
#
# ROUNDS each, interleaved, medians and the ratio joined/raw. runsc is the one
# on PATH. Everything it starts is removed on exit.
#
#   bash bench/subcontainer.sh      (env: ROUNDS=10)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh
require_root

rounds="${ROUNDS:-10}"
skillbox="$PWD/target/release/skillbox"
rootfs="$PWD/$SKILLBOX_CACHE/busybox-rootfs"
work="$(mktemp -d /tmp/skillbox-bench-subcontainer.XXXXXX)"
root="$work/runsc"

cleanup() {
    set +e
    remove_runsc_containers "$root"
    rm -rf "$work"
}
trap cleanup EXIT

prepare_release_bench "$rootfs"
mkdir -p "$root"
hello_with_full_cpus "$work/hello"
"$skillbox" compile "$work/hello" --base-rootfs "$rootfs" -o "$work/bundle" --absolute-paths >/dev/null
platform="$(bundle_platform "$work/bundle")"
flags=(--network=none --platform="$platform" --root "$root")
echo "bundle runs on the $platform platform"

# The pause sandbox: the same root, only /proc and /sys, `sleep`; the
# member: hello's spec with the CRI annotations that make runsc join it.
mkdir -p "$work/pause" "$work/member"
jq '.process.args = ["sleep", "3600"] | .annotations = {"io.kubernetes.cri.container-type": "sandbox"}
    | .mounts |= map(select(.destination == "/proc" or .destination == "/sys"))' \
    "$work/bundle/config.json" >"$work/pause/config.json"

raw_once() {
    runsc "${flags[@]}" run --bundle "$work/bundle" "raw-$1" </dev/null
}
joined_once() {
    jq --arg pod "pod-$1" '.annotations = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": $pod}' \
        "$work/bundle/config.json" >"$work/member/config.json"
    runsc "${flags[@]}" create --bundle "$work/member" "member-$1" </dev/null
    runsc "${flags[@]}" start "member-$1"
    runsc "${flags[@]}" wait "member-$1" >/dev/null
}

section "Start-to-exit, $rounds rounds"
for i in $(seq "$rounds"); do
    time_ms raw_once "$i" >>"$work/raw.ms"
    # The pod boots untimed, then settles.
    runsc "${flags[@]}" create --bundle "$work/pause" "pod-$i" </dev/null >/dev/null
    runsc "${flags[@]}" start "pod-$i"
    sleep 1
    time_ms joined_once "$i" >>"$work/joined.ms"
    runsc "${flags[@]}" delete --force "member-$i" "pod-$i" >/dev/null 2>&1 || true
done
raw="$(percentile 50 <"$work/raw.ms")"
joined="$(percentile 50 <"$work/joined.ms")"
echo "raw runsc run p50 $raw ms; subcontainer of a booted sandbox (create + start + wait) p50 $joined ms"
awk -v j="$joined" -v r="$raw" 'BEGIN { printf "joined/raw %.2f\n", j / r }'
