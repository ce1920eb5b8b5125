//! Filesystem, identity, environment and network isolation, each tested by a
//! busybox skill that tries to break out and reports what happened as
//! `key=value` lines. Every assertion would fail if the guarantee broke.
//!
//! Network attempts go only to loopback and to TEST-NET-3 (203.0.113.0/24)
//! and 2001:db8::/32. Not 192.0.2.0/24: on the CI machine that is the real
//! uplink.

use std::collections::BTreeSet;
use std::net::TcpListener;

use skillbox_test_support::sandbox::SkillRun;
use skillbox_test_support::{busybox_rootfs, field, Cli, Skill};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

/// Shell helper: runs `$2` and prints `$1=allowed` or `$1=blocked:<error>`.
const TRY: &str = r#"
try() {
    if err=$(sh -c "$2" 2>&1 >/dev/null); then
        echo "$1=allowed"
    else
        echo "$1=blocked:$(echo "$err" | head -n 1)"
    fi
}
"#;

fn assert_blocked(stdout: &str, key: &str) {
    let value = field(stdout, key);
    assert!(value.starts_with("blocked:"), "{key} was {value}\n{stdout}");
}

#[test]
fn code_and_root_filesystem_are_read_only() {
    let script = format!(
        "{TRY}
try skill_create 'echo x >/skill/new'
try skill_modify 'echo x >>/skill/scripts/main.sh'
try skill_delete 'rm /skill/SKILL.md'
try root_create 'echo x >/new'
try etc_append 'echo x >>/etc/passwd'
try bin_replace 'cp /bin/busybox /bin/evil'
try usr_mkdir 'mkdir /usr/new'
echo \"root_options=$(awk '$2 == \"/\" {{ print $4 }}' /proc/mounts)\"
echo \"skill_options=$(awk '$2 == \"/skill\" {{ print $4 }}' /proc/mounts)\"
"
    );
    let skill = Skill::sh("read-only", "", &script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs()).run();
    run.assert_success();
    let out = &run.output.stdout;
    for key in [
        "skill_create",
        "skill_modify",
        "skill_delete",
        "root_create",
        "etc_append",
        "bin_replace",
        "usr_mkdir",
    ] {
        assert_blocked(out, key);
    }
    // Permissions alone would block uid 65534 too; the mounts themselves
    // must be read-only so that the guarantee does not depend on file modes.
    for key in ["root_options", "skill_options"] {
        let options = field(out, key);
        assert!(options.split(',').any(|o| o == "ro"), "{key}: {options}\n{out}");
    }
    assert!(!skill.path().join("new").exists());
    assert!(!busybox_rootfs().join("new").exists());
    assert!(!busybox_rootfs().join("bin/evil").exists());
}

#[test]
fn writable_directories_hold_their_size_caps() {
    let policy = "  filesystem:\n    writable:\n      - { path: /tmp, size: 1Mi }\n      - { path: /data, size: 2Mi }\n";
    let script = r#"
fill() {
    if err=$(dd if=/dev/zero of="$1" bs=64k count="$2" 2>&1); then
        echo "$3=written"
    else
        echo "$3=$(echo "$err" | head -n 1)"
    fi
    echo "$3_bytes=$(wc -c <"$1")"
}
echo small >/tmp/small && echo tmp_write=ok
fill /tmp/big 32 tmp_fill
fill /data/big 64 data_fill
echo "data_options=$(awk '$2 == "/data" { print $4 }' /proc/mounts)"
"#;
    let skill = Skill::sh("size-caps", policy, script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs()).run();
    run.assert_success();
    let out = &run.output.stdout;
    assert_eq!(field(out, "tmp_write"), "ok");
    for (key, cap) in [("tmp_fill", 1u64 << 20), ("data_fill", 2 << 20)] {
        let result = field(out, key);
        assert!(
            result.ends_with("No space left on device"),
            "{key}: {result}\n{out}"
        );
        let written: u64 = field(out, &format!("{key}_bytes")).trim().parse().unwrap();
        assert!(
            written <= cap,
            "{key}: wrote {written} bytes past the {cap}-byte cap"
        );
        assert!(
            written >= cap / 2,
            "{key}: only {written} bytes fit under a {cap}-byte cap"
        );
    }
}

