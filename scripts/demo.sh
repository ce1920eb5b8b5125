#!/usr/bin/env bash
# The main job, end to end, on a Debian bookworm host as root:
#   1. installs runsc, busybox-static and debootstrap if one is missing;
#   2. builds the skillbox CLI (release);
#   3. builds the busybox base root filesystem (cached under target/);
#   4. prints the effective policy of examples/misbehaving;
#   5. compiles it into an OCI bundle and shows what the policy became;
#   6. runs it in gVisor with a host secret in the environment: the skill
#      prints everything it tries and whether the policy blocked it;
#   7. runs the same compiled bundle through a private containerd and
#      skillbox's shim (ctr run --runtime io.containerd.skillbox.v1);
#   8. shows the run's audit trail (skillbox audit): what gVisor's runtime
#      monitoring recorded of the skill's execs, writes and connects.
# Exits non-zero if anything fails unexpectedly (including a leaked secret).
#
#   bash scripts/demo.sh
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd_repo_root

skill="examples/misbehaving"
skillbox="target/release/skillbox"
rootfs="$PWD/$SKILLBOX_CACHE/busybox-rootfs"
work="$PWD/$SKILLBOX_CACHE/demo"

section "1. Host packages"
bash scripts/setup.sh

section "2. Build skillbox and its shim (cargo build --release -p skillbox -p skillbox-shim)"
cargo build --release -p skillbox -p skillbox-shim
ls -l "$skillbox" target/release/containerd-shim-skillbox-v1

section "3. Base root filesystem (busybox-static)"
bash examples/rootfs/make-busybox-rootfs.sh "$rootfs"
echo "base rootfs: $rootfs"

section "4. The skill's metadata ($skill/SKILL.md)"
# The frontmatter: everything between the first two '---' lines.
awk 'NR == 1 && $0 == "---" { inside = 1; print; next } inside { print } inside && $0 == "---" { exit }' \
    "$skill/SKILL.md"

section "5. Effective policy: skillbox policy explain $skill"
"$skillbox" policy explain "$skill"

section "6. Compiled bundle: skillbox compile $skill -o $work/bundle --absolute-paths"
rm -rf "$work"
mkdir -p "$work"
# --absolute-paths: step 8 hands config.json to `ctr run --config`, which
# copies it alone into containerd's own bundle directory.
"$skillbox" compile "$skill" --base-rootfs "$rootfs" -o "$work/bundle" --absolute-paths
echo
echo "bundle contents:"
(cd "$work/bundle" && find . -mindepth 1 -printf '  %M  %p\n' | sort -k2)
echo
echo "config.json, the parts that enforce the policy:"
if command -v python3 >/dev/null 2>&1; then
    python3 - "$work/bundle/config.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
proc, linux, res = spec["process"], spec["linux"], spec["linux"]["resources"]
caps = proc.get("capabilities", {})
rows = [
    ("root", f'{spec["root"]["path"]} (readonly: {spec["root"]["readonly"]})'),
    *[("mount", f'{m["destination"]:<8} {m["type"]:<6} {",".join(m.get("options", []))}') for m in spec["mounts"]],
    ("process", " ".join(proc["args"]) + f'  (cwd {proc["cwd"]})'),
    ("user", f'uid {proc["user"]["uid"]}, gid {proc["user"]["gid"]}, noNewPrivileges: {proc["noNewPrivileges"]}'),
    ("capabilities", ", ".join(f"{k}: {len(v)}" for k, v in sorted(caps.items()))),
    ("env", " ".join(proc["env"])),
    ("rlimits", ", ".join(f'{r["type"]}={r["hard"]}' for r in proc["rlimits"])),
    ("namespaces", " ".join(n["type"] for n in linux["namespaces"])),
    ("cgroup", linux.get("cgroupsPath", "none: the runtime gives each sandbox its own")),
    ("memory", f'limit {res["memory"]["limit"]} bytes, with swap {res["memory"]["swap"]}'),
    ("cpu", f'quota {res["cpu"]["quota"]} us per {res["cpu"]["period"]} us'),
    ("pids", f'cgroup limit {res["pids"]["limit"]} (gVisor threads + the skill\'s quota)'),
    *[("annotation", f"{k} = {v}") for k, v in sorted(spec["annotations"].items())],
]
for key, value in rows:
    print(f"  {key:<13} {value}")
PY
else
    grep -nE '"(readonly|noNewPrivileges|uid|gid|limit|quota|swap)"|"size=|"io\.skillbox\.' \
        "$work/bundle/config.json" | sed 's/^/  /'
fi

section "7. Run it: SECRET_TOKEN=… skillbox run $skill"
# A host secret the skill's policy does not list in env.pass: the skill looks
# for it and must not find it.
secret="demo-secret-$RANDOM$RANDOM"
echo "host environment: SECRET_TOKEN=$secret (not in the skill's env.pass)"
echo "\$ $skillbox run $skill --base-rootfs $rootfs --report $work/report.json"
echo "----- skill output -----"
set +e
SECRET_TOKEN="$secret" "$skillbox" run "$skill" --base-rootfs "$rootfs" --report "$work/report.json" \
    2>&1 | tee "$work/output.txt"
status="${PIPESTATUS[0]}"
set -e
echo "----- end of skill output -----"
echo "exit status: $status"

