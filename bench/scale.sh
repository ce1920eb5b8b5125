#!/usr/bin/env bash
# Scale figures of `skillbox run` on this machine (root, release build):
#
#  (a) executions per second sustained: N runs of a /bin/true skill at
#      parallelism 1, 4 and 8 (target >= 20/s on 2 cores), against the
#      baseline of raw `runsc run` of the same compiled bundle, N runs at
#      the same parallelism in the same run (the ceiling any runtime that
#      boots a sandbox per execution has here);
#  (b) 100 concurrent sandboxes (a skill that prints `started` and sleeps):
#      memory per sandbox, as the fall of MemAvailable while all 100 run
#      divided by 100, and as the sum of their processes' PSS;
#  (c) start-to-exit latency of the /bin/true skill, p50 and p99, idle and
#      while the 100 sandboxes of (b) run;
#  (d) 1000 executions (parallelism 8) of a skill with egress (its own
#      network namespace, veth and nftables tables) and nothing left after:
#      runsc state, execution directories, cgroups, network namespaces,
#      nftables tables, mounts, processes.
#
# Everything it starts is removed on exit. runsc is the one on PATH (put
# target/skillbox-cache/runsc-trixie/usr/bin first for current gVisor).
#
#   bash bench/scale.sh        (env: RUNS=200 SANDBOXES=100 LATENCY_RUNS=40 LEAK_RUNS=1000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh
require_root

runs="${RUNS:-200}"
sandboxes="${SANDBOXES:-100}"
latency_runs="${LATENCY_RUNS:-40}"
leak_runs="${LEAK_RUNS:-1000}"
skillbox="$PWD/target/release/skillbox"
rootfs="$PWD/$SKILLBOX_CACHE/busybox-rootfs"
work="$(mktemp -d /tmp/skillbox-bench-scale.XXXXXX)"
state="$work/state"
export SKILLBOX_STATE_DIR="$state"

