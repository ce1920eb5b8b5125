#!/usr/bin/env bash
# Checks that every test GUARANTEES.md names (`<file>.rs::<function>`) exists
# as a function in that file, so a renamed test cannot silently orphan a
# promise. Run by .ci/run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

status=0
count=0
while IFS= read -r link; do
    file="${link%%::*}"
    function="${link##*::}"
    count=$((count + 1))
    if [ ! -f "$file" ]; then
        echo "GUARANTEES.md names $link, but $file does not exist" >&2
        status=1
    elif ! grep -qE "^\s*(pub )?(async )?fn ${function}\s*\(" "$file"; then
        echo "GUARANTEES.md names $link, but $file has no fn $function" >&2
        status=1
    fi
done < <(grep -oE '[A-Za-z0-9_./-]+\.rs::[A-Za-z0-9_]+' GUARANTEES.md | sort -u)
if [ "$count" -eq 0 ]; then
    echo "GUARANTEES.md names no tests" >&2
    exit 1
fi
[ "$status" -eq 0 ] && echo "GUARANTEES.md: all $count test links resolve"
exit "$status"
