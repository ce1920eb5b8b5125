#!/bin/sh
# Regenerates audit/src/gvisor/sysno.rs (the x86_64 syscall name table) from
# the host's kernel headers. Usage: scripts/gen-sysno.sh [unistd_64.h]
set -eu
header=${1:-/usr/include/x86_64-linux-gnu/asm/unistd_64.h}
out=$(dirname "$0")/../audit/src/gvisor/sysno.rs
python3 - "$header" "$out" <<'PY'
import re, sys
header, out = sys.argv[1], sys.argv[2]
names = {}
for line in open(header):
    m = re.match(r'#define __NR_(\w+) (\d+)', line)
    if m:
        names[int(m.group(2))] = m.group(1)
text = open(out).read()
start = text.index('= [\n') + 4
end = text.index('];', start)
rows = ''.join('    "%s", // %d\n' % (names.get(i, ''), i) for i in range(442))
open(out, 'w').write(text[:start] + rows + text[end:])
PY
