#!/usr/bin/env bash
# Benchmark of `skillbox scan --runtime` (root, release build): a scan of
# examples/word-count with its three cases (the default one and the two of
# its scan.yaml) against three plain `skillbox run`s of the same cases
# (same arguments, stdin and inputs), interleaved in one run; medians and
# their ratio (target <= 1.3x). The scan audits every system call and
# writes its record; the runs audit at the policy's level.
#
#   bash bench/scan.sh            (env: RUNS=15 WARMUP=2)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh
require_root

runs="${RUNS:-15}"
warmup="${WARMUP:-2}"
skill="examples/word-count"
skillbox="$PWD/target/release/skillbox"
rootfs="$PWD/$SKILLBOX_CACHE/busybox-rootfs"
work="$PWD/target/bench-scan"
state="$work/state"

section "Setup"
ensure_debian_packages "${SKILLBOX_DEBIAN_PACKAGES[@]}"
require_cargo
cargo build --release -p skillbox
bash examples/rootfs/make-busybox-rootfs.sh "$rootfs"
rm -rf "$work"
mkdir -p "$work" "$state"
echo "host: $(nproc) cores, kernel $(uname -r), $(runsc --version | head -n 1)"

# The three cases of the scan, as plain runs.
runs_once() {
    SKILLBOX_STATE_DIR="$state" "$skillbox" run "$skill" --base-rootfs "$rootfs" </dev/null &&
        printf 'three little words\n' |
        SKILLBOX_STATE_DIR="$state" "$skillbox" run "$skill" --base-rootfs "$rootfs" &&
        SKILLBOX_STATE_DIR="$state" "$skillbox" run "$skill" --base-rootfs "$rootfs" \
            --input "$skill/sample.txt" </dev/null
}
scan_once() {
    SKILLBOX_STATE_DIR="$state" "$skillbox" scan --runtime "$skill" --base-rootfs "$rootfs" \
        --format json -o "$work/record.json"
}

runs_once >"$work/runs.out" || die "the plain runs failed"
scan_once || die "the scan failed or found something: $(cat "$work/record.json" 2>/dev/null)"
echo "plain runs print: $(tr '\n' ' ' <"$work/runs.out")"
echo "scan verdict: $(grep -o '"verdict": "[A-Z]*"' "$work/record.json")"

for i in $(seq 1 "$warmup"); do
    runs_once >/dev/null
    scan_once
done
: >"$work/runs.ms"
: >"$work/scan.ms"
for i in $(seq 1 "$runs"); do
    for which in $(if [ $((i % 2)) -eq 1 ]; then echo runs scan; else echo scan runs; fi); do
        if [ "$which" = runs ]; then
            time_ms runs_once >>"$work/runs.ms" || die "a plain run failed"
        else
            time_ms scan_once >>"$work/scan.ms" || die "the scan failed"
        fi
    done
done
runs_ms="$(median 1 <"$work/runs.ms")"
scan_ms="$(median 1 <"$work/scan.ms")"
ratio="$(awk -v a="$scan_ms" -v b="$runs_ms" 'BEGIN { printf "%.3f", a / b }')"
verdict="$(awk -v r="$ratio" 'BEGIN { print (r <= 1.3 ? "within" : "ABOVE") }')"

section "Results"
printf '%-52s %10s\n' "measurement" "median"
printf '%-52s %7s ms\n' "three skillbox runs of the cases ($runs runs)" "$runs_ms"
printf '%-52s %7s ms\n' "skillbox scan --runtime, three cases ($runs runs)" "$scan_ms"
printf '%-52s %7s x  (%s the 1.3x target)\n' "ratio scan / three runs" "$ratio" "$verdict"
echo
echo "runs samples (ms): $(sort -g "$work/runs.ms" | tr '\n' ' ')"
echo "scan samples (ms): $(sort -g "$work/scan.ms" | tr '\n' ' ')"
