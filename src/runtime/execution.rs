//! One run of a compiled bundle under runsc, from start to a clean host.
//!
//! Lifecycle: `Execution::start` creates the cgroup and starts `runsc run`;
//! `wait` returns when the skill exits, the timeout fires or a signal asks
//! skillbox to stop (the sandbox is then killed); `Drop` always removes the
//! sandbox's runsc state and cgroup, on every path.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use policy_compiler::oci::CgroupLimits;
use serde::Serialize;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use skillbox_sandbox::cgroup::{CgroupError, CgroupFs, CgroupStats, ExecutionCgroup};
use skillbox_sandbox::runsc::{Runsc, RunscError};
use tracing::{info_span, warn};

/// The cgroup directory all executions are placed under.
pub const CGROUP_PARENT: &str = "skillbox";
/// How often a kill is repeated until runsc reports the sandbox gone.
const KILL_RETRY: Duration = Duration::from_millis(200);
/// How long runsc gets to exit after the sandbox was killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    #[error("cannot set up the sandbox cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Runsc(#[from] RunscError),
    #[error("cannot wait for runsc: {0}")]
    Wait(#[source] std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Exited,
    Oom,
    Timeout,
    Interrupted,
    /// The sandbox itself crashed (a Sentry panic), not the skill.
    SandboxFailed,
}

#[derive(Debug, Clone)]
pub struct Ended {
    pub outcome: Outcome,
    /// The skill's exit status (128 + signal when killed).
    pub status: i32,
    /// The signal that interrupted skillbox, if any.
    pub signal: Option<i32>,
    pub wall: Duration,
    pub stats: CgroupStats,
    /// What the sandbox reported when it crashed.
    pub failure: Option<String>,
}

enum Event {
    Exited(std::io::Result<std::process::ExitStatus>),
    Signal(i32),
}

/// A running sandbox and everything it holds on the host.
pub struct Execution {
    id: String,
    runsc: Runsc,
    cgroup: ExecutionCgroup,
    /// Taken by `wait`; dropped (reaped) on every path.
    child: Option<Child>,
    started: Instant,
    span: tracing::Span,
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(255)
}

impl Execution {
    /// The cgroup must be created before the bundle is compiled, since the
    /// spec names it: use `prepare_cgroup` first.
    pub fn prepare_cgroup(id: &str, limits: &CgroupLimits) -> Result<ExecutionCgroup, ExecutionError> {
        Ok(ExecutionCgroup::create(
            CgroupFs::detect()?,
            CGROUP_PARENT,
            id,
            limits,
        )?)
    }

    pub fn start(
        id: &str,
        runsc: Runsc,
        cgroup: ExecutionCgroup,
        bundle: &Path,
    ) -> Result<Self, ExecutionError> {
        let span = info_span!("sandbox", id);
        let started = Instant::now();
        let mut execution = Execution {
            id: id.to_owned(),
            runsc,
            cgroup,
            child: None,
            started,
            span,
        };
        execution.child = Some(execution.runsc.spawn_run(bundle, id)?);
        Ok(execution)
    }

