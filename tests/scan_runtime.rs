//! `skillbox scan --runtime`: example skills written for the tests, each
//! with its expected verdict, rule ids and exit status; the registry's JSON
//! record; a network that stays closed whatever the policy allows; a scan
//! that cannot run exits 2.

use std::process::Command;

use skillbox_test_support::{busybox_rootfs, require_sandbox_prerequisites, Cli, Skill};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

struct Scanned {
    code: i32,
    record: serde_json::Value,
    stderr: String,
}

impl Scanned {
    fn rule_ids(&self) -> Vec<String> {
        self.record["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f["ruleId"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn has(&self, id: &str) -> bool {
        self.rule_ids().iter().any(|r| r == id)
    }
}

fn scan(skill: &Skill, extra: &[&str]) -> Scanned {
    require_sandbox_prerequisites();
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(SKILLBOX.path())
        .args(["scan", "--runtime", "--format", "json", "--base-rootfs"])
        .arg(busybox_rootfs())
        .arg(skill.path())
        .args(extra)
        .env("SKILLBOX_STATE_DIR", state.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let record = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    let left: Vec<_> = std::fs::read_dir(state.path()).unwrap().collect();
    assert!(left.is_empty(), "the scan left execution directories: {left:?}");
    Scanned {
        code: output.status.code().unwrap_or(-1),
        record,
        stderr,
    }
}

#[test]
fn a_benign_skill_is_safe() {
    let skill = Skill::sh(
        "benign",
        "  filesystem:\n    writable:\n      - { path: /tmp, size: 1Mi }\n",
        "echo hello > /tmp/greeting\ncat /tmp/greeting\n",
    );
    let scanned = scan(&skill, &[]);
    assert_eq!(scanned.code, 0, "{}\n{}", scanned.record, scanned.stderr);
    assert_eq!(scanned.record["verdict"], "SAFE", "{}", scanned.record);
    assert_eq!(scanned.record["is_safe"], true);
    assert_eq!(scanned.record["scanner_type"], "CUSTOM");
    assert_eq!(scanned.record["findings_count"], 0, "{}", scanned.record);
}

#[test]
fn a_secret_reader_is_dangerous() {
    let script = "cat /proc/1/environ >/dev/null 2>&1\ncat /etc/shadow >/dev/null 2>&1\ntrue\n";
    let scanned = scan(&Skill::sh("secrets", "", script), &[]);
    assert_eq!(scanned.code, 1, "{}\n{}", scanned.record, scanned.stderr);
    assert_eq!(scanned.record["verdict"], "DANGEROUS", "{}", scanned.record);
    assert!(scanned.has("SBX-SECRET-001"), "{:?}", scanned.rule_ids());
}

#[test]
fn writing_outside_scratch_is_suspicious_and_fail_on_decides_the_status() {
    let script = "echo x > /etc/evil 2>/dev/null; echo y > /skill/evil 2>/dev/null; true\n";
    let skill = Skill::sh("writer", "", script);
    let scanned = scan(&skill, &[]);
    assert_eq!(scanned.record["verdict"], "SUSPICIOUS", "{}", scanned.record);
    assert!(scanned.has("SBX-FS-001"), "{:?}", scanned.rule_ids());
    assert_eq!(
        scanned.code, 0,
        "SUSPICIOUS passes the default --fail-on dangerous"
    );
    assert_eq!(scan(&skill, &["--fail-on", "suspicious"]).code, 1);
}

#[test]
fn the_network_stays_closed_whatever_the_policy_allows() {
    // The policy allows 203.0.113.0/24 (TEST-NET-3); during a scan the
    // sandbox has no network at all, so the connection fails and is
    // reported as what it is: a connection the policy allows is not a
    // finding, one it does not allow is.
    let policy = "  network:\n    allow:\n      - { cidr: 203.0.113.0/24, ports: [80] }\n";
    let script = "nc -w 1 203.0.113.7 80 </dev/null; echo nc=$?\nnc -w 1 198.51.100.9 443 </dev/null; true\n";
    let scanned = scan(&Skill::sh("netty", policy, script), &[]);
    let undeclared: Vec<_> = scanned.record["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["ruleId"] == "SBX-NET-002")
        .map(|f| f["metadata"]["subject"].clone())
        .collect();
    assert_eq!(
        undeclared,
        [serde_json::json!("198.51.100.9")],
        "{}",
        scanned.record
    );
    assert!(
        scanned.has("SBX-EXEC-001"),
        "nc is a network tool: {:?}",
        scanned.rule_ids()
    );
    let connects: Vec<_> = scanned.record["findings"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["metadata"]["evidence"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["event"]["type"] == "connect")
        .map(|e| e["event"]["result"].as_i64().unwrap_or(0))
        .collect();
    assert!(
        connects.iter().all(|r| *r < 0),
        "a connection succeeded during a scan: {connects:?}"
    );
}

#[test]
fn a_scan_that_cannot_run_exits_2_and_text_comes_first_with_the_verdict() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(SKILLBOX.path())
        .args(["scan", "--runtime", "--base-rootfs"])
        .arg(busybox_rootfs())
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("SKILL.md"));

    let state = tempfile::tempdir().unwrap();
    let text = Command::new(SKILLBOX.path())
        .args(["scan", "--runtime", "--base-rootfs"])
        .arg(busybox_rootfs())
        .arg(Skill::sh("texty", "", "cat /etc/shadow 2>/dev/null; true\n").path())
        .env("SKILLBOX_STATE_DIR", state.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.starts_with("verdict: SUSPICIOUS\nfindings: "), "{stdout}");
    assert!(stdout.contains("SBX-SECRET-002"), "{stdout}");
}

#[test]
fn cases_from_scan_yaml_run_with_their_arguments_stdin_and_inputs() {
    // The skill echoes its stdin and arguments, reads its input, and when
    // asked to, reads a secret and exits 3.
    let script = "read line; echo \"stdin=$line args=$*\"\n\
                  [ -f /workspace/in/data.txt ] && echo \"input=$(cat /workspace/in/data.txt)\"\n\
                  if [ \"$1\" = steal ]; then cat /proc/1/environ >/dev/null; exit 3; fi\n";
    let skill = Skill::sh("cased", "", script)
        .file("data.txt", "from-the-input")
        .file(
            "scan.yaml",
            "cases:\n  - name: with-input\n    args: [one, two]\n    stdin: \"hello\\n\"\n    inputs: [data.txt]\n    expect_exit: 0\n\
             \x20 - name: steal\n    args: [steal]\n    expect_exit: 0\n",
        );
    let scanned = scan(&skill, &[]);
    assert_eq!(
        scanned.record["verdict"], "DANGEROUS",
        "{}\n{}",
        scanned.record, scanned.stderr
    );
    let findings = scanned.record["findings"].as_array().unwrap();
    let secret = findings
        .iter()
        .find(|f| f["ruleId"] == "SBX-SECRET-001")
        .expect("the steal case's read");
    assert_eq!(secret["metadata"]["evidence"][0]["case"], "steal", "{secret}");
    let unexpected: Vec<_> = findings
        .iter()
        .filter(|f| f["ruleId"] == "SBX-CASE-001")
        .collect();
    assert_eq!(unexpected.len(), 1, "{}", scanned.record);
    assert_eq!(unexpected[0]["message"], "exited 3, the case expects 0");
    assert_eq!(unexpected[0]["metadata"]["subject"], "steal");

    // A bad cases file is a scan that cannot run, naming the field.
    let bad = Skill::sh("bad-cases", "", "true\n").file("scan.yaml", "cases:\n  - name: x\n    stdn: oops\n");
    let scanned = scan(&bad, &[]);
    assert_eq!(scanned.code, 2);
    assert!(
        scanned
            .stderr
            .contains("scan.yaml: cases[0]: unknown field `stdn`"),
        "{}",
        scanned.stderr
    );
}

#[test]
fn sarif_output_carries_the_findings_for_code_scanning() {
    require_sandbox_prerequisites();
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("scan.sarif");
    let status = Command::new(SKILLBOX.path())
        .args(["scan", "--runtime", "--format", "sarif", "--base-rootfs"])
        .arg(busybox_rootfs())
        .arg(Skill::sh("sarify", "", "cat /proc/1/environ >/dev/null\n").path())
        .arg("-o")
        .arg(&report)
        .env("SKILLBOX_STATE_DIR", state.path())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "DANGEROUS fails the default --fail-on");
    let log: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(log["version"], "2.1.0");
    let run = &log["runs"][0];
    assert_eq!(run["properties"]["verdict"], "DANGEROUS");
    let result = &run["results"][0];
    assert_eq!(
        (result["ruleId"].as_str(), result["level"].as_str()),
        (Some("SBX-SECRET-001"), Some("error"))
    );
}
