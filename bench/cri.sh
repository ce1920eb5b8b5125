#!/usr/bin/env bash
# The CRI benchmark: skillbox as Kubernetes runs it, through containerd's
# CRI plugin driven like kubelet (the CRI suite's harness, cri-tests/), in
# one run against a baseline measured on the same node:
#
#  - skillbox:   handler `skillbox` (containerd-shim-skillbox-v1, one gVisor
#                sandbox per pod);
#  - runc-runsc: the baseline, containerd's runc shim (io.containerd.runc.v2)
#                with BinaryName pointing at runsc (through `runsc-as-runc`,
#                which adds runsc's flags and gives each container a sandbox
#                of its own: the only way runsc runs pods behind the runc shim);
#  - runc:       plain runc, a second reference.
#
# It measures, per handler:
#  (1) RunPodSandbox latency and (2) a pod's start to exit seen
#      (RunPodSandbox + CreateContainer + StartContainer of busybox `true`
#      until ContainerStatus shows EXITED): PODS pods one after the other,
#      mean, p50 and p95, and the ratios skillbox / runc-runsc;
#  (3) MEM_PODS pods at once (busybox `sleep`): how long until all run, and
#      per pod the host memory they add (PSS and RSS from smaps_rollup of
#      every shim, runsc sandbox, gofer, pause and app process) and their pod
#      cgroups' memory usage.
#
# Everything is torn down (StopPodSandbox/RemovePodSandbox) and checked gone:
# pods, runtime state, processes, cgroups, network namespaces, mounts.
# CRI always uses containerd's `k8s.io` namespace, and so the shim's runsc root
# /run/skillbox/shim/k8s.io: the CRI suite (cargo test -p skillbox-cri-tests)
# shares it, so do not run both at once.
#
#   bash bench/cri.sh        (env: PODS=20 WARMUP=2 MEM_PODS=50 PARALLEL=MEM_PODS
#                          STOP_PARALLEL=PARALLEL SETTLE_MS=3000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh
require_root

pods="${PODS:-20}"
warmup="${WARMUP:-2}"
mem_pods="${MEM_PODS:-50}"
parallel="${PARALLEL:-$mem_pods}"
stop_parallel="${STOP_PARALLEL:-$parallel}"
settle_ms="${SETTLE_MS:-3000}"
target="${CARGO_TARGET_DIR:-$PWD/target}"

section "Build"
ensure_debian_packages "${SKILLBOX_DEBIAN_PACKAGES[@]}"
require_cargo
for plugin in bridge host-local loopback; do
    [ -x "/usr/lib/cni/$plugin" ] || die "/usr/lib/cni/$plugin is missing (Debian's containernetworking-plugins)"
done
# The harness finds the shim and runsc-as-runc beside cri-bench.
cargo build --release -p skillbox-shim -p skillbox-cri-tests
for binary in cri-bench runsc-as-runc containerd-shim-skillbox-v1; do
    [ -x "$target/release/$binary" ] || die "$target/release/$binary was not built"
done
if pgrep -f 'skillbox-cri\.' >/dev/null 2>&1; then
    echo "warning: another CRI harness seems to be running (processes naming /tmp/skillbox-cri.*): figures will be noisy"
fi

# cri-bench prints its own sections (setup, progress, results) and removes
# everything it started; it exits non-zero if anything failed or was left.
"$target/release/cri-bench" --pods "$pods" --warmup "$warmup" --mem-pods "$mem_pods" \
    --parallel "$parallel" --stop-parallel "$stop_parallel" --settle-ms "$settle_ms"
