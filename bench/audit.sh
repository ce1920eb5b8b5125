#!/usr/bin/env bash
# The audit benchmark, measured in one run on this machine (root,
# release build): one syscall-heavy busybox workload run by `skillbox run`
# with the policy's audit level `none`, `security` and `all`, interleaved.
#
#   workload  sh loop: EXECS x (`cat SKILL.md > /tmp/copy`: clone, execve,
#             open for writing, exit) then `dd bs=1 count=BYTES`: 2 x BYTES
#             read/write system calls
#
# For each level: the median wall time of the run (the report's wall_ms),
# its ratio to `none` (target for `security`: <= 1.3x), the events in the
# execution's audit log, events per second of wall time, and the dropped
# events (`events_dropped`, the sentry's count; target: zero at the default
# settings).
#
#   bash bench/audit.sh   (env: RUNS=5 EXECS=200 BYTES=50000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh
require_root

runs="${RUNS:-5}"
execs="${EXECS:-200}"
bytes="${BYTES:-50000}"
repo="$PWD"
skillbox="$repo/target/release/skillbox"
rootfs="$repo/$SKILLBOX_CACHE/busybox-rootfs"

section "Setup"
ensure_debian_packages "${SKILLBOX_DEBIAN_PACKAGES[@]}" jq
require_cargo
cargo build --release -p skillbox
bash examples/rootfs/make-busybox-rootfs.sh "$rootfs"
work="$(mktemp -d /tmp/skillbox-bench-audit.XXXXXX)"
trap 'rm -rf "$work"' EXIT

levels=(none security all)
for level in "${levels[@]}"; do
    skill="$work/skill-$level"
    mkdir -p "$skill/scripts"
    cat >"$skill/SKILL.md" <<MD
---
name: audit-bench-$level
description: syscall-heavy workload for the audit benchmark
security_policy:
  version: 1
  entrypoint: ["sh", "scripts/work.sh"]
  resources: { cpus: 2, memory: 256Mi, pids: 64, timeout: 300s }
  audit: { syscalls: $level }
---
MD
    cat >"$skill/scripts/work.sh" <<SH
i=0
while [ \$i -lt $execs ]; do cat /skill/SKILL.md > /tmp/copy; i=\$((i + 1)); done
dd if=/dev/zero of=/dev/null bs=1 count=$bytes 2>/dev/null
SH
done
echo "workload: $execs x (fork, exec cat, open for writing), dd bs=1 count=$bytes; $runs runs per level, interleaved"

section "Runs"
for run in $(seq 1 "$runs"); do
    for level in "${levels[@]}"; do
        log="$work/$level-$run.jsonl"
        "$skillbox" run --base-rootfs "$rootfs" --audit-log "$log" \
            --report "$work/$level-$run.report.json" "$work/skill-$level" >/dev/null
        wall="$(jq -r .wall_ms "$work/$level-$run.report.json")"
        events="$(wc -l <"$log")"
        dropped="$(jq -s '[.[] | select(.type == "events_dropped") | .count] | add // 0' "$log")"
        echo "$level $wall $events $dropped" >>"$work/samples"
        echo "run $run $level: ${wall} ms, $events events, $dropped dropped"
    done
done

section "Results"
python3 - "$work/samples" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
by = {}
for level, wall, events, dropped in rows:
    by.setdefault(level, []).append((int(wall), int(events), int(dropped)))
base = statistics.median(w for w, _, _ in by["none"])
print(f"{'audit level':<12}{'wall median':>14}{'ratio':>9}{'events':>9}{'events/s':>11}{'dropped':>9}")
for level in ("none", "security", "all"):
    samples = by[level]
    wall = statistics.median(w for w, _, _ in samples)
    events = statistics.median(e for _, e, _ in samples)
    rate = statistics.median(e / (w / 1000) for w, e, _ in samples)
    dropped = sum(d for _, _, d in samples)
    print(f"{level:<12}{wall:>11.0f} ms{wall / base:>8.2f}x{events:>9.0f}{rate:>11.0f}{dropped:>9}")
security = statistics.median(w for w, _, _ in by["security"]) / base
print(f"security / none: {security:.2f}x ({'within' if security <= 1.3 else 'ABOVE'} the 1.3x target)")
total = sum(d for level in by for _, _, d in by[level])
print(f"dropped events, all runs: {total} ({'met' if total == 0 else 'MISSED'}: target zero)")
PY
