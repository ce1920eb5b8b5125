//! `skillbox run`: compile into a temporary bundle, run it with runsc,
//! report how it ended, and leave nothing behind.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::{bail, Context};
use policy_compiler::{CompileOptions, EffectivePolicy, SkillPackage};
use runsc_config::NetworkMode;
use serde::{Deserialize, Serialize};
use skillbox_audit::{SandboxIdentity, SkillIdentity};
use skillbox_sandbox::record::{RunscRecord, TeardownRecord};
use skillbox_sandbox::runsc::Runsc;
use skillbox_sandbox::{BundleSpec, Ended, Outcome, Sandbox, SandboxConfig};

use super::{
    base_rootfs_dir, invoking_env, load_node, load_skill, print_warnings, resolve_platform, runsc_binary,
    Failure, Node,
};
use crate::cli::{EgressArgs, RunArgs, RuntimeArgs};
use crate::runtime::execution::{Execution, Interrupts, Waited, Workspace};
use crate::runtime::inputs::{stage as stage_inputs, INPUT_DIR};
use crate::runtime::outputs;

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
    wall_ms: u64,
    cpu_usage_ms: u64,
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
    /// Whether a pre-booted sandbox of the pool served the run.
    pooled: bool,
}

#[derive(Serialize)]
struct OutputsReport {
    dir: String,
    files: u64,
    bytes: u64,
}

/// How a `skillbox run` went, as its report and its exit status tell it;
/// the same whether it ran here or in a pre-booted sandbox of the pool
/// (which sends it over its socket).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RunSummary {
    pub execution_id: String,
    pub skill: String,
    pub outcome: Outcome,
    pub status: i32,
    pub wall_ms: u64,
    pub cpu_usage_ms: u64,
    pub memory_peak_bytes: u64,
    pub cgroup: String,
    pub audit_log: PathBuf,
    pub had_egress: bool,
    /// The signal that interrupted the run, if any.
    pub signal: Option<i32>,
    /// The crash line of runsc's panic log, when the sandbox failed.
    pub failure: Option<String>,
    /// What `--output` copied, or why it copied nothing.
    pub outputs: Option<Result<outputs::Copied, String>>,
    /// The policy's limits, for the explanation of an OOM or a timeout.
    pub memory_limit: String,
    pub timeout: String,
}

impl RunSummary {
    pub fn of(done: &Executed) -> RunSummary {
        RunSummary {
            execution_id: done.id.clone(),
            skill: done.skill.clone(),
            outcome: done.ended.outcome,
            status: done.ended.status,
            wall_ms: done.waited.wall.as_millis() as u64,
            cpu_usage_ms: done.ended.stats.cpu_usage.as_millis() as u64,
            memory_peak_bytes: done.ended.stats.memory_peak_bytes,
            cgroup: done.cgroups_path.clone(),
            audit_log: done.audit_log.clone(),
            had_egress: done.had_egress,
            signal: done.waited.signal,
            failure: done.waited.failure.clone(),
            outputs: done
                .outputs
                .as_ref()
                .map(|copied| copied.as_ref().copied().map_err(|err| format!("{err:#}"))),
            memory_limit: done.policy.resources.memory.to_string(),
            timeout: done.policy.resources.timeout.to_string(),
        }
    }
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
    let mut node = load_node(&args.node)?;
    let runsc = runsc_binary(&args.runtime, &node.config);
    let pooled = match args.pool.socket() {
        Some(socket) => crate::pool::client::run(&socket, &args, &runsc, &interrupts)?,
        None => None,
    };
    let (summary, pooled) = match pooled {
        Some(summary) => (summary, true),
        None => {
            let package = load_skill(&args.skill_dir)?;
            resolve_platform(&mut node, &runsc);
            let base_rootfs = base_rootfs_dir(&args.base_rootfs)?;
            let done = execute(
                Plan {
                    package,
                    node: &node,
                    base_rootfs: &base_rootfs,
                    args: &args.args,
                    inputs: &args.inputs,
                    output: args.output.as_deref(),
                    egress: &args.egress,
                    runtime: &args.runtime,
                    stdio: None,
                    observe: false,
                    preboot: None,
                },
                &interrupts,
            )?;
            (RunSummary::of(&done), false)
        }
    };
    if let Some(path) = &args.report {
        write_report(path, &summary, args.output.as_deref(), pooled)?;
    }
    if let Some(Err(err)) = &summary.outputs {
        bail!("{err}");
    }
    Ok(explain_end(&summary))
}

