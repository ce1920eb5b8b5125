//! The audit trail of a `skillbox run`: a skill that execs a
//! child, opens a file for writing, and connects to an allowed and a
//! denied destination leaves exactly those events in its audit log, next
//! to its lifecycle and egress events, each with the execution's identity.
//! With `audit: all`, a known number of one system call is counted.
//! `skillbox run` runs in the fake internet's node namespace.

use std::time::Duration;

use serde_json::Value;
use skillbox_egress::netns::{Forwarding, NetnsName, SystemRunner};
use skillbox_test_support::fake_internet::{FakeInternet, NODE_UPLINK};
use skillbox_test_support::{
    busybox_rootfs, require_sandbox_prerequisites, run_with_watchdog, Cli, Output, Skill,
};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

const SCRIPT: &str = r#"echo written > /tmp/out
/bin/cat /tmp/out
printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 203.0.113.10 8080 | tail -1
printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 198.51.100.20 8080 || echo "198.51.100.20: refused"
"#;

const POLICY: &str = "  resources: { cpus: 0.5, memory: 128Mi, pids: 16, timeout: 60s }
  network:
    allow:
      - { cidr: 203.0.113.10/32, ports: [8080] }
  audit: { syscalls: security }
";

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The events of `kind` whose fields include every `(key, value)` of `fields`.
fn matching<'a>(all: &'a [Value], kind: &str, fields: &[(&str, Value)]) -> Vec<&'a Value> {
    all.iter()
        .filter(|event| event["type"] == kind && fields.iter().all(|(key, value)| &event[*key] == value))
        .collect()
}

fn run_in_node(fake: &FakeInternet, skill: &Skill, log: &std::path::Path) -> Output {
    let command = SKILLBOX.audited_run(fake.node_command(SKILLBOX.path()), skill.path(), log);
    run_with_watchdog(command, Duration::from_secs(90))
}

#[test]
fn a_runs_exec_write_and_connections_are_audited_with_its_identity() {
    require_sandbox_prerequisites();
    let fake = FakeInternet::start("aud");
    let node = NetnsName::new(&fake.node).unwrap();
    let _uplink = Forwarding::enable(Box::new(SystemRunner), Some(node), NODE_UPLINK).unwrap();
    let skill = Skill::sh("audit-run", POLICY, SCRIPT);
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("audit.jsonl");
    let output = run_in_node(&fake, &skill, &log);
    assert_eq!(output.code, 0, "{}", output.describe());
    assert!(output.stdout.contains("written") && output.stdout.contains("fake-internet 203.0.113.10"));
    assert!(
        output.stdout.contains("198.51.100.20: refused"),
        "{}",
        output.describe()
    );

    let all = events(&log);
    let text = std::fs::read_to_string(&log).unwrap();
    // One identity on every line.
    let execution = all[0]["execution_id"].as_str().unwrap().to_owned();
    for event in &all {
        assert_eq!(event["execution_id"], execution.as_str(), "{event}");
        assert_eq!(event["skill"]["name"], "audit-run", "{event}");
        assert!(
            event["skill"]["digest"].as_str().unwrap().starts_with("sha256:"),
            "{event}"
        );
    }
    // Lifecycle: first and last.
    assert_eq!(all[0]["type"], "start", "{text}");
    assert_eq!(all[0]["audit_level"], "security");
    assert_eq!(all.last().unwrap()["type"], "exit", "{text}");
    assert_eq!(all.last().unwrap()["status"], 0);
    // The child exec'd, with its argv, from the skill's shell (`path` is
    // the binary the kernel ran: /bin/cat is busybox).
    let execs = matching(
        &all,
        "exec",
        &[("argv", serde_json::json!(["/bin/cat", "/tmp/out"]))],
    );
    assert_eq!(execs.len(), 1, "{text}");
    assert_eq!(execs[0]["path"], "/bin/busybox");
    assert!(
        execs[0]["pid"].as_u64().is_some() && execs[0]["process"].is_string(),
        "{}",
        execs[0]
    );
    // The file opened for writing, by the shell's redirection.
    let writes = matching(
        &all,
        "file_open",
        &[("path", "/tmp/out".into()), ("write", true.into())],
    );
    assert_eq!(writes.len(), 1, "{text}");
    assert_eq!(writes[0]["process"], "sh");
    // Both connect(2) calls, with what the kernel said, and the table's verdicts.
    let allowed = matching(
        &all,
        "connect",
        &[("address", "203.0.113.10".into()), ("port", 8080.into())],
    );
    assert_eq!(allowed.len(), 1, "{text}");
    assert_eq!(allowed[0]["result"], 0);
    assert_eq!(allowed[0]["process"], "nc");
    let denied = matching(
        &all,
        "connect",
        &[("address", "198.51.100.20".into()), ("port", 8080.into())],
    );
    assert_eq!(denied.len(), 1, "{text}");
    assert_eq!(
        denied[0]["result"], -111,
        "ECONNREFUSED: the table answered with a reset"
    );
    let verdicts = |destination: &str| -> Vec<String> {
        matching(&all, "connection", &[("destination", destination.into())])
            .iter()
            .map(|event| {
                format!(
                    "{} {}",
                    event["verdict"].as_str().unwrap(),
                    event["rule"].as_str().unwrap_or("-")
                )
            })
            .collect()
    };
    assert_eq!(
        verdicts("203.0.113.10"),
        ["allowed allow: cidr 203.0.113.10/32 ports 8080"],
        "{text}"
    );
    assert_eq!(verdicts("198.51.100.20"), ["denied default-deny"], "{text}");
}

