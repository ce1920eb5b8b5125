#!/usr/bin/env bash
# Checks that the documents name only things that exist:
# - every test GUARANTEES.md names (`<file>.rs::<function>`) exists as a
#   function in that file, so a renamed test cannot silently orphan a promise;
# - every folder the README's crate map names (a backticked `name/` in the
#   section under the `## Crate map` heading, up to the next `## ` heading)
#   exists, so the map cannot drift from the workspace.
# Run by .ci/run.
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

# The README's crate map.
if ! grep -qE '^## Crate map[[:space:]]*$' README.md; then
    echo "README.md has no '## Crate map' section" >&2
    exit 1
fi
crate_map="$(awk '
    /^## Crate map[[:space:]]*$/ { inside = 1; next }
    inside && /^## / { exit }
    inside { print }
' README.md)"
folders=0
map_status=0
while IFS= read -r folder; do
    folders=$((folders + 1))
    if [ ! -d "$folder" ]; then
        echo "README.md's crate map names $folder, but there is no folder $folder" >&2
        map_status=1
    fi
done < <(grep -oE '`[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/`' <<<"$crate_map" | tr -d '`' | sort -u)
if [ "$folders" -eq 0 ]; then
    echo "README.md's crate map names no folders (\`name/\`)" >&2
    exit 1
fi
[ "$map_status" -eq 0 ] && echo "README.md: all $folders folders of the crate map exist"
[ "$map_status" -eq 0 ] || status=1
exit "$status"
