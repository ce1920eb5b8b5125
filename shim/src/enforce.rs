//! What the shim does with a bundle before runsc sees it: the sandbox never
//! runs looser than its effective policy, whatever the incoming spec asks.
//!
//! In order, on every Create:
//!
//! 1. **The effective policy.** The bundle's `io.skillbox.policy` annotation
//!    (written by the policy compiler) if there is one, held within the node
//!    ceiling again, since anyone can write an annotation: `reject` mode
//!    refuses a value above it, `clamp` lowers it. Without the annotation,
//!    the node's default policy (`[defaults]`, no network).
//! 2. **Refusals** (see [`refuse`]): host devices, a missing namespace, a
//!    namespace path that is the host's own, a bind mount from outside the
//!    bundle, the pod's own kubelet and containerd directories (`[cri]`) and
//!    `ceiling.bind_mount_sources`, a mount type skillbox does not know, OCI
//!    hooks. Every refusal is collected, then reported at once in
//!    one error naming each field and value.
//! 3. **Rewrites** (see [`tighten`]): read-only binds from
//!    `ceiling.bind_mount_sources`, read-only root, no capabilities,
//!    `noNewPrivileges`, cgroup limits no higher than the policy's, read-only
//!    `/sys` and cgroup mounts, a `/tmp` as the policy says, a cgroup path.
//!    Each is logged with `tracing::warn!` and listed in the
//!    `io.skillbox.enforced` annotation of the rewritten `config.json`.
//! 4. **runsc flags** computed by the shim as the compiler computes them
//!    (`--network=none`, or `--network=host` on the sandbox's own namespace
//!    when the policy allows egress; the node's platform); an
//!    `io.skillbox.runsc.flags` annotation is replaced by them.
//!
//! The decisions are pure functions of the spec, the node config and two
//! host facts behind [`HostPaths`]; the spec is the one value the runtime
//! loaded ([`BundleSpec`]), written once by the sandbox before runsc runs.

use std::fmt;
use std::path::{Path, PathBuf};

use policy_compiler::effective::{node_default, resolve, within_ceiling};
use policy_compiler::oci::annotations;
use policy_compiler::package::SkillPackage;
use policy_compiler::scratch_path::SKILL_MOUNT;
use policy_compiler::EffectivePolicy;
use runsc_config::RunscFlags;
use serde_json::Value;
use skillbox_sandbox::sandbox::pod_network;
use skillbox_sandbox::spec::{policy_annotation, skill_of, BundleSpec, SkillAnnotations};

use crate::config::ShimConfig;

mod refuse;
mod tighten;

/// The annotation listing what the shim changed in the spec (a JSON array
/// of `"field: from -> to"` strings; `[]` when nothing was changed).
pub const ENFORCED: &str = "io.skillbox.enforced";

/// Where the effective policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// The skill in the container's root filesystem (`/skill/SKILL.md`, as
    /// `skillbox image build` puts it), tightened by an `io.skillbox.policy`
    /// annotation if the spec has one.
    Image,
    /// The bundle's `io.skillbox.policy` annotation.
    Bundle,
    /// The node's defaults: the bundle had no policy.
    NodeDefault,
}

/// One change the shim made to the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub field: String,
    pub from: String,
    pub to: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.field, self.from, self.to)
    }
}

/// One thing in the spec the shim will not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub value: String,
    /// What was expected instead.
    pub expected: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.field, self.value, self.expected)
    }
}

/// The refusals of one spec, shown `; `-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusals(pub Vec<Refusal>);

impl fmt::Display for Refusals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, refusal) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{refusal}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// A malformed policy annotation, or one above the node ceiling in
    /// `reject` mode.
    #[error(transparent)]
    Policy(#[from] policy_compiler::Error),
    #[error("{path}: refused, the sandbox would run looser than its policy: {refusals}")]
    Refused { path: PathBuf, refusals: Refusals },
}

/// The facts about the host the decisions need.
pub trait HostPaths {
    /// `path` with symlinks resolved, or `None` if it cannot be resolved
    /// (for instance because it does not exist).
    fn canonical(&self, path: &Path) -> Option<PathBuf>;
    /// Whether the namespace file `path` is the shim's own namespace of
    /// that kind (`proc_name` as in `/proc/self/ns/<proc_name>`), i.e. the
    /// host's.
    fn is_own_namespace(&self, proc_name: &str, path: &Path) -> bool;
    /// The skill package digest of the folder `dir` (as `skillbox compile`
    /// records it), or `None` if it is no loadable skill package.
    fn skill_digest(&self, dir: &Path) -> Option<String>;
    /// The skill package at `/skill` in the root filesystem `root`: `None`
    /// when there is no `/skill/SKILL.md`, an error when there is one but
    /// the package does not load.
    fn image_skill(&self, root: &Path) -> Option<policy_compiler::Result<SkillPackage>>;
}

/// The real host.
pub struct RealHost;

