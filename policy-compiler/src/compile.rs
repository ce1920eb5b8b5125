//! The compiler's front door: skill folder + node config → effective policy
//! → OCI bundle and runsc flags.

use std::collections::BTreeMap;
use std::path::Path;

use runsc_config::{NetworkMode, RunscFlags};

use crate::bundle;
use crate::effective::{resolve, EffectivePolicy};
use crate::error::Result;
use crate::node_config::NodeConfig;
use crate::oci::{build_spec, render_spec, SpecInputs};
use crate::package::{SkillPackage, SKILL_MD};
use oci_spec::runtime::Spec;

/// Inputs of a compile besides the skill itself.
#[derive(Debug, Clone)]
pub struct CompileOptions<'a> {
    pub node: &'a NodeConfig,
    /// How the node config file is named in messages.
    pub node_config_name: &'a str,
    /// Absolute path of the base root filesystem.
    pub base_rootfs: &'a Path,
    /// Arguments appended to the entrypoint.
    pub extra_args: &'a [String],
    /// The invoking environment; only names in `env.pass` are read.
    pub env: &'a BTreeMap<String, String>,
    /// The cgroup to place the sandbox in; `None` leaves it to the runtime
    /// (the shim gives every container its own).
    pub cgroups_path: Option<&'a str>,
}

/// What a compile produced.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub policy: EffectivePolicy,
    pub runsc_flags: RunscFlags,
    pub warnings: Vec<String>,
}

/// The runsc flags a policy implies on this node. A policy that allows
/// egress runs on the kernel stack of its own network namespace, behind the
/// egress enforcement (`--network=host`); any other gets no network at all.
pub fn runsc_flags(node: &NodeConfig, policy: &EffectivePolicy) -> RunscFlags {
    RunscFlags {
        network: match policy.has_egress() {
            true => NetworkMode::Host,
            false => NetworkMode::None,
        },
        platform: node.runsc.platform(),
        overlay: false,
    }
}

/// Resolves the package's effective policy on this node.
pub fn effective_policy(
    package: &SkillPackage,
    options: &CompileOptions<'_>,
) -> Result<(EffectivePolicy, Vec<String>)> {
    let resolution = resolve(
        &package.manifest,
        &package.dir.join(SKILL_MD),
        options.node,
        options.node_config_name,
    )?;
    Ok((resolution.policy, resolution.warnings))
}

/// The effective policy, its runsc flags and the warnings (the policy's,
/// and each `env.pass` name the invoking environment does not set): what
/// both `compile` and `process_of` start from.
fn resolve_for_node(
    package: &SkillPackage,
    options: &CompileOptions<'_>,
) -> Result<(EffectivePolicy, RunscFlags, Vec<String>)> {
    let (policy, mut warnings) = effective_policy(package, options)?;
    warnings.extend(unset_env_warnings(&policy, options.env));
    let flags = runsc_flags(options.node, &policy);
    Ok((policy, flags, warnings))
}

/// A warning for each name `policy` passes that `env` does not set.
fn unset_env_warnings(policy: &EffectivePolicy, env: &BTreeMap<String, String>) -> Vec<String> {
    policy
        .env_pass
        .iter()
        .filter(|name| !env.contains_key(name.as_str()))
        .map(|name| {
            format!(
                "security_policy.env.pass: {} is not set in the invoking environment",
                name.as_str()
            )
        })
        .collect()
}

/// The process a bundle of `package` compiled with `options` runs: its
/// arguments and environment (`NAME=value`), with the compile's warnings;
/// nothing is written. A sandbox booted ahead of its execution is told
/// these when it is handed out.
pub fn process_of(
    package: &SkillPackage,
    options: &CompileOptions<'_>,
) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let (policy, flags, warnings) = resolve_for_node(package, options)?;
    let spec = spec_for(package, &policy, &flags, Path::new(bundle::SKILL_DIR), options)?;
    let process = spec.process().as_ref().ok_or(crate::Error::NoEntrypoint)?;
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    Ok((args, env, warnings))
}

/// Compiles `package` into an OCI bundle at `bundle_dir` (absent or empty).
/// The bundle is relocatable: `config.json` names the skill's copy relative
/// to the bundle, so the same skill compiles to the same `config.json` in
/// any directory.
pub fn compile(package: &SkillPackage, bundle_dir: &Path, options: &CompileOptions<'_>) -> Result<Compiled> {
    let (policy, flags, warnings) = resolve_for_node(package, options)?;
    bundle::prepare_dir(bundle_dir)?;
    bundle::copy_skill(bundle_dir, package)?;
    // Relative to the bundle (runsc resolves it so): config.json names no
    // output directory, and the bundle can move.
    let config = render_config(package, &policy, &flags, Path::new(bundle::SKILL_DIR), options)?;
    bundle::write_config(bundle_dir, &config)?;
    Ok(Compiled {
        policy,
        runsc_flags: flags,
        warnings,
    })
}

/// The bundle's `config.json` text for `policy`, with the skill's copy at
/// `skill_source` (relative to the bundle, or absolute). Pure: the
/// in-memory half of `compile`.
pub fn render_config(
    package: &SkillPackage,
    policy: &EffectivePolicy,
    flags: &RunscFlags,
    skill_source: &Path,
    options: &CompileOptions<'_>,
) -> Result<String> {
    let spec = spec_for(package, policy, flags, skill_source, options)?;
    Ok(render_spec(&spec))
}

fn spec_for(
    package: &SkillPackage,
    policy: &EffectivePolicy,
    flags: &RunscFlags,
    skill_source: &Path,
    options: &CompileOptions<'_>,
) -> Result<Spec> {
    build_spec(
        policy,
        &SpecInputs {
            skill_name: package.manifest.name.as_str(),
            skill_version: package.manifest.version.as_deref(),
            skill_digest: &package.digest,
            base_rootfs: options.base_rootfs,
            skill_source,
            extra_args: options.extra_args,
            env_values: options.env,
            cgroups_path: options.cgroups_path,
            runsc_flags: flags,
        },
    )
}
