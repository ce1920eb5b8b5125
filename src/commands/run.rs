//! `skillbox run`: compile into a temporary bundle, run it with runsc,
//! report how it ended, and leave nothing behind.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::ExitCode;

use anyhow::{bail, Context};
use policy_compiler::CompileOptions;
use serde::Serialize;
use skillbox_audit::{SandboxIdentity, SkillIdentity};
use skillbox_sandbox::record::{RunscRecord, TeardownRecord};
use skillbox_sandbox::runsc::Runsc;
use skillbox_sandbox::{BundleSpec, Ended, Outcome, Sandbox, SandboxConfig};

use super::{base_rootfs_dir, invoking_env, load_node, load_skill, print_warnings, runsc_binary, Failure};
use crate::cli::RunArgs;
use crate::runtime::egress;
use crate::runtime::execution::{Execution, Interrupts, Waited, Workspace};
use crate::runtime::{inputs, outputs};

/// The cgroup every execution's own cgroup is placed under.
const CGROUP_PARENT: &str = "skillbox";

/// skillbox failed before or around the run (as `docker run` does).
const EXIT_SKILLBOX_FAILED: u8 = 125;
/// The timeout fired (as `timeout(1)` does).
const EXIT_TIMEOUT: u8 = 124;

#[derive(Serialize)]
struct Report<'a> {
    execution_id: &'a str,
    skill: &'a str,
    outcome: Outcome,
    exit_code: i32,
    wall_ms: u128,
    cpu_usage_ms: u128,
    memory_peak_bytes: u64,
    cgroup: &'a str,
    /// The execution's audit log (JSON Lines): lifecycle, syscall and
    /// egress events.
    audit_log: String,
    /// The same file, named for egress, when the sandbox had egress.
    #[serde(skip_serializing_if = "Option::is_none")]
    egress_log: Option<String>,
    /// What was copied out of `/workspace/out` (`--output`).
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<OutputsReport>,
}

#[derive(Serialize)]
struct OutputsReport {
    dir: String,
    files: u64,
    bytes: u64,
}

/// A short random execution id: `<skill>-<16 hex digits>`.
fn execution_id(skill: &str) -> String {
    let random = RandomState::new().build_hasher().finish() ^ u64::from(std::process::id());
    format!("{skill}-{random:016x}")
}

fn skillbox_failed(error: anyhow::Error) -> Failure {
    Failure {
        error,
        exit_code: ExitCode::from(EXIT_SKILLBOX_FAILED),
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    prepare_and_run(args).map_err(skillbox_failed)
}

fn prepare_and_run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let interrupts = Interrupts::install()?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("skillbox run needs root: it starts runsc and creates the sandbox's cgroup");
    }
    super::gc::collect_quietly(&args.runtime.state.state_dir);
    if let Some(dir) = &args.output {
        outputs::check_destination(dir)?;
    }
    let package = load_skill(&args.skill_dir)?;
    let node = load_node(&args.node)?;
    let env = invoking_env();
    let base_rootfs = base_rootfs_dir(&args.base_rootfs)?;
    let skill = package.manifest.name.as_str().to_owned();
    let id = execution_id(&skill);
    let workspace = Workspace::create(&args.runtime.state.state_dir, &id).with_context(|| {
        format!(
            "{}: cannot create the execution directory",
            args.runtime.state.state_dir.display()
        )
    })?;
    // Recorded before anything is made in it: a skillbox killed from here
    // on leaves a record for `skillbox gc`.
    let runsc_binary = runsc_binary(&args.runtime, &node.config);
    let mut early = TeardownRecord::new(
        &id,
        RunscRecord {
            binary: runsc_binary.clone(),
            root: workspace.runsc_root(),
            flags: Default::default(),
            bundle: workspace.bundle(),
        },
    );
    early.directory = Some(workspace.path().to_owned());
    early.save(&workspace.record())?;
    let cgroups_path = format!("/{CGROUP_PARENT}/{id}");
    let compiled = policy_compiler::compile(
        &package,
        &workspace.bundle(),
        &CompileOptions {
            node: &node.config,
            node_config_name: &node.name,
            base_rootfs: &base_rootfs,
            extra_args: &args.args,
            env: &env,
            cgroups_path: Some(&cgroups_path),
        },
    )?;
    print_warnings(&compiled.warnings);
    // From here on, run what the bundle says, exactly as a shim reading it would.
    let mut spec = BundleSpec::load(&workspace.bundle())?;
    let bundle = spec.compiled()?;
    let policy = bundle.policy.clone();
    let scratch = workspace_mounts(&args, &policy, &workspace, &mut spec, &mut early)?;
    // Every execution's events go to its audit log, from before runsc starts.
    let audit_log = args
        .egress
        .audit_log
        .clone()
        .unwrap_or_else(|| node.config.audit.log_dir.join(format!("{id}.jsonl")));
    let egress = match policy.has_egress() {
        true => Some(egress::settings(
            &args.egress,
            &node.config.egress,
            &policy.network,
        )?),
        false => None,
    };
    // Execution ids are `<skill>-<16 hex digits>`: the digits are unique.
    let key = format!("run-{}", &id[id.len().saturating_sub(16)..]);
    let runsc = Runsc::new(runsc_binary, workspace.runsc_root(), bundle.runsc_flags.clone())
        .with_panic_log(workspace.panic_log());
    let sandbox = Sandbox::prepare(
        SandboxConfig {
            id: &id,
            key: &key,
            runtime: "skillbox-run",
            identity: SandboxIdentity {
                execution_id: id.clone(),
                skill: SkillIdentity {
                    name: bundle.skill_name.clone(),
                    version: bundle.skill_version.clone(),
                    digest: Some(bundle.skill_digest.clone()),
                },
                container_id: id.clone(),
            },
            policy: &policy,
            runsc,
            audit: &node.config.audit,
            audit_log: &audit_log,
            egress,
            resolv_conf: workspace.resolv_conf(),
            record: workspace.record(),
            mounts: early.mounts.clone(),
            directory: Some(workspace.path().to_owned()),
        },
        &mut spec,
    )?;
    let waited = Execution::start(&sandbox, &workspace.bundle())?.wait(&interrupts)?;
    let ended = sandbox.end(waited.ending, Some(waited.wall));
    // Before the teardown unmounts the scratch.
    let collected = match (&scratch, &args.output) {
        (Some(scratch), Some(dir)) => Some(scratch.collect(dir)),
        _ => None,
    };
    drop(scratch);
    let cgroups_path = sandbox.cgroups_path().unwrap_or(cgroups_path);
    let had_egress = sandbox.network().is_some();
    for failure in sandbox.teardown() {
        eprintln!("skillbox: warning: {failure} (`skillbox gc` tries again)");
    }
    let audit_log = audit_log.display().to_string();
    let egress_log = had_egress.then(|| audit_log.clone());
    drop(workspace);

    if let Some(path) = &args.report {
        let report = Report {
            execution_id: &id,
            skill: &skill,
            outcome: ended.outcome,
            exit_code: ended.status,
            wall_ms: waited.wall.as_millis(),
            cpu_usage_ms: ended.stats.cpu_usage.as_millis(),
            memory_peak_bytes: ended.stats.memory_peak_bytes,
            cgroup: &cgroups_path,
            audit_log,
            egress_log,
            outputs: match (&collected, &args.output) {
                (Some(Ok(copied)), Some(dir)) => Some(OutputsReport {
                    dir: dir.display().to_string(),
                    files: copied.files,
                    bytes: copied.bytes,
                }),
                _ => None,
            },
        };
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        std::fs::write(path, json + "\n")
            .with_context(|| format!("{}: cannot write report", path.display()))?;
    }
    if let Some(Err(err)) = collected {
        return Err(err);
    }
    Ok(explain_end(&ended, &waited, &policy))
}

