#!/bin/sh
# Fuzzes the gVisor monitoring decoder (audit/fuzz, target `decode`) for a
# bounded time, starting from the checked-in seeds (one valid packet per
# decoded message type, from `decode::seed_packets`).
#
# Usage: scripts/fuzz-audit.sh [seconds]   (default 60)
# Needs: a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# The working corpus goes to audit/fuzz/corpus/decode (not checked in);
# a crash is written to audit/fuzz/artifacts/decode/ and fails the script.
set -eu
seconds=${1:-60}
cd "$(dirname "$0")/../audit/fuzz"
mkdir -p corpus/decode
exec cargo +nightly fuzz run decode corpus/decode seeds/decode -- \
    -max_total_time="$seconds" -max_len=262144 -rss_limit_mb=1024
