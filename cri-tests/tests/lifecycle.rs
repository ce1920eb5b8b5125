//! A pod's life as kubelet drives it, under the `runc` handler (the
//! control) and the `skillbox` handler: stdout into the CRI log, exit codes
//! and how fast they are seen, kubelet's mounts, a read-only root, ExecSync,
//! the grace period of StopContainer, a failing container that fails alone,
//! ContainerStats, UpdateContainerResources and the OOM reason.

use std::time::{Duration, Instant};

use policy_compiler::node_config::CriSettings;
use skillbox_cri_tests::pod::CLUSTER_DNS;
use skillbox_cri_tests::{ContainerSpec, Handler, OrFail, Pod};

const EXIT_LIMIT: Duration = Duration::from_secs(30);
/// How long after a container's last output ContainerStatus may take to
/// say it exited (runc: ~50–100 ms here, polling every 10 ms included).
const EXIT_SEEN_LIMIT: Duration = Duration::from_secs(1);
/// How long past its grace period (or, for a container that exits on
/// TERM, at all) StopContainer may take.
const STOP_SLACK: Duration = Duration::from_millis(1500);

/// A container's stdout lands in the CRI log; its exit code 0 and then 3
/// are reported, and how long after its last output ContainerStatus says so.
fn stdout_and_exit_codes(handler: Handler) {
    let mut pod = Pod::run_on_shared_node(handler, &format!("exit-{}", handler.name()));
    for (name, code) in [("zero", 0), ("three", 3)] {
        let spec = ContainerSpec::sh(name, &format!("echo hello from {name}; exit {code}"));
        let started = Instant::now();
        let id = pod.start(&spec).or_fail(&pod.node);
        let start_call = started.elapsed();
        let exit = pod.wait_exit(&id, EXIT_LIMIT).or_fail(&pod.node);
        let line = pod
            .wait_log(name, &format!("hello from {name}"), Duration::from_secs(5))
            .or_fail(&pod.node);
        assert_eq!(line.stream, "stdout");
        assert!(line.full, "{line:?}");
        assert_eq!(exit.code, code, "{exit:?}");
        assert_eq!(
            exit.reason,
            if code == 0 { "Completed" } else { "Error" },
            "{exit:?}"
        );
        let printed = line.unix_nanos().expect("an RFC 3339 log timestamp");
        eprintln!(
            "cri-timing: {} exit {code}: StartContainer {:.3?}; last output -> finished_at {:.1} ms; \
             last output -> ContainerStatus EXITED {:.1} ms",
            handler.name(),
            start_call,
            (exit.finished_at as i128 - printed) as f64 / 1e6,
            (exit.seen_at - printed) as f64 / 1e6,
        );
        let seen_after = Duration::from_nanos((exit.seen_at - printed).max(0) as u64);
        assert!(
            seen_after < EXIT_SEEN_LIMIT,
            "exit {code} seen by ContainerStatus {seen_after:?} after the container's last output (limit {EXIT_SEEN_LIMIT:?})"
        );
    }
    pod.finish();
}

#[test]
fn stdout_and_exit_codes_runc() {
    stdout_and_exit_codes(Handler::Runc);
}

#[test]
fn stdout_and_exit_codes_skillbox() {
    stdout_and_exit_codes(Handler::Skillbox);
}