fn write_report(
    path: &Path,
    summary: &RunSummary,
    output: Option<&Path>,
    pooled: bool,
) -> anyhow::Result<()> {
    let audit_log = summary.audit_log.display().to_string();
    let report = Report {
        execution_id: &summary.execution_id,
        skill: &summary.skill,
        outcome: summary.outcome,
        exit_code: summary.status,
        wall_ms: summary.wall_ms,
        cpu_usage_ms: summary.cpu_usage_ms,
        memory_peak_bytes: summary.memory_peak_bytes,
        cgroup: &summary.cgroup,
        egress_log: summary.had_egress.then(|| audit_log.clone()),
        audit_log,
        outputs: match (&summary.outputs, output) {
            (Some(Ok(copied)), Some(dir)) => Some(OutputsReport {
                dir: dir.display().to_string(),
                files: copied.files,
                bytes: copied.bytes,
            }),
            _ => None,
        },
        pooled,
    };
    let json = serde_json::to_string_pretty(&report).expect("the report serializes");
    std::fs::write(path, json + "\n").with_context(|| format!("{}: cannot write report", path.display()))
}

/// One execution, as `run` and `scan` make it.
pub(crate) struct Plan<'a> {
    pub package: SkillPackage,
    pub node: &'a Node,
    pub base_rootfs: &'a Path,
    /// Appended to the entrypoint.
    pub args: &'a [String],
    pub inputs: &'a [PathBuf],
    pub output: Option<&'a Path>,
    pub egress: &'a EgressArgs,
    pub runtime: &'a RuntimeArgs,
    /// The skill's stdin, stdout and stderr; `None`: skillbox's own.
    pub stdio: Option<[Stdio; 3]>,
    /// Run as a scan does: on the observing network (every name answered
    /// from a sinkhole, every connection recorded and judged, nothing let
    /// out), each writable directory a host tmpfs measured at the end.
    pub observe: bool,
    /// Boot the sandbox ahead of its execution, waiting in the launcher.
    pub preboot: Option<Preboot<'a>>,
}

/// What a sandbox booted before its execution is known needs: the
/// launcher it waits in, and the mounts its inputs and output will use.
#[derive(Clone, Copy)]
pub(crate) struct Preboot<'a> {
    /// The host directory holding `skillbox-launch`.
    pub launcher_dir: &'a Path,
    /// Inputs will be staged into `/workspace/in` when it is handed out.
    pub inputs: bool,
    /// `/workspace/out` will be collected.
    pub output: bool,
}

/// Where a pre-booted sandbox sees the launcher's directory.
pub(crate) const LAUNCHER_DIR_IN_SANDBOX: &str = "/.skillbox";
/// The launcher, as the pre-booted sandbox's process runs it.
pub(crate) const LAUNCHER_IN_SANDBOX: &str = "/.skillbox/skillbox-launch";

/// How one execution went; the sandbox is gone.
pub(crate) struct Executed {
    pub id: String,
    pub skill: String,
    pub ended: Ended,
    pub waited: Waited,
    pub policy: EffectivePolicy,
    pub audit_log: PathBuf,
    pub cgroups_path: String,
    pub had_egress: bool,
    /// What `--output` copied, or why it copied nothing.
    pub outputs: Option<anyhow::Result<outputs::Copied>>,
    /// Observed: the sandbox's packets that left the node's namespace.
    pub packets_left: Option<u64>,
    /// Observed: the bytes in use in each writable directory at the end.
    pub scratch_used: BTreeMap<String, u64>,
}

