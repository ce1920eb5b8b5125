#!/usr/bin/env bash
# Warm starts: start-to-exit of examples/hello through `skillbox run`
# taking a pre-booted sandbox from the pool (`skillbox pool serve`),
# against raw `runsc run` of the same compiled bundle and a cold
# `skillbox run`, measured in the same run (root, release build):
#
#  (a) latency: ROUNDS runs of each, one at a time; before each warm run the
#      pool has a sandbox ready and nothing booting (the replacement boots
#      between runs, as on a node that is not saturated). Medians, p90 and
#      the ratios warm/raw (target <= 0.7) and cold/raw;
#  (b) the pool's memory per ready sandbox (`skillbox pool status`);
#  (c) sustained: PARALLEL clients running back to back for SECONDS_LOAD s
#      through a pool of CAPACITY: executions per second and how many were
#      served warm (a sandbox must boot for every execution, so sustained
#      throughput stays bounded by boots, not by hand-outs), and the pool
#      process's open files and RSS before and after, all ready again.
#
# The hello skill runs with `cpus: 2` (the ceiling) instead of its 0.25: a
# quarter CPU quota would dominate the start-up of every path alike.
# runsc is the one on PATH (target/skillbox-cache/runsc-trixie/usr/bin first
# for current gVisor). Everything it starts is removed on exit.
#
#   bash bench/pool.sh      (env: ROUNDS=30 PARALLEL=4 SECONDS_LOAD=20 CAPACITY=8)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh
require_root

rounds="${ROUNDS:-30}"
parallel="${PARALLEL:-4}"
seconds_load="${SECONDS_LOAD:-20}"
capacity="${CAPACITY:-8}"
skillbox="$PWD/target/release/skillbox"
rootfs="$PWD/$SKILLBOX_CACHE/busybox-rootfs"
work="$(mktemp -d /tmp/skillbox-bench-pool.XXXXXX)"
state="$work/state"
socket="$work/pool.sock"
export SKILLBOX_STATE_DIR="$state"
pool_pid=""

