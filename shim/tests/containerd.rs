//! The shim under a real, private containerd (Debian's 1.6.20): compiled
//! skill bundles run through `ctr run --runtime io.containerd.skillbox.v1
//! --config <bundle>/config.json`, and nothing is left behind.

use std::time::Duration;

mod common;

use common::containerd::*;

#[test]
fn compiled_skills_run_through_containerd_with_their_status() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-status";

    let hello = compile_skill(
        work.path(),
        "hello",
        "echo hello from $(id -u); echo to-stderr >&2",
    );
    let config = hello.join("config.json");
    let out = containerd.run_bundle(namespace, &config, "hello-1", &["--rm"]);
    assert!(
        out.status.success(),
        "ctr run failed: {}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    assert_eq!(text(&out.stdout), "hello from 65534\n");
    assert!(text(&out.stderr).contains("to-stderr"), "{}", text(&out.stderr));
    assert_nothing_left(&containerd, namespace, "hello-1", "/skillbox-test-hello");

    let failing = compile_skill(work.path(), "three", "exit 3");
    let config = failing.join("config.json");
    let out = containerd.run_bundle(namespace, &config, "three-1", &["--rm"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_nothing_left(&containerd, namespace, "three-1", "/skillbox-test-three");
}

#[test]
fn pids_pause_resume_kill_and_events_reach_containerd() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-events";
    let events = EventWatch::start(&containerd, work.path());

    let bundle = compile_skill(work.path(), "sleeper", "sleep 30");
    let config = bundle.join("config.json");
    let id = "sleeper-1";
    let out = containerd.run_bundle(namespace, &config, id, &["-d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(task_status(&containerd, namespace, id), "RUNNING");
    // Pids lists the sandbox's processes: the skill's `sleep` is its pid 1.
    let ps = text(&containerd.ctr(namespace, &["tasks", "ps", id]).stdout);
    assert!(
        ps.lines()
            .skip(1)
            .any(|line| line.split_whitespace().next() == Some("1")),
        "{ps}"
    );
    assert!(containerd
        .ctr(namespace, &["tasks", "pause", id])
        .status
        .success());
    assert_eq!(task_status(&containerd, namespace, id), "PAUSED");
    assert!(containerd
        .ctr(namespace, &["tasks", "resume", id])
        .status
        .success());
    assert_eq!(task_status(&containerd, namespace, id), "RUNNING");
    kill_and_remove(&containerd, namespace, id);
    let (topics, log) = events.topics(namespace);
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{log}"
    );
    assert!(log.contains("\"exit_status\":137"), "{log}");
    assert_nothing_left(&containerd, namespace, id, "/skillbox-test-sleeper");
}

#[test]
fn out_of_memory_reports_task_oom_then_exit_137() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-oom";
    let events = EventWatch::start(&containerd, work.path());
    let bundle = compile_skill_md(
        work.path(),
        "hog",
        "  entrypoint: [sh, -c, 'dd if=/dev/zero of=/dev/null bs=300M count=1; echo survived']\n  resources: { memory: 64Mi }\n",
    );
    let config = bundle.join("config.json");
    let out = containerd.run_bundle(namespace, &config, "hog-1", &["--rm"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("survived"));
    let (topics, log) = events.topics(namespace);
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/oom",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{log}"
    );
    assert_nothing_left(&containerd, namespace, "hog-1", "/skillbox-test-hog");
}

#[test]
fn the_policy_timeout_ends_a_container_with_status_124_and_an_audit_event() {
    let work = tempfile::tempdir().unwrap();
    let logs = work.path().join("audit");
    let containerd = Containerd::start_with(
        None,
        &format!("[audit]\nlog_dir = {:?}\n", logs.display().to_string()),
    );
    let namespace = "skillbox-test-timeout";
    let events = EventWatch::start(&containerd, work.path());
    // SIGTERM is ignored: only a kill ends it.
    let bundle = compile_skill_md(
        work.path(),
        "sleepy",
        "  entrypoint: [sh, -c, 'trap \"\" TERM; sleep 60']\n  resources: { timeout: 2s }\n",
    );
    let config = bundle.join("config.json");
    let started = std::time::Instant::now();
    let out = containerd.run_bundle(namespace, &config, "sleepy-1", &["--rm"]);
    let elapsed = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    // Create and start take well under a second; the deadline counts from Start.
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    let (topics, log) = events.topics(namespace);
    assert_eq!(
        topics,
        ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"],
        "{log}"
    );
    assert!(log.contains("\"exit_status\":124"), "{log}");
    let trail = std::fs::read_to_string(logs.join(namespace).join("sleepy-1.jsonl")).unwrap();
    let types: Vec<serde_json::Value> = trail
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let timeout = types
        .iter()
        .find(|event| event["type"] == "timeout")
        .unwrap_or_else(|| panic!("{trail}"));
    assert_eq!(timeout["limit_ms"], 2000, "{trail}");
    let exit = types.last().unwrap();
    assert_eq!(
        (&exit["type"], &exit["status"], &exit["outcome"]),
        (&"exit".into(), &124.into(), &"timeout".into()),
        "{trail}"
    );
    assert_nothing_left(&containerd, namespace, "sleepy-1", "/skillbox-test-sleepy");
    let audit_files: Vec<_> = std::fs::read_dir("/run/skillbox/audit")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.file_name().to_string_lossy().starts_with(namespace))
                .collect()
        })
        .unwrap_or_default();
    assert!(audit_files.is_empty(), "audit files left: {audit_files:?}");
}

