//! `skillbox run`: compile into a temporary bundle, run it with runsc,
//! report how it ended, and leave nothing behind.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::ExitCode;

use anyhow::{bail, Context};
use policy_compiler::bundle::read_annotations;
use policy_compiler::oci::CgroupLimits;
use policy_compiler::CompileOptions;
use serde::Serialize;
use skillbox_sandbox::cgroup::ExecutionCgroup;
use skillbox_sandbox::runsc::Runsc;

use super::{base_rootfs_dir, invoking_env, load_node, load_skill, print_warnings, runsc_binary, Failure};
use crate::cli::RunArgs;
use crate::runtime::execution::{Ended, Execution, Interrupts, Outcome, Workspace, CGROUP_PARENT};
use crate::runtime::{audit, egress};
use runsc_config::NetworkMode;
use skillbox_audit::execution::Ending;

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
    let package = load_skill(&args.skill_dir)?;
    let node = load_node(&args.node)?;
    let env = invoking_env();
    let base_rootfs = base_rootfs_dir(&args.base_rootfs)?;
    let skill = package.manifest.name.as_str().to_owned();
    let id = execution_id(&skill);
    let workspace = Workspace::create(&args.runtime.state_dir, &id).with_context(|| {
        format!(
            "{}: cannot create the execution directory",
            args.runtime.state_dir.display()
        )
    })?;
    let compiled = policy_compiler::compile(
        &package,
        &workspace.bundle(),
        &CompileOptions {
            node: &node.config,
            node_config_name: &node.name,
            base_rootfs: &base_rootfs,
            extra_args: &args.args,
            env: &env,
            cgroups_path: &ExecutionCgroup::cgroups_path_for(CGROUP_PARENT, &id),
        },
    )?;
    print_warnings(&compiled.warnings);
    // From here on, run what the bundle says, exactly as a shim reading it would.
    let bundle = read_annotations(&workspace.bundle())?;
    let policy = bundle.policy.clone();
    let mut runsc_flags = bundle.runsc_flags.clone();
    // Every execution's events go to its audit log, from before runsc starts.
    let audit_log = args
        .egress
        .audit_log
        .clone()
        .unwrap_or_else(|| node.config.audit.log_dir.join(format!("{id}.jsonl")));
    let audit = audit::start(&id, &audit_log, &bundle, &node.config.audit, policy.audit)?;
    // With egress, the sandbox gets its own network namespace behind the
    // enforcement, and runsc uses that namespace's kernel stack.
    let egress = match policy.has_egress() {
        true => {
            let started = egress::start(
                &id,
                &workspace.bundle(),
                &bundle,
                &args.egress,
                &node.config.egress,
                audit.writer(),
            )?;
            runsc_flags.network = NetworkMode::Host;
            Some(started)
        }
        false => None,
    };
    let limits = CgroupLimits::for_policy(&policy, runsc_flags.platform);
    let cgroup = Execution::prepare_cgroup(&id, &limits)?;
    let mut runsc = Runsc::new(
        runsc_binary(&args.runtime, &node.config),
        workspace.runsc_root(),
        runsc_flags,
    )
    .with_panic_log(workspace.panic_log());
    if let Some(session) = audit.pod_init_config() {
        runsc = runsc.with_pod_init_config(session);
    }
    let mut execution = Execution::start(&id, runsc, cgroup, &workspace.bundle())?;
    let ended = execution.wait(policy.resources.timeout.as_duration(), &interrupts)?;
    let cgroups_path = execution.cgroups_path();
    // Tear down the sandbox and its cgroup, then its network, then close
    // the audit trail (the monitor has everything once the sandbox is gone).
    drop(execution);
    let had_egress = egress.is_some();
    drop(egress);
    audit.finish(Ending {
        status: ended.status,
        wall: Some(ended.wall),
        oom: ended.outcome == Outcome::Oom,
        timeout: (ended.outcome == Outcome::Timeout).then(|| policy.resources.timeout.as_duration()),
    });
    let audit_log = audit_log.display().to_string();
    let egress_log = had_egress.then(|| audit_log.clone());
    drop(workspace);

    if let Some(path) = &args.report {
        let report = Report {
            execution_id: &id,
            skill: &skill,
            outcome: ended.outcome,
            exit_code: ended.status,
            wall_ms: ended.wall.as_millis(),
            cpu_usage_ms: ended.stats.cpu_usage.as_millis(),
            memory_peak_bytes: ended.stats.memory_peak_bytes,
            cgroup: &cgroups_path,
            audit_log,
            egress_log,
        };
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        std::fs::write(path, json + "\n")
            .with_context(|| format!("{}: cannot write report", path.display()))?;
    }
    Ok(explain_end(&ended, &policy))
}

/// Tells the person what happened when it was not a plain exit, and picks
/// the exit code.
fn explain_end(ended: &Ended, policy: &policy_compiler::EffectivePolicy) -> ExitCode {
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
                ended.failure.as_deref().unwrap_or("no detail")
            );
            ExitCode::from(EXIT_SKILLBOX_FAILED)
        }
        Outcome::Interrupted => {
            let signal = ended.signal.unwrap_or(nix::sys::signal::SIGTERM as i32);
            eprintln!("skillbox: interrupted by signal {signal}; the sandbox was removed");
            ExitCode::from((128 + signal).clamp(0, 255) as u8)
        }
    }
}