cleanup() {
    set +e
    [ -n "$pool_pid" ] && kill -TERM "$pool_pid" 2>/dev/null && wait "$pool_pid" 2>/dev/null
    jobs -p | xargs -r kill 2>/dev/null
    wait 2>/dev/null
    remove_runsc_containers "$work/raw"
    "$skillbox" gc >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

prepare_release_bench "$rootfs"
mkdir -p "$state" "$work/raw"

hello_with_full_cpus "$work/hello"
"$skillbox" compile "$work/hello" --base-rootfs "$rootfs" -o "$work/bundle" -- world >/dev/null
platform="$(bundle_platform "$work/bundle")"
echo "bundle runs on the $platform platform"

pool_status() {
    "$skillbox" pool status --socket "$socket"
}

# Waits until the pool has `$1` sandboxes ready and none booting.
wait_ready() {
    local deadline=$((SECONDS + 60))
    until pool_status 2>/dev/null | jq -e --argjson n "$1" '.ready >= $n and .booting == 0' >/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "the pool did not get $1 sandboxes ready: $(pool_status)"
        sleep 0.05
    done
}

raw_once() {
    runsc --network=none --platform="$platform" --root "$work/raw" run --bundle "$work/bundle" "raw-$1" </dev/null
}
cold_once() {
    "$skillbox" run --no-pool "$work/hello" --base-rootfs "$rootfs" -- world </dev/null
}
warm_once() {
    "$skillbox" run --pool "$socket" --report "$work/warm-report.json" "$work/hello" --base-rootfs "$rootfs" -- world </dev/null
}

"$skillbox" pool serve --socket "$socket" --capacity 1 --per-skill 1 \
    --warm "$work/hello" --base-rootfs "$rootfs" 2>"$work/pool.log" &
pool_pid=$!
wait_ready 1

section "(a) Start-to-exit of examples/hello"
echo "raw:  runsc --network=none --platform=$platform run --bundle <bundle> <id>"
echo "cold: skillbox run --no-pool <hello> -- world"
echo "warm: skillbox run --pool <socket> <hello> -- world (a sandbox ready)"
# All three print the same before anything is timed.
expected="$(raw_once check)"
[ "$(cold_once)" = "$expected" ] || die "a cold run printed something else than raw runsc"
wait_ready 1
[ "$(warm_once)" = "$expected" ] || die "a warm run printed something else than raw runsc"
jq -e '.pooled' "$work/warm-report.json" >/dev/null || die "the warm run was not served by the pool: $(cat "$work/pool.log")"
for i in $(seq "$rounds"); do
    time_ms raw_once "$i" >>"$work/raw.ms"
    time_ms cold_once >>"$work/cold.ms"
    wait_ready 1
    time_ms warm_once >>"$work/warm.ms"
    jq -e '.pooled' "$work/warm-report.json" >/dev/null || die "warm run $i was not served by the pool"
done
for path in raw cold warm; do
    printf '%-5s p50 %6s ms   p90 %6s ms\n' "$path" \
        "$(percentile 50 <"$work/$path.ms")" "$(percentile 90 <"$work/$path.ms")"
done
raw50="$(percentile 50 <"$work/raw.ms")"
awk -v w="$(percentile 50 <"$work/warm.ms")" -v c="$(percentile 50 <"$work/cold.ms")" -v r="$raw50" \
    'BEGIN { printf "warm/raw %.2f (target <= 0.70)   cold/raw %.2f\n", w / r, c / r }'

section "(b) Memory of the pool's ready sandboxes"
kill -TERM "$pool_pid"
wait "$pool_pid" || die "the pool did not stop cleanly: $(cat "$work/pool.log")"
"$skillbox" pool serve --socket "$socket" --capacity "$capacity" --per-skill "$capacity" \
    --warm "$work/hello" --base-rootfs "$rootfs" 2>"$work/pool.log" &
pool_pid=$!
wait_ready "$capacity"
pool_status | jq -r '"\(.ready) ready sandboxes hold \(.ready_memory_bytes / 1048576 | floor) MiB (their cgroups and the PSS of their runsc run): \(.ready_memory_bytes / .ready / 1048576 * 10 | floor / 10) MiB each"'

section "(c) Sustained: $parallel clients back to back for $seconds_load s"
client() {
    local end=$((SECONDS + seconds_load)) n=0
    while [ "$SECONDS" -lt "$end" ]; do
        warm_once >/dev/null 2>&1 || exit 1
        n=$((n + 1))
    done
    echo "$n"
}
export -f client warm_once
export skillbox socket work rootfs seconds_load
# What the load leaves in the pool process.
read -r files_before _ rss_before _ < <(process_holdings "$pool_pid")
before="$(pool_status | jq .served)"
start="${EPOCHREALTIME/[.,]/}"
total=0
for i in $(seq "$parallel"); do client >"$work/client-$i" & done
wait $(jobs -p | grep -v "^$pool_pid\$") || true
end="${EPOCHREALTIME/[.,]/}"
for i in $(seq "$parallel"); do total=$((total + $(cat "$work/client-$i"))); done
served=$(($(pool_status | jq .served) - before))
awk -v n="$total" -v s="$served" -v us="$((end - start))" \
    'BEGIN { printf "%d executions in %.1f s = %.1f/s, %d of them (%.0f%%) served warm\n", n, us / 1e6, n / (us / 1e6), s, 100 * s / n }'
wait_ready "$capacity"
read -r files_after _ rss_after _ < <(process_holdings "$pool_pid")
echo "the pool process, $capacity sandboxes ready before and after: open files $files_before → $files_after," \
    "RSS $rss_before → $rss_after kB"

section "Stop"
kill -TERM "$pool_pid"
wait "$pool_pid" || die "the pool did not stop cleanly: $(cat "$work/pool.log")"
pool_pid=""
left="$(find "$state" -mindepth 1 -maxdepth 1 | wc -l)"
[ "$left" -eq 0 ] || die "the pool left $left entries in $state"
echo "pool stopped; nothing left in its state directory"
