#!/bin/sh
# Tries things a hostile skill would and prints one line per attempt.
# Usage: misbehave.sh [HOST]   (the address it tries to reach on port 80)
host=${1:-203.0.113.1}

# Runs a command; prints "<label>: allowed" or "<label>: blocked (<reason>)",
# the reason being the last part of the command's error message.
attempt() {
    label=$1
    shift
    if err=$("$@" 2>&1 >/dev/null); then
        echo "$label: allowed"
    else
        first_line=$(echo "$err" | head -n 1)
        echo "$label: blocked (${first_line##*: })"
    fi
}

attempt "write /skill/x" sh -c 'echo pwned >/skill/x'
attempt "write /etc/passwd" sh -c 'echo "evil::0:0::/:/bin/sh" >>/etc/passwd'
attempt "write /tmp/scratch" sh -c 'echo notes >/tmp/scratch'

if [ -e /etc/shadow ]; then
    echo "read host /etc/shadow: VISIBLE"
else
    echo "read host /etc/shadow: not visible"
fi
# Counting instead of printing keeps a real secret out of logs.
if [ -n "${SECRET_TOKEN+set}" ]; then
    echo "env SECRET_TOKEN: VISIBLE (${#SECRET_TOKEN} characters)"
else
    echo "env SECRET_TOKEN: not visible"
fi
# Names of every process this skill can see; the host's would be here too.
names=$(cat /proc/[0-9]*/comm 2>/dev/null | tr '\n' ' ')
echo "list all processes: sees only ${names% }"

echo "uid: $(id -u)"
capabilities=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
if [ "$capabilities" = 0000000000000000 ]; then
    echo "capabilities: none"
else
    echo "capabilities: $capabilities"
fi

attempt "connect $host:80" nc -w 2 "$host" 80 </dev/null
echo "network interfaces: $(awk -F: 'NR > 2 { gsub(/ /, "", $1); printf "%s ", $1 }' /proc/net/dev)"

attempt "fill /tmp past its 1Mi cap" dd if=/dev/zero of=/tmp/fill bs=64k count=32
rm -f /tmp/fill

# A failed fork is fatal to busybox sh, so the spawning runs in a subshell
# that records how far it got.
echo 0 >/tmp/started
(
    n=0
    while [ "$n" -lt 40 ]; do
        sleep 30 &
        n=$((n + 1))
        echo "$n" >/tmp/started
    done
) 2>/tmp/fork-errors
started=$(cat /tmp/started)
if [ "$started" -lt 40 ]; then
    echo "start 40 processes: blocked after $started ($(sed -n '1s/.*: //p' /tmp/fork-errors))"
else
    echo "start 40 processes: allowed"
fi
killall sleep 2>/dev/null
echo "done"
