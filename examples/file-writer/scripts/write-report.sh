#!/bin/sh
# Writes N numbered lines to /output/report.txt and summarises the file.
set -eu
lines=${1:-10}
case $lines in
    '' | *[!0-9]*) echo "usage: write-report.sh [LINES]" >&2; exit 2 ;;
esac
report=/output/report.txt
i=1
while [ "$i" -le "$lines" ]; do
    echo "line $i of $lines"
    i=$((i + 1))
done >"$report"
echo "wrote $report: $(wc -l <"$report") lines, $(wc -c <"$report") bytes"
echo "sha256 $(sha256sum "$report" | cut -d' ' -f1)"
if touch /tmp/probe 2>/dev/null; then
    echo "/tmp: writable"
else
    echo "/tmp: read-only (only /output is declared writable)"
fi
