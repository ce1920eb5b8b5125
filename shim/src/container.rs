//! One container run by the shim: a runsc sandbox created from a bundle
//! (compiled by skillbox or not) under its enforced policy, its stdio, its
//! exit status.
//!
//! Lifecycle: `create` (policy enforced on the bundle, then runsc create, then a thread reaps the sandbox pid,
//! whose exit status is the container's) → `start` → exit → `delete`.
//! Illegal transitions are `ContainerError::State` errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use tokio::sync::watch;

use skillbox_sandbox::cgroup::{CgroupFs, CgroupStats, LimitUpdate};
use crate::config::ShimConfig;
use crate::console::{Console, ConsoleSocket};
use crate::egress::{ContainerEgress, EgressSetupError};
use crate::enforce::{prepare_bundle, EnforceError};
use crate::exec::{ExecProcess, OUTPUT_DRAIN};
use skillbox_sandbox::reaper;
use skillbox_sandbox::runsc::{Runsc, RunscError};
use crate::stdin::StdinPipe;
pub use crate::stdio::StdioPaths;
use crate::stdio::{open_output, Logger, StdioError};
use skillbox_audit::execution::{Ending, ExecutionAudit};

mod checkpoint;
mod member;
pub use checkpoint::{checkpoint_request, CheckpointRequest};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The spec was refused, or could not be brought within its policy.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    #[error(transparent)]
    Egress(#[from] Box<EgressSetupError>),
    #[error("cannot start the container's audit trail: {0}")]
    Audit(#[from] Box<skillbox_audit::execution::ExecutionAuditError>),
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

/// Where a container is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

/// How the container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
    /// The sandbox cgroup recorded an OOM kill.
    pub oom: bool,
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
    exit.unwrap_or(Exit {
        status: 255,
        at: SystemTime::now(),
        oom: false,
    })
}

#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub stdio: StdioPaths,
    pub pid: u32,
    runsc: Runsc,
    /// The host cgroup filesystem and the bundle's cgroupsPath.
    cgroup: Option<(CgroupFs, PathBuf)>,
    /// Ancestors of the cgroupsPath that did not exist before create
    /// (`/<namespace>` for `ctr run`), removed at delete when empty.
    created_cgroups: Vec<PathBuf>,
    state: Arc<Mutex<State>>,
    exited: watch::Receiver<Option<Exit>>,
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
    /// The sandbox's network egress, when its policy allows some; removed
    /// at delete, after the sandbox.
    egress: Mutex<Option<ContainerEgress>>,
    /// The audit trail, until the reaper records the exit in it.
    audit: Arc<Mutex<Option<ExecutionAudit>>>,
}

/// A stdio failure on `path` (a FIFO, a socket, the spec file).
pub(crate) fn stdio_error(path: impl Into<String>, source: std::io::Error) -> ContainerError {
    ContainerError::Stdio(StdioError::Open {
        path: path.into(),
        source,
    })
}

/// Makes the enforced spec's `process.terminal` what Create asked for
/// (`ctr run -t --config` does not set it in the spec) and returns the
/// `process`, which every exec is held within.
fn with_terminal(bundle: &Path, terminal: bool) -> Result<Value, ContainerError> {
    let path = bundle.join("config.json");
    let error = |source| stdio_error(path.display().to_string(), source);
    let text = std::fs::read_to_string(&path).map_err(error)?;
    let mut spec: Value = serde_json::from_str(&text).map_err(|err| error(err.into()))?;
    if spec["process"]["terminal"].as_bool().unwrap_or(false) != terminal {
        spec["process"]["terminal"] = Value::Bool(terminal);
        std::fs::write(&path, spec.to_string()).map_err(error)?;
    }
    Ok(spec["process"].take())
}

