#!/usr/bin/env bash
# The egress benchmarks, measured in one run on this machine (root,
# release build), on a fake internet of network namespaces that this script
# builds and removes again (nothing touches the host's own namespace, no
# packet leaves the machine):
#
#   internet  203.0.113.10:8080  python3 http.server: /small (15 bytes), /big (1 MiB)
#             198.51.100.53:53   dnsmasq: bench.example A 203.0.113.10 (TTL 1 h)
#   node      up0 198.18.0.2/30 -> internet; forwards from up0; plays the host
#             that runs sandboxes: `skillbox run` and raw runsc start here
#   base      the unrestricted path: eth0 198.19.255.2/30 <-> ebv0 in the node,
#             forwarding and masquerade in the node, no filter table, no proxy
#
#  (a) HTTP from a sandbox: a busybox skill resolves bench.example, then
#      times (ash's $EPOCHREALTIME, no fork) N sequential
#      `printf 'GET /small HTTP/1.0\r\n\r\n' | nc` requests and M fetches of
#      /big, inside gVisor. Enforced: `skillbox run` with a policy allowing
#      bench.example:8080 (its own namespace, nftables table, DNS proxy).
#      Unrestricted: raw `runsc --network=host run` of the same compiled
#      bundle in the base namespace, resolv.conf naming dnsmasq directly.
#      Rounds alternate the two; p50/p99 per request and their ratios
#      (target <= 1.1x), throughput of /big (median fetch) both ways.
#  (b) DNS: a python3 loop (perf_counter_ns) sends prebuilt A queries for
#      bench.example from inside the sandbox's namespace of a running
#      `skillbox run` (a skill that sleeps) to its proxy on the gateway,
#      and from the base namespace straight to dnsmasq; rounds alternate;
#      p50/p99 each and the added latency (target: p99 added <= 2 ms).
#      Also a refused name through the proxy (nothing forwarded or learned).
#  (c) Setup: `skillbox run` of a skill running `true`, with an egress
#      policy and without (same skill otherwise), interleaved, medians and
#      their difference; and EgressSession::start + drop in-process
#      (bench/egress-session), the network setup alone (target <= 20 ms).
#
#   bash bench/egress.sh   (env: ROUNDS=4 REQUESTS=50 FETCHES=5
#                               DNS_QUERIES=200 SETUP_RUNS=10 SESSIONS=30)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh
require_root

rounds="${ROUNDS:-4}"
requests="${REQUESTS:-50}"
fetches="${FETCHES:-5}"
dns_queries="${DNS_QUERIES:-200}"
setup_runs="${SETUP_RUNS:-10}"
sessions="${SESSIONS:-30}"
repo="$PWD"
skillbox="$repo/target/release/skillbox"
rootfs="$repo/$SKILLBOX_CACHE/busybox-rootfs"
bench_session="$repo/target/bench-egress-session/release/skillbox-bench-egress-session"

prefix="sbx-eb-$$"
inet="$prefix-inet"
node="$prefix-node"
base="$prefix-base"
node_path="/var/run/netns/$node"
base_path="/var/run/netns/$base"
http_addr="203.0.113.10"
dns_addr="198.51.100.53"
base_gw="198.19.255.1"
base_addr="198.19.255.2"

section "Setup"
ensure_debian_packages "${SKILLBOX_DEBIAN_PACKAGES[@]}" jq
require_cargo
cargo build --release -p skillbox
(cd bench/egress-session && CARGO_TARGET_DIR="$repo/target/bench-egress-session" cargo build --release)
bash examples/rootfs/make-busybox-rootfs.sh "$rootfs"

work="$(mktemp -d /tmp/skillbox-bench-egress.XXXXXX)"
raw_root="$work/runsc-raw"
cgroup_raw="/skillbox-bench-egress-$$"
pids=()
sleeper_pid=""

# Namespaces of sandboxes whose outer veth is in our node (skillbox removes
# them itself; this finds what a killed run left behind).
sandbox_namespaces() {
    ip -n "$node" -o link show 2>/dev/null | grep -o 'link-netns [^ ]*' | awk '{ print $2 }' | sort -u
}

