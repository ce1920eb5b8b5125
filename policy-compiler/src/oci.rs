//! Translates an effective policy into an OCI runtime spec for runsc.
//!
//! The spec is the whole sandbox: read-only root and code, size-capped tmpfs
//! scratch, no capabilities, a non-root user, an allow-listed environment,
//! and cgroup limits translated for gVisor (whose own threads share the
//! sandbox cgroup).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use runsc_config::{HostTaskBudget, Platform, RunscFlags};

use crate::effective::EffectivePolicy;
use crate::error::{Error, Result};
use crate::scratch_path::SKILL_MOUNT;

/// The uid and gid skills run as (`nobody`/`nogroup` on Debian).
pub const SANDBOX_UID: u32 = 65534;
pub const SANDBOX_GID: u32 = 65534;
/// The PATH and HOME every skill gets.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
pub const SANDBOX_HOME: &str = "/tmp";
/// The CFS period used to express CPU quotas.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Open files per process.
pub const MAX_OPEN_FILES: u64 = 1024;

/// Annotation keys the compiler writes and the runtime reads back.
pub mod annotations {
    pub const SKILL_NAME: &str = "io.skillbox.skill.name";
    pub const SKILL_VERSION: &str = "io.skillbox.skill.version";
    pub const SKILL_DIGEST: &str = "io.skillbox.skill.digest";
    /// The effective policy as JSON: what the runtime enforces.
    pub const POLICY: &str = "io.skillbox.policy";
    /// The runsc flags as JSON (`runsc_config::RunscFlags`).
    pub const RUNSC_FLAGS: &str = "io.skillbox.runsc.flags";
}

/// Everything the spec depends on besides the policy.
#[derive(Debug, Clone)]
pub struct SpecInputs<'a> {
    pub skill_name: &'a str,
    pub skill_version: Option<&'a str>,
    pub skill_digest: &'a str,
    /// Absolute path of the base root filesystem (mounted read-only as `/`).
    pub base_rootfs: &'a Path,
    /// The skill's copy (mounted at `/skill`): relative to the bundle
    /// (`skill`, as `compile` writes it), or absolute.
    pub skill_source: &'a Path,
    /// Arguments appended to the entrypoint.
    pub extra_args: &'a [String],
    /// Values for the names in `env_pass`, taken from the invoking environment.
    pub env_values: &'a BTreeMap<String, String>,
    /// The cgroup the sandbox is placed in (`None`: the runtime's choice).
    pub cgroups_path: Option<&'a str>,
    pub runsc_flags: &'a RunscFlags,
}

/// The sandbox cgroup's limits, shared by the spec and by runtimes that
/// create the cgroup themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_bytes: i64,
    pub cpu_quota_us: i64,
    pub cpu_period_us: u64,
    /// The skill's quota plus gVisor's own threads (see `HostTaskBudget`).
    pub pids: i64,
}

impl CgroupLimits {
    pub fn for_policy(policy: &EffectivePolicy, platform: Platform) -> CgroupLimits {
        let resources = &policy.resources;
        CgroupLimits {
            memory_bytes: i64::try_from(resources.memory.bytes()).unwrap_or(i64::MAX),
            cpu_quota_us: i64::try_from(resources.cpus.millis() * CPU_PERIOD_US / 1_000).unwrap_or(i64::MAX),
            cpu_period_us: CPU_PERIOD_US,
            pids: HostTaskBudget::for_platform(platform).cgroup_pids_limit(resources.pids.get()),
        }
    }
}

fn spec_error(source: oci_spec::OciSpecError) -> Error {
    Error::BuildSpec { source }
}

fn mount(destination: &str, typ: &str, source: &Path, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_error)
}

/// The sandbox's mounts. gVisor adds a writable, uncapped tmpfs at `/tmp`
/// and a sysfs at `/sys` when the spec has none, so both are always listed:
/// `/tmp` read-only unless the policy makes it writable, `/sys` read-only.
fn mounts(policy: &EffectivePolicy, skill_source: &Path) -> Result<Vec<Mount>> {
    let mut mounts = vec![
        mount("/proc", "proc", Path::new("proc"), &["nosuid", "noexec", "nodev"])?,
        mount(
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            &["ro", "nosuid", "noexec", "nodev"],
        )?,
        mount(
            SKILL_MOUNT,
            "bind",
            skill_source,
            &["rbind", "ro", "nosuid", "nodev"],
        )?,
    ];
    if !policy.writable.iter().any(|dir| dir.path.as_str() == "/tmp") {
        mounts.push(mount(
            "/tmp",
            "tmpfs",
            Path::new("tmpfs"),
            &["ro", "nosuid", "nodev", "noexec"],
        )?);
    }
    for dir in &policy.writable {
        let size = format!("size={}", dir.size.bytes());
        mounts.push(mount(
            dir.path.as_str(),
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "nodev", "mode=1777", &size],
        )?);
    }
    Ok(mounts)
}