/// The value of `metric` in `ctr task metrics` output.
fn metric(output: &str, metric: &str) -> u64 {
    output
        .lines()
        .find(|line| line.split_whitespace().next() == Some(metric))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {metric} in:\n{output}"))
}

#[test]
fn stats_are_the_sandbox_cgroups_real_figures() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-stats";
    let bundle = compile_skill_md(
        work.path(),
        "spinner",
        "  entrypoint: [sh, -c, 'while :; do :; done']\n  resources: { memory: 128Mi, cpus: 0.5, pids: 16 }\n",
    );
    let config = bundle.join("config.json");
    let id = "spinner-1";
    let out = containerd.run_bundle(namespace, &config, id, &["-d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_millis(1500));
    let out = containerd.ctr(namespace, &["tasks", "metrics", id]);
    let metrics = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(metric(&metrics, "cpuacct.usage") > 100_000_000, "{metrics}");
    assert!(metric(&metrics, "memory.usage_in_bytes") > 1 << 20, "{metrics}");
    assert_eq!(metric(&metrics, "memory.limit_in_bytes"), 128 << 20, "{metrics}");
    assert!(metric(&metrics, "pids.current") > 0, "{metrics}");
    // The sandbox cgroup's budget: 256 + 32 per process of the skill's quota.
    assert_eq!(metric(&metrics, "pids.limit"), 256 + 32 * 16, "{metrics}");
    kill_and_remove(&containerd, namespace, id);
    assert_nothing_left(&containerd, namespace, id, "/skillbox-test-spinner");
}

#[test]
fn file_log_uri_receives_stdout_and_stderr() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-logs";
    let bundle = compile_skill(
        work.path(),
        "logger",
        "echo to-stdout; echo to-stderr >&2; exit 3",
    );
    let config = bundle.join("config.json");
    let log = work.path().join("logger.log");
    let uri = format!("file://{}", log.display());
    let out = containerd.run_bundle(namespace, &config, "logger-1", &["--rm", "--log-uri", &uri]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("to-stdout"),
        "output went to ctr, not the log"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("to-stdout\n") && logged.contains("to-stderr\n"),
        "{logged}"
    );
    assert_nothing_left(&containerd, namespace, "logger-1", "/skillbox-test-logger");
}

#[test]
fn the_config_path_from_runtime_options_is_honoured() {
    use std::os::unix::fs::PermissionsExt;

    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-config";
    let bundle = compile_skill(work.path(), "configured", "echo configured");
    let config = bundle.join("config.json");

    // A bad config refuses the task and names the file and the field.
    let bad = work.path().join("bad.toml");
    std::fs::write(&bad, "[runsc]\nbinray = \"runsc\"\n").unwrap();
    let out = containerd.run_bundle(
        namespace,
        &config,
        "configured-1",
        &["--rm", "--runtime-config-path", bad.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad.toml: runsc.binray: unknown field `binray`"),
        "{stderr}"
    );
    assert_nothing_left(
        &containerd,
        namespace,
        "configured-1",
        "/skillbox-test-configured",
    );

    // A good one is used: its [runsc] binary is a wrapper that leaves a mark.
    let marker = work.path().join("wrapper-ran");
    let wrapper = work.path().join("runsc-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec runsc \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let good = work.path().join("good.toml");
    // The compiled bundle's /skill mount comes from the work dir.
    std::fs::write(
        &good,
        format!(
            "[runsc]\nbinary = \"{}\"\n[ceiling]\nbind_mount_sources = [\"{}\"]\n",
            wrapper.display(),
            work.path().display()
        ),
    )
    .unwrap();
    let out = containerd.run_bundle(
        namespace,
        &config,
        "configured-2",
        &["--rm", "--runtime-config-path", good.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "configured\n");
    let calls = std::fs::read_to_string(&marker).unwrap();
    assert!(calls.contains("create") && calls.contains("start"), "{calls}");
    assert_nothing_left(
        &containerd,
        namespace,
        "configured-2",
        "/skillbox-test-configured",
    );
}