cleanup() {
    set +e
    if [ -n "$sleeper_pid" ]; then
        # skillbox removes its sandbox and network on SIGTERM.
        kill -TERM "$sleeper_pid" 2>/dev/null
        wait "$sleeper_pid" 2>/dev/null
    fi
    local id pid ns
    for id in $(runsc --root "$raw_root" list --quiet 2>/dev/null); do
        nsenter --net="$node_path" runsc --root "$raw_root" --network=host --platform=ptrace \
            delete --force "$id" >/dev/null 2>&1
    done
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    for ns in $(sandbox_namespaces); do
        [ "$ns" = "$inet" ] || [ "$ns" = "$base" ] || ip netns del "$ns"
    done
    local left=()
    mapfile -t left < <(ls -d /sys/fs/cgroup/*/"${cgroup_raw#/}"-* 2>/dev/null)
    [ "${#left[@]}" -eq 0 ] || rmdir "${left[@]}"
    for ns in "$base" "$node" "$inet"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "host: $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "runsc: $(runsc --version | head -n 1)"
echo "skillbox: $("$skillbox" --version)"
echo "namespaces: $inet, $node, $base; files in $work"

# --- The fake internet -------------------------------------------------------
ip netns add "$inet"
ip netns add "$node"
ip netns add "$base"
for ns in "$inet" "$node" "$base"; do
    ip -n "$ns" link set lo up
done
ip -n "$inet" addr add "$http_addr/32" dev lo
ip -n "$inet" addr add "$dns_addr/32" dev lo
ip -n "$node" link add up0 type veth peer name inet0 netns "$inet"
ip -n "$inet" addr add 198.18.0.1/30 dev inet0
ip -n "$inet" link set inet0 up
ip -n "$node" addr add 198.18.0.2/30 dev up0
ip -n "$node" link set up0 up
ip -n "$node" route add default via 198.18.0.1
# The node forwards what arrives on its uplink (sandbox veths forward too).
nsenter --net="$node_path" sysctl -q -w net.ipv4.conf.up0.forwarding=1

# The unrestricted path: what a sandbox network is without the filter table
# and the proxy (same veth, forwarding and masquerade as netns.rs makes).
ip -n "$node" link add ebv0 type veth peer name eth0 netns "$base"
ip -n "$node" addr add "$base_gw/30" dev ebv0
nsenter --net="$node_path" sysctl -q -w net.ipv4.conf.ebv0.forwarding=1
ip -n "$node" link set ebv0 up
ip -n "$base" addr add "$base_addr/30" dev eth0
ip -n "$base" link set eth0 up
ip -n "$base" route add default via "$base_gw"
nsenter --net="$node_path" nft -f - <<NFT
table ip ebench_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr $base_addr oifname != "ebv0" masquerade
  }
}
NFT

mkdir -p "$work/www" "$raw_root"
echo "skillbox-bench" >"$work/www/small"
head -c 1048576 /dev/urandom >"$work/www/big"
nsenter --net="/var/run/netns/$inet" python3 -u -m http.server --bind "$http_addr" \
    --directory "$work/www" 8080 >"$work/http.log" 2>&1 </dev/null &
pids+=($!)
nsenter --net="/var/run/netns/$inet" dnsmasq --keep-in-foreground --conf-file=/dev/null \
    --no-resolv --no-hosts --user=root --bind-interfaces --listen-address "$dns_addr" \
    --local=/example/ --local-ttl=3600 --host-record="bench.example,$http_addr" \
    --log-facility="$work/dnsmasq.log" --pid-file="$work/dnsmasq.pid" \
    >"$work/dnsmasq.stderr" 2>&1 </dev/null &
pids+=($!)
for _ in $(seq 1 100); do
    grep -q "Serving HTTP" "$work/http.log" 2>/dev/null && grep -q started "$work/dnsmasq.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "Serving HTTP" "$work/http.log" || die "HTTP server did not start: $(cat "$work/http.log")"
grep -q started "$work/dnsmasq.log" || die "dnsmasq did not start: $(cat "$work/dnsmasq.stderr")"

# --- Skills --------------------------------------------------------------------
# $1 name, $2 entrypoint (YAML flow list), $3 network block (may be empty).
make_skill() {
    mkdir -p "$work/$1/scripts"
    cat >"$work/$1/SKILL.md" <<MD
---
name: $1
description: bench/egress.sh fixture $1
security_policy:
  version: 1
  entrypoint: $2
  resources: { cpus: 2, memory: 256Mi, pids: 64, timeout: 10m }
$3---
MD
}
allow_bench='  network:
    allow:
      - { domain: bench.example, ports: [8080] }
'

# The HTTP skill: every timed line is "<what> <microseconds>".
make_skill egress-bench-http '[sh, scripts/main.sh]' "$allow_bench"
cat >"$work/egress-bench-http/scripts/main.sh" <<SH
exec 2>&1
addr=\$(nslookup bench.example 2>/dev/null | awk '/^Address: 203/ { print \$2 }')
[ -n "\$addr" ] || { echo "error: bench.example not resolved"; exit 1; }
get() { printf 'GET /%s HTTP/1.0\r\n\r\n' "\$1" | nc "\$addr" 8080; }
us() { echo "\${1%.*}\${1#*.}"; }
get small | tail -n 1 | grep -q skillbox-bench || { echo "error: /small: bad answer"; exit 1; }
get big >/tmp/big
[ "\$(wc -c </tmp/big)" -gt 1048576 ] || { echo "error: /big: short answer"; exit 1; }
i=0
while [ \$i -lt 5 ]; do get small >/dev/null; i=\$((i + 1)); done
i=0
while [ \$i -lt $requests ]; do
    t0=\$EPOCHREALTIME; get small >/dev/null; t1=\$EPOCHREALTIME
    echo "small \$((\$(us \$t1) - \$(us \$t0)))"
    i=\$((i + 1))
done
i=0
while [ \$i -lt $fetches ]; do
    t0=\$EPOCHREALTIME; get big >/dev/null; t1=\$EPOCHREALTIME
    echo "big \$((\$(us \$t1) - \$(us \$t0)))"
    i=\$((i + 1))
done
SH
make_skill egress-bench-sleep '[sleep, "600"]' "$allow_bench"
make_skill egress-bench-true-net '[true]' "$allow_bench"
make_skill egress-bench-true '[true]' ""

egress_args=(--base-rootfs "$rootfs" --dns-upstream "$dns_addr" --egress-log "$work/egress.jsonl")
# skillbox run in the node namespace, as on a node.
skillbox_run() {
    SKILLBOX_STATE_DIR="$work/state" nsenter --net="$node_path" "$skillbox" run "${egress_args[@]}" "$@" </dev/null
}

# The same HTTP skill as a bundle for raw runsc: network namespace = base,
# resolv.conf = dnsmasq itself, its own cgroup.
"$skillbox" compile "$work/egress-bench-http" --base-rootfs "$rootfs" -o "$work/http-bundle" >/dev/null
echo "nameserver $dns_addr" >"$work/base-resolv.conf"
flags_json="$(jq -r '.annotations["io.skillbox.runsc.flags"]' "$work/http-bundle/config.json")"
raw_flags=(--root "$raw_root" --network=host "--platform=$(jq -r '.platform' <<<"$flags_json")")
if [ "$(jq -r '.overlay' <<<"$flags_json")" = "true" ]; then
    raw_flags+=(--overlay)
fi
raw_run() {
    local cg="$cgroup_raw-$1"
    jq --arg ns "$base_path" --arg cg "$cg" --arg resolv "$work/base-resolv.conf" '
        (.linux.namespaces[] | select(.type == "network")) .path = $ns
        | .linux.cgroupsPath = $cg
        | .mounts += [{destination: "/etc/resolv.conf", type: "bind", source: $resolv, options: ["bind", "ro"]}]
        ' "$work/http-bundle/config.json.orig" >"$work/http-bundle/config.json"
    nsenter --net="$node_path" runsc "${raw_flags[@]}" run --bundle "$work/http-bundle" "ebench-raw-$1" </dev/null
    local status=$?
    nsenter --net="$node_path" runsc "${raw_flags[@]}" delete --force "ebench-raw-$1" >/dev/null 2>&1 || true
    return "$status"
}
cp "$work/http-bundle/config.json" "$work/http-bundle/config.json.orig"

# "p50 p99 n" (nearest rank) of the numbers on stdin, divided by $1.
stats() {
    sort -g | awk -v d="${1:-1}" '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan nan 0"; exit }
        r50 = int(0.5 * NR); if (r50 < 0.5 * NR) r50++
        r99 = int(0.99 * NR); if (r99 < 0.99 * NR) r99++
        printf "%.3f %.3f %d\n", v[r50] / d, v[r99] / d, NR }'
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'
}
verdict() {
    awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t ? "within" : "ABOVE") }'
}

section "(a) HTTP from a sandbox: enforced vs unrestricted"
echo "enforced:     skillbox run $work/egress-bench-http (allow bench.example:8080)"
echo "unrestricted: runsc ${raw_flags[*]} run (netns $base, no filter, no proxy)"
echo "$rounds rounds x ($requests GET /small + $fetches GET /big) per path, alternating"
: >"$work/enforced.out"
: >"$work/unrestricted.out"
for i in $(seq 1 "$rounds"); do
    for which in $(if [ $((i % 2)) -eq 1 ]; then echo enforced unrestricted; else echo unrestricted enforced; fi); do
        if [ "$which" = enforced ]; then
            skillbox_run "$work/egress-bench-http" >"$work/out" || die "skillbox run failed: $(tail -n 5 "$work/out")"
        else
            raw_run "$i" >"$work/out" || die "raw runsc run failed: $(tail -n 5 "$work/out")"
        fi
        grep -q '^error' "$work/out" && die "$which: $(grep '^error' "$work/out")"
        cat "$work/out" >>"$work/$which.out"
    done
done
for which in enforced unrestricted; do
    awk '$1 == "small" { print $2 }' "$work/$which.out" >"$work/$which.small"
    awk '$1 == "big" { print $2 }' "$work/$which.out" >"$work/$which.big"
done
read -r enf_p50 enf_p99 enf_n < <(stats 1000 <"$work/enforced.small")
read -r unr_p50 unr_p99 unr_n < <(stats 1000 <"$work/unrestricted.small")
read -r enf_big _ enf_big_n < <(stats 1000 <"$work/enforced.big")
read -r unr_big _ unr_big_n < <(stats 1000 <"$work/unrestricted.big")
enf_mbs="$(awk -v ms="$enf_big" 'BEGIN { printf "%.1f", 1.048576 / (ms / 1000) }')"
unr_mbs="$(awk -v ms="$unr_big" 'BEGIN { printf "%.1f", 1.048576 / (ms / 1000) }')"

section "(b) DNS: through the proxy vs straight to dnsmasq"
cat >"$work/dnsbench.py" <<'PY'
# dnsbench.py SERVER NAME N EXPECTED_RCODE [QTYPE]: N sequential queries
# (default type A = 1) for NAME over UDP, one per line: microseconds. Exits 1
# on a wrong or missing answer (rcode 0 for A needs an address).
import os, socket, struct, sys, time
server, name, count, rcode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
qtype = int(sys.argv[5]) if len(sys.argv) > 5 else 1
question = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((server, 53))
out = []
for i in range(count + 5):
    qid = struct.unpack(">H", os.urandom(2))[0]
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
    t0 = time.perf_counter_ns()
    s.send(query)
    while True:
        answer = s.recv(4096)
        if answer[:2] == query[:2]:
            break
    t1 = time.perf_counter_ns()
    got = answer[3] & 0x0F
    if got != rcode or (rcode == 0 and qtype == 1 and struct.unpack(">H", answer[6:8])[0] == 0):
        sys.exit(f"error: {name} from {server}: rcode {got}, expected {rcode}")
    if i >= 5:  # the first five warm up
        out.append(str((t1 - t0) // 1000))
print("\n".join(out))
PY
# A simple command, not the function: $! must be skillbox itself (nsenter
# execs it), so that SIGTERM reaches it and it removes its sandbox.
SKILLBOX_STATE_DIR="$work/state" nsenter --net="$node_path" "$skillbox" run "${egress_args[@]}" \
    "$work/egress-bench-sleep" </dev/null >"$work/sleeper.out" 2>&1 &
sleeper_pid=$!
sandbox_ns=""
for _ in $(seq 1 200); do
    sandbox_ns="$(sandbox_namespaces | grep -vx -e "$inet" -e "$base" | head -n 1 || true)"
    [ -n "$sandbox_ns" ] && [ -e "/var/run/netns/$sandbox_ns" ] && break
    kill -0 "$sleeper_pid" 2>/dev/null || die "skillbox run (sleep) exited: $(cat "$work/sleeper.out")"
    sleep 0.05
done
[ -n "$sandbox_ns" ] || die "the sleeping skill's network namespace did not appear"
gateway="$(nsenter --net="/var/run/netns/$sandbox_ns" ip -4 route show default | awk '{ print $3 }')"
echo "proxied: from netns $sandbox_ns to the proxy on $gateway:53 (skillbox run, skill sleeping)"
echo "direct:  from netns $base to dnsmasq on $dns_addr:53 (same veth + NAT path, no proxy)"
dns_in() {
    nsenter --net="/var/run/netns/$1" python3 "$work/dnsbench.py" "${@:2}"
}
# The proxy is up once the sandbox's /etc/resolv.conf is in use; wait for it.
for _ in $(seq 1 100); do
    dns_in "$sandbox_ns" "$gateway" bench.example 1 0 >/dev/null 2>&1 && break
    sleep 0.1
done
per_round=$(((dns_queries + rounds - 1) / rounds))
: >"$work/dns-proxied"
: >"$work/dns-direct"
: >"$work/dns-refused"
: >"$work/dns-aaaa"
for i in $(seq 1 "$rounds"); do
    for which in $(if [ $((i % 2)) -eq 1 ]; then echo proxied direct; else echo direct proxied; fi); do
        if [ "$which" = proxied ]; then
            dns_in "$sandbox_ns" "$gateway" bench.example "$per_round" 0 >>"$work/dns-proxied"
        else
            dns_in "$base" "$dns_addr" bench.example "$per_round" 0 >>"$work/dns-direct"
        fi
    done
    # A name the policy refuses: the proxy answers REFUSED itself (5).
    dns_in "$sandbox_ns" "$gateway" other.example "$per_round" 5 >>"$work/dns-refused"
    # AAAA of the allowed name: forwarded upstream (dnsmasq has none, NODATA)
    # but no address to learn, so no `nft` run: splits forwarding from learning.
    dns_in "$sandbox_ns" "$gateway" bench.example "$per_round" 0 28 >>"$work/dns-aaaa"
done
kill -TERM "$sleeper_pid"
wait "$sleeper_pid" || true
sleeper_pid=""
read -r prx_p50 prx_p99 prx_n < <(stats 1000 <"$work/dns-proxied")
read -r dir_p50 dir_p99 dir_n < <(stats 1000 <"$work/dns-direct")
read -r ref_p50 ref_p99 ref_n < <(stats 1000 <"$work/dns-refused")
read -r aaaa_p50 aaaa_p99 aaaa_n < <(stats 1000 <"$work/dns-aaaa")
add_p50="$(awk -v a="$prx_p50" -v b="$dir_p50" 'BEGIN { printf "%.3f", a - b }')"
add_p99="$(awk -v a="$prx_p99" -v b="$dir_p99" 'BEGIN { printf "%.3f", a - b }')"

section "(c) Time added to sandbox start by network setup"
echo "with:    skillbox run $work/egress-bench-true-net (allow bench.example:8080; runsc --network=host)"
echo "without: skillbox run $work/egress-bench-true (no network; runsc --network=none)"
skillbox_run "$work/egress-bench-true-net" >/dev/null || die "skillbox run with egress failed"
skillbox_run "$work/egress-bench-true" >/dev/null || die "skillbox run without egress failed"
: >"$work/setup-net.ms"
: >"$work/setup-none.ms"
for i in $(seq 1 "$setup_runs"); do
    for which in $(if [ $((i % 2)) -eq 1 ]; then echo net none; else echo none net; fi); do
        skill="$work/egress-bench-true-net"
        [ "$which" = net ] || skill="$work/egress-bench-true"
        start="${EPOCHREALTIME/[.,]/}"
        skillbox_run "$skill" >/dev/null || die "skillbox run $skill failed"
        end="${EPOCHREALTIME/[.,]/}"
        echo "$((end - start))" >>"$work/setup-$which.ms"
    done
done
read -r run_net _ _ < <(stats 1000 <"$work/setup-net.ms")
read -r run_none _ _ < <(stats 1000 <"$work/setup-none.ms")
run_added="$(awk -v a="$run_net" -v b="$run_none" 'BEGIN { printf "%.3f", a - b }')"
echo "EgressSession::start + drop in-process, $sessions times (outer namespace $node):"
"$skillbox" compile "$work/egress-bench-true-net" --base-rootfs "$rootfs" -o "$work/true-net-bundle" >/dev/null
session_out="$("$bench_session" "$work/true-net-bundle" "$node" "$dns_addr:53" "$work/session-events.jsonl" "$sessions")"
echo "$session_out"
session_start="$(awk '$1 == "start" { sub("median_us=", "", $2); printf "%.3f", $2 / 1000 }' <<<"$session_out")"
session_start_p99="$(awk '$1 == "start" { sub("p99_us=", "", $3); printf "%.3f", $3 / 1000 }' <<<"$session_out")"
session_drop="$(awk '$1 == "drop" { sub("median_us=", "", $2); printf "%.3f", $2 / 1000 }' <<<"$session_out")"
leftover="$(sandbox_namespaces | grep -vx -e "$inet" -e "$base" || true)"
[ -z "$leftover" ] || die "sandbox namespaces left with a veth in $node: $leftover ($(ip -n "$node" -o link show))"

section "Results"
echo "load during the run (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
printf '%-52s %10s %10s %6s\n' "HTTP GET /small from the sandbox (inside gVisor)" "p50" "p99" "n"
printf '%-52s %7s ms %7s ms %6s\n' "enforced: skillbox run, policy + proxy + nftables" "$enf_p50" "$enf_p99" "$enf_n"
printf '%-52s %7s ms %7s ms %6s\n' "unrestricted: raw runsc, veth + NAT only" "$unr_p50" "$unr_p99" "$unr_n"
r50="$(ratio "$enf_p50" "$unr_p50")"
r99="$(ratio "$enf_p99" "$unr_p99")"
printf '%-52s %7s x  %7s x  (%s / %s the 1.1x target)\n' "ratio enforced / unrestricted" "$r50" "$r99" \
    "$(verdict "$r50" 1.1)" "$(verdict "$r99" 1.1)"
printf '%-52s %7s MB/s (median fetch %s ms, n=%s)\n' "GET /big (1 MiB), enforced" "$enf_mbs" "$enf_big" "$enf_big_n"
printf '%-52s %7s MB/s (median fetch %s ms, n=%s)\n' "GET /big (1 MiB), unrestricted" "$unr_mbs" "$unr_big" "$unr_big_n"
printf '%-52s %7s x\n' "throughput ratio enforced / unrestricted" "$(ratio "$enf_mbs" "$unr_mbs")"
echo
printf '%-52s %10s %10s %6s\n' "DNS A bench.example over UDP (python3 client)" "p50" "p99" "n"
printf '%-52s %7s ms %7s ms %6s\n' "through the proxy (forwarded, learned into nft)" "$prx_p50" "$prx_p99" "$prx_n"
printf '%-52s %7s ms %7s ms %6s\n' "straight to dnsmasq (unrestricted path)" "$dir_p50" "$dir_p99" "$dir_n"
printf '%-52s %7s ms %7s ms  (p99: %s the 2 ms target)\n' "added by the proxy" "$add_p50" "$add_p99" \
    "$(verdict "$add_p99" 2)"
printf '%-52s %7s ms %7s ms %6s\n' "refused name through the proxy (answered locally)" "$ref_p50" "$ref_p99" "$ref_n"
printf '%-52s %7s ms %7s ms %6s\n' "AAAA of it through the proxy (forwarded, no learn)" "$aaaa_p50" "$aaaa_p99" "$aaaa_n"
echo
printf '%-52s %10s\n' "sandbox start (skillbox run of \`true\`)" "median"
printf '%-52s %7s ms\n' "with egress ($setup_runs runs, interleaved)" "$run_net"
printf '%-52s %7s ms\n' "without network ($setup_runs runs)" "$run_none"
printf '%-52s %7s ms  (%s the 20 ms target)\n' "added, end to end" "$run_added" "$(verdict "$run_added" 20)"
printf '%-52s %7s ms  (p99 %s ms; %s the 20 ms target)\n' "EgressSession::start in-process ($sessions)" \
    "$session_start" "$session_start_p99" "$(verdict "$session_start" 20)"
printf '%-52s %7s ms\n' "EgressSession drop in-process (removal)" "$session_drop"
echo
for f in enforced.small unrestricted.small dns-proxied dns-direct dns-aaaa setup-net.ms setup-none.ms; do
    printf '%-20s samples (us), sorted, every 10th: %s\n' "$f" "$(sort -g "$work/$f" | awk 'NR % 10 == 1' | tr '\n' ' ')"
done