/// `skillbox run` of `skill` under the default node config (no network),
/// which must exit 0; its audit events.
fn run_audited(skill: &Skill) -> Vec<Value> {
    run_audited_on(skill, "")
}

/// [`run_audited`] under the node config `node_toml`.
fn run_audited_on(skill: &Skill, node_toml: &str) -> Vec<Value> {
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("audit.jsonl");
    let node = work.path().join("node.toml");
    std::fs::write(&node, node_toml).unwrap();
    let output = SKILLBOX.run([
        "run".as_ref(),
        "--base-rootfs".as_ref(),
        busybox_rootfs().as_os_str(),
        "--node-config".as_ref(),
        node.as_os_str(),
        "--audit-log".as_ref(),
        log.as_os_str(),
        skill.path().as_os_str(),
    ]);
    assert_eq!(output.code, 0, "{}", output.describe());
    events(&log)
}

#[test]
fn a_skill_cannot_audit_itself_below_the_node_minimum() {
    require_sandbox_prerequisites();
    let skill = Skill::sh(
        "audit-none",
        "  audit: { syscalls: none }\n",
        "echo written > /tmp/out\n/bin/cat /tmp/out\n",
    );
    let all = run_audited(&skill);
    let text = serde_json::to_string_pretty(&all).unwrap();
    // The default node minimum (`security`) wins over the skill's `none`.
    assert_eq!(
        matching(&all, "start", &[("audit_level", "security".into())]).len(),
        1,
        "{text}"
    );
    let execs = matching(
        &all,
        "exec",
        &[("argv", serde_json::json!(["/bin/cat", "/tmp/out"]))],
    );
    assert_eq!(execs.len(), 1, "{text}");
    let writes = matching(
        &all,
        "file_open",
        &[("path", "/tmp/out".into()), ("write", true.into())],
    );
    assert_eq!(writes.len(), 1, "{text}");
}