impl HostPaths for RealHost {
    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }

    fn is_own_namespace(&self, proc_name: &str, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let own = std::fs::metadata(Path::new("/proc/self/ns").join(proc_name));
        match (own, std::fs::metadata(path)) {
            (Ok(own), Ok(other)) => own.dev() == other.dev() && own.ino() == other.ino(),
            _ => false,
        }
    }

    fn skill_digest(&self, dir: &Path) -> Option<String> {
        policy_compiler::load(dir).ok().map(|package| package.digest)
    }

    fn image_skill(&self, root: &Path) -> Option<policy_compiler::Result<SkillPackage>> {
        // The image is untrusted: `/skill` must be a directory of the image
        // itself, never a symlink out of it (the package loader follows no
        // link below it).
        let dir = root.join(SKILL_MOUNT.trim_start_matches('/'));
        let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|meta| meta.is_dir());
        let has_skill_md = std::fs::symlink_metadata(dir.join(policy_compiler::package::SKILL_MD)).is_ok();
        (is_dir && has_skill_md).then(|| policy_compiler::load(&dir))
    }
}

/// What a bundle runs under once enforced.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub policy: EffectivePolicy,
    pub source: PolicySource,
    pub runsc_flags: RunscFlags,
    pub changes: Vec<Change>,
    /// The skill the spec's annotations name (`io.skillbox.skill.*`), for
    /// the audit trail; all `None` for a plain container.
    pub skill: SkillAnnotations,
}

/// The effective policy of `spec` (read from `path`) on this node, with the
/// changes a clamping ceiling made and the skill it runs, if its root
/// holds one (see [`PolicySource`]).
fn effective_policy(
    spec: &Value,
    path: &Path,
    bundle: &Path,
    config: &ShimConfig,
    host: &dyn HostPaths,
) -> Result<(EffectivePolicy, PolicySource, Vec<Change>, Option<SkillPackage>), EnforceError> {
    let annotated = annotated_policy(spec, path, config)?;
    let root = spec["root"]["path"].as_str().map(|root| bundle.join(root));
    let Some(package) = root.and_then(|root| host.image_skill(&root)) else {
        return Ok(match annotated {
            Some((policy, changes)) => (policy, PolicySource::Bundle, changes, None),
            None => (
                node_default(&config.node),
                PolicySource::NodeDefault,
                Vec::new(),
                None,
            ),
        });
    };
    let package = package?;
    let skill_md = package.dir.join(policy_compiler::package::SKILL_MD);
    let resolved = resolve(&package.manifest, &skill_md, &config.node, &config.origin)?;
    let mut changes: Vec<Change> = resolved
        .warnings
        .into_iter()
        .map(|warning| Change {
            field: format!("{} security_policy", skill_md.display()),
            from: "outside the node's ceiling".to_owned(),
            to: warning,
        })
        .collect();
    let policy = match annotated {
        // An annotation (a pod's, through the runtime's pod_annotations)
        // can only take away from what the image's skill declares.
        Some((tighter, annotation_changes)) => {
            changes.extend(annotation_changes);
            resolved.policy.tightened_by(&tighter)
        }
        None => resolved.policy,
    };
    Ok((policy, PolicySource::Image, changes, Some(package)))
}

/// The spec's `io.skillbox.policy` annotation, held within the node's
/// ceiling, with the changes a clamping ceiling made.
fn annotated_policy(
    spec: &Value,
    path: &Path,
    config: &ShimConfig,
) -> Result<Option<(EffectivePolicy, Vec<Change>)>, EnforceError> {
    let Some(text) = policy_annotation(spec) else {
        return Ok(None);
    };
    let field = format!("annotations.\"{}\"", annotations::POLICY);
    let claimed: EffectivePolicy =
        serde_json::from_str(text).map_err(|err| policy_compiler::Error::InvalidField {
            file: path.to_owned(),
            field: field.clone(),
            message: format!("not a valid effective policy: {err}"),
        })?;
    let held = within_ceiling(&claimed, path, &field, &config.node, &config.origin)?;
    let changes = held
        .warnings
        .into_iter()
        .map(|warning| Change {
            field: field.clone(),
            from: "outside the node's ceiling or audit minimum".to_owned(),
            to: warning,
        })
        .collect();
    Ok(Some((held.policy, changes)))
}

fn spec_is_pod_sandbox(spec: &Value) -> bool {
    spec["annotations"][skillbox_sandbox::spec::CONTAINER_TYPE].as_str() == Some("sandbox")
}

