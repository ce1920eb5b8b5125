//! Pod grouping: the CRI annotations that put containers in one sandbox
//! (read by `skillbox_sandbox::spec::PodRole`), and what the shim refuses
//! to do to a pod.
//!
//! containerd's CRI plugin marks a pod's sandbox (pause) container with
//! `io.kubernetes.cri.container-type=sandbox` and each of its application
//! containers with `container-type=container` and
//! `io.kubernetes.cri.sandbox-id=<the sandbox container's id>`. runsc reads
//! the same annotations: an application container joins the sandbox of that
//! id in the same runsc root (runsc multi-container). The shim groups such a
//! container with its sandbox in one shim process (see `service.rs`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use skillbox_sandbox::cgroup::LimitUpdate;
use skillbox_sandbox::spec::{CONTAINER_TYPE, SANDBOX_ID};

/// A pod operation the shim will not do.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("container {id} names sandbox {sandbox} ({SANDBOX_ID}), which this shim does not run: create and start the pod's sandbox container ({CONTAINER_TYPE}=sandbox) first")]
    NoSandbox { id: String, sandbox: String },
    #[error(
        "container {id} names sandbox {sandbox} ({SANDBOX_ID}), which is itself a member of sandbox {owner}"
    )]
    SandboxIsMember {
        id: String,
        sandbox: String,
        owner: String,
    },
    #[error("container {id} cannot join sandbox {sandbox}: it is {state}, not running")]
    SandboxNotRunning {
        id: String,
        sandbox: String,
        state: String,
    },
    #[error("container {id} would need runsc flags {member:?}, but its sandbox {sandbox} runs with {sandbox_flags:?} (a pod's sandbox container's policy and node config set the runsc flags of the whole pod)")]
    FlagsDiffer {
        id: String,
        sandbox: String,
        member: Vec<String>,
        sandbox_flags: Vec<String>,
    },
    #[error("container {id}'s policy allows {member} but its sandbox {sandbox} runs with {sandbox_network}: a pod shares one network, set by the sandbox container's policy (under Kubernetes, the pod's io.skillbox.policy annotation), and every member's network policy must equal it")]
    NetworkDiffers {
        id: String,
        sandbox: String,
        member: String,
        sandbox_network: String,
    },
    #[error("container {id} shares sandbox {sandbox}: {action} would act on the whole sandbox; {action} the sandbox container {sandbox} instead")]
    WholeSandbox {
        id: String,
        sandbox: String,
        action: &'static str,
    },
    #[error("sandbox container {id} still has containers {members:?} in its sandbox: delete them first (killing {id} stops them all)")]
    HasMembers { id: String, members: Vec<String> },
}

/// The limits of a pod's one cgroup (its sandbox's): gVisor runs every
/// container of the pod in it, so each container's memory, CPU and pids
/// limits are enforced as their sum there, the sandbox container's own
/// included, as kubelet sizes a pod's cgroup. Kept by container id.
#[derive(Debug, Default)]
pub struct PodLimits {
    containers: Mutex<BTreeMap<String, LimitUpdate>>,
}

/// The CFS period the pod's CPU quota is expressed in.
const CPU_PERIOD_US: u64 = 100_000;

impl PodLimits {
    /// Sets (or, with `update`'s unset fields kept, changes) container
    /// `id`'s limits; returns the pod's new total.
    pub fn set(&self, id: &str, update: &LimitUpdate) -> LimitUpdate {
        let mut containers = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        let entry = containers.entry(id.to_owned()).or_default();
        entry.memory_bytes = update.memory_bytes.or(entry.memory_bytes);
        entry.cpu = update.cpu.or(entry.cpu);
        entry.pids = update.pids.or(entry.pids);
        total(containers.values())
    }

    /// Forgets container `id`; returns the pod's new total.
    pub fn remove(&self, id: &str) -> LimitUpdate {
        let mut containers = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        containers.remove(id);
        total(containers.values())
    }
}

/// The sum of `limits`, field by field (CPU as a quota per 100 ms); a field
/// no container sets stays unset.
fn total<'a>(limits: impl Iterator<Item = &'a LimitUpdate> + Clone) -> LimitUpdate {
    let sum = |field: fn(&LimitUpdate) -> Option<i64>| -> Option<i64> {
        limits
            .clone()
            .filter_map(field)
            .reduce(|a, b| a.saturating_add(b))
    };
    LimitUpdate {
        memory_bytes: sum(|limits| limits.memory_bytes),
        cpu: sum(|limits| {
            limits
                .cpu
                .map(|(quota, period)| quota.saturating_mul(CPU_PERIOD_US as i64) / period.max(1) as i64)
        })
        .map(|quota| (quota, CPU_PERIOD_US)),
        pids: sum(|limits| limits.pids),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_limits_are_the_sum_of_its_containers() {
        let pod = PodLimits::default();
        let sandbox = LimitUpdate {
            memory_bytes: Some(64 << 20),
            cpu: Some((50_000, 100_000)),
            pids: Some(100),
        };
        assert_eq!(pod.set("pause", &sandbox), sandbox);
        let app = LimitUpdate {
            memory_bytes: Some(128 << 20),
            cpu: Some((25_000, 50_000)),
            pids: Some(50),
        };
        let both = pod.set("app", &app);
        assert_eq!(both.memory_bytes, Some(192 << 20));
        assert_eq!(both.cpu, Some((100_000, 100_000)));
        assert_eq!(both.pids, Some(150));
        // An update changes only what it sets.
        let raised = pod.set(
            "app",
            &LimitUpdate {
                memory_bytes: Some(256 << 20),
                ..LimitUpdate::default()
            },
        );
        assert_eq!(raised.memory_bytes, Some(320 << 20));
        assert_eq!(raised.pids, Some(150));
        assert_eq!(pod.remove("app"), sandbox);
    }
}
