//! Pod grouping: the CRI annotations that put containers in one sandbox.
//!
//! containerd's CRI plugin marks a pod's sandbox (pause) container with
//! `io.kubernetes.cri.container-type=sandbox` and each of its application
//! containers with `container-type=container` and
//! `io.kubernetes.cri.sandbox-id=<the sandbox container's id>`. runsc reads
//! the same annotations: an application container joins the sandbox of that
//! id in the same runsc root (runsc multi-container). The shim groups such a
//! container with its sandbox in one shim process (see `service.rs`).

use std::path::Path;

use serde_json::Value;

pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// What a spec's annotations make of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// Its own sandbox: a pod's sandbox container, or a container without
    /// the CRI annotations.
    Own,
    /// An application container of the pod whose sandbox container has this
    /// id: it joins that sandbox.
    Member { sandbox: String },
}

impl PodRole {
    /// The role the annotations of `spec` give.
    pub fn of_spec(spec: &Value) -> PodRole {
        let notes = &spec["annotations"];
        match (notes[CONTAINER_TYPE].as_str(), notes[SANDBOX_ID].as_str()) {
            (Some("container"), Some(sandbox)) if !sandbox.is_empty() => PodRole::Member {
                sandbox: sandbox.to_owned(),
            },
            _ => PodRole::Own,
        }
    }

    /// The role of the bundle at `bundle` (`Own` when its `config.json`
    /// cannot be read: Create reports that).
    pub fn of_bundle(bundle: &Path) -> PodRole {
        std::fs::read_to_string(bundle.join("config.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .map(|spec| PodRole::of_spec(&spec))
            .unwrap_or(PodRole::Own)
    }

    /// The shim grouping: the pod's sandbox id for a member, else the
    /// container's own id.
    pub fn grouping<'a>(&'a self, id: &'a str) -> &'a str {
        match self {
            PodRole::Own => id,
            PodRole::Member { sandbox } => sandbox,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_container_type_with_a_sandbox_id_joins() {
        let role = |notes: Value| PodRole::of_spec(&json!({ "annotations": notes }));
        assert_eq!(
            role(json!({ CONTAINER_TYPE: "container", SANDBOX_ID: "pod-1" })),
            PodRole::Member {
                sandbox: "pod-1".to_owned()
            }
        );
        assert_eq!(
            role(json!({ CONTAINER_TYPE: "sandbox", SANDBOX_ID: "pod-1" })),
            PodRole::Own
        );
        assert_eq!(role(json!({ CONTAINER_TYPE: "container" })), PodRole::Own);
        assert_eq!(
            role(json!({ CONTAINER_TYPE: "container", SANDBOX_ID: "" })),
            PodRole::Own
        );
        assert_eq!(PodRole::of_spec(&json!({})), PodRole::Own);
        assert_eq!(
            role(json!({ CONTAINER_TYPE: "container", SANDBOX_ID: "p" })).grouping("c"),
            "p"
        );
        assert_eq!(PodRole::Own.grouping("c"), "c");
    }
}