cleanup() {
    set +e
    jobs -p | xargs -r kill 2>/dev/null
    wait 2>/dev/null
    remove_runsc_containers "$work/raw"
    "$skillbox" gc >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

prepare_release_bench "$rootfs"
mkdir -p "$state"

# skill NAME SCRIPT [POLICY]: a busybox-sh skill in $work/NAME.
skill() {
    mkdir -p "$work/$1/scripts"
    printf -- '---\nname: %s\ndescription: scale benchmark\nsecurity_policy:\n  version: 1\n  entrypoint: ["sh", "scripts/main.sh"]\n%s---\n' \
        "$1" "${3:-}" >"$work/$1/SKILL.md"
    printf '%s\n' "$2" >"$work/$1/scripts/main.sh"
}
skill true 'true'
skill sleeper 'echo started; sleep 60' '  resources: { timeout: 120s }
'
skill egress 'true' '  network:
    allow:
      - { cidr: 198.18.64.0/24, ports: [80] }
'

run_skill() {
    "$skillbox" run "$work/$1" --base-rootfs "$rootfs" >/dev/null 2>&1
}
"$skillbox" compile "$work/true" --base-rootfs "$rootfs" -o "$work/true-bundle" >/dev/null
platform="$(bundle_platform "$work/true-bundle")"
mkdir -p "$work/raw"
raw_run() {
    runsc --network=none --platform="$platform" --root "$work/raw" run --bundle "$work/true-bundle" "raw-$1" >/dev/null 2>&1
}
export -f run_skill raw_run
export skillbox work rootfs platform

latencies() {
    local i
    for i in $(seq "$latency_runs"); do
        time_ms "$skillbox" run "$work/true" --base-rootfs "$rootfs"
    done
}

section "(a) Executions per second"
run_skill true
# rate COMMAND PARALLEL: executions per second of $runs runs of COMMAND.
rate() {
    local start end
    start="${EPOCHREALTIME/[.,]/}"
    seq "$runs" | xargs -P "$2" -I{} bash -c "$1 {}-$2" || die "a run of $1 failed"
    end="${EPOCHREALTIME/[.,]/}"
    awk -v n="$runs" -v us="$((end - start))" 'BEGIN { printf "%.1f", n / (us / 1e6) }'
}
for parallel in 1 4 8; do
    ours="$(rate 'run_skill true; :' "$parallel")"
    raw="$(rate raw_run "$parallel")"
    awk -v p="$parallel" -v ours="$ours" -v raw="$raw" -v n="$runs" \
        'BEGIN { printf "parallelism %d (%d runs each): skillbox run %.1f executions/s, raw runsc run %.1f/s, ratio %.2f\n", p, n, ours, raw, ours / raw }' |
        tee -a "$work/throughput.txt"
done

section "(c) Latency, idle"
latencies >"$work/idle.ms"
idle_p50="$(percentile 50 <"$work/idle.ms")"
idle_p99="$(percentile 99 <"$work/idle.ms")"

section "(b) $sandboxes concurrent sandboxes"
available_before="$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)"
mkdir -p "$work/started"
for i in $(seq "$sandboxes"); do
    "$skillbox" run "$work/sleeper" --base-rootfs "$rootfs" >"$work/started/$i" 2>/dev/null &
done
deadline=$((SECONDS + 90))
while [ "$(grep -l started "$work"/started/* 2>/dev/null | wc -l)" -lt "$sandboxes" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "not all $sandboxes sandboxes started within 90 s"
    sleep 0.5
done
echo "all $sandboxes sandboxes running after $((SECONDS - deadline + 90)) s"
sleep 2
available_during="$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)"
pss_kb=0
for pid in $(pgrep -f "runsc|skillbox run"); do
    kb="$(awk '$1 == "Pss:" { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || true)"
    pss_kb=$((pss_kb + ${kb:-0}))
done

section "(c) Latency, with $sandboxes sandboxes running"
latencies >"$work/loaded.ms"
loaded_p50="$(percentile 50 <"$work/loaded.ms")"
loaded_p99="$(percentile 99 <"$work/loaded.ms")"
jobs -p | xargs -r kill 2>/dev/null || true
wait 2>/dev/null || true
"$skillbox" gc >/dev/null 2>&1 || true

section "(d) $leak_runs executions with egress, then what is left"
netns_before="$(ip netns list | grep -c skillbox || true)"
tables_before="$(nft list tables | grep -c skillbox || true)"
start="${EPOCHREALTIME/[.,]/}"
seq "$leak_runs" | xargs -P 8 -I{} bash -c 'run_skill egress' || die "a run failed"
end="${EPOCHREALTIME/[.,]/}"
leak_rate="$(awk -v n="$leak_runs" -v us="$((end - start))" 'BEGIN { printf "%.1f", n / (us / 1e6) }')"
left_state="$(find "$state" -mindepth 1 -maxdepth 1 ! -name cache | wc -l)"
left_cgroups="$(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d -path '*/skillbox/*' 2>/dev/null | wc -l)"
left_netns=$(($(ip netns list | grep -c skillbox || true) - netns_before))
left_tables=$(($(nft list tables | grep -c skillbox || true) - tables_before))
left_mounts="$(grep -c "$state" /proc/self/mountinfo || true)"
left_processes="$(pgrep -fc "$state" || true)"

section "Results"
cat "$work/throughput.txt"
awk -v before="$available_before" -v during="$available_during" -v n="$sandboxes" -v pss="$pss_kb" 'BEGIN {
    printf "%d concurrent sandboxes: MemAvailable fell %.0f MiB = %.1f MiB per sandbox; their processes PSS %.0f MiB = %.1f MiB per sandbox\n",
        n, (before - during) / 1024, (before - during) / 1024 / n, pss / 1024, pss / 1024 / n }'
echo "start-to-exit of a /bin/true skill ($latency_runs runs): idle p50 $idle_p50 ms, p99 $idle_p99 ms; with $sandboxes running p50 $loaded_p50 ms, p99 $loaded_p99 ms"
echo "$leak_runs executions with egress at parallelism 8: $leak_rate executions/s"
echo "left after them: execution dirs $left_state, cgroups $left_cgroups, network namespaces $left_netns, nftables tables $left_tables, mounts $left_mounts, processes $left_processes"
total=$((left_state + left_cgroups + left_netns + left_tables + left_mounts + left_processes))
[ "$total" -eq 0 ] || die "something was left behind"
