//! One container run by the shim: a sandbox of the `skillbox-sandbox` crate
//! prepared from its bundle (compiled by skillbox or not) under its
//! enforced policy, its runsc container, its stdio, its exit.
//!
//! Lifecycle: `create` (spec loaded once and enforced; the sandbox prepared
//! and the spec written; runsc create; a thread reaps the sandbox pid, whose
//! exit status is the container's) → `start` (the policy's deadline armed)
//! → exit (the sandbox decides the outcome and closes its audit trail) →
//! `delete` (the sandbox torn down). Illegal transitions are
//! `ContainerError::State` errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use skillbox_audit::{SandboxIdentity, SkillIdentity};
use skillbox_egress::session::upstreams_or_resolv_conf;
use skillbox_sandbox::cgroup::{CgroupStats, LimitUpdate};
use skillbox_sandbox::deadline::Deadline;
use skillbox_sandbox::reaper;
use skillbox_sandbox::record::RECORD_FILE;
use skillbox_sandbox::runsc::{Runsc, RunscError};
use skillbox_sandbox::sandbox::{node_key, EgressSettings};
use skillbox_sandbox::spec::{BundleSpec, SkillAnnotations, SpecError};
use skillbox_sandbox::{Ending, Outcome, Sandbox, SandboxConfig, SandboxError};
use tokio::sync::watch;

use crate::config::ShimConfig;
use crate::console::{Console, ConsoleSocket};
use crate::enforce::{enforce, EnforceError};
use crate::exec::{ExecProcess, OUTPUT_DRAIN};
use crate::stdin::StdinPipe;
pub use crate::stdio::StdioPaths;
use crate::stdio::{open_output, Logger, StdioError};

