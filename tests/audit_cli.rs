//! `skillbox audit` over a JSON Lines audit log written by the audit
//! trail's own writer: filters, time order across executions, rotated
//! files, and `--follow` printing events written after it started.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use skillbox_audit::event::{AuditEvent, SandboxIdentity, SkillIdentity};
use skillbox_audit::jsonl::{JsonLinesWriter, Rotation};
use skillbox_test_support::Cli;
use time::OffsetDateTime;

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

fn writer(dir: &Path, execution: &str, skill: &str, rotation: Rotation) -> JsonLinesWriter {
    let identity = SandboxIdentity {
        execution_id: execution.to_owned(),
        skill: SkillIdentity {
            name: skill.to_owned(),
            version: None,
            digest: None,
        },
        container_id: execution.to_owned(),
    };
    JsonLinesWriter::with_rotation(&dir.join(format!("{execution}.jsonl")), identity, rotation).unwrap()
}

fn at(second: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + second).unwrap()
}

fn exit(status: i32) -> AuditEvent {
    AuditEvent::Exit {
        status,
        wall_ms: None,
        outcome: None,
    }
}

fn printed(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn audit_prints_matching_events_in_time_order_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let small = Rotation {
        max_bytes: 300,
        keep: 10,
    };
    let weather = writer(dir.path(), "exec-w", "weather", small);
    let other = writer(dir.path(), "exec-o", "other", Rotation::default());
    // Interleaved in time across two files; weather's file rotates.
    for second in 0..6 {
        let (writer, status) = if second % 2 == 0 {
            (&weather, second)
        } else {
            (&other, second)
        };
        writer.write_at(&exit(status as i32), at(second)).unwrap();
    }
    weather.write_at(&AuditEvent::Oom, at(10)).unwrap();
    assert!(
        dir.path().join("exec-w.jsonl.1").exists(),
        "the test wants a rotation"
    );

    let log_dir = dir.path().to_str().unwrap();
    let all = SKILLBOX.run(["audit", "--log-dir", log_dir]);
    assert_eq!(all.code, 0, "{}", all.describe());
    let statuses: Vec<i64> = printed(&all.stdout)
        .iter()
        .filter_map(|event| event["status"].as_i64())
        .collect();
    assert_eq!(statuses, [0, 1, 2, 3, 4, 5], "{}", all.stdout);

    let weather_exits = SKILLBOX.run([
        "audit",
        "--log-dir",
        log_dir,
        "--skill",
        "weather",
        "--type",
        "exit",
    ]);
    let events = printed(&weather_exits.stdout);
    assert_eq!(events.len(), 3, "{}", weather_exits.stdout);
    assert!(events
        .iter()
        .all(|event| event["skill"]["name"] == "weather" && event["type"] == "exit"));
    let by_execution = SKILLBOX.run(["audit", "--log-dir", log_dir, "--execution", "exec-o"]);
    assert_eq!(printed(&by_execution.stdout).len(), 3);

    let missing = SKILLBOX.run(["audit", "--log-dir", "/nonexistent/audit"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("/nonexistent/audit: no audit log here"),
        "{}",
        missing.stderr
    );
    let bad = SKILLBOX.run(["audit", "--log-dir", log_dir, "--verdict", "maybe"]);
    assert_eq!(bad.code, 2, "{}", bad.describe());
}

#[test]
fn audit_follow_prints_events_written_after_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let small = Rotation {
        max_bytes: 300,
        keep: 10,
    };
    let log = writer(dir.path(), "exec-f", "follow", small);
    log.write_at(&exit(0), at(0)).unwrap();
    let mut follow = SKILLBOX
        .command()
        .args(["audit", "--follow", "--type", "exit", "--log-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut next = || -> Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    assert_eq!(next()["status"], 0);
    // Later events, through rotations, and one of another type that is filtered out.
    for status in 1..5 {
        std::thread::sleep(Duration::from_millis(50));
        log.write_at(&AuditEvent::Oom, at(status)).unwrap();
        log.write_at(&exit(status as i32), at(status)).unwrap();
    }
    for status in 1..5 {
        assert_eq!(next()["status"], status);
    }
    follow.kill().unwrap();
    follow.wait().unwrap();
}
