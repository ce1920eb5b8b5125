//! `skillbox audit export` against a real PostgreSQL server holding the
//! registry's `audit_log` table: the right events become rows of the
//! right shape; with the database down while events are written, a
//! following exporter retries and, once it is up, every row arrives
//! exactly once; an exporter restarted from its cursor inserts nothing
//! twice.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use skillbox_audit::event::{AuditEvent, SandboxIdentity, SkillIdentity};
use skillbox_audit::jsonl::JsonLinesWriter;
use skillbox_test_support::postgres::Postgres;
use skillbox_test_support::Cli;

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

fn writer(dir: &Path, execution: &str) -> JsonLinesWriter {
    let identity = SandboxIdentity {
        execution_id: execution.to_owned(),
        skill: SkillIdentity {
            name: "weather".to_owned(),
            version: Some("1.2.0".to_owned()),
            digest: Some("sha256:abc".to_owned()),
        },
        container_id: execution.to_owned(),
    };
    JsonLinesWriter::open(&dir.join(format!("{execution}.jsonl")), identity).unwrap()
}

/// One execution's events: 3 of the 5 are for the registry.
fn run_events(log: &JsonLinesWriter) {
    log.write(&AuditEvent::Start {
        runtime: "skillbox-run".to_owned(),
        audit_level: "security".to_owned(),
    })
    .unwrap();
    log.write(
        &serde_json::json!({"type": "connection", "destination": "203.0.113.11", "port": 8080,
        "protocol": "tcp", "verdict": "denied", "rule": "deny: cidr 203.0.113.11/32 (all ports)"}),
    )
    .unwrap();
    log.write(
        &serde_json::json!({"type": "connection", "destination": "203.0.113.10", "port": 8080,
        "protocol": "tcp", "verdict": "allowed", "rule": "allow: domain allowed.example ports 8080"}),
    )
    .unwrap();
    log.write(&AuditEvent::Syscall {
        task: Default::default(),
        name: "getpid".to_owned(),
        sysno: 39,
        result: Some(1),
    })
    .unwrap();
    log.write(&AuditEvent::Exit {
        status: 0,
        wall_ms: Some(12),
        outcome: None,
    })
    .unwrap();
}

fn export_args<'a>(pg: &'a str, log_dir: &'a str, cursor: &'a str) -> Vec<&'a str> {
    vec![
        "audit",
        "export",
        "--database",
        pg,
        "--log-dir",
        log_dir,
        "--cursor",
        cursor,
    ]
}

#[test]
fn export_writes_lifecycle_and_violation_rows_once() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("audit");
    run_events(&writer(&logs, "exec-1"));
    let cursor = dir.path().join("cursor.json");
    let (conninfo, log_dir, cursor_arg) = (
        pg.conninfo(),
        logs.display().to_string(),
        cursor.display().to_string(),
    );

    let out = SKILLBOX.run(export_args(&conninfo, &log_dir, &cursor_arg));
    assert_eq!(out.code, 0, "{}", out.describe());
    let rows = pg.sql(
        "SELECT action, target_type, COALESCE(target_id::text, '-'), user_agent LIKE 'skillbox/%', \
         detail_json->>'execution_id', detail_json->'skill'->>'digest', created_at IS NOT NULL \
         FROM audit_log ORDER BY id",
    );
    assert_eq!(
        rows,
        "SKILL_RUNTIME_START|SKILL_VERSION|-|t|exec-1|sha256:abc|t\n\
         SKILL_RUNTIME_EGRESS_DENIED|SKILL_VERSION|-|t|exec-1|sha256:abc|t\n\
         SKILL_RUNTIME_EXIT|SKILL_VERSION|-|t|exec-1|sha256:abc|t\n"
    );
    assert_eq!(
        pg.sql("SELECT detail_json->>'rule' FROM audit_log WHERE action = 'SKILL_RUNTIME_EGRESS_DENIED'"),
        "deny: cidr 203.0.113.11/32 (all ports)\n"
    );

    // Again from the saved cursor: nothing new. Again without it (a lost
    // cursor): every row is recognised by its request_id.
    let again = SKILLBOX.run(export_args(&conninfo, &log_dir, &cursor_arg));
    assert_eq!(again.code, 0, "{}", again.describe());
    std::fs::remove_file(&cursor).unwrap();
    let fresh = SKILLBOX.run(export_args(&conninfo, &log_dir, &cursor_arg));
    assert_eq!(fresh.code, 0, "{}", fresh.describe());
    assert_eq!(pg.sql("SELECT count(*) FROM audit_log"), "3\n");
}

#[test]
fn rows_written_while_the_database_is_down_arrive_once_when_it_is_back() {
    let mut pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("audit");
    let cursor = dir.path().join("cursor.json");
    let conninfo = pg.conninfo();
    run_events(&writer(&logs, "exec-before"));
    pg.down();

    let mut exporter = SKILLBOX
        .command()
        .args([
            "audit",
            "export",
            "--follow",
            "--batch",
            "2",
            "--database",
            &conninfo,
            "--log-dir",
        ])
        .arg(&logs)
        .arg("--cursor")
        .arg(&cursor)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Events keep coming while the database is away.
    for n in 0..3 {
        run_events(&writer(&logs, &format!("exec-down-{n}")));
        std::thread::sleep(Duration::from_millis(300));
    }
    pg.up();
    run_events(&writer(&logs, "exec-after"));
    // 5 executions, 3 rows each.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.sql("SELECT count(*) FROM audit_log") != "15\n" {
        assert!(
            Instant::now() < deadline,
            "rows: {}",
            pg.sql("SELECT count(*) FROM audit_log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    exporter.kill().unwrap();
    let output = exporter.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("retrying in"),
        "the exporter never saw the database down:\n{stderr}"
    );
    assert_eq!(pg.sql("SELECT count(*) FROM audit_log"), "15\n");
    assert_eq!(pg.sql("SELECT count(DISTINCT request_id) FROM audit_log"), "15\n");
    assert_eq!(
        pg.sql("SELECT count(DISTINCT detail_json->>'execution_id') FROM audit_log"),
        "5\n"
    );
}
