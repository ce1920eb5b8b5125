#!/usr/bin/env bash
# Runs the whole test suite: unit tests, golden tests, the integration
# tests that start real gVisor sandboxes (they need root, runsc,
# busybox-static and debootstrap; the rootfs caches they build live under
# target/), the CRI suite on containerd 1.6 and again on 2.1, and then the
# whole workspace again on Debian trixie's runsc 20240729 (systrap).
#
#   bash scripts/test.sh [extra cargo test arguments]
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd_repo_root

section "Host packages"
bash scripts/setup.sh

section "cargo test --workspace"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
set -e

# The CRI suite again on containerd 2.1 (Debian sid's, unpacked into
# target/skillbox-cache; the workspace run above used Debian's 1.6).
section "CRI suite on containerd 2.1"
bash scripts/fetch-containerd.sh
set +e
SKILLBOX_CRI_CONTAINERD=2.1 cargo test -p skillbox-cri-tests --no-fail-fast "$@" 2>&1 | tee -a "$log"
cri_status="${PIPESTATUS[0]}"
set -e
[ "$cri_status" -eq 0 ] || status="$cri_status"

# The whole workspace again on current gVisor: Debian trixie's runsc
# (20240729), first on PATH for the CLI, the shim and the tests alike, where
# `[runsc] platform = "auto"` runs systrap (bookworm's 20221219 runs ptrace).
section "The suite on runsc 20240729 (systrap)"
bash scripts/fetch-runsc.sh
runsc_dir="$(realpath "${CARGO_TARGET_DIR:-target}/skillbox-cache/runsc-trixie/usr/bin")"
set +e
PATH="$runsc_dir:$PATH" cargo test --workspace --no-fail-fast "$@" 2>&1 | tee -a "$log"
trixie_status="${PIPESTATUS[0]}"
set -e
[ "$trixie_status" -eq 0 ] || status="$trixie_status"

section "Summary"
# One "test result:" line per test binary (and per doc-test run); add them up.
# "ignored" tests are reported as skipped.
awk '
    /^test result:/ {
        runs++
        for (i = 1; i < NF; i++) {
            if ($(i + 1) ~ /^passed;?$/) passed += $i
            if ($(i + 1) ~ /^failed;?$/) failed += $i
            if ($(i + 1) ~ /^ignored;?$/) ignored += $i
        }
    }
    END {
        printf "%d test runs\n", runs
        printf "total: %d passed, %d failed, %d skipped\n", passed, failed, ignored
    }
' "$log"
if [ "$status" -ne 0 ]; then
    grep -E '^test .* FAILED$' "$log" | sort -u || true
    echo "cargo test failed with status $status" >&2
fi
exit "$status"
