//! One container run by the shim: a sandbox of the `skillbox-sandbox` crate
//! prepared from its bundle (compiled by skillbox or not) under its
//! enforced policy, its runsc container, its stdio, its exit.
//!
//! Lifecycle: `create` (spec loaded once and enforced; the sandbox prepared
//! and the spec written; runsc create; a thread reaps the sandbox pid, whose
//! exit status is the container's) → `start` (the task service then
//! watches the policy's deadline and calls `expire` when it passes)
//! → exit (the sandbox decides the outcome and closes its audit trail) →
//! `delete` (the sandbox torn down). Illegal transitions are
//! `ContainerError::State` errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::node_config::DnsUpstream;
use serde_json::Value;
use skillbox_audit::{SandboxIdentity, SkillIdentity};
use skillbox_sandbox::cgroup::{CgroupStats, LimitUpdate};
use skillbox_sandbox::reaper;
use skillbox_sandbox::record::RECORD_FILE;
use skillbox_sandbox::runsc::Runsc;
use skillbox_sandbox::sandbox::{node_key, pod_network, EgressSettings};
use skillbox_sandbox::spec::{BundleSpec, SkillAnnotations};
use skillbox_sandbox::{Ending, Sandbox, SandboxConfig};

use crate::config::ShimConfig;
use crate::console::Console;
use crate::enforce::enforce;
pub(crate) use crate::error::stdio_error;
pub use crate::error::ContainerError;
use crate::exec::ExecProcess;
use crate::pod::PodLimits;
use crate::process::io::Streams;
use crate::process::template::{launch, reap};
pub use crate::process::{Exit, ProcessState, Status};
use crate::stdin::StdinPipe;
pub use crate::stdio::StdioPaths;
use crate::stdio::{open_output, Logger};

mod checkpoint;
mod member;
pub use checkpoint::{checkpoint_request, CheckpointRequest};

/// runsc's own log in each bundle (JSON): a failed runsc call reports the
/// errors logged there, where runsc's gofer and sandbox write theirs.
pub(crate) const RUNSC_LOG: &str = "runsc.log";

/// What ended the container besides its own exit, set before the kill is
/// sent so that the reaper sees it.
#[derive(Debug, Default)]
struct EndCauses {
    timed_out: AtomicBool,
    killed: AtomicBool,
}

#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub stdio: StdioPaths,
    pub pid: u32,
    runsc: Runsc,
    /// The sandbox this container runs in: its own, or (for a pod member)
    /// the pod's, which the pod's sandbox container owns.
    sandbox: Arc<Sandbox>,
    state: ProcessState,
    /// The policy's wall-clock limit, counted from Start; `None` for a
    /// pod's sandbox container, which runs no skill.
    timeout: Option<Duration>,
    /// Where kubelet reads the termination message (under Kubernetes).
    termination_log: Option<PathBuf>,
    causes: Arc<EndCauses>,
    /// The init process's terminal, when the spec asks for one.
    console: Option<Console>,
    /// The init process's stdin, when containerd gave one.
    stdin: Option<StdinPipe>,
    /// The enforced spec's `process`, which every exec is held within.
    init_process: Value,
    execs: Mutex<HashMap<String, Arc<ExecProcess>>>,
    next_exec: AtomicU64,
    /// Set when the container joined its pod's sandbox (`member.rs`).
    member: Option<member::Member>,
    /// The limits of the pod's cgroup, shared by a pod's sandbox container
    /// and its members; `None` outside a pod.
    pod_limits: Option<Arc<PodLimits>>,
    /// The `binary://` logger, waited for at delete (see stdio.rs).
    logger: Mutex<Option<Logger>>,
}

/// Whom the events belong to: the skill the spec's annotations name, else
/// the container.
fn identity(skill: &SkillAnnotations, namespace: &str, id: &str) -> SandboxIdentity {
    SandboxIdentity {
        execution_id: format!("{namespace}/{id}"),
        skill: SkillIdentity {
            name: skill.name.clone().unwrap_or_else(|| id.to_owned()),
            version: skill.version.clone(),
            digest: skill.digest.clone(),
        },
        container_id: id.to_owned(),
    }
}

/// The DNS proxy's upstreams and TTL grace for a session under `network`:
/// the node config's upstreams, else (a pod's sandbox) the nameservers of
/// the resolv.conf CRI made for the pod (its cluster DNS), else the node's.
fn egress_settings(
    id: &str,
    config: &ShimConfig,
    network: &EffectiveNetwork,
    spec: &BundleSpec,
) -> Result<EgressSettings, ContainerError> {
    let settings = &config.node.egress;
    let mut upstreams = settings.dns_upstreams.clone();
    if upstreams.is_empty() && spec.is_pod_sandbox() {
        let pods = spec
            .mount_source("/etc/resolv.conf")
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default();
        upstreams = skillbox_egress::dns::parse_resolv_conf(&pods)
            .into_iter()
            .map(DnsUpstream)
            .collect();
    }
    EgressSettings::resolve(&upstreams, settings.ttl_grace.as_duration(), network).map_err(|err| {
        ContainerError::EgressUpstreams {
            id: id.to_owned(),
            reason: err.to_string(),
        }
    })
}

