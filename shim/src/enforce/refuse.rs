//! What the shim refuses to run, because no rewrite could make it safe
//! without changing what the container is: host devices, host namespaces,
//! host bind mounts, unknown mount types and OCI hooks (which runsc would
//! run on the host, outside the sandbox).

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use policy_compiler::node_config::CriSettings;
use policy_compiler::oci::annotations;
use policy_compiler::scratch_path::SKILL_MOUNT;
use skillbox_sandbox::spec::{SANDBOX_ID, SANDBOX_UID};

use super::{HostPaths, Refusal};
use crate::config::ShimConfig;

/// The namespaces a sandbox must not share with the host, with their
/// `/proc/self/ns` names.
const REQUIRED_NAMESPACES: [(&str, &str); 5] = [
    ("network", "net"),
    ("pid", "pid"),
    ("ipc", "ipc"),
    ("uts", "uts"),
    ("mount", "mnt"),
];

/// Mount types gVisor serves from inside the sandbox, plus `bind`.
const MOUNT_TYPES: [&str; 8] = [
    "bind", "tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

/// OCI hook lists; runsc runs hooks on the host.
const HOOKS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

fn refusal(field: impl Into<String>, value: impl Into<String>, expected: impl Into<String>) -> Refusal {
    Refusal {
        field: field.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

/// Every refusal of `spec` (the `config.json` of the canonical `bundle`).
pub(super) fn refusals(
    spec: &Value,
    bundle: &Path,
    config: &ShimConfig,
    host: &dyn HostPaths,
) -> Vec<Refusal> {
    let mut found = Vec::new();
    devices(spec, &mut found);
    namespaces(spec, host, &mut found);
    mounts(spec, bundle, config, host, &mut found);
    hooks(spec, &mut found);
    found
}

fn devices(spec: &Value, found: &mut Vec<Refusal>) {
    let Some(devices) = spec["linux"]["devices"].as_array().filter(|d| !d.is_empty()) else {
        return;
    };
    let mut paths: Vec<&str> = devices
        .iter()
        .filter_map(|d| d["path"].as_str())
        .take(3)
        .collect();
    if devices.len() > paths.len() {
        paths.push("…");
    }
    found.push(refusal(
        "linux.devices",
        format!("{} host device(s) ({})", devices.len(), paths.join(", ")),
        "a sandbox gets no host devices (`ctr run --privileged` and `--device` add them)",
    ));
}

fn namespaces(spec: &Value, host: &dyn HostPaths, found: &mut Vec<Refusal>) {
    let empty = Vec::new();
    let listed = spec["linux"]["namespaces"].as_array().unwrap_or(&empty);
    for (kind, proc_name) in REQUIRED_NAMESPACES {
        let entry = listed
            .iter()
            .enumerate()
            .find(|(_, ns)| ns["type"].as_str() == Some(kind));
        match entry {
            None => found.push(refusal(
                "linux.namespaces",
                format!("no {kind} namespace"),
                format!(
                    "the sandbox may not share the host's {kind} namespace; expected a {kind} entry, new (no path) or joining another's (a pod's)"
                ),
            )),
            Some((index, ns)) => {
                if let Some(path) = ns["path"].as_str().filter(|p| !p.is_empty()) {
                    if host.is_own_namespace(proc_name, Path::new(path)) {
                        found.push(refusal(
                            format!("linux.namespaces[{index}].path"),
                            path,
                            format!("this is the host's {kind} namespace; expected a new one or a pod's"),
                        ));
                    }
                }
            }
        }
    }
}

fn is_bind(mount: &Value) -> bool {
    mount["type"].as_str() == Some("bind")
        || mount["options"].as_array().is_some_and(|options| {
            options
                .iter()
                .any(|o| matches!(o.as_str(), Some("bind" | "rbind")))
        })
}

/// `source` as the mount will see it: relative to the bundle, symlinks
/// resolved when it exists, `..` never trusted.
fn resolved_source(source: &str, bundle: &Path, host: &dyn HostPaths) -> Option<PathBuf> {
    let joined = bundle.join(source);
    let resolved = host.canonical(&joined).unwrap_or(joined);
    let plain = resolved
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_) | Component::CurDir));
    plain.then_some(resolved)
}

/// A name kubelet or containerd uses as one path component (an id, a uid).
fn is_path_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// The directories this pod's kubelet and containerd keep its files in (see
/// `CriSettings`); none for a container outside a CRI pod. `container_id` is
/// the bundle's name, which containerd makes the container's id.
pub(super) fn pod_sources(spec: &Value, container_id: &str, cri: &CriSettings) -> Vec<PathBuf> {
    let annotation = |key: &str| {
        spec["annotations"][key]
            .as_str()
            .filter(|value| is_path_component(value))
    };
    let mut sources = Vec::new();
    if let Some(uid) = annotation(SANDBOX_UID) {
        sources.push(cri.kubelet_root.join("pods").join(uid));
    }
    let cri_dir = |root: &Path| root.join("io.containerd.grpc.v1.cri");
    if let Some(sandbox) = annotation(SANDBOX_ID) {
        sources.push(cri_dir(&cri.containerd_root).join("sandboxes").join(sandbox));
        sources.push(cri_dir(&cri.containerd_state).join("sandboxes").join(sandbox));
        if is_path_component(container_id) {
            sources.push(
                cri_dir(&cri.containerd_root)
                    .join("containers")
                    .join(container_id),
            );
        }
    }
    sources
}

/// Where a bind mount's source is, for what may be mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BindSource {
    /// The bundle, or this pod's own kubelet or containerd directories.
    Own,
    /// Under `ceiling.bind_mount_sources`: mounted read-only.
    Listed,
    /// Anywhere else.
    Elsewhere,
}