#[test]
fn only_declared_directories_are_writable() {
    // Declaring a writable list replaces the default /tmp: nothing else,
    // /tmp included, may be writable.
    let policy = "  filesystem:\n    writable:\n      - { path: /output, size: 1Mi }\n";
    let script = format!(
        "{TRY}
try output 'echo x >/output/file'
try tmp 'echo x >/tmp/file'
try var_tmp 'mkdir -p /var/tmp'
try dev 'echo x >/dev/file'
try root_home 'echo x >/root/file'
"
    );
    let skill = Skill::sh("declared-only", policy, &script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs()).run();
    run.assert_success();
    let out = &run.output.stdout;
    assert_eq!(field(out, "output"), "allowed", "{out}");
    for key in ["tmp", "var_tmp", "dev", "root_home"] {
        assert_blocked(out, key);
    }
}

#[test]
fn runs_as_nobody_without_capabilities() {
    let script = format!(
        "{TRY}
echo \"uid=$(id -u)\"
echo \"gid=$(id -g)\"
echo \"groups=$(id -G)\"
sed -n 's/^\\(Cap[A-Za-z]*\\):[[:space:]]*/\\1=/p' /proc/self/status
try chown_root 'echo x >/tmp/f && chown 0:0 /tmp/f'
try setuid_root 'su -c true root'
"
    );
    let skill = Skill::sh("identity", "", &script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs()).run();
    run.assert_success();
    let out = &run.output.stdout;
    assert_eq!(field(out, "uid"), "65534");
    assert_eq!(field(out, "gid"), "65534");
    assert_eq!(field(out, "groups"), "65534");
    for capability in ["CapInh", "CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(field(out, capability), "0000000000000000", "{capability}\n{out}");
    }
    // gVisor does not report CapAmb; if a later version does, it must be empty too.
    if let Some(ambient) = out.lines().find_map(|l| l.strip_prefix("CapAmb=")) {
        assert_eq!(ambient, "0000000000000000", "{out}");
    }
    assert_blocked(out, "chown_root");
    assert_blocked(out, "setuid_root");
}

#[test]
fn environment_holds_only_passed_variables() {
    let secret = "s3cr3t-value-never-shown";
    let script = r#"
echo "names=$(env | cut -d= -f1 | sort | tr '\n' ' ')"
echo "init_names=$(tr '\0' '\n' </proc/1/environ | cut -d= -f1 | sort | tr '\n' ' ')"
echo "passed=$SKILLBOX_TEST_PASSED"
env
cat /proc/1/environ
"#;
    let policy = "  env: { pass: [SKILLBOX_TEST_PASSED, SKILLBOX_TEST_UNSET] }\n";
    let skill = Skill::sh("environment", policy, script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .env("SKILLBOX_TEST_SECRET", secret)
        .env("SKILLBOX_TEST_PASSED", "passed-value")
        .env("HOME", "/root/host-home")
        .run();
    run.assert_success();
    let out = &run.output.stdout;
    assert_eq!(field(out, "passed"), "passed-value");
    // The process skillbox started holds exactly what the spec sets.
    assert_eq!(field(out, "init_names").trim(), "HOME PATH SKILLBOX_TEST_PASSED");
    let allowed: BTreeSet<&str> = ["HOME", "PATH", "PWD", "SHLVL", "SKILLBOX_TEST_PASSED", "OLDPWD"].into();
    for name in field(out, "names").split_whitespace() {
        assert!(
            allowed.contains(name),
            "unexpected variable {name} in the sandbox\n{out}"
        );
    }
    assert!(
        !out.contains(secret) && !run.output.stderr.contains(secret),
        "secret leaked\n{}",
        run.describe()
    );
    assert!(!out.contains("/root/host-home"), "the host's HOME leaked\n{out}");
}

#[test]
fn host_files_and_processes_are_not_visible() {
    let marker_dir = tempfile::Builder::new()
        .prefix("skillbox-host-marker.")
        .tempdir()
        .unwrap();
    let marker = marker_dir.path().join("marker");
    std::fs::write(&marker, "host only").unwrap();
    let host_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let script = r#"
for path in "$@"; do
    if [ -e "$path" ]; then echo "visible=$path"; else echo "absent=$path"; fi
done
echo "hostname=$(hostname)"
echo "passwd_users=$(cut -d: -f1 /etc/passwd | tr '\n' ' ')"
echo "pids=$(ls -d /proc/[0-9]* | wc -l)"
echo "init=$(tr '\0' ' ' </proc/1/cmdline)"
"#;
    let skill = Skill::sh("host-view", "", script);
    let skill_md = skill.path().join("SKILL.md");
    let targets = [
        marker.to_str().unwrap(),
        skill_md.to_str().unwrap(),
        busybox_rootfs().join(".complete").to_str().unwrap(),
        "/etc/shadow",
        "/etc/hostname",
        "/home",
        "/var/lib",
        "/run",
        "/skill/SKILL.md",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = targets.iter().map(String::as_str).collect();
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs())
        .args(&args)
        .run();
    run.assert_success();
    let out = &run.output.stdout;
    // Control: the skill's own code is visible, so `-e` works in there.
    assert!(out.lines().any(|l| l == "visible=/skill/SKILL.md"), "{out}");
    let visible: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("visible="))
        .filter(|p| *p != "/skill/SKILL.md")
        .collect();
    assert!(
        visible.is_empty(),
        "host paths visible in the sandbox: {visible:?}\n{out}"
    );
    assert_eq!(field(out, "hostname"), "host-view");
    assert_ne!(field(out, "hostname"), host_hostname.trim());
    assert_eq!(field(out, "passwd_users").trim(), "root nobody");
    let pids: u32 = field(out, "pids").trim().parse().unwrap();
    assert!(pids <= 6, "{pids} processes visible\n{out}");
    assert!(field(out, "init").starts_with("sh scripts/main.sh"), "{out}");
}

