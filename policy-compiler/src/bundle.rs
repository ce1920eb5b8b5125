//! Writes an OCI bundle: `config.json` plus a copy of the skill under
//! `skill/`, which the spec mounts read-only at `/skill`.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::package::{EntryKind, SkillPackage};

/// The bundle's directory holding the skill's code.
pub const SKILL_DIR: &str = "skill";
pub const CONFIG_JSON: &str = "config.json";

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::WriteBundle {
        path: path.to_owned(),
        source,
    }
}

/// Checks that `dir` can receive a bundle: absent, or an empty directory.
/// Refusing anything else means a compile never mixes with old files.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::WriteBundle {
                    path: dir.to_owned(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "output directory is not empty; choose a new directory or remove it first",
                    ),
                });
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(write_error(dir))?;
        }
        Err(source) => {
            return Err(Error::WriteBundle {
                path: dir.to_owned(),
                source,
            })
        }
    }
    // The config holds passed environment values: keep the bundle private.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(write_error(dir))
}

/// Copies the package into `<bundle>/skill`, read-only, and returns that path.
pub fn copy_skill(bundle: &Path, package: &SkillPackage) -> Result<PathBuf> {
    let root = bundle.join(SKILL_DIR);
    fs::create_dir(&root).map_err(write_error(&root))?;
    for entry in &package.entries {
        let target = root.join(&entry.relative);
        match &entry.kind {
            EntryKind::Dir => fs::create_dir(&target).map_err(write_error(&target))?,
            EntryKind::Symlink { target: link } => symlink(link, &target).map_err(write_error(&target))?,
            EntryKind::File { executable, contents } => {
                fs::write(&target, contents).map_err(write_error(&target))?;
                let mode = if *executable { 0o555 } else { 0o444 };
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(write_error(&target))?;
            }
        }
    }
    Ok(root)
}

/// Writes `config.json`, readable by its owner only.
pub fn write_config(bundle: &Path, config_json: &str) -> Result<()> {
    let path = bundle.join(CONFIG_JSON);
    fs::write(&path, config_json).map_err(write_error(&path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(write_error(&path))
}

/// Makes the bundle-relative paths of `spec` absolute against `bundle`: a
/// relative `root.path` and relative bind-mount sources. runsc resolves
/// them so itself; this is for a spec that leaves its bundle, as
/// `ctr run --config` copies `config.json` alone into a bundle of its own.
pub fn absolute_paths(spec: &mut serde_json::Value, bundle: &Path) {
    let absolute = |path: &mut serde_json::Value| {
        if let Some(relative) = path.as_str().filter(|p| !p.is_empty() && !p.starts_with('/')) {
            *path = serde_json::Value::String(bundle.join(relative).display().to_string());
        }
    };
    if let Some(root) = spec.get_mut("root").and_then(|root| root.get_mut("path")) {
        absolute(root);
    }
    let mounts = spec.get_mut("mounts").and_then(|m| m.as_array_mut());
    for mount in mounts.into_iter().flatten() {
        let bind = mount["type"] == "bind"
            || mount["options"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"));
        if let Some(source) = mount.get_mut("source").filter(|_| bind) {
            absolute(source);
        }
    }
}

/// Rewrites `<bundle>/config.json` with [`absolute_paths`], for
/// `ctr run --config`. The bundle then runs only where it is.
pub fn pin_config(bundle: &Path) -> Result<()> {
    let path = bundle.join(CONFIG_JSON);
    let text = fs::read_to_string(&path).map_err(|source| Error::ReadSkill {
        path: path.clone(),
        source,
    })?;
    let mut spec: serde_json::Value = serde_json::from_str(&text).map_err(|err| Error::InvalidField {
        file: path.clone(),
        field: "root".to_owned(),
        message: format!("config.json is not JSON: {err}"),
    })?;
    absolute_paths(&mut spec, bundle);
    let mut text = serde_json::to_string_pretty(&spec).expect("a JSON value serializes");
    text.push('\n');
    // Rewriting in place keeps the file's 0600 mode.
    fs::write(&path, text).map_err(write_error(&path))
}

/// What a runtime reads back from a compiled bundle's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledAnnotations {
    pub skill_name: String,
    pub skill_version: Option<String>,
    pub skill_digest: String,
    pub policy: crate::effective::EffectivePolicy,
    pub runsc_flags: runsc_config::RunscFlags,
}

/// Reads the skill identity, effective policy and runsc flags that the
/// compiler wrote into `<bundle>/config.json`.
pub fn read_annotations(bundle: &Path) -> Result<CompiledAnnotations> {
    let path = bundle.join(CONFIG_JSON);
    let text = fs::read_to_string(&path).map_err(|source| Error::ReadSkill {
        path: path.clone(),
        source,
    })?;
    let spec: serde_json::Value = serde_json::from_str(&text).map_err(|err| Error::InvalidField {
        file: path.clone(),
        field: "annotations".to_owned(),
        message: format!("config.json is not JSON: {err}"),
    })?;
    CompiledAnnotations::from_spec(&spec, &path)
}

impl CompiledAnnotations {
    /// The annotations of `spec`, read from `path` (named in errors).
    pub fn from_spec(spec: &serde_json::Value, path: &Path) -> Result<CompiledAnnotations> {
        use crate::oci::annotations as keys;
        let invalid = |field: &str, message: String| Error::InvalidField {
            file: path.to_owned(),
            field: format!("annotations.\"{field}\""),
            message,
        };
        let annotation = |key: &str| -> Result<String> {
            spec["annotations"][key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(key, "missing: the bundle was not compiled by skillbox".to_owned()))
        };
        let policy = serde_json::from_str(&annotation(keys::POLICY)?)
            .map_err(|err| invalid(keys::POLICY, format!("not a valid effective policy: {err}")))?;
        let runsc_flags = serde_json::from_str(&annotation(keys::RUNSC_FLAGS)?)
            .map_err(|err| invalid(keys::RUNSC_FLAGS, format!("not valid runsc flags: {err}")))?;
        Ok(CompiledAnnotations {
            skill_name: annotation(keys::SKILL_NAME)?,
            skill_version: annotation(keys::SKILL_VERSION).ok(),
            skill_digest: annotation(keys::SKILL_DIGEST)?,
            policy,
            runsc_flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn relative_root_and_bind_sources_become_absolute_in_the_bundle() {
        let mut spec = json!({
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/skill", "type": "bind", "source": "skill", "options": ["rbind", "ro"]},
                {"destination": "/data", "source": "data", "options": ["bind"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/hosts"},
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
            ],
        });
        absolute_paths(&mut spec, Path::new("/srv/bundles/hello"));
        assert_eq!(spec["root"]["path"], "/srv/bundles/hello/rootfs");
        let sources: Vec<&str> = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["source"].as_str().unwrap())
            .collect();
        assert_eq!(
            sources,
            [
                "/srv/bundles/hello/skill",
                "/srv/bundles/hello/data",
                "/var/lib/hosts",
                "proc",
                "tmpfs"
            ]
        );
        let mut absolute = json!({"root": {"path": "/var/lib/skillbox/busybox"}});
        absolute_paths(&mut absolute, Path::new("/b"));
        assert_eq!(absolute["root"]["path"], "/var/lib/skillbox/busybox");
    }
}
