//! The audit trail of a container: its log at
//! `[audit] log_dir/<containerd namespace>/<id>.jsonl`, its lifecycle
//! events, and gVisor runtime monitoring at its policy's level (see
//! `skillbox_audit::execution`). The egress session's events join the same
//! log.

use std::hash::{Hash, Hasher};
use std::path::Path;

use skillbox_audit::execution::{AuditSetup, ExecutionAudit, ExecutionAuditError, SOCKET_DIR};
use skillbox_audit::{SandboxIdentity, SkillIdentity};

use crate::config::ShimConfig;
use crate::enforce::{Prepared, SkillAnnotations};

/// A name for the container unique on this node (containerd ids are unique
/// per namespace only) and short enough for a network namespace and a
/// socket path: its egress session's and audit monitor's.
pub(crate) fn session_key(namespace: &str, id: &str) -> String {
    let full = format!("{namespace}.{id}");
    if full.len() <= 48 {
        return full;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    full.hash(&mut hasher);
    let head: String = id.chars().take(24).collect();
    format!("{head}.{:016x}", hasher.finish())
}

/// Whom the events belong to: the skill the spec's annotations name, else
/// the container.
fn identity(skill: &SkillAnnotations, namespace: &str, id: &str) -> SandboxIdentity {
    SandboxIdentity {
        execution_id: format!("{namespace}/{id}"),
        skill: SkillIdentity {
            name: skill.name.clone().unwrap_or_else(|| id.to_owned()),
            version: skill.version.clone(),
            digest: skill.digest.clone(),
        },
        container_id: id.to_owned(),
    }
}

/// Starts the audit of container `id` (namespace `namespace`) under the
/// policy and skill its enforcement found.
pub fn start(
    id: &str,
    namespace: &str,
    prepared: &Prepared,
    config: &ShimConfig,
) -> Result<ExecutionAudit, ExecutionAuditError> {
    let settings = &config.node.audit;
    let log = settings.log_dir.join(namespace).join(format!("{id}.jsonl"));
    let key = session_key(namespace, id);
    ExecutionAudit::start(&AuditSetup {
        log: &log,
        rotation: settings.into(),
        identity: identity(&prepared.skill, namespace, id),
        level: prepared.policy.audit,
        runtime: "shim",
        socket_dir: Path::new(SOCKET_DIR),
        key: &key,
        container_id: id,
    })
}

/// Removes the monitor's socket and session file of container `id` after
/// its shim died (a live shim removes them itself).
pub fn clean_up(namespace: &str, id: &str) {
    skillbox_audit::execution::remove_files(Path::new(SOCKET_DIR), &session_key(namespace, id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_are_unique_per_namespace_and_short() {
        assert_eq!(session_key("default", "web"), "default.web");
        assert_ne!(session_key("a", "web"), session_key("b", "web"));
        let long = "x".repeat(76);
        let key = session_key("k8s.io", &long);
        assert!(key.len() <= 48 && key.starts_with("xxxx"), "{key}");
        assert_ne!(key, session_key("other", &long));
        assert!(skillbox_egress::netns::NetnsName::new(&format!("skillbox-{key}")).is_ok());
    }
}