/// Compiles the skill into a temporary bundle, runs it to its end in a
/// sandbox, and removes everything it made.
pub(super) fn execute(mut plan: Plan, interrupts: &Interrupts) -> anyhow::Result<Executed> {
    let given_stdio = plan.stdio.take();
    let output = plan.output;
    let prepared = prepare(plan)?;
    print_warnings(&prepared.warnings);
    let (stdio, relays) = match given_stdio {
        Some(given) => (given, None),
        None => {
            let (stdio, relays) =
                crate::runtime::stdio::with_relays().context("cannot set up the skill's stdio")?;
            (stdio, Some(relays))
        }
    };
    let waited = Execution::start(&prepared.sandbox, &prepared.bundle(), Some(stdio))?.wait(interrupts)?;
    if let Some(relays) = relays {
        relays.finish();
    }
    prepared.finish(waited, output)
}

/// An execution's sandbox made and its bundle written, not started yet.
/// Fields drop in order: the mounts, the sandbox (its teardown), the
/// execution directory.
pub(crate) struct Prepared {
    pub id: String,
    pub skill: String,
    pub policy: EffectivePolicy,
    /// The compiler's warnings, for whoever started the execution.
    pub warnings: Vec<String>,
    pub audit_log: PathBuf,
    cgroups_path: String,
    observe: bool,
    mounted: Mounted,
    pub sandbox: Sandbox,
    workspace: Workspace,
}

/// Compiles the skill into the execution's bundle and makes its sandbox
/// (audit trail, egress, cgroup, mounts), ready for `runsc run`.
pub(crate) fn prepare(plan: Plan) -> anyhow::Result<Prepared> {
    let Plan {
        package,
        node,
        base_rootfs,
        args,
        inputs,
        output,
        egress,
        runtime,
        stdio: _,
        observe,
        preboot,
    } = plan;
    let env = invoking_env();
    let skill = package.manifest.name.as_str().to_owned();
    let id = execution_id(&skill);
    let workspace = Workspace::create(&runtime.state.state_dir, &id).with_context(|| {
        format!(
            "{}: cannot create the execution directory",
            runtime.state.state_dir.display()
        )
    })?;
    // Recorded before anything is made in it: a skillbox killed from here
    // on leaves a record for `skillbox gc`.
    let runsc_binary = runsc_binary(runtime, &node.config);
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
            base_rootfs,
            extra_args: args,
            env: &env,
            cgroups_path: Some(&cgroups_path),
        },
    )?;
    // From here on, run what the bundle says, exactly as a shim reading it would.
    let mut spec = BundleSpec::load(&workspace.bundle())?;
    let bundle = spec.compiled()?;
    let policy = bundle.policy.clone();
    if let Some(preboot) = &preboot {
        spec.value_mut()["process"]["args"] = serde_json::json!([LAUNCHER_IN_SANDBOX]);
        // Read-only, but executable: it is the sandbox's first program.
        spec.bind_mount_with(
            LAUNCHER_DIR_IN_SANDBOX,
            preboot.launcher_dir,
            &["rbind", "ro", "nosuid", "nodev"],
        );
    }
    let mounted = workspace_mounts(
        &Staged {
            inputs,
            inputs_later: preboot.is_some_and(|preboot| preboot.inputs),
            output: output.is_some() || preboot.is_some_and(|preboot| preboot.output),
            measure_writable: observe,
        },
        &policy,
        &workspace,
        &mut spec,
        &mut early,
    )?;
    // Every execution's events go to its audit log, from before runsc starts.
    let audit_log = egress
        .audit_log
        .clone()
        .unwrap_or_else(|| node.config.audit.log_dir.join(format!("{id}.jsonl")));
    let egress_settings = match policy.has_egress() && !observe {
        true => Some(crate::runtime::egress::settings(
            egress,
            &node.config.egress,
            &policy.network,
        )?),
        false => None,
    };
    // Execution ids are `<skill>-<16 hex digits>`: the digits are unique.
    let key = format!("run-{}", &id[id.len().saturating_sub(16)..]);
    let mut flags = bundle.runsc_flags.clone();
    if observe {
        // The observing network is the sandbox namespace's kernel stack.
        flags.network = NetworkMode::Host;
    }
    let runsc = Runsc::new(runsc_binary, workspace.runsc_root(), flags).with_panic_log(workspace.panic_log());
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
            egress: egress_settings,
            observe_network: observe,
            resolv_conf: workspace.resolv_conf(),
            record: workspace.record(),
            mounts: early.mounts.clone(),
            directory: Some(workspace.path().to_owned()),
        },
        &mut spec,
    )?;
    Ok(Prepared {
        id,
        skill,
        policy,
        warnings: compiled.warnings,
        audit_log,
        cgroups_path,
        observe,
        mounted,
        sandbox,
        workspace,
    })
}

