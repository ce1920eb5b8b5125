//! `skillbox metrics-server` as a real process on loopback: a scraper sees
//! the counters move to exactly what the audit log written meanwhile (by
//! the audit trail's own writer, one file rotating) says, the running
//! gauge go up at `start` and down at `exit`, and the shim gauges count a
//! process named like the shim.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skillbox_audit::event::{AuditEvent, SandboxIdentity, SkillIdentity};
use skillbox_audit::jsonl::{JsonLinesWriter, Rotation};
use skillbox_egress::events::{
    ConnectionEvent, ConnectionVerdict, DnsQueryEvent, DnsVerdict, EgressEvent, Protocol,
};
use skillbox_test_support::pool::TestPool;
use skillbox_test_support::{busybox_rootfs, require_sandbox_prerequisites, Cli, Skill};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

/// Kills the process when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server on a free loopback port and returns it with its address.
fn start_server(log_dir: &Path) -> (Killed, SocketAddr) {
    start_server_with(log_dir, &[])
}

fn start_server_with(log_dir: &Path, options: &[&std::ffi::OsStr]) -> (Killed, SocketAddr) {
    let mut child = SKILLBOX
        .command()
        .args(["metrics-server", "--listen", "127.0.0.1:0", "--log-dir"])
        .arg(log_dir)
        .args(options)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = Killed(child);
    let addr = line
        .split_once("http://")
        .and_then(|(_, rest)| rest.split_once("/metrics"))
        .map(|(addr, _)| addr.parse().unwrap())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (server, addr)
}

