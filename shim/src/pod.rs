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