impl Prepared {
    pub fn bundle(&self) -> PathBuf {
        self.workspace.bundle()
    }

    /// Where inputs handed to a pre-booted sandbox are staged (bound at
    /// `/workspace/in`).
    pub fn inputs_staging(&self) -> PathBuf {
        self.workspace.path().join(INPUTS_STAGING)
    }

    /// Ends the execution that `runsc run` `waited` for: decides the
    /// outcome, copies `/workspace/out` into `output`, measures what an
    /// observed run wrote, and removes everything.
    pub fn finish(self, waited: Waited, output: Option<&Path>) -> anyhow::Result<Executed> {
        let Prepared {
            id,
            skill,
            policy,
            audit_log,
            cgroups_path,
            observe,
            mounted,
            sandbox,
            workspace,
            ..
        } = self;
        // Before `end` stops the egress session.
        let packets_left = match observe {
            true => sandbox.packets_left().transpose(),
            false => Ok(None),
        };
        let ended = sandbox.end(waited.ending, Some(waited.wall));
        // Before the teardown unmounts the scratch.
        let outputs = match (&mounted.output, output) {
            (Some(scratch), Some(dir)) => Some(scratch.collect(dir)),
            _ => None,
        };
        let scratch_used = mounted
            .measured
            .iter()
            .map(|(dir, scratch)| Ok((dir.clone(), scratch.used_bytes()?)))
            .collect::<anyhow::Result<BTreeMap<_, _>>>();
        drop(mounted);
        let cgroups_path = sandbox.cgroups_path().unwrap_or(cgroups_path);
        let had_egress = sandbox.network().is_some();
        for failure in sandbox.teardown() {
            eprintln!("skillbox: warning: {failure} (`skillbox gc` tries again)");
        }
        drop(workspace);
        let packets_left = packets_left.context("cannot read the count of packets that left the sandbox")?;
        let scratch_used = scratch_used?;
        Ok(Executed {
            id,
            skill,
            ended,
            waited,
            policy,
            audit_log,
            cgroups_path,
            had_egress,
            outputs,
            packets_left,
            scratch_used,
        })
    }
}

/// Tells the person what happened when it was not a plain exit, and picks
/// the exit code.
fn explain_end(summary: &RunSummary) -> ExitCode {
    match summary.outcome {
        Outcome::Exited => ExitCode::from(summary.status.clamp(0, 255) as u8),
        Outcome::Oom => {
            eprintln!(
                "skillbox: out of memory: the sandbox exceeded its memory limit of {} and was killed (status 137)",
                summary.memory_limit
            );
            ExitCode::from(137)
        }
        Outcome::Timeout => {
            eprintln!(
                "skillbox: timeout of {} fired; the sandbox was killed",
                summary.timeout
            );
            ExitCode::from(EXIT_TIMEOUT)
        }
        Outcome::SandboxFailed => {
            eprintln!(
                "skillbox: the sandbox failed, not the skill (runsc exited {}): {}",
                summary.status,
                summary.failure.as_deref().unwrap_or("no detail")
            );
            ExitCode::from(EXIT_SKILLBOX_FAILED)
        }
        Outcome::Killed => {
            let signal = summary.signal.unwrap_or(nix::sys::signal::SIGTERM as i32);
            eprintln!("skillbox: interrupted by signal {signal}; the sandbox was removed");
            ExitCode::from((128 + signal).clamp(0, 255) as u8)
        }
    }
}

