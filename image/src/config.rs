//! The image config of a skill image: how a runtime starts it (the policy's
//! entrypoint in `/skill`, as uid 65534, the sandbox's PATH), labels naming
//! the skill, and the layers' diff ids and history. No `created` time, so
//! the config depends on its inputs only.

use std::collections::HashMap;

use oci_spec::image::{
    Arch, ConfigBuilder, History, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, Os, RootFs,
};
use policy_compiler::oci::{annotations, SANDBOX_PATH, SANDBOX_UID};
use policy_compiler::scratch_path::SKILL_MOUNT;
use policy_compiler::SkillPackage;

use crate::error::{ImageError, Result};

/// What the base contributes to the config.
#[derive(Debug, Clone)]
pub struct BaseConfig {
    pub os: Os,
    pub architecture: Arch,
    /// The base's `Env`; its `PATH` is replaced by the sandbox's.
    pub env: Vec<String>,
    /// The base's labels; the skill's own win.
    pub labels: HashMap<String, String>,
    pub diff_ids: Vec<String>,
    pub history: Vec<History>,
}

impl BaseConfig {
    /// What an image config `base` passes on.
    pub fn of_image(base: &ImageConfiguration) -> BaseConfig {
        let config = base.config().as_ref();
        BaseConfig {
            os: base.os().clone(),
            architecture: base.architecture().clone(),
            env: config.and_then(|c| c.env().clone()).unwrap_or_default(),
            labels: config.and_then(|c| c.labels().clone()).unwrap_or_default(),
            diff_ids: base.rootfs().diff_ids().clone(),
            history: base.history().clone().unwrap_or_default(),
        }
    }
}

fn build_error(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> ImageError {
    move |source| ImageError::BuildSpec { what, source }
}

/// One history entry, with no time.
pub fn history(created_by: &str) -> Result<History> {
    HistoryBuilder::default()
        .created_by(created_by)
        .build()
        .map_err(build_error("history"))
}

/// The labels naming the skill, under the keys the compiled bundle's
/// annotations use.
pub fn skill_labels(package: &SkillPackage) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    labels.insert(
        annotations::SKILL_NAME.to_owned(),
        package.manifest.name.to_string(),
    );
    if let Some(version) = &package.manifest.version {
        labels.insert(annotations::SKILL_VERSION.to_owned(), version.clone());
    }
    labels.insert(annotations::SKILL_DIGEST.to_owned(), package.digest.clone());
    labels
}

/// The policy's entrypoint, which runs in `/skill`; `None` when the policy
/// names none (the runtime must then give a command).
pub fn entrypoint(package: &SkillPackage) -> Option<Vec<String>> {
    let policy = package.manifest.security_policy.as_ref()?;
    policy.entrypoint.as_ref().map(|entrypoint| entrypoint.0.clone())
}

fn environment(base: &[String]) -> Vec<String> {
    let mut env: Vec<String> = base.iter().filter(|v| !v.starts_with("PATH=")).cloned().collect();
    env.push(format!("PATH={SANDBOX_PATH}"));
    env
}

/// The config of `package` on `base`, whose top layer has `skill_diff_id`.
pub fn image_config(
    package: &SkillPackage,
    base: &BaseConfig,
    skill_diff_id: &str,
) -> Result<ImageConfiguration> {
    let mut labels = base.labels.clone();
    labels.extend(skill_labels(package));
    let mut config = ConfigBuilder::default()
        .user(SANDBOX_UID.to_string())
        .env(environment(&base.env))
        .working_dir(SKILL_MOUNT)
        .labels(labels);
    if let Some(entrypoint) = entrypoint(package) {
        config = config.entrypoint(entrypoint);
    }
    let config = config.build().map_err(build_error("config"))?;

    let mut diff_ids = base.diff_ids.clone();
    diff_ids.push(skill_diff_id.to_owned());
    let mut rootfs = RootFs::default();
    rootfs.set_diff_ids(diff_ids);
    let mut history = base.history.clone();
    let version = package.manifest.version.as_deref().unwrap_or("(no version)");
    history.push(self::history(&format!(
        "skillbox image build: skill {} {version} ({}) at {SKILL_MOUNT}",
        package.manifest.name, package.digest
    ))?);

    ImageConfigurationBuilder::default()
        .architecture(base.architecture.clone())
        .os(base.os.clone())
        .config(config)
        .rootfs(rootfs)
        .history(history)
        .build()
        .map_err(build_error("config"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_path_gives_way_to_the_sandbox_path() {
        let env = environment(&["LANG=C.UTF-8".to_owned(), "PATH=/opt/bin".to_owned()]);
        assert_eq!(env, ["LANG=C.UTF-8".to_owned(), format!("PATH={SANDBOX_PATH}")]);
        assert_eq!(environment(&[]), [format!("PATH={SANDBOX_PATH}")]);
    }
}
