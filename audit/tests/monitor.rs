//! The monitor against a real runsc sandbox: the events a busybox script
//! produces at `security` and `all`. Needs root, runsc and busybox-static;
//! a missing prerequisite fails the test by name (never a skip).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use skillbox_audit::gvisor::config::point_names;
use skillbox_audit::gvisor::{pod_init_config, write_pod_init_config, EventSink, Monitor, MonitorStats};
use skillbox_audit::{AuditEvent, AuditLevel, Task};

#[derive(Default)]
struct Collect(Mutex<Vec<AuditEvent>>);

impl EventSink for Collect {
    fn record(&self, event: AuditEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn prerequisites() {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (run the test as root)");
    }
    if Command::new("runsc").arg("--version").output().is_err() {
        missing.push("runsc on PATH");
    }
    if !Path::new("/bin/busybox").is_file() {
        missing.push("busybox-static (/bin/busybox)");
    }
    assert!(
        missing.is_empty(),
        "missing prerequisites: {}",
        missing.join(", ")
    );
}

fn busybox_rootfs() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let dir = target.join("skillbox-test/busybox-rootfs");
    let status = Command::new(workspace().join("examples/rootfs/make-busybox-rootfs.sh"))
        .arg(&dir)
        .status()
        .expect("running make-busybox-rootfs.sh");
    assert!(status.success(), "make-busybox-rootfs.sh failed");
    dir
}

/// A minimal OCI bundle running `sh -c script` on the read-only busybox
/// rootfs with a tmpfs /tmp.
fn bundle(dir: &Path, script: &str) -> PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", script],
            "env": ["PATH=/usr/bin:/bin", "SECRET_TOKEN=do-not-log"],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "noNewPrivileges": true
        },
        "root": {"path": busybox_rootfs(), "readonly": true},
        "hostname": "audit",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]}
    });
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    bundle
}

/// Runs `script` in a sandbox audited at `level`; the events and counters.
fn audited_run(level: AuditLevel, script: &str) -> (Vec<AuditEvent>, MonitorStats, String) {
    prerequisites();
    let dir = tempfile::tempdir().unwrap();
    // runsc names a sandbox's control socket after its id: tests running
    // at once need ids of their own.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("audit-{}-{}-{run}", std::process::id(), level_name(level));
    let socket = dir.path().join("monitor.sock");
    let sink = Arc::new(Collect::default());
    let monitor = Monitor::bind(&socket, &id, level, sink.clone()).unwrap();
    let pod_config = dir.path().join("pod-init.json");
    write_pod_init_config(&pod_init_config(level, &socket).unwrap(), &pod_config).unwrap();
    let bundle = bundle(dir.path(), script);
    let mut child = Command::new("runsc")
        .arg(format!("--root={}", dir.path().join("state").display()))
        .arg("--network=none")
        .arg(format!("--pod-init-config={}", pod_config.display()))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting runsc");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("runsc run {id} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stats = monitor.stop().unwrap();
    let events = std::mem::take(&mut *sink.0.lock().unwrap());
    let text = format!(
        "runsc: {}\nstdout: {}\nstderr: {}\nstats: {stats:?}\nevents:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    (events, stats, text)
}

fn level_name(level: AuditLevel) -> &'static str {
    match level {
        AuditLevel::None => "none",
        AuditLevel::Security => "security",
        AuditLevel::All => "all",
    }
}

fn task(pid: u32, process: &str) -> Task {
    Task {
        pid: Some(pid),
        tid: Some(pid),
        process: Some(process.to_owned()),
    }
}

fn syscall(pid: u32, process: &str, name: &str, sysno: u64, result: i64) -> AuditEvent {
    AuditEvent::Syscall {
        task: task(pid, process),
        name: name.to_owned(),
        sysno,
        result: Some(result),
    }
}

fn exec(pid: u32, argv: &[&str]) -> AuditEvent {
    AuditEvent::Exec {
        task: task(pid, "sh"),
        path: "/bin/busybox".to_owned(),
        argv: argv.iter().map(|&a| a.to_owned()).collect(),
        env_names: ["SECRET_TOKEN", "SHLVL", "HOME", "PATH", "PWD"]
            .map(str::to_owned)
            .to_vec(),
    }
}