/// Enforces the effective policy on `spec`, the `config.json` of the
/// container whose node-unique key is `key` in `bundle` (canonical),
/// rewriting it in place. Pure but for `host`.
pub fn enforce_spec(
    key: &str,
    spec: &mut Value,
    bundle: &Path,
    config: &ShimConfig,
    host: &dyn HostPaths,
) -> Result<Prepared, EnforceError> {
    let path = bundle.join(policy_compiler::bundle::CONFIG_JSON);
    if !spec.is_object() {
        return Err(EnforceError::Refused {
            path,
            refusals: Refusals(vec![Refusal {
                field: "(spec)".to_owned(),
                value: "not a JSON object".to_owned(),
                expected: "an OCI runtime spec".to_owned(),
            }]),
        });
    }
    let (mut policy, source, mut changes, package) = effective_policy(spec, &path, bundle, config, host)?;
    if source == PolicySource::NodeDefault && spec_is_pod_sandbox(spec) {
        // A pod's sandbox container runs no skill: its share of the pod's
        // cgroup is gVisor's own overhead (see `PodLimits`).
        policy.resources.memory = config.node.cri.sandbox_memory;
        policy.resources.cpus = config.node.cri.sandbox_cpus;
    }
    let refusals = refuse::refusals(spec, bundle, config, host);
    if !refusals.is_empty() {
        return Err(EnforceError::Refused {
            path,
            refusals: Refusals(refusals),
        });
    }
    let listed: Vec<usize> = refuse::bind_sources(spec, bundle, config, host)
        .into_iter()
        .filter(|(_, source)| *source == refuse::BindSource::Listed)
        .map(|(index, _)| index)
        .collect();
    changes.extend(tighten::read_only_binds(spec, &listed));
    let mut runsc_flags = policy_compiler::compile::runsc_flags(&config.node, &policy);
    if pod_network(&BundleSpec::new(bundle, spec.clone())).is_some() {
        // A pod's sandbox always runs behind an egress session in the pod's
        // namespace (reachable, egress judged), on that session's stack.
        runsc_flags.network = runsc_config::NetworkMode::Host;
    }
    changes.extend(tighten::tighten(key, spec, &policy, &runsc_flags));
    let notes = spec["annotations"].as_object_mut();
    let notes = match notes {
        Some(notes) => notes,
        None => {
            spec["annotations"] = Value::Object(Default::default());
            spec["annotations"].as_object_mut().expect("just set")
        }
    };
    notes.insert(
        annotations::POLICY.to_owned(),
        Value::String(serde_json::to_string(&policy).expect("the effective policy serializes")),
    );
    let rendered: Vec<Value> = changes.iter().map(|c| Value::String(c.to_string())).collect();
    notes.insert(
        ENFORCED.to_owned(),
        Value::String(Value::Array(rendered).to_string()),
    );
    if let Some(package) = &package {
        // The audit trail and metrics name the skill the image holds.
        notes.insert(
            annotations::SKILL_NAME.to_owned(),
            Value::String(package.manifest.name.to_string()),
        );
        notes.insert(
            annotations::SKILL_DIGEST.to_owned(),
            Value::String(package.digest.clone()),
        );
        match &package.manifest.version {
            Some(version) => notes.insert(
                annotations::SKILL_VERSION.to_owned(),
                Value::String(version.clone()),
            ),
            None => notes.remove(annotations::SKILL_VERSION),
        };
    }
    let skill = skill_of(spec);
    Ok(Prepared {
        policy,
        source,
        runsc_flags,
        changes,
        skill,
    })
}

/// Enforces the effective policy on the loaded `spec` of container `id`
/// (node-unique key `key`), in memory: nothing is written, and nothing when
/// the spec is refused.
pub fn enforce(
    id: &str,
    key: &str,
    spec: &mut BundleSpec,
    config: &ShimConfig,
) -> Result<Prepared, EnforceError> {
    let bundle = spec.bundle().to_owned();
    let canonical = RealHost.canonical(&bundle).unwrap_or(bundle);
    let prepared = match enforce_spec(key, spec.value_mut(), &canonical, config, &RealHost) {
        Ok(prepared) => prepared,
        Err(err) => {
            tracing::warn!(%id, %err, "spec refused");
            return Err(err);
        }
    };
    for change in &prepared.changes {
        tracing::warn!(%id, field = %change.field, from = %change.from, to = %change.to, "spec tightened");
    }
    tracing::info!(%id, source = ?prepared.source, flags = ?prepared.runsc_flags.to_args(), "policy enforced");
    Ok(prepared)
}

/// Brings an exec's process spec within its container's: no capabilities,
/// no new privileges, and the init process's user. containerd builds exec
/// specs from the spec it stored, not from the one the shim enforced, so
/// without this an exec would get back what Create dropped.
pub fn enforce_exec_process(process: &mut Value, init: &Value) -> Vec<Change> {
    let mut holder = serde_json::json!({ "process": process.take() });
    let mut changes = tighten::process_only(&mut holder);
    let mut process_spec = holder["process"].take();
    if process_spec["user"] != init["user"] {
        changes.push(Change {
            field: "process.user".to_owned(),
            from: process_spec["user"].to_string(),
            to: init["user"].to_string(),
        });
        process_spec["user"] = init["user"].clone();
    }
    *process = process_spec;
    changes
}

#[cfg(test)]
mod tests;
