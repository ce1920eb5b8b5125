//! Twenty pods, one after the other, each with a container that prints and
//! exits, torn down as kubelet does: afterwards nothing of any of them is
//! left on the host (runtime state, processes, cgroups, the CNI network
//! namespace and results, nftables tables, mounts).

use std::time::{Duration, Instant};

use skillbox_cri_tests::leftovers::{self, PodTraces};
use skillbox_cri_tests::{ContainerSpec, Handler, Node, OrFail, Pod};

const CYCLES: usize = 20;

fn pod_cycles_leave_nothing(handler: Handler) {
    let node = Node::shared();
    let mut traces = Vec::new();
    let mut run_times = Vec::new();
    let started = Instant::now();
    for cycle in 0..CYCLES {
        let name = format!("cycle-{}-{cycle}", handler.name());
        let mut pod = Pod::run(&node, handler, &name).or_fail(&node);
        run_times.push(pod.run_time);
        let id = pod
            .start(&ContainerSpec::sh("app", &format!("echo cycle {cycle}")))
            .or_fail(&node);
        let exit = pod.wait_exit(&id, Duration::from_secs(30)).or_fail(&node);
        assert_eq!(exit.code, 0, "cycle {cycle}: {exit:?}");
        assert_eq!(pod.log_text("app"), [format!("cycle {cycle}")], "cycle {cycle}");
        let netns_path = pod.netns_path();
        assert!(
            netns_path
                .as_deref()
                .is_some_and(|path| path.contains("/netns/cni-")),
            "cycle {cycle}: no CNI network namespace in the verbose PodSandboxStatus: {netns_path:?}"
        );
        traces.push(PodTraces {
            uid: pod.uid.clone(),
            sandbox_id: pod.id.clone(),
            container_ids: pod.container_ids(),
            netns_path,
            shim_socket: node.shim_socket(&pod.id),
        });
        pod.teardown().or_fail(&node);
    }
    let total = started.elapsed();
    let mean = run_times.iter().sum::<Duration>() / CYCLES as u32;
    let max = run_times.iter().max().copied().unwrap_or_default();
    eprintln!(
        "cri-timing: {} {CYCLES} pod cycles in {total:.2?}; RunPodSandbox mean {mean:.3?}, max {max:.3?}",
        handler.name()
    );
    let left: Vec<String> = traces
        .iter()
        .flat_map(|pod| leftovers::wait_gone(pod, node.netns(), Duration::from_secs(5)))
        .collect();
    assert!(
        left.is_empty(),
        "left behind after {CYCLES} pods:\n  {}",
        left.join("\n  ")
    );
}

#[test]
fn pod_cycles_leave_nothing_runc() {
    pod_cycles_leave_nothing(Handler::Runc);
}

#[test]
fn pod_cycles_leave_nothing_skillbox() {
    pod_cycles_leave_nothing(Handler::Skillbox);
}