/// kubelet's mounts: /etc/hosts from the pod directory, resolv.conf from
/// the pod's DNS config, the emptyDir writable and shared with the host,
/// /dev/termination-log, the pod's hostname.
fn kubelet_mounts(handler: Handler) {
    let mut pod = Pod::run_on_shared_node(handler, &format!("mounts-{}", handler.name()));
    let script = "cat /etc/hosts; cat /etc/resolv.conf; \
                  echo written > /scratch/out && echo emptydir-ok; \
                  echo last words > /dev/termination-log && echo termlog-ok; \
                  echo hostname=$(hostname)";
    let id = pod.start(&ContainerSpec::sh("reader", script)).or_fail(&pod.node);
    let exit = pod.wait_exit(&id, EXIT_LIMIT).or_fail(&pod.node);
    let log = pod.log_text("reader");
    assert_eq!(exit.code, 0, "{exit:?}; log {log:?}");
    let mut expected = vec![
        format!("{}\t{}", pod.ip, pod.name),
        "emptydir-ok".to_owned(),
        "termlog-ok".to_owned(),
        format!("hostname={}", pod.name),
    ];
    match handler {
        Handler::Runc | Handler::RuncRunsc => expected.extend([
            format!("nameserver {CLUSTER_DNS}"),
            "search skillbox-cri.svc.cluster.local svc.cluster.local cluster.local".to_owned(),
            "options ndots:5".to_owned(),
        ]),
        // Every skillbox pod resolves through its egress session's DNS
        // proxy (on the sandbox's gateway), which asks the cluster DNS.
        Handler::Skillbox => {
            assert!(
                log.iter().any(|line| line.starts_with("nameserver 198.19.")),
                "no DNS proxy in the log {log:?}"
            );
            assert!(!log.iter().any(|line| line.contains(CLUSTER_DNS)), "{log:?}");
        }
    }
    for line in &expected {
        assert!(log.contains(line), "no {line:?} in the log {log:?}");
    }
    assert_eq!(
        std::fs::read_to_string(pod.empty_dir().join("out")).unwrap(),
        "written\n"
    );
    assert_eq!(
        std::fs::read_to_string(pod.termination_log("reader")).unwrap(),
        "last words\n"
    );
    pod.finish();
}

#[test]
fn kubelet_mounts_runc() {
    kubelet_mounts(Handler::Runc);
}

#[test]
fn kubelet_mounts_skillbox() {
    kubelet_mounts(Handler::Skillbox);
}

/// `readonly_rootfs: true`: a write to / fails, the emptyDir stays writable.
fn readonly_rootfs(handler: Handler) {
    let mut pod = Pod::run_on_shared_node(handler, &format!("readonly-{}", handler.name()));
    let script = "if touch /newfile; then echo root-writable; else echo root-readonly; fi; \
                  echo x > /scratch/x && echo scratch-writable";
    let spec = ContainerSpec::sh("ro", script).readonly_rootfs();
    let id = pod.start(&spec).or_fail(&pod.node);
    let exit = pod.wait_exit(&id, EXIT_LIMIT).or_fail(&pod.node);
    let log = pod.log_text("ro");
    assert_eq!(exit.code, 0, "{exit:?}; log {log:?}");
    assert!(log.iter().any(|line| line == "root-readonly"), "{log:?}");
    assert!(log.iter().any(|line| line == "scratch-writable"), "{log:?}");
    pod.finish();
}

#[test]
fn readonly_rootfs_runc() {
    readonly_rootfs(Handler::Runc);
}

#[test]
fn readonly_rootfs_skillbox() {
    readonly_rootfs(Handler::Skillbox);
}

/// A container that runs until TERM, leaving its pid 1 able to react.
const IDLE: &str = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.2; done";

/// ExecSync returns the command's stdout, stderr and exit code.
fn exec_sync(handler: Handler) {
    let mut pod = Pod::run_on_shared_node(handler, &format!("exec-{}", handler.name()));
    let id = pod.start(&ContainerSpec::sh("idle", IDLE)).or_fail(&pod.node);
    pod.wait_log("idle", "ready", Duration::from_secs(20))
        .or_fail(&pod.node);
    let started = Instant::now();
    let result = pod
        .node
        .cri
        .exec_sync(&id, &["sh", "-c", "echo out; echo err >&2; exit 7"], 10)
        .or_fail(&pod.node);
    eprintln!(
        "cri-timing: {} ExecSync {:.3?}",
        handler.name(),
        started.elapsed()
    );
    assert_eq!(String::from_utf8_lossy(&result.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&result.stderr), "err\n");
    assert_eq!(result.exit_code, 7);
    pod.finish();
}

#[test]
fn exec_sync_runc() {
    exec_sync(Handler::Runc);
}

#[test]
fn exec_sync_skillbox() {
    exec_sync(Handler::Skillbox);
}