/// Appends `message` to the termination message file kubelet made (never
/// creating one, never through a symlink), which `kubectl describe` shows.
fn append_termination_message(log: &Path, message: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(log)?;
    file.write_all(message.as_bytes())
}

impl Container {
    /// Creates the sandbox for the bundle whose spec is `spec` (loaded once
    /// by the caller) under the node config `config`. Blocking.
    pub fn create(
        id: &str,
        mut spec: BundleSpec,
        stdio: StdioPaths,
        terminal: bool,
        runsc_root: &Path,
        config: &ShimConfig,
        namespace: &str,
    ) -> Result<Container, ContainerError> {
        // The spec is enforced (or refused) in memory and written by the
        // sandbox just before runsc reads it; the runsc flags are the
        // shim's, never the bundle's.
        let bundle = &spec.bundle().to_owned();
        let key = node_key(namespace, id);
        let prepared = enforce(id, &key, &mut spec, config)?;
        spec.set_terminal(terminal);
        let init_process = spec.process();
        let timeout = (!spec.is_pod_sandbox()).then(|| prepared.policy.resources.timeout.as_duration());
        let pod_limits = spec.is_pod_sandbox().then(|| {
            let limits = PodLimits::default();
            limits.set(id, &LimitUpdate::of_spec(spec.value()));
            Arc::new(limits)
        });
        let egress = match prepared.policy.has_egress() || pod_network(&spec).is_some() {
            true => Some(egress_settings(id, config, &prepared.policy.network, &spec)?),
            false => None,
        };
        let audit_log = config
            .node
            .audit
            .log_dir
            .join(namespace)
            .join(format!("{id}.jsonl"));
        // Dropped (torn down) if anything below fails.
        let sandbox = Arc::new(Sandbox::prepare(
            SandboxConfig {
                id,
                key: &key,
                runtime: "shim",
                identity: identity(&prepared.skill, namespace, id),
                policy: &prepared.policy,
                runsc: Runsc::new(
                    &config.node.runsc.binary,
                    runsc_root,
                    prepared.runsc_flags.clone(),
                )
                .with_log(bundle.join(RUNSC_LOG)),
                audit: &config.node.audit,
                audit_log: &audit_log,
                egress,
                observe_network: false,
                resolv_conf: bundle.join("skillbox-resolv.conf"),
                record: bundle.join(RECORD_FILE),
                mounts: Vec::new(),
                directory: None,
            },
            &mut spec,
        )?);
        let runsc = sandbox.runsc().clone();
        let pid_file = bundle.join("init.pid");
        let mut launched = launch(
            &stdio,
            terminal,
            Streams::Init { id, namespace },
            &pid_file,
            |console_socket, streams| {
                runsc
                    .create(bundle, id, &pid_file, console_socket, streams)
                    .map(|()| None)
            },
        )?;
        let (pid, state, causes) = (launched.pid, ProcessState::new(), Arc::new(EndCauses::default()));
        let (ended_sandbox, ended_causes) = (Arc::clone(&sandbox), Arc::clone(&causes));
        // The cgroup still holds the OOM count (it goes at delete), and the
        // audit trail is closed before the exit is reported, so a shim told
        // to shut down after Delete has written everything.
        reap(pid, &mut launched.io, state.clone(), move |status| {
            let ended = ended_sandbox.end(
                Ending {
                    status: status as i32,
                    timed_out: ended_causes.timed_out.load(Ordering::SeqCst),
                    killed: ended_causes.killed.load(Ordering::SeqCst),
                    ..Ending::default()
                },
                None,
            );
            Exit {
                status: ended.status as u32,
                at: SystemTime::now(),
                outcome: ended.outcome,
            }
        });
        Ok(Container {
            id: id.to_owned(),
            bundle: bundle.to_owned(),
            stdio,
            pid,
            runsc,
            sandbox,
            state,
            timeout,
            termination_log: spec.termination_log(),
            causes,
            console: launched.io.console,
            stdin: launched.io.stdin,
            init_process,
            execs: Mutex::new(HashMap::new()),
            next_exec: AtomicU64::new(0),
            member: None,
            pod_limits,
            logger: Mutex::new(launched.io.logger),
        })
    }