section "8. The same bundle through containerd and skillbox's shim"
# A private containerd (own config, root, state and socket under $work),
# started from / because containerd looks for shims in its cwd first, with the
# shim first on its PATH; stopped on exit.
ctrd="$work/containerd"
mkdir -p "$ctrd/bin"
ln -sf "$PWD/target/release/containerd-shim-skillbox-v1" "$ctrd/bin/"
cat >"$ctrd/config.toml" <<TOML
version = 2
root = "$ctrd/root"
state = "$ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ctrd/containerd.sock"
[ttrpc]
  address = "$ctrd/containerd.sock.ttrpc"
TOML
(cd / && PATH="$ctrd/bin:$PATH" exec containerd --config "$ctrd/config.toml" >"$ctrd/containerd.log" 2>&1) &
ctrd_pid=$!
trap 'kill "$ctrd_pid" 2>/dev/null; wait "$ctrd_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    [ -S "$ctrd/containerd.sock" ] && break
    sleep 0.1
done
# The shim refuses bind mounts from outside containerd's bundle directory
# unless the node config allows their source: the compiled bundle's /skill
# comes from $work/bundle.
cat >"$ctrd/node.toml" <<TOML
[ceiling]
bind_mount_sources = ["$work/bundle"]
TOML
echo "\$ ctr run --rm --runtime io.containerd.skillbox.v1 --runtime-config-path $ctrd/node.toml --config $work/bundle/config.json misbehaving-demo"
echo "----- skill output (through containerd) -----"
set +e
(cd / && SECRET_TOKEN="$secret" ctr --address "$ctrd/containerd.sock" --namespace skillbox-demo \
    run --rm --runtime io.containerd.skillbox.v1 --runtime-config-path "$ctrd/node.toml" \
    --config "$work/bundle/config.json" misbehaving-demo) \
    2>&1 | tee "$work/output-containerd.txt"
ctr_status="${PIPESTATUS[0]}"
set -e
echo "----- end of skill output -----"
echo "exit status: $ctr_status"

section "9. Execution report ($work/report.json)"
if [ -s "$work/report.json" ]; then
    if command -v python3 >/dev/null 2>&1; then
        python3 -m json.tool "$work/report.json"
    else
        cat "$work/report.json"
        echo
    fi
else
    echo "(no report written)"
fi

section "10. Its audit trail: skillbox audit --execution <id>"
# gVisor's runtime monitoring recorded what the skill did (its policy asks
# for audit level `all`), next to the run's lifecycle events.
audit_log="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["audit_log"])' "$work/report.json")"
execution="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["execution_id"])' "$work/report.json")"
echo "\$ $skillbox audit --log-dir $(dirname "$audit_log") --execution $execution"
"$skillbox" audit --log-dir "$(dirname "$audit_log")" --execution "$execution" >"$work/audit.jsonl"
python3 - "$work/audit.jsonl" <<'PY'
import collections, json, sys
events = [json.loads(line) for line in open(sys.argv[1])]
counts = collections.Counter(event["type"] for event in events)
print(f"{len(events)} events: " + ", ".join(f"{n} {kind}" for kind, n in counts.most_common()))
shown = [
    event for event in events
    if event["type"] in ("exec", "connect") or (event["type"] == "file_open" and event.get("write"))
]
for event in shown[:30]:
    detail = event.get("argv") or event.get("path") or f'{event.get("address")}:{event.get("port")}'
    print(f'  {event["type"]:<9} pid {event.get("pid")}  {event.get("process")}: {detail}  result {event.get("result", "-")}')
if len(shown) > 30:
    print(f"  … and {len(shown) - 30} more execs, writes and connects")
PY

section "Verdict"
failed=0
if grep -qF "$secret" "$work/output.txt" "$work/output-containerd.txt" "$work/audit.jsonl"; then
    echo "FAIL: the host's SECRET_TOKEN value appeared inside the sandbox"
    failed=1
else
    echo "ok: SECRET_TOKEN's value never reached the skill (nor its audit trail)"
fi
# The only thing this skill's policy allows is writing its scratch /tmp; it
# must also run as a non-root user without capabilities.
leaks="$(grep -h -E ': (allowed|VISIBLE)|^uid: 0$|^capabilities: [0-9a-f]' "$work/output.txt" "$work/output-containerd.txt" |
    grep -v '^write /tmp/scratch: allowed$' || true)"
if [ -n "$leaks" ]; then
    echo "FAIL: the policy let these through:"
    while IFS= read -r line; do echo "  $line"; done <<<"$leaks"
    failed=1
else
    blocked="$(grep -c -E ': (blocked|not visible)' "$work/output.txt" || true)"
    echo "ok: the policy blocked all $blocked forbidden attempts; only the declared /tmp was writable"
    echo "ok: the skill ran as a non-root user with no capabilities"
fi
if [ "$ctr_status" -eq 0 ]; then
    echo "ok: through containerd and the shim, the same bundle ran to completion"
else
    echo "FAIL: ctr run through the shim exited $ctr_status"
    failed=1
fi
case "$status" in
    0) echo "ok: the skill ran to completion (exit status 0)" ;;
    124) echo "FAIL: the skill's timeout fired (exit status 124)"; failed=1 ;;
    125) echo "FAIL: skillbox itself failed (exit status 125)"; failed=1 ;;
    *) echo "FAIL: unexpected exit status $status"; failed=1 ;;
esac
exit "$failed"