    /// Waits for the skill, enforcing `timeout`; an interrupt (also one that
    /// arrived while the sandbox was being set up) kills the sandbox.
    pub fn wait(&mut self, timeout: Duration, interrupts: &Interrupts) -> Result<Ended, ExecutionError> {
        let _entered = self.span.clone().entered();
        let mut child = self.child.take().expect("wait is called once, after start");
        // runsc runs in its own process group (see `Runsc::spawn_run`).
        let runsc_group = nix::unistd::Pid::from_raw(child.id() as i32);
        let sender = interrupts.sender.clone();
        // Waiting happens on a thread so that the main thread can block on
        // one channel for exit, signal and timeout alike, without polling.
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = sender.send(Event::Exited(status));
        });
        let events = &interrupts.events;
        let deadline = self.started + timeout;
        let (mut outcome, mut signal) = (Outcome::Exited, None);
        let mut killed_at: Option<Instant> = None;
        let status = loop {
            let wake = match killed_at {
                None => deadline.saturating_duration_since(Instant::now()),
                Some(_) => KILL_RETRY,
            };
            match events.recv_timeout(wake) {
                Ok(Event::Exited(status)) => break status.map_err(ExecutionError::Wait)?,
                Ok(Event::Signal(number)) if killed_at.is_none() => {
                    (outcome, signal) = (Outcome::Interrupted, Some(number));
                    killed_at = Some(Instant::now());
                    self.kill_sandbox();
                }
                Ok(Event::Signal(_)) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => match killed_at {
                    None => {
                        outcome = Outcome::Timeout;
                        killed_at = Some(Instant::now());
                        self.kill_sandbox();
                    }
                    // A kill sent before runsc had created the container
                    // finds nothing: repeat it, and past the grace period
                    // stop runsc itself (the cgroup cleanup then takes the
                    // sandbox's processes).
                    Some(at) if at.elapsed() < KILL_GRACE => self.kill_sandbox(),
                    Some(_) => {
                        warn!("runsc did not exit after the sandbox was killed; killing runsc");
                        let _ = nix::sys::signal::killpg(runsc_group, nix::sys::signal::SIGKILL);
                    }
                },
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    unreachable!("Interrupts holds a sender for as long as it lives")
                }
            }
        };
        let _ = waiter.join();
        let wall = self.started.elapsed();
        let stats = self.cgroup.stats();
        let failure = self.runsc.panic_summary();
        if outcome == Outcome::Exited && stats.oom_kills > 0 {
            outcome = Outcome::Oom;
        } else if outcome == Outcome::Exited && failure.is_some() {
            outcome = Outcome::SandboxFailed;
        }
        Ok(Ended {
            outcome,
            status: exit_code(status),
            signal,
            wall,
            stats,
            failure,
        })
    }

    fn kill_sandbox(&self) {
        if let Err(err) = self.runsc.kill(&self.id, nix::sys::signal::SIGKILL as i32) {
            tracing::debug!(%err, "runsc kill failed; the sandbox may not exist yet");
        }
    }

    pub fn cgroups_path(&self) -> String {
        self.cgroup.cgroups_path()
    }
}

/// SIGINT, SIGTERM and SIGHUP, caught from the start of an execution so that
/// skillbox always gets to clean up; delivered on the same channel as the
/// sandbox's exit.
pub struct Interrupts {
    sender: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    handle: Handle,
}

impl Interrupts {
    pub fn install() -> Result<Interrupts, ExecutionError> {
        let (sender, events) = mpsc::channel();
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(ExecutionError::Signals)?;
        let handle = signals.handle();
        let forward = sender.clone();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if forward.send(Event::Signal(signal)).is_err() {
                    break;
                }
            }
        });
        Ok(Interrupts {
            sender,
            events,
            handle,
        })
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.handle.close();
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        let _entered = self.span.clone().entered();
        if let Some(mut child) = self.child.take() {
            let _ = self.runsc.kill(&self.id, nix::sys::signal::SIGKILL as i32);
            let _ = child.wait();
        }
        // `runsc run` removes its state on a normal exit; after a kill it may
        // not, so delete is always attempted and "not found" is fine.
        let _ = self.runsc.delete_force(&self.id);
        // The cgroup is removed when the `cgroup` field drops, after this.
    }
}

/// Where an execution's bundle and runsc state live.
#[derive(Debug)]
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn create(state_dir: &Path, id: &str) -> std::io::Result<Workspace> {
        std::fs::create_dir_all(state_dir)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{id}."))
            .tempdir_in(state_dir)?;
        Ok(Workspace { dir })
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }
    pub fn runsc_root(&self) -> PathBuf {
        self.dir.path().join("runsc")
    }
    pub fn panic_log(&self) -> PathBuf {
        self.dir.path().join("runsc-panic.log")
    }
}
