//! `runsc run` of a prepared sandbox in the foreground, from start to the
//! end of its init process.
//!
//! `Execution::start` starts `runsc run`; `wait` returns when the skill
//! exits, the timeout fires or a signal asks skillbox to stop (the sandbox
//! is then killed). What the end means (the outcome) and the teardown are
//! the sandbox's (`skillbox_sandbox::Sandbox::end`, `teardown`).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use skillbox_sandbox::runsc::{Runsc, RunscError};
use skillbox_sandbox::{Ending, Sandbox};
use tracing::{info_span, warn};

/// How often a kill is repeated until runsc reports the sandbox gone.
const KILL_RETRY: Duration = Duration::from_millis(200);
/// How long runsc gets to exit after the sandbox was killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    #[error(transparent)]
    Runsc(#[from] RunscError),
    #[error("cannot wait for runsc: {0}")]
    Wait(#[source] std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// How `runsc run` ended, before the sandbox decides the outcome.
#[derive(Debug, Clone)]
pub struct Waited {
    pub ending: Ending,
    /// The signal that interrupted skillbox, if any.
    pub signal: Option<i32>,
    pub wall: Duration,
    /// The crash line of runsc's panic log, when the sandbox crashed.
    pub failure: Option<String>,
}

enum Event {
    Exited(std::io::Result<std::process::ExitStatus>),
    Signal(i32),
    /// Work waited for with [`Interrupts::next`] is done.
    Done,
}

/// What [`Interrupts::next`] woke for.
pub enum Wake {
    Signal(i32),
    Done,
}

/// `runsc run` of a sandbox, running.
pub struct Execution {
    runsc: Runsc,
    id: String,
    timeout: Duration,
    /// Taken by `wait`; killed and reaped on drop otherwise.
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
    /// Starts `runsc run` with `stdio` (`None`: skillbox's own).
    pub fn start(
        sandbox: &Sandbox,
        bundle: &Path,
        stdio: Option<[Stdio; 3]>,
    ) -> Result<Self, ExecutionError> {
        let span = info_span!("sandbox", id = sandbox.id());
        let child = sandbox.runsc().spawn_run_with(bundle, sandbox.id(), stdio)?;
        Ok(Execution {
            runsc: sandbox.runsc().clone(),
            id: sandbox.id().to_owned(),
            timeout: sandbox.timeout(),
            child: Some(child),
            started: Instant::now(),
            span,
        })
    }

    /// The pid of `runsc run` (until `wait`).
    pub fn runsc_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Counts the wall time and the timeout from now: a pre-booted
    /// sandbox's execution begins when it is handed out, not at its boot.
    pub fn restart_clock(&mut self) {
        self.started = Instant::now();
    }

    /// Waits for the skill, enforcing the sandbox's timeout; an interrupt
    /// (also one that arrived while the sandbox was being set up) kills the
    /// sandbox.
    pub fn wait(&mut self, interrupts: &Interrupts) -> Result<Waited, ExecutionError> {
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
        let deadline = self.started + self.timeout;
        let (mut timed_out, mut signal) = (false, None);
        let mut killed_at: Option<Instant> = None;
        let status = loop {
            let wake = match killed_at {
                None => deadline.saturating_duration_since(Instant::now()),
                Some(_) => KILL_RETRY,
            };
            match events.recv_timeout(wake) {
                Ok(Event::Exited(status)) => break status.map_err(ExecutionError::Wait)?,
                Ok(Event::Signal(number)) if killed_at.is_none() => {
                    signal = Some(number);
                    killed_at = Some(Instant::now());
                    self.kill_sandbox();
                }
                Ok(Event::Signal(_) | Event::Done) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => match killed_at {
                    None => {
                        timed_out = true;
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
        let status = exit_code(status);
        // A crashed Sentry leaves a Go crash report in the panic log and
        // never reports success; anything else runsc logs there (warnings)
        // leaves the skill's status its own.
        let failure = if status != 0 {
            self.runsc.crash_report()
        } else {
            None
        };
        Ok(Waited {
            ending: Ending {
                status,
                timed_out,
                killed: signal.is_some(),
                sandbox_failed: failure.is_some(),
                ..Ending::default()
            },
            signal,
            wall: self.started.elapsed(),
            failure,
        })
    }

    fn kill_sandbox(&self) {
        if let Err(err) = self.runsc.kill(&self.id, nix::sys::signal::SIGKILL as i32) {
            tracing::debug!(%err, "runsc kill failed; the sandbox may not exist yet");
        }
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self.runsc.kill(&self.id, nix::sys::signal::SIGKILL as i32);
            let _ = child.wait();
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, caught from the start of an execution so that
/// skillbox always gets to clean up; delivered on the same channel as the
/// sandbox's exit.
pub struct Interrupts {
    sender: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    /// The signal handlers' (none for [`Interrupts::by_hand`]).
    handle: Option<Handle>,
}

/// Interrupts an execution waiting on [`Interrupts`] as if `signal` had
/// reached it, or wakes [`Interrupts::next`] ([`Interrupts::waker`]).
#[derive(Clone)]
pub struct Interrupter(mpsc::Sender<Event>);

impl Interrupter {
    pub fn interrupt(&self, signal: i32) {
        let _ = self.0.send(Event::Signal(signal));
    }

    pub fn done(&self) {
        let _ = self.0.send(Event::Done);
    }
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
            handle: Some(handle),
        })
    }

    /// Something that can wake [`next`](Self::next) when work done
    /// elsewhere ends.
    pub fn waker(&self) -> Interrupter {
        Interrupter(self.sender.clone())
    }

    /// Blocks until a signal arrives or a [`waker`](Self::waker) says done.
    pub fn next(&self) -> Wake {
        loop {
            match self.events.recv() {
                Ok(Event::Signal(signal)) => return Wake::Signal(signal),
                Ok(Event::Done) => return Wake::Done,
                Ok(Event::Exited(_)) => {}
                Err(mpsc::RecvError) => unreachable!("Interrupts holds a sender for as long as it lives"),
            }
        }
    }

    /// Interrupts that no signal handler feeds: a service waiting for one
    /// of many executions interrupts it through the [`Interrupter`].
    pub fn by_hand() -> Interrupts {
        let (sender, events) = mpsc::channel();
        Interrupts {
            sender,
            events,
            handle: None,
        }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.close();
        }
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
    /// The sandbox's teardown record (see `skillbox_sandbox::record`).
    pub fn record(&self) -> PathBuf {
        self.dir.path().join(skillbox_sandbox::record::RECORD_FILE)
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.path().join("resolv.conf")
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