/// One request; the whole response as text.
fn request(addr: SocketAddr, head: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Every sample of a scrape, by series (`name{labels}`).
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let response = request(addr, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{head}"
    );
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// Scrapes until `check` holds for a scrape (then returns it), failing
/// after a deadline with the last scrape.
fn scrape_until(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let samples = scrape(addr);
        if check(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}; last scrape: {samples:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn writer(dir: &Path, execution: &str, skill: &str, rotation: Rotation) -> JsonLinesWriter {
    let identity = SandboxIdentity {
        execution_id: format!("default/{execution}"),
        skill: SkillIdentity {
            name: skill.to_owned(),
            version: Some("1.0.0".to_owned()),
            digest: None,
        },
        container_id: execution.to_owned(),
    };
    JsonLinesWriter::with_rotation(
        &dir.join("default").join(format!("{execution}.jsonl")),
        identity,
        rotation,
    )
    .unwrap()
}

fn start_event() -> AuditEvent {
    AuditEvent::Start {
        runtime: "shim".to_owned(),
        audit_level: "security".to_owned(),
    }
}

fn dropped(count: u64) -> AuditEvent {
    AuditEvent::EventsDropped {
        count,
        source: "sentry".to_owned(),
    }
}

fn exit(status: i32, wall_ms: u64) -> AuditEvent {
    AuditEvent::Exit {
        status,
        wall_ms: Some(wall_ms),
        outcome: None,
    }
}

fn connection(verdict: ConnectionVerdict) -> EgressEvent {
    EgressEvent::Connection(ConnectionEvent {
        destination: "203.0.113.7".parse().unwrap(),
        port: Some(443),
        protocol: Protocol::Tcp,
        verdict,
        rule: Some("default-deny".to_owned()),
    })
}

fn dns_query(verdict: DnsVerdict) -> EgressEvent {
    EgressEvent::DnsQuery(DnsQueryEvent {
        name: "api.example.com".to_owned(),
        qtype: "A".to_owned(),
        verdict,
        rcode: "REFUSED".to_owned(),
        rule: None,
        reason: None,
        answers: Vec::new(),
        sinkhole: false,
    })
}

/// Whether each series has exactly its expected value.
fn all_equal(samples: &HashMap<String, f64>, expected: &[(&str, f64)]) -> bool {
    expected
        .iter()
        .all(|(series, value)| samples.get(*series) == Some(value))
}

#[test]
fn counters_follow_the_audit_log_as_skills_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start_server(dir.path());

    let empty = scrape(addr);
    assert_eq!(empty.get("skillbox_sandboxes_running"), Some(&0.0));
    assert_eq!(empty.get("skillbox_execution_duration_seconds_count"), Some(&0.0));
    assert!(empty.contains_key("skillbox_shims"), "{empty:#?}");
    assert!(empty.contains_key("skillbox_shim_memory_bytes"), "{empty:#?}");

    // Small files for weather, so that its log rotates mid-run.
    let weather = writer(
        dir.path(),
        "weather-1",
        "weather",
        Rotation {
            max_bytes: 600,
            keep: 10,
        },
    );
    let shell = writer(dir.path(), "shell-1", "shell", Rotation::default());
    weather.write(&start_event()).unwrap();
    shell.write(&start_event()).unwrap();
    scrape_until(addr, "two sandboxes running", |samples| {
        all_equal(
            samples,
            &[
                ("skillbox_sandboxes_running", 2.0),
                ("skillbox_sandboxes_started_total{skill=\"weather\"}", 1.0),
                ("skillbox_sandboxes_started_total{skill=\"shell\"}", 1.0),
            ],
        )
    });

    weather.write(&connection(ConnectionVerdict::Denied)).unwrap();
    weather.write(&connection(ConnectionVerdict::Allowed)).unwrap();
    weather.write(&dns_query(DnsVerdict::Refused)).unwrap();
    weather.write(&dns_query(DnsVerdict::Refused)).unwrap();
    weather.write(&dns_query(DnsVerdict::Allowed)).unwrap();
    weather.write(&dropped(5)).unwrap();
    weather.write(&exit(0, 1200)).unwrap();
    assert!(
        dir.path().join("default/weather-1.jsonl.1").exists(),
        "the test wants a rotation"
    );
    scrape_until(addr, "weather ended", |samples| {
        all_equal(samples, &[("skillbox_sandboxes_running", 1.0)])
    });

    shell.write(&AuditEvent::Oom).unwrap();
    shell.write(&dropped(2)).unwrap();
    shell.write(&exit(137, 300)).unwrap();
    let expected = [
        ("skillbox_sandboxes_running", 0.0),
        ("skillbox_sandboxes_started_total{skill=\"weather\"}", 1.0),
        ("skillbox_sandboxes_started_total{skill=\"shell\"}", 1.0),
        ("skillbox_sandboxes_failed_total{skill=\"shell\"}", 1.0),
        ("skillbox_oom_kills_total{skill=\"shell\"}", 1.0),
        (
            "skillbox_egress_connections_total{skill=\"weather\",verdict=\"denied\"}",
            1.0,
        ),
        (
            "skillbox_egress_connections_total{skill=\"weather\",verdict=\"allowed\"}",
            1.0,
        ),
        (
            "skillbox_dns_queries_total{skill=\"weather\",verdict=\"refused\"}",
            2.0,
        ),
        (
            "skillbox_dns_queries_total{skill=\"weather\",verdict=\"allowed\"}",
            1.0,
        ),
        ("skillbox_audit_events_dropped_total{source=\"sentry\"}", 7.0),
        ("skillbox_audit_events_total{type=\"start\"}", 2.0),
        ("skillbox_audit_events_total{type=\"exit\"}", 2.0),
        ("skillbox_audit_events_total{type=\"connection\"}", 2.0),
        ("skillbox_audit_events_total{type=\"dns_query\"}", 3.0),
        ("skillbox_audit_events_total{type=\"oom\"}", 1.0),
        ("skillbox_audit_events_total{type=\"events_dropped\"}", 2.0),
        ("skillbox_execution_duration_seconds_count", 2.0),
        ("skillbox_execution_duration_seconds_sum", 1.5),
        ("skillbox_execution_duration_seconds_bucket{le=\"0.5\"}", 1.0),
        ("skillbox_execution_duration_seconds_bucket{le=\"2.5\"}", 2.0),
        ("skillbox_audit_log_malformed_lines_total", 0.0),
    ];
    let samples = scrape_until(addr, "both skills counted", |samples| {
        all_equal(samples, &expected)
    });
    // Nothing was counted twice or for the wrong skill.
    for absent in [
        "skillbox_sandboxes_failed_total{skill=\"weather\"}",
        "skillbox_oom_kills_total{skill=\"weather\"}",
        "skillbox_timeouts_total{skill=\"shell\"}",
    ] {
        assert!(!samples.contains_key(absent), "{absent}: {samples:#?}");
    }
    assert!(
        samples.keys().all(|series| !series.contains("weather-1")),
        "an execution id became a label"
    );

    // A later scrape sees only what was added since: one garbage line.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("default/shell-1.jsonl"))
        .unwrap();
    file.write_all(b"not an event\n").unwrap();
    let after = scrape_until(addr, "the garbage line counted", |samples| {
        all_equal(samples, &[("skillbox_audit_log_malformed_lines_total", 1.0)])
    });
    assert!(all_equal(&after, &expected[..expected.len() - 1]), "{after:#?}");

    let missing = request(addr, "GET /other HTTP/1.1\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"), "{missing}");
}

#[test]
fn shim_processes_are_counted_with_their_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start_server(&dir.path().join("absent"));
    let before = scrape(addr)["skillbox_shims"];
    // Any program installed under the shim's name is one to /proc.
    let fake = dir.path().join("containerd-shim-skillbox-v1");
    std::fs::copy("/bin/sleep", &fake).unwrap();
    // Another test's fork may briefly hold the copy open for writing
    // (ETXTBSY): try again for a moment.
    let mut tries = 0;
    let _shim = loop {
        match Command::new(&fake).arg("60").spawn() {
            Ok(child) => break Killed(child),
            Err(err) if err.raw_os_error() == Some(26) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => panic!("cannot start {}: {err}", fake.display()),
        }
    };
    let samples = scrape_until(addr, "the fake shim counted", |samples| {
        samples["skillbox_shims"] >= before + 1.0 && samples["skillbox_shim_memory_bytes"] > 0.0
    });
    assert!(samples["skillbox_shim_memory_bytes"] < (1u64 << 40) as f64);
}

