//! One pre-booted sandbox: an execution prepared as `skillbox run`
//! prepares it, with `runsc run` started on the launcher instead of the
//! skill. It boots, says it is ready, and waits; handed out, it is told
//! the execution's arguments and environment, becomes the skill, and from
//! then on is an ordinary execution (timeout, outcome, outputs, teardown).
//! It serves that one execution and is never reused.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use skillbox_launcher::protocol;

use crate::commands::run::{prepare, Executed, Plan, Prepared};
use crate::runtime::execution::{Execution, Interrupts};
use crate::runtime::inputs::stage_into;

/// How long a sandbox may take to boot before it is given up.
const BOOT_LIMIT: Duration = Duration::from_secs(60);

/// A sandbox booted and waiting in the launcher.
pub struct WarmSandbox {
    /// The digest of the skill it was compiled from.
    pub skill_digest: String,
    running: Running,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// A sandbox's execution, from its start to its end.
pub struct Running {
    /// Killed and reaped on drop, before the sandbox's teardown.
    execution: Execution,
    prepared: Prepared,
}

/// A handed-out sandbox and the stdio its client takes: stdin to write,
/// stdout and stderr to read.
pub struct HandedOut {
    pub running: Running,
    pub stdio: [OwnedFd; 3],
}

fn cloexec_pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    // Close-on-exec: another sandbox's runsc must not hold this one's pipes.
    nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")
}

impl WarmSandbox {
    /// Prepares the execution `plan` describes (its `preboot` set), starts
    /// `runsc run` and waits until the launcher reports ready.
    pub fn boot(plan: Plan) -> anyhow::Result<WarmSandbox> {
        assert!(plan.preboot.is_some(), "a warm sandbox boots into the launcher");
        let skill_digest = plan.package.digest.clone();
        let prepared = prepare(plan)?;
        let (stdin_read, stdin) = cloexec_pipe()?;
        let (stdout, stdout_write) = cloexec_pipe()?;
        let (stderr, stderr_write) = cloexec_pipe()?;
        let stdio = [stdin_read, stdout_write, stderr_write].map(Stdio::from);
        let execution = Execution::start(&prepared.sandbox, &prepared.bundle(), Some(stdio))?;
        let warm = WarmSandbox {
            skill_digest,
            running: Running { execution, prepared },
            stdin,
            stdout,
            stderr,
        };
        match warm.wait_ready() {
            Ok(()) => Ok(warm),
            Err(err) => Err(warm.failed_boot(err)),
        }
    }

    /// The memory it holds now: its cgroup's (the Sentry, the gofer, the
    /// launcher) and the proportional share of `runsc run`, which waits
    /// outside the cgroup.
    pub fn memory_bytes(&self) -> u64 {
        let runsc = self.running.execution.runsc_pid().map_or(0, |pid| {
            crate::procfs::kib_field_bytes(Path::new(&format!("/proc/{pid}/smaps_rollup")), "Pss")
        });
        self.running.prepared.sandbox.stats().memory_usage_bytes + runsc
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let mut fds = [PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
        let limit = PollTimeout::try_from(BOOT_LIMIT).expect("the boot limit fits");
        if poll(&mut fds, limit).context("cannot wait for the sandbox to boot")? == 0 {
            bail!(
                "the launcher did not report ready within {} s",
                BOOT_LIMIT.as_secs()
            );
        }
        let mut marker = [0u8; protocol::READY.len()];
        let mut stdout = File::from(self.stdout.try_clone()?);
        stdout
            .read_exact(&mut marker)
            .context("the sandbox ended before its launcher reported ready")?;
        if &marker != protocol::READY {
            bail!("the launcher wrote {marker:?} instead of its ready marker");
        }
        Ok(())
    }

    /// Ends a sandbox that did not come up; the error carries what runsc
    /// wrote to the sandbox's stderr.
    fn failed_boot(self, err: anyhow::Error) -> anyhow::Error {
        let WarmSandbox { running, stderr, .. } = self;
        // runsc is killed and reaped: every writer of stderr is gone.
        drop(running);
        let mut written = String::new();
        let _ = File::from(stderr).take(4096).read_to_string(&mut written);
        match written.trim() {
            "" => err,
            said => anyhow::anyhow!("{err:#}; runsc said: {said}"),
        }
    }

    /// Hands the sandbox to an execution: stages `inputs` into its
    /// `/workspace/in`, tells the launcher `args` and `env`, and starts the
    /// execution's clock.
    pub fn hand_out(self, args: &[String], env: &[String], inputs: &[PathBuf]) -> anyhow::Result<HandedOut> {
        let WarmSandbox {
            mut running,
            stdin,
            stdout,
            stderr,
            ..
        } = self;
        if !inputs.is_empty() {
            stage_into(inputs, &running.prepared.inputs_staging())?;
        }
        let mut writer = File::from(stdin.try_clone()?);
        writer
            .write_all(&protocol::encode(args, env))
            .context("cannot hand the execution to the sandbox's launcher")?;
        running.execution.restart_clock();
        Ok(HandedOut {
            running,
            stdio: [stdin, stdout, stderr],
        })
    }
}

impl Running {
    pub fn execution_id(&self) -> &str {
        &self.prepared.id
    }

    /// Waits for the execution's end (its timeout, an interrupt), then
    /// ends it as `skillbox run` does, copying `/workspace/out` to `output`.
    pub fn wait_and_finish(
        mut self,
        interrupts: &Interrupts,
        output: Option<&Path>,
    ) -> anyhow::Result<Executed> {
        let waited = self.execution.wait(interrupts)?;
        let Running { execution, prepared } = self;
        drop(execution);
        prepared.finish(waited, output)
    }
}