mod checkpoint;
mod member;
pub use checkpoint::{checkpoint_request, CheckpointRequest};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The spec was refused, or could not be brought within its policy.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    /// The sandbox's audit trail, egress or cgroup could not be made.
    #[error(transparent)]
    Sandbox(#[from] Box<SandboxError>),
    #[error("cannot set up the network egress of container {id}: {reason}")]
    EgressUpstreams { id: String, reason: String },
    #[error(transparent)]
    Stdio(#[from] StdioError),
    #[error("{path}: cannot read the sandbox pid: {reason}")]
    PidFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Runsc(#[from] RunscError),
    #[error("container {id}: cannot checkpoint and leave it running: {reason}")]
    CheckpointUnsupported { id: String, reason: &'static str },
    #[error("{path}: cannot create the checkpoint directory: {source}")]
    CheckpointDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{bundle}: config.json names no cgroup (linux.cgroupsPath) to update")]
    NoCgroup { bundle: PathBuf },
    #[error("cannot update the sandbox cgroup: {0}")]
    Cgroup(#[from] skillbox_sandbox::cgroup::CgroupError),
    #[error("exec {exec_id}: bad process spec: {reason}")]
    ExecSpec { exec_id: String, reason: String },
    #[error("container {id} has no exec process {exec_id}")]
    NoExec { id: String, exec_id: String },
    #[error("exec {exec_id} already exists in container {id}")]
    ExecExists { id: String, exec_id: String },
    #[error("container {id} has no terminal")]
    NoTerminal { id: String },
    /// A pod operation refused (see `pod.rs`).
    #[error(transparent)]
    Pod(#[from] crate::pod::PodError),
    #[error("container {id} is {state:?}; cannot {action}")]
    State {
        id: String,
        state: Status,
        action: &'static str,
    },
}

impl From<SandboxError> for ContainerError {
    fn from(err: SandboxError) -> Self {
        ContainerError::Sandbox(Box::new(err))
    }
}

/// Where a container is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

/// How the container (or an exec) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The status reported to containerd: the process's own, 137 after an
    /// OOM kill, 124 after the policy's timeout.
    pub status: u32,
    pub at: SystemTime,
    pub outcome: Outcome,
}

impl Exit {
    /// An exit whose status is all that is known.
    pub fn with_status(status: u32) -> Exit {
        Exit {
            status,
            at: SystemTime::now(),
            outcome: Outcome::Exited,
        }
    }
}

#[derive(Debug)]
struct State {
    status: Status,
    exit: Option<Exit>,
}

/// Records the exit and wakes the waiters.
fn record(state: &Mutex<State>, sender: &watch::Sender<Option<Exit>>, exit: Exit) {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    state.status = Status::Stopped;
    state.exit = Some(exit);
    let _ = sender.send(Some(exit));
}

/// Waits until `exited` holds an exit (a container's or an exec's).
pub(crate) async fn wait_for_exit(exited: &watch::Receiver<Option<Exit>>) -> Exit {
    let mut exited = exited.clone();
    let exit = exited
        .wait_for(Option::is_some)
        .await
        .map(|exit| *exit)
        .ok()
        .flatten();
    // The sender lives until the exit is recorded, so this is set.
    exit.unwrap_or(Exit::with_status(255))
}

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
    state: Arc<Mutex<State>>,
    exited: watch::Receiver<Option<Exit>>,
    /// The policy's wall-clock limit, counted from Start; `None` for a
    /// pod's sandbox container, which runs no skill.
    timeout: Option<Duration>,
    deadline: Mutex<Option<Deadline>>,
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
    /// The `binary://` logger, waited for at delete (see stdio.rs).
    logger: Mutex<Option<Logger>>,
}

/// A stdio failure on `path` (a FIFO, a socket, the spec file).
pub(crate) fn stdio_error(path: impl Into<String>, source: std::io::Error) -> ContainerError {
    ContainerError::Stdio(StdioError::Open {
        path: path.into(),
        source,
    })
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

/// The DNS proxy's upstreams and TTL grace from the node config.
fn egress_settings(id: &str, config: &ShimConfig) -> Result<EgressSettings, ContainerError> {
    let settings = &config.node.egress;
    let configured: Vec<_> = settings.dns_upstreams.iter().map(|upstream| upstream.0).collect();
    let upstreams = upstreams_or_resolv_conf(&configured).map_err(|err| ContainerError::EgressUpstreams {
        id: id.to_owned(),
        reason: err.to_string(),
    })?;
    Ok(EgressSettings {
        upstreams,
        ttl_grace: settings.ttl_grace.as_duration(),
    })
}

/// Reads the sandbox pid runsc wrote to `path`.
pub(crate) fn pid_from(path: &Path) -> Result<u32, ContainerError> {
    let text = std::fs::read_to_string(path).map_err(|err| ContainerError::PidFile {
        path: path.to_owned(),
        reason: err.to_string(),
    })?;
    text.trim().parse().map_err(|_| ContainerError::PidFile {
        path: path.to_owned(),
        reason: format!("{:?} is not a pid", text.trim()),
    })
}

impl Container {
    /// Creates the sandbox for the bundle at `bundle` under the node config
    /// `config`. Blocking.
    pub fn create(
        id: &str,
        bundle: &Path,
        stdio: StdioPaths,
        terminal: bool,
        runsc_root: &Path,
        config: &ShimConfig,
        namespace: &str,
    ) -> Result<Container, ContainerError> {
        // The spec is loaded once, enforced (or refused) in memory, and
        // written by the sandbox just before runsc reads it; the runsc flags
        // are the shim's, never the bundle's.
        let mut spec = BundleSpec::load(bundle)?;
        let key = node_key(namespace, id);
        let prepared = enforce(id, &key, &mut spec, config)?;
        spec.set_terminal(terminal);
        let init_process = spec.process();
        let timeout = (!spec.is_pod_sandbox()).then(|| prepared.policy.resources.timeout.as_duration());
        let egress = match prepared.policy.has_egress() {
            true => Some(egress_settings(id, config)?),
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
                ),
                audit: &config.node.audit,
                audit_log: &audit_log,
                egress,
                resolv_conf: bundle.join("skillbox-resolv.conf"),
                record: bundle.join(RECORD_FILE),
                directory: None,
            },
            &mut spec,
        )?);
        let runsc = sandbox.runsc().clone();
        let pid_file = bundle.join("init.pid");
        let console_socket = match terminal {
            true => Some(ConsoleSocket::bind().map_err(|source| stdio_error("console socket", source))?),
            false => None,
        };
        // On any failure below, dropping the logger kills it.
        let (streams, mut logger, stdin) = match console_socket {
            Some(_) => (
                [Stdio::null(), Stdio::null(), open_output(&stdio.stderr)?],
                None,
                None,
            ),
            None => {
                let opened = stdio.open(id, namespace)?;
                (opened.streams, opened.logger, opened.stdin)
            }
        };
        let created = runsc.create(
            bundle,
            id,
            &pid_file,
            console_socket.as_ref().map(ConsoleSocket::path),
            streams,
        );
        if let Err(err) = created {
            if let Some(pipe) = &stdin {
                pipe.release();
            }
            // runsc wrote why to the container's stderr: let the logger keep it.
            if let Some(logger) = logger.take() {
                logger.finish();
            }
            return Err(err.into());
        }
        let (console, output) = match &console_socket {
            Some(socket) => {
                let console = socket
                    .receive()
                    .map_err(|source| stdio_error(socket.path().display().to_string(), source))?;
                let output = console
                    .forward(&stdio.stdin, &stdio.stdout)
                    .map_err(|source| stdio_error(stdio.stdout.clone(), source))?;
                (Some(console), Some(output))
            }
            None => (None, None),
        };
        let pid = pid_from(&pid_file)?;

        let state = Arc::new(Mutex::new(State {
            status: Status::Created,
            exit: None,
        }));
        let (sender, exited) = watch::channel(None);
        let causes = Arc::new(EndCauses::default());
        let (reaped_state, reaped_stdin) = (Arc::clone(&state), stdin.clone());
        let (reaped_sandbox, reaped_causes) = (Arc::clone(&sandbox), Arc::clone(&causes));
        std::thread::spawn(move || {
            let status = reaper::wait_exit(pid as i32);
            // No output is lost: the exit is reported once it is copied.
            if let Some(output) = output {
                output.finish(OUTPUT_DRAIN);
            }
            if let Some(pipe) = reaped_stdin {
                pipe.release();
            }
            // The cgroup still holds the OOM count (it goes at delete), and
            // the audit trail is closed before the exit is reported, so a
            // shim told to shut down after Delete has written everything.
            let ended = reaped_sandbox.end(
                Ending {
                    status: status as i32,
                    timed_out: reaped_causes.timed_out.load(Ordering::SeqCst),
                    killed: reaped_causes.killed.load(Ordering::SeqCst),
                    ..Ending::default()
                },
                None,
            );
            let exit = Exit {
                status: ended.status as u32,
                at: SystemTime::now(),
                outcome: ended.outcome,
            };
            record(&reaped_state, &sender, exit);
        });
        Ok(Container {
            id: id.to_owned(),
            bundle: bundle.to_owned(),
            stdio,
            pid,
            runsc,
            sandbox,
            state,
            exited,
            timeout,
            deadline: Mutex::new(None),
            causes,
            console,
            stdin,
            init_process,
            execs: Mutex::new(HashMap::new()),
            next_exec: AtomicU64::new(0),
            member: None,
            logger: Mutex::new(logger),
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
        let current = self.status().0;
        if current != Status::Running {
            return Err(ContainerError::State {
                id: self.id.clone(),
                state: current,
                action: "exec",
            });
        }
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
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.status, state.exit)
    }

    /// Starts the container's process. Blocking.
    pub fn start(&self) -> Result<(), ContainerError> {
        match self.status().0 {
            Status::Created => {}
            other => {
                return Err(ContainerError::State {
                    id: self.id.clone(),
                    state: other,
                    action: "start",
                })
            }
        }
        match &self.member {
            Some(member) => self.start_member(member)?,
            None => {
                self.runsc.start(&self.id)?;
            }
        }
        self.arm_deadline();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.status == Status::Created {
            state.status = Status::Running;
        }
        Ok(())
    }

    /// Kills the container at its policy's deadline: a member alone, any
    /// other container with all its processes. Disarmed at delete.
    fn arm_deadline(&self) {
        let Some(limit) = self.timeout else {
            return;
        };
        let (runsc, id, causes) = (self.runsc.clone(), self.id.clone(), Arc::clone(&self.causes));
        let all = self.member.is_none();
        let deadline = Deadline::arm(limit, move || {
            causes.timed_out.store(true, Ordering::SeqCst);
            tracing::warn!(%id, limit = ?limit, "the policy's timeout fired; killing the container");
            if let Err(err) = runsc.kill_with(&id, nix::sys::signal::SIGKILL as i32, all) {
                tracing::warn!(%id, %err, "cannot kill the container at its deadline");
            }
        });
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(deadline);
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
        let current = self.status().0;
        if current != from {
            return Err(ContainerError::State {
                id: self.id.clone(),
                state: current,
                action,
            });
        }
        if paused {
            self.runsc.pause(&self.id)?;
        } else {
            self.runsc.resume(&self.id)?;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.status == from {
            state.status = to;
        }
        Ok(())
    }

    /// What the sandbox cgroup has recorded (all zeros if it is unknown);
    /// for a pod's member, the whole pod's sandbox.
    pub fn stats(&self) -> CgroupStats {
        self.sandbox.stats()
    }

    /// The container's processes (sandbox pids). Blocking.
    pub fn pids(&self) -> Result<Vec<u32>, ContainerError> {
        Ok(self.runsc.pids(&self.id)?)
    }

    /// Changes the sandbox cgroup's limits. Blocking.
    pub fn update(&self, update: &LimitUpdate) -> Result<(), ContainerError> {
        self.refuse_for_member("update")?;
        match self.sandbox.update(update)? {
            true => Ok(()),
            false => Err(ContainerError::NoCgroup {
                bundle: self.bundle.clone(),
            }),
        }
    }

    /// Waits for the container to exit.
    pub async fn wait(&self) -> Exit {
        wait_for_exit(&self.exited).await
    }

    /// Sends `signal` to the container (all its processes with `all`). A
    /// container that already stopped is not an error. Blocking.
    pub fn kill(&self, signal: u32, all: bool) -> Result<(), ContainerError> {
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
        drop(self.deadline.lock().unwrap_or_else(|e| e.into_inner()).take());
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
