#!/usr/bin/env bash
# The containerd shim's benchmark, measured in one run on this machine (root,
# release build, a private containerd):
#
#  (a) start-to-exit latency of examples/hello, interleaved runs of
#      - ours:     ctr run --rm --runtime io.containerd.skillbox.v1 --config <bundle>/config.json <id>
#      - baseline: ctr run --rm --runc-binary <wrapper> --config <bundle>/config.json <id>
#                  (containerd's Go shim containerd-shim-runc-v2 driving runsc
#                  through a wrapper that adds --network=none --platform=ptrace)
#      - raw:      runsc --network=none --platform=ptrace --root <dir> run --bundle <bundle> <id>
#      with median, p90 and min per path and the ratios of the medians
#      (targets: ours/baseline ≤ 1.0, ours/raw ≤ 1.2);
#  (c) executions per second through containerd (ctr run --rm at
#      parallelism 4 and 8; target >= 20/s), against the runc shim at 8,
#      and what our shim's runs left: shim processes, runsc containers,
#      audit files, cgroups, mounts;
#  (b) the memory of each shim process (RSS and PSS from smaps_rollup) while
#      a long-running task runs under it, after its metrics and processes
#      were asked for as kubelet does (target: our RSS ≤ 4 MiB), and where
#      our shim's RSS goes, by mapping.
#  (d) what a shim holds after many execs into its task (`ctr tasks exec`,
#      EXEC_RUNS of them at parallelism 4), ours and the runc shim's: open
#      files, threads, RSS and anonymous memory before (after 10 execs) and
#      after, which a leak per exec would make grow.
#
# All three paths run the same bundle: examples/hello compiled by
# `skillbox compile`, with its CPU quota (cpus: 0.25) removed so that CFS
# throttling adds no variance. Everything this script starts (containerd,
# containers, tasks, sandboxes, temp dirs) is removed on exit.
#
#   bash bench/shim.sh            (env: RUNS=15 WARMUP=2 MEM_SAMPLES=3 THROUGHPUT_RUNS=100 EXEC_RUNS=1000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh
require_root

runs="${RUNS:-15}"
warmup="${WARMUP:-2}"
mem_samples="${MEM_SAMPLES:-3}"
throughput_runs="${THROUGHPUT_RUNS:-100}"
exec_runs="${EXEC_RUNS:-1000}"
repo="$PWD"
skillbox="$repo/target/release/skillbox"
# SHIM: another build of the shim to measure (default: the release build).
shim="${SHIM:-$repo/target/release/containerd-shim-skillbox-v1}"
rootfs="$repo/$SKILLBOX_CACHE/busybox-rootfs"
ns="skillbox-bench-$$"

section "Setup"
ensure_debian_packages "${SKILLBOX_DEBIAN_PACKAGES[@]}" jq
require_cargo
cargo build --release -p skillbox -p skillbox-shim
bash examples/rootfs/make-busybox-rootfs.sh "$rootfs"

# Short paths: containerd's sockets must fit in a unix socket address.
work="$(mktemp -d /tmp/skillbox-bench-shim.XXXXXX)"
ctrd="$work/containerd"
raw_root="$work/runsc-raw"
runc_root="$work/runsc-runc-shim"
ctrd_pid=""

# ctr against the private containerd, in the benchmark's namespace.
ctr_() {
    ctr --address "$ctrd/containerd.sock" --namespace "$ns" "$@"
}