/// `--input` and `--output`: the inputs staged and bound read-only at
/// `/workspace/in`, the output tmpfs mounted (and recorded for the
/// teardown) and bound at `/workspace/out`.
fn workspace_mounts(
    args: &RunArgs,
    policy: &policy_compiler::EffectivePolicy,
    workspace: &Workspace,
    spec: &mut BundleSpec,
    record: &mut TeardownRecord,
) -> anyhow::Result<Option<outputs::Scratch>> {
    if policy
        .writable
        .iter()
        .any(|dir| dir.path.as_str() == inputs::INPUT_DIR)
        && !args.inputs.is_empty()
    {
        bail!(
            "--input: the skill's policy declares {} writable (security_policy.filesystem.writable); \
             inputs are mounted there read-only",
            inputs::INPUT_DIR
        );
    }
    if !args.inputs.is_empty() {
        let staging = workspace.path().join("in");
        inputs::stage(&args.inputs, &staging)?;
        spec.bind_mount(inputs::INPUT_DIR, &staging, true);
    }
    let Some(_) = &args.output else {
        return Ok(None);
    };
    let declared = policy
        .writable
        .iter()
        .find(|dir| dir.path.as_str() == outputs::OUTPUT_DIR)
        .with_context(|| {
            format!(
                "--output needs the skill's policy to declare {} in security_policy.filesystem.writable, with a size",
                outputs::OUTPUT_DIR
            )
        })?;
    let user = &spec.value()["process"]["user"];
    let id = |key: &str| {
        user[key]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0)
    };
    let (uid, gid) = (id("uid"), id("gid"));
    let path = workspace.path().join("out");
    // Recorded before it is mounted: a killed run leaves it for `skillbox gc`.
    record.mounts.push(path.clone());
    record.save(&workspace.record())?;
    let scratch = outputs::Scratch::mount(&path, declared.size.bytes(), uid, gid)?;
    spec.bind_mount(outputs::OUTPUT_DIR, scratch.path(), false);
    Ok(Some(scratch))
}

/// Tells the person what happened when it was not a plain exit, and picks
/// the exit code.
fn explain_end(ended: &Ended, waited: &Waited, policy: &policy_compiler::EffectivePolicy) -> ExitCode {
    let resources = &policy.resources;
    match ended.outcome {
        Outcome::Exited => ExitCode::from(ended.status.clamp(0, 255) as u8),
        Outcome::Oom => {
            eprintln!(
                "skillbox: out of memory: the sandbox exceeded its memory limit of {} and was killed (status 137)",
                resources.memory
            );
            ExitCode::from(137)
        }
        Outcome::Timeout => {
            eprintln!(
                "skillbox: timeout of {} fired; the sandbox was killed",
                resources.timeout
            );
            ExitCode::from(EXIT_TIMEOUT)
        }
        Outcome::SandboxFailed => {
            eprintln!(
                "skillbox: the sandbox failed, not the skill (runsc exited {}): {}",
                ended.status,
                waited.failure.as_deref().unwrap_or("no detail")
            );
            ExitCode::from(EXIT_SKILLBOX_FAILED)
        }
        Outcome::Killed => {
            let signal = waited.signal.unwrap_or(nix::sys::signal::SIGTERM as i32);
            eprintln!("skillbox: interrupted by signal {signal}; the sandbox was removed");
            ExitCode::from((128 + signal).clamp(0, 255) as u8)
        }
    }
}
