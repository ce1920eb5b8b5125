#!/usr/bin/env bash
# Benchmarks, measured in one run on this machine (root, release build):
#
#  (a) compile time of examples/hello:
#      - `skillbox compile` end to end (median of N runs into fresh dirs),
#      - `skillbox --version` (process start-up alone) for comparison,
#      - the library alone, in-process (bench/compile-lib), no process start-up;
#  (b) `skillbox run examples/hello`, start to exit, against raw
#      `runsc --root … --network=none run --bundle <bundle> <id>` of the bundle
#      `skillbox compile` made from the same skill: interleaved runs, medians
#      and their ratio (target ≤ 1.15×).
#
#   bash bench/run.sh            (env: COMPILE_RUNS=50 RUN_RUNS=30 WARMUP=3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh
require_root

compile_runs="${COMPILE_RUNS:-50}"
run_runs="${RUN_RUNS:-30}"
warmup="${WARMUP:-3}"
skill="examples/hello"
skillbox="$PWD/target/release/skillbox"
rootfs="$PWD/$SKILLBOX_CACHE/busybox-rootfs"
work="$PWD/target/bench"
state="$work/state"

section "Setup"
ensure_debian_packages "${SKILLBOX_DEBIAN_PACKAGES[@]}" hyperfine jq
require_cargo
cargo build --release -p skillbox
(cd bench/compile-lib && CARGO_TARGET_DIR="$PWD/../../target/bench-compile-lib" cargo build --release)
bench_lib="$PWD/target/bench-compile-lib/release/skillbox-bench-compile"
bash examples/rootfs/make-busybox-rootfs.sh "$rootfs"
rm -rf "$work"
mkdir -p "$work" "$state"
echo "host: $(nproc) cores, kernel $(uname -r), $(runsc --version | head -n 1)"
echo "skillbox: $("$skillbox" --version)"


# hyperfine's median (ms) for one command, from its JSON export.
hyperfine_median_ms() {
    local json="$1"
    jq -r '.results[0].median * 1000' "$json" | awk '{ printf "%.2f\n", $1 }'
}

section "(a) Compile time of $skill"
hyperfine -N --runs "$compile_runs" --warmup 3 --style basic \
    --prepare "rm -rf $work/compile-out" \
    --export-json "$work/compile.json" \
    "$skillbox compile $skill --base-rootfs $rootfs -o $work/compile-out"
hyperfine -N --runs "$compile_runs" --warmup 3 --style basic \
    --export-json "$work/startup.json" \
    "$skillbox --version"
compile_ms="$(hyperfine_median_ms "$work/compile.json")"
startup_ms="$(hyperfine_median_ms "$work/startup.json")"
lib_out="$("$bench_lib" "$skill" "$rootfs" "$work/lib-scratch" 500)"
echo "$lib_out"
lib_compile_ms="$(awk '$1 == "compile" { sub("median_us=", "", $2); printf "%.3f", $2 / 1000 }' <<<"$lib_out")"
lib_pure_ms="$(awk '$1 == "policy+spec" { sub("median_us=", "", $2); printf "%.3f", $2 / 1000 }' <<<"$lib_out")"

section "(b) skillbox run vs raw runsc run, $skill"
"$skillbox" compile "$skill" --base-rootfs "$rootfs" -o "$work/bundle" >/dev/null
flags_json="$(jq -r '.annotations["io.skillbox.runsc.flags"]' "$work/bundle/config.json")"
network="$(jq -r '.network' <<<"$flags_json")"
platform="$(jq -r '.platform' <<<"$flags_json")"
raw_flags=("--network=$network" "--platform=$platform")
if [ "$(jq -r '.overlay' <<<"$flags_json")" = "true" ]; then
    raw_flags+=("--overlay")
fi
quota="$(jq -r '.linux.resources.cpu | "\(.quota)/\(.period)"' "$work/bundle/config.json")"
echo "both run in a cgroup with the policy's limits (CPU quota $quota us), which runsc or skillbox creates"
echo "raw:      runsc --root=$state ${raw_flags[*]} run --bundle=$work/bundle <id>"
echo "skillbox: skillbox run $skill --base-rootfs $rootfs"

raw_once() {
    runsc --root="$state" "${raw_flags[@]}" run --bundle="$work/bundle" "bench-raw-$1" </dev/null
}
skillbox_once() {
    SKILLBOX_STATE_DIR="$state" "$skillbox" run "$skill" --base-rootfs "$rootfs" </dev/null
}

# Both must succeed and print the same thing before anything is timed.
raw_out="$(raw_once check)"
skillbox_out="$(skillbox_once)"
if [ "$raw_out" != "$skillbox_out" ]; then
    die "raw runsc printed '$raw_out' but skillbox run printed '$skillbox_out'"
fi
echo "both print: $raw_out"

for i in $(seq 1 "$warmup"); do
    raw_once "warm-$i" >/dev/null
    skillbox_once >/dev/null
done
: >"$work/raw.ms"
: >"$work/skillbox.ms"
for i in $(seq 1 "$run_runs"); do
    # Alternate which goes first so that neither always runs on a warm cache.
    for which in $(if [ $((i % 2)) -eq 1 ]; then echo raw skillbox; else echo skillbox raw; fi); do
        if [ "$which" = raw ]; then
            time_ms raw_once "$i" >>"$work/raw.ms" || die "raw runsc run failed"
        else
            time_ms skillbox_once >>"$work/skillbox.ms" || die "skillbox run failed"
        fi
    done
done
raw_ms="$(median <"$work/raw.ms")"
run_ms="$(median <"$work/skillbox.ms")"
ratio="$(awk -v a="$run_ms" -v b="$raw_ms" 'BEGIN { printf "%.3f", a / b }')"
verdict="$(awk -v r="$ratio" 'BEGIN { print (r <= 1.15 ? "within" : "ABOVE") }')"

section "Results"
printf '%-58s %10s\n' "measurement" "median"
printf '%-58s %7s ms\n' "skillbox compile $skill (process, $compile_runs runs)" "$compile_ms"
printf '%-58s %7s ms\n' "skillbox --version (process start-up, $compile_runs runs)" "$startup_ms"
printf '%-58s %7s ms\n' "  compile minus start-up" \
    "$(awk -v a="$compile_ms" -v b="$startup_ms" 'BEGIN { printf "%.2f", a - b }')"
printf '%-58s %7s ms\n' "library: load + compile into a fresh dir (in-process)" "$lib_compile_ms"
printf '%-58s %7s ms\n' "library: policy + OCI spec + JSON, in memory" "$lib_pure_ms"
printf '%-58s %7s ms\n' "raw runsc run of the compiled bundle ($run_runs runs)" "$raw_ms"
printf '%-58s %7s ms\n' "skillbox run $skill ($run_runs runs, interleaved)" "$run_ms"
printf '%-58s %7s x  (%s the 1.15x target)\n' "ratio skillbox run / raw runsc run" "$ratio" "$verdict"
echo
echo "raw samples (ms):      $(sort -g "$work/raw.ms" | tr '\n' ' ')"
echo "skillbox samples (ms): $(sort -g "$work/skillbox.ms" | tr '\n' ' ')"