/// StopContainer honours the grace period: a container that exits on TERM
/// stops at once with its own status; one that ignores TERM is killed when
/// the grace period ends, not before and not long after.
fn stop_grace_period(handler: Handler) {
    let mut pod = Pod::run_on_shared_node(handler, &format!("stop-{}", handler.name()));
    let polite = pod.start(&ContainerSpec::sh("polite", IDLE)).or_fail(&pod.node);
    let stubborn_script = "trap '' TERM; echo ready; while true; do sleep 0.2; done";
    let stubborn = pod
        .start(&ContainerSpec::sh("stubborn", stubborn_script))
        .or_fail(&pod.node);
    for name in ["polite", "stubborn"] {
        pod.wait_log(name, "ready", Duration::from_secs(20))
            .or_fail(&pod.node);
    }

    let started = Instant::now();
    pod.node.cri.stop_container(&polite, 30).or_fail(&pod.node);
    let polite_took = started.elapsed();
    let polite_exit = pod.wait_exit(&polite, EXIT_LIMIT).or_fail(&pod.node);
    eprintln!(
        "cri-timing: {} StopContainer of a TERM-handling container {polite_took:.3?}",
        handler.name()
    );

    let grace = 3;
    let started = Instant::now();
    pod.node.cri.stop_container(&stubborn, grace).or_fail(&pod.node);
    let stubborn_took = started.elapsed();
    let stubborn_exit = pod.wait_exit(&stubborn, EXIT_LIMIT).or_fail(&pod.node);
    eprintln!(
        "cri-timing: {} StopContainer of a TERM-ignoring container (grace {grace} s) {stubborn_took:.3?}",
        handler.name()
    );

    assert_eq!(polite_exit.code, 0, "{polite_exit:?}");
    assert_eq!(stubborn_exit.code, 137, "{stubborn_exit:?}");
    assert!(
        polite_took < STOP_SLACK,
        "StopContainer of a container that exits on TERM took {polite_took:?} (limit {STOP_SLACK:?})"
    );
    let grace = Duration::from_secs(grace as u64);
    assert!(
        stubborn_took >= grace && stubborn_took < grace + STOP_SLACK,
        "StopContainer of a container ignoring TERM, grace period {grace:?}, took {stubborn_took:?} \
         (expected between {grace:?} and {:?})",
        grace + STOP_SLACK
    );
    pod.finish();
}

#[test]
fn stop_grace_period_runc() {
    stop_grace_period(Handler::Runc);
}

#[test]
fn stop_grace_period_skillbox() {
    stop_grace_period(Handler::Skillbox);
}

/// A container that cannot start and one that exits 3 fail alone: the pod
/// still runs another container, and stops and is removed cleanly.
fn failing_container_fails_alone(handler: Handler) {
    let mut pod = Pod::run_on_shared_node(handler, &format!("failing-{}", handler.name()));
    let missing = ContainerSpec {
        command: vec!["/bin/no-such-program".to_owned()],
        ..ContainerSpec::sh("missing", "")
    };
    match pod.start(&missing) {
        Err(err) => eprintln!("cri-tests: {} missing program: {err}", handler.name()),
        Ok(id) => {
            let exit = pod.wait_exit(&id, EXIT_LIMIT).or_fail(&pod.node);
            assert_ne!(exit.code, 0, "{exit:?}");
            eprintln!("cri-tests: {} missing program exited {exit:?}", handler.name());
        }
    }
    let three = pod
        .start(&ContainerSpec::sh("three", "exit 3"))
        .or_fail(&pod.node);
    let exit = pod.wait_exit(&three, EXIT_LIMIT).or_fail(&pod.node);
    assert_eq!((exit.code, exit.reason.as_str()), (3, "Error"), "{exit:?}");

    let alive = pod
        .start(&ContainerSpec::sh("alive", "echo still-alive"))
        .or_fail(&pod.node);
    let exit = pod.wait_exit(&alive, EXIT_LIMIT).or_fail(&pod.node);
    assert_eq!(exit.code, 0, "{exit:?}");
    assert_eq!(pod.log_text("alive"), ["still-alive"]);
    pod.finish();
}

#[test]
fn failing_container_fails_alone_runc() {
    failing_container_fails_alone(Handler::Runc);
}

#[test]
fn failing_container_fails_alone_skillbox() {
    failing_container_fails_alone(Handler::Skillbox);
}