cleanup() {
    set +e
    if [ -n "$ctrd_pid" ]; then
        local id
        for id in $(ctr_ tasks list --quiet 2>/dev/null); do
            ctr_ tasks delete --force "$id" >/dev/null 2>&1
        done
        # A task runsc left in "created" cannot be killed through the runc
        # shim (runsc refuses to signal it): delete the sandbox directly.
        for id in $(runsc --root "$runc_root/$ns" list --quiet 2>/dev/null); do
            runsc --network=none --platform=ptrace --root "$runc_root/$ns" delete --force "$id" >/dev/null 2>&1
            ctr_ tasks delete "$id" >/dev/null 2>&1
        done
        for id in $(ctr_ containers list --quiet 2>/dev/null); do
            ctr_ containers delete "$id" >/dev/null 2>&1
        done
        kill "$ctrd_pid" 2>/dev/null
        wait "$ctrd_pid" 2>/dev/null
    fi
    for id in $(runsc --root "$raw_root" list --quiet 2>/dev/null); do
        runsc --network=none --platform=ptrace --root "$raw_root" delete --force "$id" >/dev/null 2>&1
    done
    # runsc removes the cgroups it creates, but not always after a kill
    # (see docs/runsc-facts.md): remove what is left, empty by now.
    if [ -n "${cgroup_hello:-}" ]; then
        local left=()
        mapfile -t left < <(ls -d /sys/fs/cgroup/*/"${cgroup_hello#/}" /sys/fs/cgroup/*/"${cgroup_hello#/}"-* \
            /sys/fs/cgroup/*/"${cgroup_sleep#/}"-* 2>/dev/null)
        if [ "${#left[@]}" -gt 0 ]; then
            echo "cgroups left behind by the runs, removed: ${left[*]}"
            rmdir "${left[@]}"
        fi
    fi
    # Our shim removes its per-namespace runsc root with its last container.
    rmdir "/run/skillbox/shim/$ns" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "host: $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "runsc: $(runsc --version | head -n 1)"
echo "containerd: $(containerd --version)"
echo "shims: $shim ($(stat -c %s "$shim") bytes), $(command -v containerd-shim-runc-v2) ($(stat -c %s "$(command -v containerd-shim-runc-v2)") bytes)"

# The hello skill with `cpus: 2` (the ceiling; no real limit on this
# machine) instead of its 0.25, which would dominate start-up: our shim
# enforces the policy's quota, so the one bundle all three paths run carries
# it (the Go shim and raw runsc apply the spec's quota too).
hello_with_full_cpus "$work/hello-skill"
"$skillbox" compile "$work/hello-skill" --base-rootfs "$rootfs" -o "$work/hello" --absolute-paths >/dev/null
bundle="$work/bundle"
mkdir -p "$bundle"
# Own cgroup paths, so that nobody else's hello or sleep shares them.
cgroup_hello="/skillbox-bench-hello-$$"
cgroup_sleep="/skillbox-bench-sleep-$$"
jq --arg cg "$cgroup_hello" '.linux.cgroupsPath = $cg' \
    "$work/hello/config.json" >"$bundle/config.json"

# A skill that sleeps, for the memory figures.
mkdir -p "$work/sleep-skill"
cat >"$work/sleep-skill/SKILL.md" <<'MD'
---
name: bench-sleep
description: Sleeps, so that a shim's memory can be read while its task runs.
security_policy:
  version: 1
  entrypoint: [sleep, "600"]
  resources: { timeout: 10m }
---
MD
"$skillbox" compile "$work/sleep-skill" --base-rootfs "$rootfs" -o "$work/sleep" --absolute-paths >/dev/null
# One cgroup per shim: a sandbox joins an existing cgroup without owning it.
for which in ours baseline; do
    jq --arg cg "$cgroup_sleep-$which" '.linux.cgroupsPath = $cg' "$work/sleep/config.json" \
        >"$work/sleep/config-$which.json"
done

# containerd's runc shim calls its runc binary with runc's CLI; runsc takes
# it, but needs its own configuration flags on every call (see
# docs/containerd-shim-facts.md).
wrapper="$work/bin/runsc-as-runc"
mkdir -p "$work/bin"
cat >"$wrapper" <<'SH'
#!/bin/sh
exec runsc --network=none --platform=ptrace "$@"
SH
chmod +x "$wrapper"

# A private containerd (own config, root, state and sockets), started from /
# because containerd looks for shims in its cwd first, with our shim first on
# its PATH.
mkdir -p "$ctrd/bin" "$raw_root" "$runc_root"
ln -s "$shim" "$ctrd/bin/containerd-shim-skillbox-v1"
cat >"$ctrd/config.toml" <<TOML
version = 2
root = "$ctrd/root"
state = "$ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ctrd/containerd.sock"
[ttrpc]
  address = "$ctrd/containerd.sock.ttrpc"
TOML
(cd / && PATH="$ctrd/bin:$PATH" exec containerd --config "$ctrd/config.toml" >"$ctrd/containerd.log" 2>&1) &
ctrd_pid=$!
for _ in $(seq 1 100); do
    [ -S "$ctrd/containerd.sock" ] && break
    sleep 0.1
done
[ -S "$ctrd/containerd.sock" ] || die "containerd did not start: $(tail -n 5 "$ctrd/containerd.log")"
# Nothing below depends on the cwd; containerd and ctr get absolute paths.
cd /

ours_once() {
    ctr_ run --rm --runtime io.containerd.skillbox.v1 --config "$bundle/config.json" "bench-ours-$1" </dev/null
}
baseline_once() {
    ctr_ run --rm --runc-binary "$wrapper" --runc-root "$runc_root" --config "$bundle/config.json" \
        "bench-baseline-$1" </dev/null
}
raw_once() {
    runsc --network=none --platform=ptrace --root "$raw_root" run --bundle "$bundle" "bench-raw-$1" </dev/null
}

section "(a) Start-to-exit latency of examples/hello"
echo "ours:     ctr run --rm --runtime io.containerd.skillbox.v1 --config $bundle/config.json <id>"
echo "baseline: ctr run --rm --runc-binary $wrapper --runc-root $runc_root --config $bundle/config.json <id>"
echo "raw:      runsc --network=none --platform=ptrace --root $raw_root run --bundle $bundle <id>"

# All three must succeed and print the same thing before anything is timed.
raw_out="$(raw_once check)" || die "raw runsc run failed"
ours_out="$(ours_once check)" || die "ctr run through our shim failed: $(tail -n 5 "$ctrd/containerd.log")"
baseline_out="$(baseline_once check)" || die "ctr run through the runc shim failed: $(tail -n 5 "$ctrd/containerd.log")"
[ "$ours_out" = "$raw_out" ] || die "raw runsc printed '$raw_out' but our shim printed '$ours_out'"
[ "$baseline_out" = "$raw_out" ] || die "raw runsc printed '$raw_out' but the runc shim printed '$baseline_out'"
echo "all three print: $raw_out"

paths=(ours baseline raw)
for i in $(seq 1 "$warmup"); do
    for which in "${paths[@]}"; do
        "${which}_once" "warm-$i" >/dev/null || die "$which run failed"
    done
done
for which in "${paths[@]}"; do
    : >"$work/$which.ms"
done
for i in $(seq 1 "$runs"); do
    # Rotate the order so that no path always runs first or last.
    order=("${paths[@]:i%3}" "${paths[@]:0:i%3}")
    for which in "${order[@]}"; do
        # EPOCHREALTIME without its dot: microseconds, read without a fork.
        start="${EPOCHREALTIME/[.,]/}"
        "${which}_once" "$i" >/dev/null || die "$which run failed"
        end="${EPOCHREALTIME/[.,]/}"
        awk -v us="$((end - start))" 'BEGIN { printf "%.3f\n", us / 1000 }' >>"$work/$which.ms"
    done
done

# "median p90 min" of the numbers on stdin (p90 by nearest rank).
summary() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
        r = int(0.9 * NR); if (r < 0.9 * NR) r++
        printf "%.1f %.1f %.1f\n", m, v[r], v[1] }'
}
read -r ours_med ours_p90 ours_min < <(summary <"$work/ours.ms")
read -r base_med base_p90 base_min < <(summary <"$work/baseline.ms")
read -r raw_med raw_p90 raw_min < <(summary <"$work/raw.ms")

section "(c) Executions per second through containerd"
# ctr run --rm of the hello bundle, $throughput_runs at a time at each
# parallelism: ours at 4 and 8, the runc shim driving runsc at 8.
# One run of the hello bundle by WHICH (ours or baseline) as container ID,
# with a cgroup of its own: concurrent sandboxes never share one.
tput_once() {
    local config="$work/tput/$2.json"
    jq --arg cg "$cgroup_hello-$2" '.linux.cgroupsPath = $cg' "$bundle/config.json" >"$config"
    case "$1" in
        ours) ctr_ run --rm --runtime io.containerd.skillbox.v1 --config "$config" "tput-$2" </dev/null ;;
        baseline) ctr_ run --rm --runc-binary "$wrapper" --runc-root "$runc_root" --config "$config" \
            "tput-$2" </dev/null ;;
    esac
}
mkdir -p "$work/tput"
export -f ctr_ tput_once
export ctrd ns bundle wrapper runc_root work cgroup_hello
# rate WHICH PARALLEL: executions per second.
rate() {
    local start end
    start="${EPOCHREALTIME/[.,]/}"
    seq "$throughput_runs" | xargs -P "$2" -I{} bash -c "tput_once $1 $1-$2-{} >/dev/null" ||
        die "a $1 run failed at parallelism $2"
    end="${EPOCHREALTIME/[.,]/}"
    awk -v n="$throughput_runs" -v us="$((end - start))" 'BEGIN { printf "%.1f\n", n / (us / 1e6) }'
}
ours_rate4="$(rate ours 4)"
ours_rate8="$(rate ours 8)"
# What the ctr run --rm through our shim left on the node, counted once
# their shims have had a moment to exit.
sleep 2
ours_shims="$(pgrep -fc "containerd-shim-skillbox-v1 -namespace $ns " || true)"
ours_runsc="$(runsc --root "/run/skillbox/shim/$ns" list --quiet 2>/dev/null | grep -c . || true)"
ours_audit="$(find /run/skillbox/audit -maxdepth 1 -name "$ns.*" | wc -l)"
ours_cgroups="$(find /sys/fs/cgroup -maxdepth 2 -name "${cgroup_hello#/}-ours-*" | wc -l)"
ours_mounts="$(grep -c -e "$ctrd" -e "/run/skillbox/shim/$ns" /proc/self/mountinfo || true)"
base_rate8="$(rate baseline 8)"

section "(b) Shim memory while a task runs"
# The shim serving container $1 (pid), found by its command line: containerd
# starts it as `<shim> -namespace <ns> -id <id> -address … [-socket …]`.
shim_pid() {
    local proc cmdline found=""
    for proc in /proc/[0-9]*; do
        { cmdline="$(tr '\0' ' ' <"$proc/cmdline")"; } 2>/dev/null || continue
        case "$cmdline" in
            *containerd-shim-*" -namespace $ns -id $1 "*)
                case "$cmdline" in *" start "|*" delete ") continue ;; esac
                [ -z "$found" ] || die "two shims for $1: $found and ${proc#/proc/}"
                found="${proc#/proc/}"
                ;;
        esac
    done
    [ -n "$found" ] || die "no shim process for $1"
    echo "$found"
}
# "rss_kb pss_kb threads" of process $1.
memory_of() {
    local rss pss threads
    rss="$(awk '$1 == "Rss:" { print $2 }' "/proc/$1/smaps_rollup")"
    pss="$(awk '$1 == "Pss:" { print $2 }' "/proc/$1/smaps_rollup")"
    threads="$(awk '$1 == "Threads:" { print $2 }' "/proc/$1/status")"
    echo "$rss $pss $threads"
}
# RSS by mapping of process $1, in kB, the largest first: where a shim's
# memory goes (its code, the shared libraries, heap, stacks).
rss_by_mapping() {
    awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anonymous]" : $6 " " $2) }
         $1 == "Rss:" { rss[name] += $2 }
         END { for (n in rss) if (rss[n] > 0) print rss[n], n }' "/proc/$1/smaps" | sort -rn | head -n 8
}
# Waits until task $1 is RUNNING.
wait_running() {
    local _
    for _ in $(seq 1 100); do
        [ "$(ctr_ tasks list | awk -v id="$1" '$1 == id { print $3 }')" = RUNNING ] && return 0
        sleep 0.1
    done
    die "task $1 did not reach RUNNING"
}

# Starts the sleeping task $2 under shim $1 (ours or baseline), detached.
start_sleeper() {
    case "$1" in
        ours) ctr_ run --detach --runtime io.containerd.skillbox.v1 --config "$work/sleep/config-ours.json" "$2" </dev/null ;;
        baseline) ctr_ run --detach --runc-binary "$wrapper" --runc-root "$runc_root" \
            --config "$work/sleep/config-baseline.json" "$2" </dev/null ;;
    esac
}
# Kills and deletes task $1 and its container.
remove_task() {
    # (ctr warns that the task exited 137: it was killed, as intended.)
    ctr_ tasks delete --force "$1" >/dev/null 2>"$work/ctr.err" ||
        die "ctr tasks delete --force $1: $(cat "$work/ctr.err")"
    ctr_ containers delete "$1"
}

echo "each shim serves $work/sleep (sleep 600), in its own cgroup; read 1 s after the task is RUNNING"
: >"$work/ours.mem"
: >"$work/baseline.mem"
for i in $(seq 1 "$mem_samples"); do
    start_sleeper ours "mem-ours-$i"
    start_sleeper baseline "mem-baseline-$i"
    wait_running "mem-ours-$i"
    wait_running "mem-baseline-$i"
    # As kubelet does, ask each shim for the task's state and metrics.
    for id in "mem-ours-$i" "mem-baseline-$i"; do
        ctr_ tasks metrics "$id" >/dev/null
        ctr_ tasks ps "$id" >/dev/null
    done
    sleep 1
    pid="$(shim_pid "mem-ours-$i")"
    memory_of "$pid" >>"$work/ours.mem"
    [ "$i" -gt 1 ] || rss_by_mapping "$pid" >"$work/ours.maps"
    pid="$(shim_pid "mem-baseline-$i")"
    memory_of "$pid" >>"$work/baseline.mem"
    remove_task "mem-ours-$i"
    remove_task "mem-baseline-$i"
done
section "(d) $exec_runs execs into one running task"
# One exec of `true` into task $1, exec id $2.
exec_once() {
    ctr_ tasks exec --exec-id "x-$2" "$1" true </dev/null
}
export -f exec_once
for which in ours baseline; do
    id="execs-$which"
    start_sleeper "$which" "$id"
    wait_running "$id"
    for n in $(seq 1 10); do
        exec_once "$id" "warm-$n" >/dev/null || die "exec into $id failed"
    done
    sleep 1
    pid="$(shim_pid "$id")"
    process_holdings "$pid" >"$work/$which.before"
    start="${EPOCHREALTIME/[.,]/}"
    seq "$exec_runs" | xargs -P 4 -I{} bash -c "exec_once $id {} >/dev/null" || die "an exec into $id failed"
    end="${EPOCHREALTIME/[.,]/}"
    awk -v n="$exec_runs" -v us="$((end - start))" 'BEGIN { printf "%.1f\n", n / (us / 1e6) }' >"$work/$which.exec-rate"
    sleep 2
    process_holdings "$pid" >"$work/$which.after"
    remove_task "$id"
done

# Median of column $1 of file $2, rounded to an integer.
column_median() {
    awk -v c="$1" '{ print $c }' "$2" | summary | awk '{ printf "%.0f\n", $1 }'
}
ours_rss="$(column_median 1 "$work/ours.mem")"
ours_pss="$(column_median 2 "$work/ours.mem")"
ours_threads="$(column_median 3 "$work/ours.mem")"
base_rss="$(column_median 1 "$work/baseline.mem")"
base_pss="$(column_median 2 "$work/baseline.mem")"
base_threads="$(column_median 3 "$work/baseline.mem")"

# $1 / $2 with 3 decimals.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'
}
# "within" or "ABOVE" for value $1 against target $2.
verdict() {
    awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t ? "within" : "ABOVE") }'
}

section "Results"
printf '%-46s %9s %9s %9s\n' "start to exit, examples/hello ($runs runs)" "median" "p90" "min"
printf '%-46s %6s ms %6s ms %6s ms\n' "ours: io.containerd.skillbox.v1" "$ours_med" "$ours_p90" "$ours_min"
printf '%-46s %6s ms %6s ms %6s ms\n' "baseline: io.containerd.runc.v2 + runsc" "$base_med" "$base_p90" "$base_min"
printf '%-46s %6s ms %6s ms %6s ms\n' "raw: runsc run" "$raw_med" "$raw_p90" "$raw_min"
r_base="$(ratio "$ours_med" "$base_med")"
r_raw="$(ratio "$ours_med" "$raw_med")"
printf '%-46s %6s x  (%s the 1.0x target)\n' "ratio ours / baseline (medians)" "$r_base" "$(verdict "$r_base" 1.0)"
printf '%-46s %6s x  (%s the 1.2x target)\n' "ratio ours / raw (medians)" "$r_raw" "$(verdict "$r_raw" 1.2)"
printf '%-46s %s\n' "executions/s through containerd ($throughput_runs runs)" \
    "ours: $ours_rate4 at parallelism 4, $ours_rate8 at 8; runc shim + runsc: $base_rate8 at 8 (target >= 20)"
printf '%-46s %s\n' "left by those $((2 * throughput_runs)) runs through our shim" \
    "shim processes $ours_shims, runsc containers $ours_runsc, audit files $ours_audit, cgroups $ours_cgroups, mounts $ours_mounts"
echo
printf '%-46s %9s %9s %8s\n' "shim memory while a task runs ($mem_samples samples)" "RSS" "PSS" "threads"
printf '%-46s %6s kB %6s kB %8s\n' "ours: containerd-shim-skillbox-v1" "$ours_rss" "$ours_pss" "$ours_threads"
printf '%-46s %6s kB %6s kB %8s\n' "baseline: containerd-shim-runc-v2" "$base_rss" "$base_pss" "$base_threads"
printf '%-46s %9s %9s\n' "ratio ours / baseline" "$(ratio "$ours_rss" "$base_rss")" "$(ratio "$ours_pss" "$base_pss")"
printf '%-46s %6s kB  (%s the 4 MiB target)\n' "our RSS against 4 MiB = 4096 kB" "$ours_rss" "$(verdict "$ours_rss" 4096)"
echo "our shim's RSS by mapping (kB, first sample):"
sed 's/^/    /' "$work/ours.maps"
echo
printf '%-46s %s\n' "after $exec_runs execs into one task (before → after)" \
    "open files, threads, RSS kB, anonymous kB"
for which in ours baseline; do
    read -r f0 t0 r0 a0 <"$work/$which.before"
    read -r f1 t1 r1 a1 <"$work/$which.after"
    printf '%-46s %s → %s, %s → %s, %s → %s, %s → %s  (%s execs/s)\n' "$which" \
        "$f0" "$f1" "$t0" "$t1" "$r0" "$r1" "$a0" "$a1" "$(cat "$work/$which.exec-rate")"
done
echo
for which in "${paths[@]}"; do
    printf '%-9s samples (ms): %s\n' "$which" "$(sort -g "$work/$which.ms" | tr '\n' ' ')"
done
for which in ours baseline; do
    printf '%-9s memory samples (RSS PSS threads): %s\n' "$which" "$(tr '\n' ',' <"$work/$which.mem" | sed 's/,$//; s/,/, /g')"
done