fn environment(policy: &EffectivePolicy, values: &BTreeMap<String, String>) -> Vec<String> {
    let mut env = vec![format!("PATH={SANDBOX_PATH}"), format!("HOME={SANDBOX_HOME}")];
    for name in &policy.env_pass {
        if let Some(value) = values.get(name.as_str()) {
            env.push(format!("{}={value}", name.as_str()));
        }
    }
    env
}

/// Builds the runtime spec. Deterministic: the same inputs give the same spec.
pub fn build_spec(policy: &EffectivePolicy, inputs: &SpecInputs<'_>) -> Result<Spec> {
    let mut args = policy.entrypoint.clone();
    args.extend(inputs.extra_args.iter().cloned());
    if args.is_empty() {
        return Err(Error::NoEntrypoint);
    }
    let nproc = u64::from(policy.resources.pids.get());
    let no_capabilities = || HashSet::new();
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(SANDBOX_UID)
                .gid(SANDBOX_GID)
                .additional_gids(Vec::<u32>::new())
                .build()
                .map_err(spec_error)?,
        )
        .args(args)
        .env(environment(policy, inputs.env_values))
        .cwd(SKILL_MOUNT)
        .no_new_privileges(true)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(no_capabilities())
                .effective(no_capabilities())
                .inheritable(no_capabilities())
                .permitted(no_capabilities())
                .ambient(no_capabilities())
                .build()
                .map_err(spec_error)?,
        )
        .rlimits(vec![
            // gVisor enforces RLIMIT_NPROC itself: this is the skill's own
            // process quota, separate from the sandbox cgroup's pids limit.
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNproc)
                .soft(nproc)
                .hard(nproc)
                .build()
                .map_err(spec_error)?,
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(MAX_OPEN_FILES)
                .hard(MAX_OPEN_FILES)
                .build()
                .map_err(spec_error)?,
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitCore)
                .soft(0u64)
                .hard(0u64)
                .build()
                .map_err(spec_error)?,
        ])
        .build()
        .map_err(spec_error)?;

    let limits = CgroupLimits::for_policy(policy, inputs.runsc_flags.platform);
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|typ| {
        LinuxNamespaceBuilder::default()
            .typ(typ)
            .build()
            .map_err(spec_error)
    })
    .collect::<Result<Vec<_>>>()?;
    let mut linux = LinuxBuilder::default();
    if let Some(path) = inputs.cgroups_path {
        linux = linux.cgroups_path(PathBuf::from(path));
    }
    let linux = linux
        .namespaces(namespaces)
        .resources(
            LinuxResourcesBuilder::default()
                .devices(Vec::new())
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(limits.memory_bytes)
                        // Equal to the limit: no swap on top of it.
                        .swap(limits.memory_bytes)
                        .build()
                        .map_err(spec_error)?,
                )
                .cpu(
                    LinuxCpuBuilder::default()
                        .quota(limits.cpu_quota_us)
                        .period(limits.cpu_period_us)
                        .build()
                        .map_err(spec_error)?,
                )
                .pids(
                    LinuxPidsBuilder::default()
                        .limit(limits.pids)
                        .build()
                        .map_err(spec_error)?,
                )
                .build()
                .map_err(spec_error)?,
        )
        .build()
        .map_err(spec_error)?;

    let mut annotations = HashMap::new();
    annotations.insert(annotations::SKILL_NAME.to_owned(), inputs.skill_name.to_owned());
    if let Some(version) = inputs.skill_version {
        annotations.insert(annotations::SKILL_VERSION.to_owned(), version.to_owned());
    }
    annotations.insert(
        annotations::SKILL_DIGEST.to_owned(),
        inputs.skill_digest.to_owned(),
    );
    annotations.insert(
        annotations::POLICY.to_owned(),
        serde_json::to_string(policy).expect("the effective policy serializes"),
    );
    annotations.insert(
        annotations::RUNSC_FLAGS.to_owned(),
        serde_json::to_string(inputs.runsc_flags).expect("runsc flags serialize"),
    );

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(inputs.base_rootfs)
                .readonly(true)
                .build()
                .map_err(spec_error)?,
        )
        .hostname(inputs.skill_name)
        .mounts(mounts(policy, inputs.skill_source)?)
        .process(process)
        .linux(linux)
        .annotations(annotations)
        .build()
        .map_err(spec_error)
}

/// Renders a spec as pretty JSON with sorted keys, so that output is
/// byte-identical across runs even though the spec holds hash maps.
pub fn render_spec(spec: &Spec) -> String {
    let value = serde_json::to_value(spec).expect("an OCI spec serializes");
    let mut text = serde_json::to_string_pretty(&value).expect("a JSON value serializes");
    text.push('\n');
    text
}