/// The host cgroup filesystem and the bundle's `linux.cgroupsPath`, if both
/// can be known.
fn cgroups_path(bundle: &Path) -> Option<(CgroupFs, PathBuf)> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_str(&text).ok()?;
    let path = spec["linux"]["cgroupsPath"].as_str()?;
    Some((CgroupFs::detect().ok()?, PathBuf::from(path)))
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
        // The spec is rewritten (or refused) before runsc reads it, and the
        // runsc flags are the shim's, never the bundle's.
        let prepared = prepare_bundle(id, bundle, config)?;
        // Both are dropped (removed again) if anything below fails.
        let audit = crate::audit::start(id, namespace, &prepared, config).map_err(Box::new)?;
        let egress = match prepared.policy.has_egress() {
            true => Some(
                crate::egress::start(id, namespace, bundle, &prepared.policy, config, audit.writer())
                    .map_err(Box::new)?,
            ),
            false => None,
        };
        let mut runsc = Runsc::new(&config.node.runsc.binary, runsc_root, prepared.runsc_flags);
        if let Some(session) = audit.pod_init_config() {
            runsc = runsc.with_pod_init_config(session);
        }
        let cgroup = cgroups_path(bundle);
        let created_cgroups = cgroup
            .as_ref()
            .map(|(fs, path)| fs.missing_ancestors(path))
            .unwrap_or_default();
        CgroupFs::record_created(bundle, &created_cgroups);
        let pid_file = bundle.join("init.pid");
        let init_process = with_terminal(bundle, terminal)?;
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
        let pid_text = std::fs::read_to_string(&pid_file).map_err(|err| ContainerError::PidFile {
            path: pid_file.clone(),
            reason: err.to_string(),
        })?;
        let pid: u32 = pid_text.trim().parse().map_err(|_| ContainerError::PidFile {
            path: pid_file.clone(),
            reason: format!("{:?} is not a pid", pid_text.trim()),
        })?;

        let state = Arc::new(Mutex::new(State {
            status: Status::Created,
            exit: None,
        }));
        let (sender, exited) = watch::channel(None);
        let reaped_state = Arc::clone(&state);
        let reaped_cgroup = cgroup.clone();
        let reaped_stdin = stdin.clone();
        let audit = Arc::new(Mutex::new(Some(audit)));
        let reaped_audit = Arc::clone(&audit);
        std::thread::spawn(move || {
            let status = reaper::wait_exit(pid as i32);
            // No output is lost: the exit is reported once it is copied.
            if let Some(output) = output {
                output.finish(OUTPUT_DRAIN);
            }
            if let Some(pipe) = reaped_stdin {
                pipe.release();
            }
            // runsc removes the cgroup only at delete: its OOM count is
            // still there when the sandbox has just died.
            let oom = reaped_cgroup
                .map(|(fs, path)| fs.stats(&path).oom_kills > 0)
                .unwrap_or(false);
            let exit = Exit {
                status,
                at: SystemTime::now(),
                oom,
            };
            // The audit trail is closed before the exit is reported, so a
            // shim told to shut down after Delete has written everything.
            let audit = reaped_audit.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(audit) = audit {
                audit.finish(Ending {
                    status: status as i32,
                    oom,
                    ..Ending::default()
                });
            }
            record(&reaped_state, &sender, exit);
        });
        Ok(Container {
            id: id.to_owned(),
            bundle: bundle.to_owned(),
            stdio,
            pid,
            runsc,
            cgroup,
            created_cgroups,
            state,
            exited,
            console,
            stdin,
            init_process,
            execs: Mutex::new(HashMap::new()),
            next_exec: AtomicU64::new(0),
            member: None,
            logger: Mutex::new(logger),
            egress: Mutex::new(egress),
            audit,
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
        let egress = self.egress.lock().unwrap_or_else(|e| e.into_inner());
        egress.as_ref().map(|egress| egress.network.clone())
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
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.status == Status::Created {
            state.status = Status::Running;
        }
        Ok(())
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
        self.cgroup
            .as_ref()
            .map(|(fs, path)| fs.stats(path))
            .unwrap_or_default()
    }

    /// The container's processes (sandbox pids). Blocking.
    pub fn pids(&self) -> Result<Vec<u32>, ContainerError> {
        Ok(self.runsc.pids(&self.id)?)
    }

    /// Changes the sandbox cgroup's limits. Blocking.
    pub fn update(&self, update: &LimitUpdate) -> Result<(), ContainerError> {
        self.refuse_for_member("update")?;
        let Some((fs, path)) = &self.cgroup else {
            return Err(ContainerError::NoCgroup {
                bundle: self.bundle.clone(),
            });
        };
        Ok(fs.set_limits(path, update)?)
    }

    /// Waits for the container to exit.
    pub async fn wait(&self) -> Exit {
        wait_for_exit(&self.exited).await
    }

    /// Sends `signal` to the container (all its processes with `all`). A
    /// container that already stopped is not an error. Blocking.
    pub fn kill(&self, signal: u32, all: bool) -> Result<(), ContainerError> {
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
            let _ = self.runsc.kill(&self.id, nix::sys::signal::SIGKILL as i32);
        }
        // Reap the helpers only once the sandbox pid has been collected, so
        // that the reaper thread gets the container's status.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.status().0 != Status::Stopped && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        reaper::reap_orphans(Duration::from_secs(2));
        if let Err(err) = self.runsc.delete_force(&self.id) {
            tracing::warn!(%err, id = %self.id, "runsc delete failed");
        }
        if let Some((fs, _)) = &self.cgroup {
            fs.remove_if_empty(&self.created_cgroups);
        }
        drop(self.egress.lock().unwrap_or_else(|e| e.into_inner()).take());
        // Normally the reaper closed the audit trail at the exit already.
        drop(self.audit.lock().unwrap_or_else(|e| e.into_inner()).take());
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