#[test]
fn there_is_no_network_beyond_loopback() {
    // A host service on loopback: the sandbox's 127.0.0.1 must not reach it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let host_port = listener.local_addr().unwrap().port().to_string();
    let script = format!(
        "{TRY}
try host_loopback 'nc -w 2 127.0.0.1 {host_port} </dev/null'
try test_net_v4 'nc -w 2 203.0.113.1 80 </dev/null'
try test_net_v6 'nc -w 2 2001:db8::1 80 </dev/null'
echo \"interfaces=$(awk -F: 'NR > 2 {{ gsub(/ /, \"\", $1); printf \"%s \", $1 }}' /proc/net/dev)\"
echo \"links=$(ls /sys/class/net | tr '\\n' ' ')\"
echo \"routes=$(ip route | grep -cv ' dev lo ')\"
# Control: loopback inside the sandbox works, so failures above are real.
(echo pong | nc -l -p 9000 >/dev/null &)
sleep 0.5
echo \"own_loopback=$(nc -w 2 127.0.0.1 9000 </dev/null)\"
"
    );
    let skill = Skill::sh("no-network", "", &script);
    let run = SkillRun::new(SKILLBOX, skill.path(), busybox_rootfs()).run();
    run.assert_success();
    let out = &run.output.stdout;
    assert_eq!(field(out, "own_loopback"), "pong", "{out}");
    // Refused by the sandbox's own loopback, where nothing listens.
    assert!(
        field(out, "host_loopback").ends_with("Connection refused"),
        "{out}"
    );
    for key in ["test_net_v4", "test_net_v6"] {
        let result = field(out, key);
        assert!(
            result.ends_with("No route to host") || result.ends_with("Network is unreachable"),
            "{key}: {result}\n{out}"
        );
    }
    assert_eq!(field(out, "interfaces").trim(), "lo");
    // runsc 20240729's sysfs has no /sys/class/net at all; 20221219's
    // lists lo there.
    assert!(matches!(field(out, "links").trim(), "lo" | ""), "{out}");
    assert_eq!(field(out, "routes"), "0", "routes besides loopback\n{out}");
    match listener.accept() {
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host's loopback service was reached from the sandbox: {other:?}"),
    }
}
