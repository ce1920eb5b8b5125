//! Pod grouping under a real containerd: containers carrying the CRI
//! annotations (`io.kubernetes.cri.container-type`, `…sandbox-id`) share
//! their pod's runsc sandbox and shim; others get their own. Every wait has
//! a deadline, so a regression fails instead of hanging.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::containerd::*;

const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Compiles a busybox skill running `script` and marks its bundle as a pod
/// container of `container_type` in sandbox `sandbox`.
fn pod_bundle(dir: &Path, name: &str, script: &str, container_type: &str, sandbox: &str) -> PathBuf {
    mark_pod_member(compile_skill(dir, name, script), container_type, sandbox)
}

/// Marks the compiled `bundle` as a pod container of `container_type` in
/// sandbox `sandbox`; returns its config.json.
fn mark_pod_member(bundle: PathBuf, container_type: &str, sandbox: &str) -> PathBuf {
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    spec["annotations"][CONTAINER_TYPE] = container_type.into();
    spec["annotations"][SANDBOX_ID] = sandbox.into();
    std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    path
}

/// `ctr run --runtime … --config <config> <id>` (with the test node
/// config), killed after `limit`: a hang fails the test.
fn run_with_deadline(
    containerd: &Containerd,
    namespace: &str,
    config: &Path,
    id: &str,
    extra: &[&str],
    limit: Duration,
) -> Output {
    let node_config = containerd.node_config();
    Command::new("timeout")
        .args(["--signal=KILL", &limit.as_secs().to_string(), "ctr", "--address"])
        .arg(containerd.socket())
        .args(["--namespace", namespace, "run"])
        .args(extra)
        .arg("--runtime-config-path")
        .arg(&node_config)
        .args(["--runtime", RUNTIME, "--config"])
        .arg(config)
        .arg(id)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("running ctr")
}

/// The skillbox shims running for `namespace`: (pid, `-id` argument).
fn shims(namespace: &str) -> Vec<(i32, String)> {
    processes()
        .into_iter()
        .filter(|(_, args)| {
            args.first()
                .is_some_and(|arg0| arg0.ends_with("containerd-shim-skillbox-v1"))
                && args.windows(2).any(|w| w[0] == "-namespace" && w[1] == namespace)
                && !args.iter().any(|arg| arg == "delete")
        })
        .map(|(pid, args)| {
            let id = args
                .windows(2)
                .find(|w| w[0] == "-id")
                .map(|w| w[1].clone())
                .unwrap_or_default();
            (pid, id)
        })
        .collect()
}

/// The PID column of `ctr task ls` for `id`.
fn task_pid(containerd: &Containerd, namespace: &str, id: &str) -> String {
    let out = text(&containerd.ctr(namespace, &["tasks", "list"]).stdout);
    out.lines()
        .find(|line| line.split_whitespace().next() == Some(id))
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("")
        .to_owned()
}