/// Everything the `security` level records of a script that writes a file,
/// fails to read one and fails to connect, in order. `cat` is pid 2; the
/// shell execs `nc` in place as its last command, so nc is pid 1. The
/// opens of `/dev/null` (a read outside the sensitive prefixes) is filtered
/// out; `prlimit64` is busybox's start-up; `exe` is the process name gVisor
/// reports between exec and the new image taking its name.
#[test]
fn security_level_records_execs_writes_sensitive_reads_and_connects() {
    let script = "echo hi > /tmp/x; cat /etc/hostname; nc 127.0.0.1 9 </dev/null";
    let (events, stats, text) = audited_run(AuditLevel::Security, script);
    let expected = vec![
        AuditEvent::ContainerStart {
            task: task(1, "sh"),
            argv: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
            env_names: vec!["PATH".to_owned(), "SECRET_TOKEN".to_owned()],
            cwd: Some("/".to_owned()),
        },
        syscall(1, "sh", "prlimit64", 302, 0),
        AuditEvent::FileOpen {
            task: task(1, "sh"),
            path: "/tmp/x".to_owned(),
            flags: 0o1101,
            mode: Some(0o666),
            write: true,
            result: Some(3),
        },
        AuditEvent::Clone {
            task: task(1, "sh"),
            child_tid: Some(2),
            flags: Some(0x0120_0000),
        },
        exec(2, &["cat", "/etc/hostname"]),
        syscall(2, "sh", "execve", 59, 0),
        syscall(2, "exe", "prlimit64", 302, 0),
        AuditEvent::FileOpen {
            task: task(2, "cat"),
            path: "/etc/hostname".to_owned(),
            flags: 0,
            mode: None,
            write: false,
            result: Some(-2),
        },
        AuditEvent::ProcessExit {
            task: task(2, "cat"),
            exit_status: Some(256),
        },
        exec(1, &["nc", "127.0.0.1", "9"]),
        syscall(1, "sh", "execve", 59, 0),
        syscall(1, "exe", "prlimit64", 302, 0),
        AuditEvent::Socket {
            task: task(1, "nc"),
            domain: 2,
            socket_type: 1,
            protocol: 0,
            result: Some(3),
        },
        AuditEvent::Connect {
            task: task(1, "nc"),
            address: "127.0.0.1".to_owned(),
            port: Some(9),
            result: Some(-111),
        },
        AuditEvent::ProcessExit {
            task: task(1, "nc"),
            exit_status: Some(256),
        },
    ];
    assert_eq!(events, expected, "{text}");
    assert!(
        !text.contains("do-not-log"),
        "an environment value reached the events"
    );
    assert_eq!(
        (
            stats.connections,
            stats.decode_failures,
            stats.unknown_types,
            stats.sentry_dropped,
            stats.filtered
        ),
        (1, 0, 0, 0, 1),
        "{text}"
    );
}

/// Directories made and removed are recorded at `security`, as raw enter
/// points (so by name, without a result), in order. busybox's shell runs
/// these applets in a forked child without exec, so the child keeps the
/// applet's name as its process name.
#[test]
fn security_level_records_directories_made_and_removed() {
    let script = "mkdir /tmp/made; rmdir /tmp/made; mkdir /tmp/kept";
    let (events, stats, text) = audited_run(AuditLevel::Security, script);
    let directory_calls: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::Syscall {
                name,
                result: None,
                task,
                ..
            } if ["mkdir", "mkdirat", "rmdir"].contains(&name.as_str()) => {
                Some((task.process.as_deref()?, name.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        directory_calls,
        [("mkdir", "mkdir"), ("rmdir", "rmdir"), ("mkdir", "mkdir")],
        "{text}"
    );
    assert_eq!((stats.decode_failures, stats.sentry_dropped), (0, 0), "{text}");
}

/// At `all`, every system call is an event: a loop of 7 `test -e` makes
/// exactly 7 `newfstatat` calls in the shell (busybox's `test` is a shell
/// builtin; the shell itself stats nothing else here), each a raw enter
/// point, so without a result.
#[test]
fn all_level_records_every_call_of_a_syscall() {
    let script = "i=0; while [ $i -lt 7 ]; do test -e /etc/passwd; i=$((i+1)); done";
    let (events, stats, text) = audited_run(AuditLevel::All, script);
    let stats_calls = events
        .iter()
        .filter(|e| {
            matches!(e, AuditEvent::Syscall { name, task, result: None, .. }
            if name == "newfstatat" && task.pid == Some(1) && task.process.as_deref() == Some("sh"))
        })
        .count();
    assert_eq!(stats_calls, 7, "{text}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AuditEvent::Syscall { name, .. } if name == "exit_group")),
        "{text}"
    );
    assert_eq!((stats.decode_failures, stats.sentry_dropped), (0, 0), "{text}");
}

/// Every point the session configurations name exists in this runsc.
#[test]
fn every_configured_point_is_offered_by_this_runsc() {
    prerequisites();
    let output = Command::new("runsc")
        .args(["trace", "metadata"])
        .output()
        .expect("runsc trace metadata");
    let text = String::from_utf8_lossy(&output.stdout);
    let offered: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("Name: "))
        .map(|rest| rest.split(',').next().unwrap_or_default())
        .collect();
    assert!(
        offered.len() > 900,
        "runsc trace metadata listed {} points",
        offered.len()
    );
    for level in [AuditLevel::Security, AuditLevel::All] {
        for name in point_names(level) {
            assert!(
                offered.contains(&name.as_str()),
                "{name} is not offered by this runsc"
            );
        }
    }
}