/// Classifies the bind mount sources of `spec`, by index into `mounts`.
pub(super) fn bind_sources(
    spec: &Value,
    bundle: &Path,
    config: &ShimConfig,
    host: &dyn HostPaths,
) -> Vec<(usize, BindSource)> {
    let Some(mounts) = spec["mounts"].as_array() else {
        return Vec::new();
    };
    // Sources are compared with symlinks resolved, so the prefixes are too.
    let resolve = |prefixes: Vec<PathBuf>| -> Vec<PathBuf> {
        prefixes
            .into_iter()
            .map(|prefix| host.canonical(&prefix).unwrap_or(prefix))
            .collect()
    };
    let container_id = bundle.file_name().map(|name| name.to_string_lossy().into_owned());
    let own = resolve(pod_sources(
        spec,
        container_id.as_deref().unwrap_or(""),
        &config.node.cri,
    ));
    let listed = resolve(config.node.ceiling.bind_mount_sources.clone());
    let under = |path: &Path, prefixes: &[PathBuf]| prefixes.iter().any(|prefix| path.starts_with(prefix));
    mounts
        .iter()
        .enumerate()
        .filter(|(_, mount)| is_bind(mount))
        .map(|(index, mount)| {
            let source = mount["source"].as_str().unwrap_or("");
            let kind = match resolved_source(source, bundle, host) {
                Some(path) if path.starts_with(bundle) || under(&path, &own) => BindSource::Own,
                Some(path) if under(&path, &listed) => BindSource::Listed,
                _ => BindSource::Elsewhere,
            };
            (index, kind)
        })
        .collect()
}

fn mounts(spec: &Value, bundle: &Path, config: &ShimConfig, host: &dyn HostPaths, found: &mut Vec<Refusal>) {
    let Some(mounts) = spec["mounts"].as_array() else {
        return;
    };
    let allowed = &config.node.ceiling.bind_mount_sources;
    let sources = bind_sources(spec, bundle, config, host);
    for (index, mount) in mounts.iter().enumerate() {
        let destination = mount["destination"].as_str().unwrap_or("");
        let field = |name: &str| format!("mounts[{index}].{name} ({destination})");
        if !is_bind(mount) {
            let kind = mount["type"].as_str().unwrap_or("");
            if !MOUNT_TYPES.contains(&kind) {
                found.push(refusal(
                    field("type"),
                    format!("{kind:?}"),
                    format!("expected one of {}", MOUNT_TYPES.join(", ")),
                ));
            }
            continue;
        }
        let source = mount["source"].as_str().unwrap_or("");
        if !source.starts_with('/') && host.canonical(&bundle.join(source)).is_none() {
            // containerd copies only config.json into its bundle: a compiled
            // bundle's relative `skill` is not there.
            found.push(refusal(
                field("source"),
                format!("{source:?}, relative to the bundle, which has no such file"),
                "a relative source names a file in the bundle; run a bundle from `skillbox compile` with `ctr run --config` after compiling it with --absolute-paths",
            ));
            continue;
        }
        if sources.contains(&(index, BindSource::Own)) || sources.contains(&(index, BindSource::Listed)) {
            continue;
        }
        let resolved = resolved_source(source, bundle, host);
        if let Some(verified) = resolved
            .as_deref()
            .and_then(|dir| compiled_skill(spec, mount, dir, host))
        {
            match verified {
                Ok(()) => continue,
                Err(mismatch) => {
                    found.push(refusal(field("source"), format!("host path {source}"), mismatch));
                    continue;
                }
            }
        }
        let prefixes: Vec<String> = allowed.iter().map(|p| p.display().to_string()).collect();
        found.push(refusal(
            field("source"),
            format!("host path {source}"),
            format!(
                "a bind mount's source must be inside the bundle ({}), this pod's kubelet or containerd directories (under [cri] kubelet_root, containerd_root, containerd_state), or under ceiling.bind_mount_sources [{}] in {}",
                bundle.display(),
                prefixes.join(", "),
                config.origin
            ),
        ));
    }
}

/// The compiled skill's own read-only `/skill` mount, from wherever
/// `ctr run --config` left the compiled bundle: allowed when the folder is
/// exactly the skill the policy was compiled for (its package digest equals
/// the `io.skillbox.skill.digest` annotation). `None` when the mount is not
/// such a mount; `Some(Err(why))` when the folder is not that skill.
fn compiled_skill(
    spec: &Value,
    mount: &Value,
    dir: &Path,
    host: &dyn HostPaths,
) -> Option<Result<(), String>> {
    let digest = skillbox_sandbox::spec::skill_of(spec).digest?;
    let expected = digest.as_str();
    let read_only = mount["options"]
        .as_array()
        .is_some_and(|options| options.iter().any(|o| o.as_str() == Some("ro")));
    if mount["destination"].as_str() != Some(SKILL_MOUNT) || !read_only {
        return None;
    }
    Some(match host.skill_digest(dir) {
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(format!(
            "the skill compiled into this bundle ({} {expected}); this folder's digest is {found}",
            annotations::SKILL_DIGEST
        )),
        None => Err(format!(
            "the skill compiled into this bundle ({} {expected}); this folder is no skill package",
            annotations::SKILL_DIGEST
        )),
    })
}

fn hooks(spec: &Value, found: &mut Vec<Refusal>) {
    for kind in HOOKS {
        let Some(hooks) = spec["hooks"][kind].as_array().filter(|h| !h.is_empty()) else {
            continue;
        };
        let paths: Vec<&str> = hooks.iter().filter_map(|h| h["path"].as_str()).collect();
        found.push(refusal(
            format!("hooks.{kind}"),
            paths.join(", "),
            "hooks run on the host, outside the sandbox; expected none",
        ));
    }
}
