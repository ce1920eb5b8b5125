//! The bundle's OCI spec, loaded once and written once.
//!
//! A runtime reads `<bundle>/config.json` into a [`BundleSpec`], lets the
//! enforcement, the egress session and the process settings change the value
//! in memory, and writes it back once, just before `runsc create`: the spec
//! runsc sees is the value this type held. It is also the one reader of the
//! annotations a runtime acts on: the pod role (CRI), the skill identity and
//! the compiled policy and runsc flags (`io.skillbox.*`).

use std::path::{Path, PathBuf};

use policy_compiler::bundle::{CompiledAnnotations, CONFIG_JSON};
use policy_compiler::oci::annotations;
use serde_json::Value;

/// CRI's annotation naming a container's role in its pod.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation naming the pod's sandbox container.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// Where kubelet reads a container's termination message (when the runtime
/// is given the annotation).
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
/// The pod's uid (kubelet's `metadata.uid`), on a pod's every container.
pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: cannot read the bundle's spec: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the bundle's spec is not JSON: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: cannot write the spec for runsc: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a spec's annotations make of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// Its own sandbox: a pod's sandbox container, or a container without
    /// the CRI annotations.
    Own,
    /// An application container of the pod whose sandbox container has this
    /// id: it joins that sandbox (runsc multi-container).
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

    /// The shim grouping: the pod's sandbox id for a member, else the
    /// container's own id.
    pub fn grouping<'a>(&'a self, id: &'a str) -> &'a str {
        match self {
            PodRole::Own => id,
            PodRole::Member { sandbox } => sandbox,
        }
    }
}

/// The skill a compiled bundle's annotations name (all `None` for a plain
/// container).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkillAnnotations {
    pub name: Option<String>,
    pub version: Option<String>,
    pub digest: Option<String>,
}

/// A bundle's `config.json`, held in memory between one load and one write.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleSpec {
    bundle: PathBuf,
    value: Value,
}

impl BundleSpec {
    /// Reads `<bundle>/config.json`.
    pub fn load(bundle: &Path) -> Result<BundleSpec, SpecError> {
        let path = bundle.join(CONFIG_JSON);
        let text = std::fs::read_to_string(&path).map_err(|source| SpecError::Read {
            path: path.clone(),
            source,
        })?;
        let value = serde_json::from_str(&text).map_err(|source| SpecError::Parse { path, source })?;
        Ok(BundleSpec {
            bundle: bundle.to_owned(),
            value,
        })
    }

    /// A spec held in memory for `bundle` (tests, and callers that built it).
    pub fn new(bundle: &Path, value: Value) -> BundleSpec {
        BundleSpec {
            bundle: bundle.to_owned(),
            value,
        }
    }