fn wait_for_status(containerd: &Containerd, namespace: &str, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while task_status(containerd, namespace, id) != status {
        assert!(
            Instant::now() < deadline,
            "task {id} never became {status}: {}",
            text(&containerd.ctr(namespace, &["tasks", "list"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ctr_ok(containerd: &Containerd, namespace: &str, args: &[&str]) {
    let out = containerd.ctr(namespace, args);
    assert!(out.status.success(), "ctr {args:?}: {}", text(&out.stderr));
}

#[test]
fn pod_containers_share_one_sandbox_and_one_shim() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-pod-share";
    let limit = Duration::from_secs(60);

    let pod = pod_bundle(work.path(), "pod-sandbox", "sleep 60", "sandbox", "pod-1");
    let out = containerd.run_bundle(namespace, &pod, "pod-1", &["-d"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    let pod_shim = shims(namespace);
    assert_eq!(pod_shim.len(), 1, "{pod_shim:?}");

    // A server in one member, a client in another: loopback is the
    // sandbox's own network stack, so the connection proves one sandbox.
    let server = pod_bundle(work.path(), "pod-server", "nc -l -p 7777", "container", "pod-1");
    let client = pod_bundle(
        work.path(),
        "pod-client",
        "for i in $(seq 100); do echo hi-over-localhost | nc 127.0.0.1 7777 && exit 3; sleep 0.1; done; exit 9",
        "container",
        "pod-1",
    );
    let server_run = {
        let socket = containerd.socket();
        let node_config = containerd.node_config();
        let server = server.clone();
        std::thread::spawn(move || {
            Command::new("timeout")
                .args(["--signal=KILL", "60", "ctr", "--address"])
                .arg(socket)
                .args(["--namespace", namespace, "run", "--rm", "--runtime-config-path"])
                .arg(node_config)
                .args(["--runtime", RUNTIME, "--config"])
                .arg(server)
                .arg("server-1")
                .current_dir("/")
                .stdin(Stdio::null())
                .output()
                .expect("running ctr")
        })
    };
    wait_for_status(&containerd, namespace, "server-1", "RUNNING");
    // (a) one shim serves the pod: still the sandbox's, and no other.
    assert_eq!(shims(namespace), pod_shim, "a second shim was started");
    // (b) the member reports the sandbox's pid: the same sandbox.
    assert_eq!(
        task_pid(&containerd, namespace, "server-1"),
        task_pid(&containerd, namespace, "pod-1")
    );

    // (c) the member's own exit status, without hanging.
    let out = run_with_deadline(&containerd, namespace, &client, "client-1", &["--rm"], limit);
    assert_eq!(
        out.status.code(),
        Some(3),
        "client: {}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    let served = server_run.join().unwrap();
    assert!(served.status.success(), "server: {}", text(&served.stderr));
    assert_eq!(text(&served.stdout), "hi-over-localhost\n");
    assert_eq!(
        shims(namespace),
        pod_shim,
        "the pod's shim must outlive its members"
    );

    // A member whose policy allows egress the pod's sandbox does not have
    // is refused: the pod shares one network, the sandbox container's.
    let egress_member = mark_pod_member(
        compile_skill_md(
            work.path(),
            "pod-egress",
            "  entrypoint: [sh, -c, 'true']\n  network:\n    allow:\n      - { domain: allowed.example, ports: [443] }\n",
        ),
        "container",
        "pod-1",
    );
    let out = run_with_deadline(
        &containerd,
        namespace,
        &egress_member,
        "egress-1",
        &["--rm"],
        limit,
    );
    assert!(!out.status.success(), "ran: {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("container egress-1's policy allows egress")
            && text(&out.stderr).contains("runs with no egress: a pod shares one network"),
        "{}",
        text(&out.stderr)
    );

    // Killing the sandbox container stops the whole sandbox, members
    // included; deleting the stopped sandbox takes its members with it
    // (they died with it), so a pod can always be removed.
    let idle = pod_bundle(work.path(), "pod-idle", "sleep 60", "container", "pod-1");
    let out = containerd.run_bundle(namespace, &idle, "idle-1", &["-d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    ctr_ok(
        &containerd,
        namespace,
        &["tasks", "kill", "--signal", "SIGKILL", "pod-1"],
    );
    wait_for_status(&containerd, namespace, "pod-1", "STOPPED");
    wait_for_status(&containerd, namespace, "idle-1", "STOPPED");
    ctr_ok(&containerd, namespace, &["tasks", "delete", "pod-1"]);
    let tasks = text(&containerd.ctr(namespace, &["tasks", "list"]).stdout);
    assert!(!tasks.contains("idle-1") && !tasks.contains("pod-1"), "{tasks}");

    // (d) the containers: nothing left.
    for id in ["idle-1", "pod-1"] {
        ctr_ok(&containerd, namespace, &["containers", "delete", id]);
    }
    for (id, cgroup) in [
        ("server-1", "/skillbox-test-pod-server"),
        ("client-1", "/skillbox-test-pod-client"),
        ("idle-1", "/skillbox-test-pod-idle"),
        ("egress-1", "/skillbox-test-pod-egress"),
        ("pod-1", "/skillbox-test-pod-sandbox"),
    ] {
        assert_no_leftovers(&containerd, namespace, id, cgroup);
    }
    assert_eq!(shims(namespace), [], "the pod's shim must exit");
}

#[test]
fn a_member_of_a_missing_sandbox_gets_a_clear_error() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-pod-missing";

    let lost = pod_bundle(work.path(), "pod-lost", "echo never", "container", "no-such-pod");
    let out = run_with_deadline(
        &containerd,
        namespace,
        &lost,
        "lost-1",
        &["--rm"],
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no-such-pod") && stderr.contains("which this shim does not run"),
        "{stderr}"
    );
    assert_no_leftovers(&containerd, namespace, "lost-1", "/skillbox-test-pod-lost");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shims(namespace).is_empty() {
        assert!(Instant::now() < deadline, "shims left: {:?}", shims(namespace));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn containers_without_pod_annotations_get_their_own_shim() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-pod-alone";

    let first = compile_skill(work.path(), "pod-alone", "sleep 60");
    let second = compile_skill(work.path(), "pod-alone-2", "sleep 60");
    for (id, bundle) in [("alone-1", &first), ("alone-2", &second)] {
        let out = containerd.run_bundle(namespace, &bundle.join("config.json"), id, &["-d"]);
        assert!(out.status.success(), "{id}: {}", text(&out.stderr));
    }
    // A second container of the first bundle would share its cgroup: refused.
    let out = containerd.run_bundle(namespace, &first.join("config.json"), "alone-3", &["-d"]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("a cgroup is never shared"),
        "{}",
        text(&out.stderr)
    );
    let _ = containerd.ctr(namespace, &["containers", "rm", "alone-3"]);
    let (one, two) = (shim_pid(namespace, "alone-1"), shim_pid(namespace, "alone-2"));
    assert!(one.is_some() && two.is_some() && one != two, "{one:?} {two:?}");
    assert_ne!(
        task_pid(&containerd, namespace, "alone-1"),
        task_pid(&containerd, namespace, "alone-2")
    );
    for id in ["alone-1", "alone-2"] {
        kill_and_remove(&containerd, namespace, id);
    }
    assert_no_leftovers(&containerd, namespace, "alone-1", "/skillbox-test-pod-alone");
    assert_no_leftovers(&containerd, namespace, "alone-2", "/skillbox-test-pod-alone-2");
    assert_no_leftovers(&containerd, namespace, "alone-3", "/skillbox-test-pod-alone");
}
