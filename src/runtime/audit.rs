//! The audit trail of a `skillbox run`: the execution's log at
//! `[audit] log_dir/<execution id>.jsonl` (or `--audit-log`), its
//! lifecycle events, and gVisor runtime monitoring at the policy's level.

use std::path::Path;

use anyhow::Context;
use policy_compiler::bundle::CompiledAnnotations;
use policy_compiler::manifest::AuditLevel;
use policy_compiler::node_config::AuditSettings;
use skillbox_audit::execution::{AuditSetup, ExecutionAudit, SOCKET_DIR};
use skillbox_audit::{SandboxIdentity, SkillIdentity};

/// Starts the audit of execution `id` of the compiled bundle.
pub fn start(
    id: &str,
    log: &Path,
    compiled: &CompiledAnnotations,
    settings: &AuditSettings,
    level: AuditLevel,
) -> anyhow::Result<ExecutionAudit> {
    let identity = SandboxIdentity {
        execution_id: id.to_owned(),
        skill: SkillIdentity {
            name: compiled.skill_name.clone(),
            version: compiled.skill_version.clone(),
            digest: Some(compiled.skill_digest.clone()),
        },
        container_id: id.to_owned(),
    };
    // Execution ids are `<skill>-<16 hex digits>`: the digits are unique.
    let key = format!("run-{}", &id[id.len().saturating_sub(16)..]);
    ExecutionAudit::start(&AuditSetup {
        log,
        rotation: settings.into(),
        identity,
        level,
        runtime: "skillbox-run",
        socket_dir: Path::new(SOCKET_DIR),
        key: &key,
        container_id: id,
    })
    .with_context(|| format!("cannot start the audit of {id} ({})", log.display()))
}