/// The directory of an execution's inputs, bound at `/workspace/in`.
const INPUTS_STAGING: &str = "in";

/// What an execution mounts from the host besides the skill.
struct Staged<'a> {
    inputs: &'a [PathBuf],
    /// An empty `/workspace/in`, for inputs staged once the sandbox runs.
    inputs_later: bool,
    /// `/workspace/out` on a host tmpfs, collected at the end.
    output: bool,
    /// Each writable directory (but the output's) a host tmpfs, so its use
    /// can be measured.
    measure_writable: bool,
}

/// The host tmpfs an execution mounted; unmounted on drop.
struct Mounted {
    output: Option<outputs::Scratch>,
    /// Writable directories, by their path in the sandbox.
    measured: Vec<(String, outputs::Scratch)>,
}

/// `--input` and `--output`: the inputs staged and bound read-only at
/// `/workspace/in`, the output tmpfs mounted (and recorded for the
/// teardown) and bound at `/workspace/out`; and for a scan each writable
/// directory on a host tmpfs of its size.
fn workspace_mounts(
    staged: &Staged,
    policy: &EffectivePolicy,
    workspace: &Workspace,
    spec: &mut BundleSpec,
    record: &mut TeardownRecord,
) -> anyhow::Result<Mounted> {
    let measured = match staged.measure_writable {
        true => measured_writable(policy, workspace, spec, record)?,
        false => Vec::new(),
    };
    let output = staged_io(staged, policy, workspace, spec, record)?;
    Ok(Mounted { output, measured })
}

/// Each writable directory but the output's as a host tmpfs of its size,
/// sticky and writable by all as the compiled tmpfs is; recorded for the
/// teardown before it is mounted.
fn measured_writable(
    policy: &EffectivePolicy,
    workspace: &Workspace,
    spec: &mut BundleSpec,
    record: &mut TeardownRecord,
) -> anyhow::Result<Vec<(String, outputs::Scratch)>> {
    let mut measured = Vec::new();
    let dirs = policy
        .writable
        .iter()
        .filter(|dir| dir.path.as_str() != outputs::OUTPUT_DIR);
    for (index, dir) in dirs.enumerate() {
        let path = workspace.path().join(format!("writable-{index}"));
        record.mounts.push(path.clone());
        record.save(&workspace.record())?;
        let scratch = outputs::Scratch::mount(&path, dir.size.bytes(), outputs::ScratchOwner::Shared)?;
        spec.bind_mount_with(
            dir.path.as_str(),
            scratch.path(),
            &["rbind", "rw", "nosuid", "nodev"],
        );
        measured.push((dir.path.as_str().to_owned(), scratch));
    }
    Ok(measured)
}

fn staged_io(
    staged: &Staged,
    policy: &EffectivePolicy,
    workspace: &Workspace,
    spec: &mut BundleSpec,
    record: &mut TeardownRecord,
) -> anyhow::Result<Option<outputs::Scratch>> {
    let wants_inputs = !staged.inputs.is_empty() || staged.inputs_later;
    if policy.writable.iter().any(|dir| dir.path.as_str() == INPUT_DIR) && wants_inputs {
        bail!(
            "--input: the skill's policy declares {INPUT_DIR} writable (security_policy.filesystem.writable); \
             inputs are mounted there read-only"
        );
    }
    if wants_inputs {
        let staging = workspace.path().join(INPUTS_STAGING);
        match staged.inputs_later {
            true => std::fs::create_dir(&staging)
                .with_context(|| format!("{}: cannot create", staging.display()))?,
            false => stage_inputs(staged.inputs, &staging)?,
        }
        spec.bind_mount(INPUT_DIR, &staging, true);
    }
    if !staged.output {
        return Ok(None);
    }
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
    let scratch = outputs::Scratch::mount(
        &path,
        declared.size.bytes(),
        outputs::ScratchOwner::User { uid, gid },
    )?;
    spec.bind_mount(outputs::OUTPUT_DIR, scratch.path(), false);
    Ok(Some(scratch))
}