    /// Records exec `exec_id` (Exec); it runs at its Start.
    pub fn add_exec(
        &self,
        exec_id: &str,
        stdio: StdioPaths,
        terminal: bool,
        spec: &[u8],
    ) -> Result<Arc<ExecProcess>, ContainerError> {
        self.state.require(Status::Running, &self.id, "exec")?;
        let mut execs = self.execs.lock().unwrap_or_else(|e| e.into_inner());
        if execs.contains_key(exec_id) {
            return Err(ContainerError::ExecExists {
                id: self.id.clone(),
                exec_id: exec_id.to_owned(),
            });
        }
        // Exec ids are the client's strings: files are numbered instead.
        let number = self.next_exec.fetch_add(1, Ordering::Relaxed);
        let files = self.bundle.join(format!("exec-{number}"));
        let exec = Arc::new(ExecProcess::add(
            exec_id,
            stdio,
            terminal,
            spec,
            &self.init_process,
            files,
        )?);
        execs.insert(exec_id.to_owned(), Arc::clone(&exec));
        Ok(exec)
    }

    pub fn exec(&self, exec_id: &str) -> Result<Arc<ExecProcess>, ContainerError> {
        let execs = self.execs.lock().unwrap_or_else(|e| e.into_inner());
        execs
            .get(exec_id)
            .map(Arc::clone)
            .ok_or_else(|| ContainerError::NoExec {
                id: self.id.clone(),
                exec_id: exec_id.to_owned(),
            })
    }

    /// Starts exec `exec_id`; returns its pid. Blocking.
    pub fn start_exec(&self, exec_id: &str) -> Result<u32, ContainerError> {
        self.exec(exec_id)?.start(&self.runsc, &self.id)
    }

    pub fn kill_exec(&self, exec_id: &str, signal: u32) -> Result<(), ContainerError> {
        self.exec(exec_id)?.kill(&self.runsc, &self.id, signal)
    }

    /// Forgets an exited exec and its files.
    pub fn delete_exec(&self, exec_id: &str) -> Result<(u32, Option<Exit>), ContainerError> {
        let exec = self.exec(exec_id)?;
        let exit = exec.delete(&self.id)?;
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(exec_id);
        Ok((exec.pid(), exit))
    }

    /// Resizes the terminal of the init process (`exec_id` empty) or of an exec.
    pub fn resize(&self, exec_id: &str, width: u32, height: u32) -> Result<(), ContainerError> {
        let console = match exec_id {
            "" => self.console.clone(),
            exec_id => self.exec(exec_id)?.console(),
        };
        let console = console.ok_or_else(|| ContainerError::NoTerminal { id: self.id.clone() })?;
        console
            .resize(width, height)
            .map_err(|source| stdio_error("terminal".to_owned(), source))
    }

    /// Closes the stdin of the init process (`exec_id` empty) or of an exec.
    pub fn close_stdin(&self, exec_id: &str) -> Result<(), ContainerError> {
        match exec_id {
            "" => {
                if let Some(pipe) = &self.stdin {
                    pipe.close();
                }
            }
            exec_id => self.exec(exec_id)?.close_stdin(),
        }
        Ok(())
    }

    /// The network policy the sandbox's egress enforces (`None`: the
    /// sandbox has no network).
    pub fn egress_network(&self) -> Option<policy_compiler::effective::EffectiveNetwork> {
        self.sandbox.network().cloned()
    }

    pub fn status(&self) -> (Status, Option<Exit>) {
        self.state.status()
    }

    /// Starts the container's process. Blocking.
    pub fn start(&self) -> Result<(), ContainerError> {
        self.state.require(Status::Created, &self.id, "start")?;
        match &self.member {
            Some(_) => self.start_member()?,
            None => {
                self.runsc.start(&self.id)?;
            }
        }
        self.state.advance(Status::Created, Status::Running);
        Ok(())
    }

    /// The policy's wall-clock limit, counted from Start (`None`: no
    /// deadline, for a pod's sandbox container).
    pub fn deadline(&self) -> Option<Duration> {
        self.timeout
    }

