//! containerd restarted under a running pod, as a node upgrade or a crash
//! does it: SIGTERM, then containerd again on the same config, root and
//! state. The pod's shim and its runtime outlive containerd; afterwards the
//! CRI plugin still sees the pod READY and its container RUNNING, ExecSync
//! works, the container's log keeps growing, and kubelet's teardown works
//! and leaves nothing.
//!
//! A restart hits every pod of its node, so each test starts a node of its
//! own rather than the binary's shared one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use skillbox_cri_tests::leftovers::{self, PodTraces};
use skillbox_cri_tests::{ContainerSpec, Handler, Node, OrFail, Pod};
use skillbox_test_support::sandbox::processes;

/// Prints `tick <n>` every 100 ms; exits at once on TERM.
const TICKER: &str = "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done";

/// The highest `tick <n>` in the container's log.
fn last_tick(pod: &Pod) -> u64 {
    pod.log_text("ticker")
        .iter()
        .filter_map(|line| line.strip_prefix("tick ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The pids of the shims serving pod sandbox `sandbox_id` (`containerd-shim-…
/// -id <sandbox id>`).
fn shims_of(sandbox_id: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = processes()
        .into_iter()
        .filter(|(_, args)| {
            let name = args
                .first()
                .and_then(|program| program.rsplit('/').next())
                .unwrap_or_default();
            name.starts_with("containerd-shim") && args.iter().any(|arg| arg.contains(sandbox_id))
        })
        .map(|(pid, _)| pid)
        .collect();
    pids.sort();
    pids
}

fn containerd_restart_under_a_running_pod(handler: Handler) {
    let node = Arc::new(Node::start());
    let mut pod = Pod::run(&node, handler, &format!("restart-{}", handler.name())).or_fail(&node);
    let id = pod.start(&ContainerSpec::sh("ticker", TICKER)).or_fail(&node);
    pod.wait_log("ticker", "tick 3", Duration::from_secs(20))
        .or_fail(&node);
    let netns_path = pod.netns_path();

    let shims = shims_of(&pod.id);
    assert!(!shims.is_empty(), "no shim serves pod {}", pod.id);
    let pid = node.containerd().pid();
    let down = node.restart_containerd();
    assert_ne!(node.containerd().pid(), pid, "containerd was not restarted");
    assert_eq!(
        shims_of(&pod.id),
        shims,
        "the pod's shims did not outlive containerd"
    );
    let before = last_tick(&pod);
    eprintln!(
        "cri-timing: {} containerd restart (SIGTERM to the CRI plugin answering) {down:.3?}, at tick {before}",
        handler.name()
    );

    pod.assert_ready_and_running(&id, "after the restart");
    let exec = node
        .cri
        .exec_sync(&id, &["sh", "-c", "echo exec-after-restart; exit 4"], 10)
        .or_fail(&node);
    assert_eq!(
        (String::from_utf8_lossy(&exec.stdout).as_ref(), exec.exit_code),
        ("exec-after-restart\n", 4),
        "ExecSync after the restart: stderr {:?}",
        String::from_utf8_lossy(&exec.stderr)
    );
    // The log goes on: ten more ticks (a second) reach it.
    let target = before + 10;
    let deadline = Instant::now() + Duration::from_secs(10);
    while last_tick(&pod) < target {
        assert!(
            Instant::now() < deadline,
            "the container's log stopped growing after the restart: last tick {} (was {before} at the restart, \
             expected {target} within 10 s)\n{}",
            last_tick(&pod),
            node.log_tail(25)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let traces = PodTraces {
        uid: pod.uid.clone(),
        sandbox_id: pod.id.clone(),
        container_ids: pod.container_ids(),
        netns_path,
        shim_socket: node.shim_socket(&pod.id),
    };
    // kubelet's teardown, each call checked: StopContainer, RemoveContainer,
    // StopPodSandbox, RemovePodSandbox.
    pod.teardown().or_fail(&node);
    let left = leftovers::wait_gone(&traces, node.netns(), Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "left behind after the pod's teardown:\n  {}",
        left.join("\n  ")
    );
}

#[test]
fn containerd_restart_under_a_running_pod_runc() {
    containerd_restart_under_a_running_pod(Handler::Runc);
}

#[test]
fn containerd_restart_under_a_running_pod_skillbox() {
    containerd_restart_under_a_running_pod(Handler::Skillbox);
}