/// ContainerStats reports the container's own CPU time and memory.
fn container_stats(handler: Handler) {
    let mut pod = Pod::run_on_shared_node(handler, &format!("stats-{}", handler.name()));
    let script = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo ready; \
                  trap 'exit 0' TERM; while true; do sleep 0.2; done";
    let id = pod.start(&ContainerSpec::sh("busy", script)).or_fail(&pod.node);
    pod.wait_log("busy", "ready", Duration::from_secs(30))
        .or_fail(&pod.node);
    let stats = pod.node.cri.container_stats(&id).or_fail(&pod.node);
    let attributes = stats.attributes.clone().unwrap_or_default();
    assert_eq!(attributes.id, id, "{stats:?}");
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|cpu| cpu.usage_core_nano_seconds.as_ref())
        .map_or(0, |value| value.value);
    let memory = stats
        .memory
        .as_ref()
        .and_then(|memory| memory.working_set_bytes.as_ref())
        .map_or(0, |value| value.value);
    eprintln!(
        "cri-tests: {} ContainerStats cpu {cpu} ns, working set {memory} bytes",
        handler.name()
    );
    assert!(cpu > 0, "no CPU time in {stats:?}");
    assert!(memory > 0, "no working set in {stats:?}");
    pod.finish();
}

#[test]
fn container_stats_runc() {
    container_stats(Handler::Runc);
}

#[test]
fn container_stats_skillbox() {
    container_stats(Handler::Skillbox);
}

/// UpdateContainerResources reaches the container's memory cgroup.
fn update_container_resources(handler: Handler) {
    let mut pod = Pod::run_on_shared_node(handler, &format!("update-{}", handler.name()));
    let id = pod.start(&ContainerSpec::sh("idle", IDLE)).or_fail(&pod.node);
    pod.wait_log("idle", "ready", Duration::from_secs(20))
        .or_fail(&pod.node);
    let limit: i64 = 96 << 20;
    let resources = k8s_cri::v1::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: limit,
        ..Default::default()
    };
    pod.node
        .cri
        .update_container_resources(&id, resources)
        .or_fail(&pod.node);
    let pod_cgroup = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(skillbox_cri_tests::pod::cgroup_parent(&pod.uid).trim_start_matches('/'));
    let limits = memory_limits_under(&pod_cgroup);
    // skillbox runs the pod in one cgroup: the container's new limit plus
    // the sandbox container's share (the node's default `[cri] sandbox_memory`).
    let limit = match handler {
        Handler::Runc | Handler::RuncRunsc => limit,
        Handler::Skillbox => limit + CriSettings::default().sandbox_memory.bytes() as i64,
    };
    assert!(
        limits.iter().any(|(_, value)| *value == limit),
        "no memory cgroup under {} has memory.limit_in_bytes = {limit}; found {limits:?}",
        pod_cgroup.display()
    );
    pod.finish();
}

/// Every `memory.limit_in_bytes` under `dir`, with its cgroup.
fn memory_limits_under(dir: &std::path::Path) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        if let Ok(text) = std::fs::read_to_string(dir.join("memory.limit_in_bytes")) {
            found.push((dir.display().to_string(), text.trim().parse().unwrap_or(-1)));
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn update_container_resources_runc() {
    update_container_resources(Handler::Runc);
}

#[test]
fn update_container_resources_skillbox() {
    update_container_resources(Handler::Skillbox);
}

/// A container over its memory limit ends with 137 and reason OOMKilled.
fn memory_limit_oom_killed(handler: Handler) {
    let mut pod = Pod::run_on_shared_node(handler, &format!("oom-{}", handler.name()));
    let spec =
        ContainerSpec::sh("hog", "exec dd if=/dev/zero of=/dev/null bs=256M count=1").memory_limit(32 << 20);
    let id = pod.start(&spec).or_fail(&pod.node);
    let exit = pod.wait_exit(&id, EXIT_LIMIT).or_fail(&pod.node);
    assert_eq!(
        (exit.code, exit.reason.as_str()),
        (137, "OOMKilled"),
        "{exit:?}; log {:?}",
        pod.log_text("hog")
    );
    pod.finish();
}

#[test]
fn memory_limit_oom_killed_runc() {
    memory_limit_oom_killed(Handler::Runc);
}

#[test]
fn memory_limit_oom_killed_skillbox() {
    memory_limit_oom_killed(Handler::Skillbox);
}