    /// Kills the container because its deadline passed: a member alone,
    /// any other container with all its processes. Its exit then reports
    /// the timeout. Blocking.
    pub fn expire(&self) -> Result<(), ContainerError> {
        if self.status().0 == Status::Stopped {
            return Ok(());
        }
        self.causes.timed_out.store(true, Ordering::SeqCst);
        tracing::warn!(id = %self.id, limit = ?self.timeout, "the policy's timeout fired; killing the container");
        if let (Some(log), Some(limit)) = (&self.termination_log, self.timeout) {
            let message = format!(
                "skillbox: the skill's policy allows {}s (resources.timeout); the container was killed at that limit and exits with status 124\n",
                limit.as_secs()
            );
            if let Err(err) = append_termination_message(log, &message) {
                tracing::warn!(id = %self.id, %err, log = %log.display(), "cannot write the termination message");
            }
        }
        let all = self.member.is_none();
        match self
            .runsc
            .kill_with(&self.id, nix::sys::signal::SIGKILL as i32, all)
        {
            Err(_) if self.status().0 == Status::Stopped => Ok(()),
            other => other.map(|_| ()).map_err(ContainerError::from),
        }
    }

    /// Freezes (`pause`) or thaws (`resume`) every process of the container.
    /// Blocking.
    pub fn set_paused(&self, paused: bool) -> Result<(), ContainerError> {
        let (from, to, action) = if paused {
            (Status::Running, Status::Paused, "pause")
        } else {
            (Status::Paused, Status::Running, "resume")
        };
        self.refuse_for_member(action)?;
        self.state.require(from, &self.id, action)?;
        if paused {
            self.runsc.pause(&self.id)?;
        } else {
            self.runsc.resume(&self.id)?;
        }
        self.state.advance(from, to);
        Ok(())
    }

    /// What the sandbox cgroup has recorded (all zeros if it is unknown).
    /// A pod's member gets its own CPU time, as runsc counts it per
    /// container; memory and pids stay the pod's (runsc counts them only
    /// per sandbox). Blocking.
    pub fn stats(&self) -> CgroupStats {
        let stats = self.sandbox.stats();
        if self.member.is_none() || self.status().0 != Status::Running {
            return stats;
        }
        match self.runsc.cpu_usage(&self.id) {
            Ok(cpu_usage) => CgroupStats { cpu_usage, ..stats },
            Err(err) => {
                tracing::warn!(id = %self.id, %err, "no per-container CPU time; reporting the pod's");
                stats
            }
        }
    }

    /// The container's processes (sandbox pids). Blocking.
    pub fn pids(&self) -> Result<Vec<u32>, ContainerError> {
        Ok(self.runsc.pids(&self.id)?)
    }

    /// Changes the container's limits: its sandbox cgroup's, or in a pod
    /// the pod cgroup's total (see [`PodLimits`]). Blocking.
    pub fn update(&self, update: &LimitUpdate) -> Result<(), ContainerError> {
        let update = match &self.pod_limits {
            Some(pod) => pod.set(&self.id, update),
            None => *update,
        };
        match self.sandbox.update(&update)? {
            true => Ok(()),
            false => Err(ContainerError::NoCgroup {
                bundle: self.bundle.clone(),
            }),
        }
    }

    /// Waits for the container to exit.
    pub async fn wait(&self) -> Exit {
        self.state.wait().await
    }

    /// Sends `signal` to the container (all its processes with `all`). A
    /// container that already stopped is not an error. Blocking.
    pub fn kill(&self, signal: u32, all: bool) -> Result<(), ContainerError> {
        if self.member.is_some() && self.status().0 == Status::Created {
            // A member that never started has no process: runsc refuses to
            // signal it, and the kill only ends it (what containerd does to
            // a container whose start failed, before deleting it).
            self.end_unstarted_member();
            return Ok(());
        }
        if self.status().0 != Status::Stopped {
            self.causes.killed.store(true, Ordering::SeqCst);
        }
        match self.runsc.kill_with(&self.id, signal as i32, all) {
            Err(_) if self.status().0 == Status::Stopped => Ok(()),
            other => other.map(|_| ()).map_err(ContainerError::from),
        }
    }

    /// Removes the sandbox. A running container is killed first. Blocking.
    pub fn delete(&self) -> Result<Option<Exit>, ContainerError> {
        if let Some(member) = &self.member {
            return self.delete_member(member);
        }
        if self.status().0 != Status::Stopped {
            self.causes.killed.store(true, Ordering::SeqCst);
            let _ = self.runsc.kill(&self.id, nix::sys::signal::SIGKILL as i32);
        }
        // Reap the helpers only once the sandbox pid has been collected, so
        // that the reaper thread gets the container's status.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.status().0 != Status::Stopped && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        reaper::reap_orphans(Duration::from_secs(2));
        for failure in self.sandbox.teardown() {
            tracing::warn!(id = %self.id, %failure, "sandbox not fully removed; the delete subcommand tries again");
        }
        // The sandbox is gone, and with it the last write end of the
        // logger's pipes: it drains them and exits.
        let logger = self.logger.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(logger) = logger {
            let end = logger.finish();
            tracing::info!(id = %self.id, ?end, "binary logger finished");
        }
        Ok(self.status().1)
    }
}