#[test]
fn repeats_past_the_event_budget_are_counted_and_later_execs_still_recorded() {
    require_sandbox_prerequisites();
    // 3000 identical stat calls under a budget of 100 routine events.
    let skill = Skill::sh(
        "audit-flood",
        "  audit: { syscalls: all }\n",
        "i=0; while [ $i -lt 3000 ]; do test -e /flood; i=$((i+1)); done\n/bin/cat /dev/null\n",
    );
    let all = run_audited_on(&skill, "[audit]\nevent_budget = 100\n");
    let text = || {
        let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
        for kind in all.iter().filter_map(|e| e["type"].as_str()) {
            *kinds.entry(kind).or_default() += 1;
        }
        format!("{} events by type: {kinds:?}", all.len())
    };
    assert_eq!(all[0]["type"], "start", "{}", text());
    assert_eq!(all.last().unwrap()["type"], "exit", "{}", text());
    let dropped: u64 = matching(&all, "events_dropped", &[("source", "budget".into())])
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    let stats_kept = matching(
        &all,
        "syscall",
        &[("name", "newfstatat".into()), ("process", "sh".into())],
    )
    .len();
    assert!(stats_kept <= 100, "{stats_kept} kept; {}", text());
    assert!(
        dropped + stats_kept as u64 >= 3000,
        "{dropped} dropped, {stats_kept} kept; {}",
        text()
    );
    // What the skill does after its flood is still there.
    let execs = matching(
        &all,
        "exec",
        &[("argv", serde_json::json!(["/bin/cat", "/dev/null"]))],
    );
    assert_eq!(execs.len(), 1, "{}", text());
}

/// The shell's `newfstatat` calls in a run of `test -e` repeated `times`.
fn shell_stats(times: usize) -> usize {
    let loop_body = "test -e /skill-count-probe; ".repeat(times);
    let skill = Skill::sh(
        "audit-all",
        "  audit: { syscalls: all }\n",
        &format!("{loop_body}\nexit 0\n"),
    );
    let all = run_audited(&skill);
    assert_eq!(matching(&all, "start", &[("audit_level", "all".into())]).len(), 1);
    all.iter()
        .filter(|event| {
            event["type"] == "syscall" && event["name"] == "newfstatat" && event["process"] == "sh"
        })
        .count()
}

#[test]
fn audit_all_counts_every_call_of_a_syscall() {
    require_sandbox_prerequisites();
    // The shell stats a few things of its own: the difference between a
    // run with 7 `test -e` and one with none is exactly 7.
    let (none, seven) = (shell_stats(0), shell_stats(7));
    assert_eq!(seven - none, 7, "{none} without the loop, {seven} with it");
}

#[test]
fn no_spelling_of_a_path_hides_a_read_from_the_security_level() {
    require_sandbox_prerequisites();
    // Each line reads /etc/passwd or the environment under another spelling.
    let script = r#"cat //etc/passwd >/dev/null
cat /./etc/passwd >/dev/null
cat /skill/../etc/passwd >/dev/null
cd /etc && cat passwd >/dev/null
cd /proc/self && cat environ >/dev/null
ln -s /etc/passwd /tmp/link && cat /tmp/link >/dev/null
echo done
"#;
    let skill = Skill::sh("audit-spelling", "  audit: { syscalls: security }\n", script);
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("audit.jsonl");
    let mut command = SKILLBOX.audited_run(SKILLBOX.command(), skill.path(), &log);
    command.env("SKILLBOX_STATE_DIR", work.path().join("state"));
    let output = run_with_watchdog(command, Duration::from_secs(60));
    assert_eq!(output.code, 0, "{}", output.describe());
    let all = events(&log);
    let opened: Vec<&str> = all
        .iter()
        .filter(|event| event["type"] == "file_open")
        .filter_map(|event| event["path"].as_str())
        .collect();
    for spelling in [
        "//etc/passwd",
        "/./etc/passwd",
        "/skill/../etc/passwd",
        "passwd",
        "environ",
        "/tmp/link",
    ] {
        assert!(
            opened.contains(&spelling),
            "no file_open of {spelling:?} in {opened:?}"
        );
    }
}