    /// The role of the bundle at `bundle` without holding its spec (`Own`
    /// when it cannot be read: Create reports that).
    pub fn pod_role_of(bundle: &Path) -> PodRole {
        BundleSpec::load(bundle)
            .map(|spec| spec.pod_role())
            .unwrap_or(PodRole::Own)
    }

    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    /// `<bundle>/config.json`, for messages.
    pub fn path(&self) -> PathBuf {
        self.bundle.join(CONFIG_JSON)
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    pub fn value_mut(&mut self) -> &mut Value {
        &mut self.value
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.value["annotations"][key].as_str()
    }

    pub fn pod_role(&self) -> PodRole {
        PodRole::of_spec(&self.value)
    }

    /// Whether CRI made this the pod's sandbox (pause) container, which
    /// holds the pod's sandbox for its members and runs no skill.
    pub fn is_pod_sandbox(&self) -> bool {
        self.annotation(CONTAINER_TYPE) == Some("sandbox")
    }

    /// `linux.cgroupsPath` when it is a plain absolute path below a
    /// hierarchy's root (relative to it, without the leading `/`); a
    /// relative, systemd (`slice:prefix:name`) or `..` path is none skillbox
    /// can own.
    pub fn cgroups_path(&self) -> Option<PathBuf> {
        plain_cgroups_path(self.value["linux"]["cgroupsPath"].as_str()?)
    }

    /// The index and the `path` (if any) of the network namespace entry.
    pub fn network_namespace(&self) -> Option<(usize, Option<&str>)> {
        skillbox_egress::spec::network_namespace(&self.value)
    }

    /// The skill the `io.skillbox.skill.*` annotations name.
    pub fn skill(&self) -> SkillAnnotations {
        skill_of(&self.value)
    }

    /// Everything `skillbox compile` recorded, or why the bundle is not one
    /// it compiled.
    pub fn compiled(&self) -> Result<CompiledAnnotations, policy_compiler::Error> {
        CompiledAnnotations::from_spec(&self.value, &self.path())
    }

    /// The host file kubelet reads the container's termination message
    /// from: the source of the bind mount at the annotated
    /// `terminationMessagePath`, else at `/dev/termination-log`.
    pub fn termination_log(&self) -> Option<PathBuf> {
        self.mount_source(
            self.annotation(TERMINATION_MESSAGE_PATH)
                .unwrap_or("/dev/termination-log"),
        )
    }

    /// The source of the mount at `destination`, if there is one.
    pub fn mount_source(&self, destination: &str) -> Option<PathBuf> {
        self.value["mounts"]
            .as_array()?
            .iter()
            .find(|mount| mount["destination"].as_str() == Some(destination))
            .and_then(|mount| mount["source"].as_str())
            .map(PathBuf::from)
    }

    /// Binds `source` at `destination`, replacing whatever the spec mounts
    /// there; never setuid, devices or exec from it.
    pub fn bind_mount(&mut self, destination: &str, source: &Path, read_only: bool) {
        let access = if read_only { "ro" } else { "rw" };
        self.bind_mount_with(
            destination,
            source,
            &["rbind", access, "nosuid", "nodev", "noexec"],
        );
    }

    /// Binds `source` at `destination` with these mount `options`,
    /// replacing any mount already there.
    pub fn bind_mount_with(&mut self, destination: &str, source: &Path, options: &[&str]) {
        let mount = serde_json::json!({
            "destination": destination,
            "type": "bind",
            "source": source,
            "options": options,
        });
        if !self.value["mounts"].is_array() {
            self.value["mounts"] = Value::Array(Vec::new());
        }
        let mounts = self.value["mounts"].as_array_mut().expect("just made an array");
        mounts.retain(|m| m["destination"].as_str() != Some(destination));
        mounts.push(mount);
    }

    /// Sets `process.terminal` (`ctr run -t --config` asks at Create, not
    /// in the spec).
    pub fn set_terminal(&mut self, terminal: bool) {
        self.value["process"]["terminal"] = Value::Bool(terminal);
    }

    /// The spec's `process`, which every exec is held within.
    pub fn process(&self) -> Value {
        self.value["process"].clone()
    }

    /// Writes the spec for runsc. Rewriting in place keeps containerd's
    /// mode and owner on the file.
    pub fn write(&self) -> Result<(), SpecError> {
        let path = self.path();
        let text = serde_json::to_string_pretty(&self.value).expect("a JSON value serializes");
        std::fs::write(&path, text).map_err(|source| SpecError::Write { path, source })
    }
}

/// The skill the `io.skillbox.skill.*` annotations of `spec` name (for
/// code that holds the spec's value, as the shim's enforcement does).
pub fn skill_of(spec: &Value) -> SkillAnnotations {
    let note = |key: &str| spec["annotations"][key].as_str().map(str::to_owned);
    SkillAnnotations {
        name: note(annotations::SKILL_NAME),
        version: note(annotations::SKILL_VERSION),
        digest: note(annotations::SKILL_DIGEST),
    }
}

/// The text of `spec`'s `io.skillbox.policy` annotation, as the compiler (or
/// anyone) wrote it: a runtime holds it within the node ceiling before
/// trusting it.
pub fn policy_annotation(spec: &Value) -> Option<&str> {
    spec["annotations"][annotations::POLICY].as_str()
}

/// See [`BundleSpec::cgroups_path`].
pub fn plain_cgroups_path(given: &str) -> Option<PathBuf> {
    let path = given.strip_prefix('/')?;
    (!path.is_empty() && !path.contains(':') && !path.split('/').any(|part| part == ".." || part.is_empty()))
        .then(|| PathBuf::from(path))
}

/// The cgroupfs path of a systemd-driver `cgroupsPath`
/// (`<slice>:<prefix>:<name>`, what kubelet's systemd cgroup driver makes
/// containerd's CRI plugin write): the slice's place in systemd's tree
/// (`a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`) and the unit
/// `<prefix>-<name>.scope` in it. `None` when `given` is not of that form.
pub fn systemd_cgroups_path(given: &str) -> Option<String> {
    let mut parts = given.split(':');
    let (slice, prefix, name) = (parts.next()?, parts.next()?, parts.next()?);
    let unit_part = |part: &str| !part.is_empty() && !part.contains('/') && part != "." && part != "..";
    if parts.next().is_some() || !unit_part(prefix) || !unit_part(name) {
        return None;
    }
    let mut path = String::new();
    if !slice.is_empty() && slice != "-.slice" {
        let stem = slice.strip_suffix(".slice")?;
        if !unit_part(stem) || stem.split('-').any(str::is_empty) {
            return None;
        }
        let words: Vec<&str> = stem.split('-').collect();
        for end in 1..=words.len() {
            path.push('/');
            path.push_str(&words[..end].join("-"));
            path.push_str(".slice");
        }
    }
    Some(format!("{path}/{prefix}-{name}.scope"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_systemd_cgroups_path_is_placed_as_systemd_would() {
        assert_eq!(
            super::systemd_cgroups_path("kubepods-burstable-pod1234.slice:cri-containerd:abc").as_deref(),
            Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abc.scope")
        );
        assert_eq!(
            super::systemd_cgroups_path(":cri-containerd:abc").as_deref(),
            Some("/cri-containerd-abc.scope")
        );
        for bad in [
            "/k8s.io/abc",
            "a.slice:b",
            "a.slice:b:c:d",
            "x:../..:c",
            "a--b.slice:p:n",
            "a.scope:p:n",
        ] {
            assert_eq!(super::systemd_cgroups_path(bad), None, "{bad}");
        }
    }

    use serde_json::json;

    use super::*;

    fn spec(value: Value) -> BundleSpec {
        BundleSpec::new(Path::new("/b"), value)
    }

    #[test]
    fn the_pod_role_comes_from_the_cri_annotations() {
        let member = spec(json!({"annotations": {CONTAINER_TYPE: "container", SANDBOX_ID: "pod-1"}}));
        assert_eq!(
            member.pod_role(),
            PodRole::Member {
                sandbox: "pod-1".to_owned()
            }
        );
        assert_eq!(member.pod_role().grouping("app"), "pod-1");
        let sandbox = spec(json!({"annotations": {CONTAINER_TYPE: "sandbox", SANDBOX_ID: "pod-1"}}));
        assert_eq!(sandbox.pod_role(), PodRole::Own);
        assert_eq!(spec(json!({})).pod_role().grouping("plain"), "plain");
    }

    #[test]
    fn only_plain_absolute_cgroup_paths_are_owned() {
        let with = |path: &str| spec(json!({"linux": {"cgroupsPath": path}})).cgroups_path();
        assert_eq!(
            with("/skillbox/default.x"),
            Some(PathBuf::from("skillbox/default.x"))
        );
        assert_eq!(with("/k8s.io/abc"), Some(PathBuf::from("k8s.io/abc")));
        assert_eq!(with("system.slice:skillbox:x"), None);
        assert_eq!(with("relative/x"), None);
        assert_eq!(with("/a/../../etc"), None);
        assert_eq!(with("/a//b"), None);
        assert_eq!(with("/"), None);
        assert_eq!(spec(json!({})).cgroups_path(), None);
    }

    #[test]
    fn the_skill_and_policy_come_from_the_skillbox_annotations() {
        let held = spec(json!({"annotations": {
            annotations::SKILL_NAME: "hello",
            annotations::SKILL_DIGEST: "sha256:ab",
            annotations::POLICY: "{}",
        }}));
        assert_eq!(
            held.skill(),
            SkillAnnotations {
                name: Some("hello".to_owned()),
                version: None,
                digest: Some("sha256:ab".to_owned()),
            }
        );
        assert_eq!(policy_annotation(held.value()), Some("{}"));
        assert_eq!(policy_annotation(&json!({})), None);
    }

    #[test]
    fn a_spec_is_written_once_as_held() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_JSON), r#"{"process": {"args": ["sh"]}}"#).unwrap();
        let mut held = BundleSpec::load(dir.path()).unwrap();
        held.set_terminal(true);
        held.write().unwrap();
        let again = BundleSpec::load(dir.path()).unwrap();
        assert_eq!(again.value()["process"]["terminal"], true);
        assert_eq!(again.process()["args"][0], "sh");
        std::fs::write(dir.path().join(CONFIG_JSON), "{").unwrap();
        let err = BundleSpec::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("config.json: the bundle's spec is not JSON"),
            "{err}"
        );
    }
}