#[test]
fn the_warm_pools_sandboxes_and_their_memory_are_measured() {
    let skill = Skill::sh("metered", "", "true");
    let pool = TestPool::start(
        SKILLBOX,
        &[
            "--warm".as_ref(),
            skill.path().as_os_str(),
            "--base-rootfs".as_ref(),
            busybox_rootfs().as_os_str(),
        ],
    );
    pool.wait_ready(2);
    let dir = tempfile::tempdir().unwrap();
    let socket = pool.socket();
    let (_server, addr) = start_server_with(
        &dir.path().join("absent"),
        &["--pool".as_ref(), socket.as_os_str()],
    );
    let samples = scrape(addr);
    assert_eq!(
        samples[r#"skillbox_pool_sandboxes{state="ready"}"#], 2.0,
        "{samples:#?}"
    );
    assert_eq!(samples[r#"skillbox_pool_sandboxes{state="running"}"#], 0.0);
    // Two booted sandboxes hold megabytes, not bytes or terabytes.
    let memory = samples["skillbox_pool_ready_memory_bytes"];
    assert!(
        memory > (2u64 << 20) as f64 && memory < (1u64 << 32) as f64,
        "{memory}"
    );
    pool.stop();
    let samples = scrape(addr);
    assert_eq!(
        samples[r#"skillbox_pool_sandboxes{state="ready"}"#], 0.0,
        "{samples:#?}"
    );
    assert_eq!(samples["skillbox_pool_ready_memory_bytes"], 0.0);
}

#[test]
fn real_runs_move_the_counters() {
    require_sandbox_prerequisites();
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("audit");
    std::fs::create_dir_all(&log_dir).unwrap();
    let node_config = work.path().join("node.toml");
    std::fs::write(
        &node_config,
        format!("[audit]\nlog_dir = {:?}\n", log_dir.display().to_string()),
    )
    .unwrap();
    let (_server, addr) = start_server(&log_dir);
    let value = |samples: &HashMap<String, f64>, key: &str| samples.get(key).copied().unwrap_or(0.0);
    for (name, script) in [("metrics-ok", "exit 0\n"), ("metrics-fails", "exit 3\n")] {
        let skill = Skill::sh(name, "  audit: { syscalls: security }\n", script);
        let output = SKILLBOX.run([
            "run".as_ref(),
            "--node-config".as_ref(),
            node_config.as_os_str(),
            "--base-rootfs".as_ref(),
            busybox_rootfs().as_os_str(),
            skill.path().as_os_str(),
        ]);
        assert!(output.code == 0 || output.code == 3, "{}", output.describe());
    }
    let samples = scrape_until(addr, "counted both runs", |samples| {
        value(samples, "skillbox_sandboxes_started_total{skill=\"metrics-ok\"}") == 1.0
            && value(
                samples,
                "skillbox_sandboxes_started_total{skill=\"metrics-fails\"}",
            ) == 1.0
    });
    assert_eq!(
        value(
            &samples,
            "skillbox_sandboxes_failed_total{skill=\"metrics-fails\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "skillbox_sandboxes_failed_total{skill=\"metrics-ok\"}"),
        0.0
    );
    assert_eq!(value(&samples, "skillbox_sandboxes_running"), 0.0);
    assert_eq!(value(&samples, "skillbox_execution_duration_seconds_count"), 2.0);
    assert!(
        value(&samples, "skillbox_audit_events_total{type=\"container_start\"}") >= 2.0,
        "{samples:#?}"
    );
}
