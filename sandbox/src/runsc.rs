//! The only place that starts runsc. Argv comes from `runsc_config`; every
//! failure carries the argv, exit status and output.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use runsc_config::{
    argv, GlobalOptions, HostCapabilities, ModeSupport, NetworkMode, PlatformSupport, RunscFlags,
    RunscVersion, Subcommand,
};

/// A runsc invocation that could not start or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunscError {
    #[error("cannot start `{argv}`: {source}")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` failed ({status}): {stderr}{}", logged_errors(.logged))]
    Failed {
        argv: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
        /// The errors runsc, its gofer and its sandbox wrote to runsc's
        /// log during the call: the real cause is often only there (a
        /// mount point the gofer could not make, say).
        logged: Vec<String>,
    },
    #[error("`{argv}` did not finish within {limit:?}; killed")]
    TimedOut { argv: String, limit: Duration },
    #[error("`{argv}` did not start the process within {limit:?}; killed")]
    NotStarted { argv: String, limit: Duration },
    #[error("cannot read `{argv}` output: {reason}")]
    Output { argv: String, reason: String },
    #[error("cannot parse `{argv}` output: {source}")]
    Parse {
        argv: String,
        #[source]
        source: runsc_config::Error,
    },
}

fn logged_errors(logged: &[String]) -> String {
    match logged {
        [] => String::new(),
        errors => format!(" (runsc's log: {})", errors.join("; ")),
    }
}

/// runsc with one state root and one set of sandbox flags. runsc reads its
/// configuration flags on every subcommand, so each call repeats them.
#[derive(Debug, Clone)]
pub struct Runsc {
    binary: PathBuf,
    global: GlobalOptions,
    flags: RunscFlags,
}

fn render(binary: &Path, args: &[OsString]) -> String {
    std::iter::once(binary.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|arg| arg.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Runsc {
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>, flags: RunscFlags) -> Runsc {
        Runsc {
            binary: binary.into(),
            global: GlobalOptions::new(root),
            flags,
        }
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// runsc's state root (`--root`).
    pub fn root(&self) -> &Path {
        &self.global.root
    }

    /// Makes runsc write Go runtime panics (a crashed Sentry) to `path`.
    pub fn with_panic_log(mut self, path: impl Into<PathBuf>) -> Runsc {
        self.global.panic_log = Some(path.into());
        self
    }

    /// Makes runsc (and the gofers and sandboxes it starts) log to `path`,
    /// as JSON; a failed call then reports the errors logged meanwhile.
    pub fn with_log(mut self, path: impl Into<PathBuf>) -> Runsc {
        self.global.log = Some(path.into());
        self.global.log_format_json = true;
        self
    }

    /// Where the log's end is now, to read what a call adds.
    fn log_mark(&self) -> Option<u64> {
        let log = self.global.log.as_ref()?;
        Some(std::fs::metadata(log).map(|meta| meta.len()).unwrap_or(0))
    }

    /// `result`, with the errors runsc logged since `mark` added to a
    /// failure.
    fn with_logged<T>(&self, mark: Option<u64>, result: Result<T, RunscError>) -> Result<T, RunscError> {
        match (result, mark, &self.global.log) {
            (
                Err(RunscError::Failed {
                    argv,
                    status,
                    stdout,
                    stderr,
                    ..
                }),
                Some(mark),
                Some(log),
            ) => Err(RunscError::Failed {
                argv,
                status,
                stdout,
                stderr,
                logged: errors_logged_since(log, mark),
            }),
            (result, _, _) => result,
        }
    }

    /// Starts sandboxes with the runtime-monitoring session in `path`.
    pub fn with_pod_init_config(mut self, path: impl Into<PathBuf>) -> Runsc {
        self.global.pod_init_config = Some(path.into());
        self
    }

    /// The crash the panic log reports, if the Sentry crashed: see
    /// [`crash_line`].
    pub fn crash_report(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.global.panic_log.as_ref()?).ok()?;
        crash_line(&text).map(str::to_owned)
    }

    fn command(&self, sub: &Subcommand) -> (Command, String) {
        let args = argv(&self.global, &self.flags, sub);
        let rendered = render(&self.binary, &args);
        let mut command = Command::new(&self.binary);
        command.args(&args);
        (command, rendered)
    }

    /// Starts `runsc run` with the caller's stdio, in its own process group so
    /// that a terminal's Ctrl-C reaches skillbox, which then tears down.
    pub fn spawn_run(&self, bundle: &Path, id: &str) -> Result<Child, RunscError> {
        self.spawn_run_with(bundle, id, None)
    }

    /// [`spawn_run`](Self::spawn_run) with the given stdin, stdout and
    /// stderr instead of the caller's (`None`: the caller's).
    pub fn spawn_run_with(
        &self,
        bundle: &Path,
        id: &str,
        stdio: Option<[Stdio; 3]>,
    ) -> Result<Child, RunscError> {
        let (mut command, rendered) = self.command(&Subcommand::Run {
            bundle: bundle.to_owned(),
            id: id.to_owned(),
            detach: false,
            pid_file: None,
        });
        if let Some([stdin, stdout, stderr]) = stdio {
            command.stdin(stdin).stdout(stdout).stderr(stderr);
        }
        command.process_group(0);
        tracing::debug!(argv = %rendered, "starting sandbox");
        command.spawn().map_err(|source| RunscError::Spawn {
            argv: rendered,
            source,
        })
    }

    /// `runsc create` with the container's stdio, or a terminal sent to
    /// `console_socket`. runsc writes the sandbox's pid to `pid_file`; that
    /// process exits with the container's status (see docs/runsc-facts.md).
    pub fn create(
        &self,
        bundle: &Path,
        id: &str,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: [Stdio; 3],
    ) -> Result<(), RunscError> {
        self.run_with_stdio(
            &Subcommand::Create {
                bundle: bundle.to_owned(),
                id: id.to_owned(),
                pid_file: Some(pid_file.to_owned()),
                console_socket: console_socket.map(Path::to_owned),
            },
            stdio,
        )
    }

    /// `runsc exec` of the process spec at `process`: returns once the
    /// process runs. A `runsc exec` is left behind that holds the process's
    /// stdio or terminal and exits with its status: the child started here
    /// (its pid returned), or, with a terminal, the one runsc forks, which
    /// `pid_files.0` names and the caller, a subreaper, inherits (`None`).
    ///
    /// With a terminal, runsc's `--detach` makes it. Without one, `runsc
    /// exec` is started here and watched for its pid file: `--detach`'s
    /// parent watches the same way but fails with status 128 (and reaps
    /// the child, losing the process's status) when the child has already
    /// exited, as a process as short as `true` can under load (see
    /// docs/runsc-facts.md).
    pub fn exec(
        &self,
        id: &str,
        process: &Path,
        pid_files: (&Path, &Path),
        console_socket: Option<&Path>,
        stdio: [Stdio; 3],
    ) -> Result<Option<u32>, RunscError> {
        let detach = console_socket.is_some();
        let sub = Subcommand::Exec {
            id: id.to_owned(),
            process: process.to_owned(),
            pid_file: pid_files.0.to_owned(),
            internal_pid_file: pid_files.1.to_owned(),
            console_socket: console_socket.map(Path::to_owned),
            detach,
        };
        // Files left by an earlier shim of the same bundle must not pass
        // for this exec's.
        for file in [pid_files.0, pid_files.1] {
            let _ = std::fs::remove_file(file);
        }
        if detach {
            return self.run_with_stdio(&sub, stdio).map(|()| None);
        }
        let mark = self.log_mark();
        let result = self.exec_until_started(&sub, pid_files.0, stdio);
        self.with_logged(mark, result).map(Some)
    }

    /// Starts `sub` (an exec without `--detach`) with the process's stdio
    /// and returns its pid once runsc has written a pid to `pid_file`,
    /// which it does when the process runs. The child is left unreaped for
    /// the caller's reaper, also when it has already exited; one that exits
    /// without writing the file failed, and is reaped here for its status.
    fn exec_until_started(
        &self,
        sub: &Subcommand,
        pid_file: &Path,
        stdio: [Stdio; 3],
    ) -> Result<u32, RunscError> {
        let (mut command, argv) = self.command(sub);
        let [stdin, stdout, stderr] = stdio;
        command.stdin(stdin).stdout(stdout).stderr(stderr);
        let spawned = command.spawn();
        // Our copies of the process's stdio close with the command.
        drop(command);
        let mut child = spawned.map_err(|source| RunscError::Spawn {
            argv: argv.clone(),
            source,
        })?;
        let pid = child.id();
        // runsc's own pid, or, behind a wrapper that does not exec runsc,
        // a descendant's: either way the process runs.
        let started =
            || std::fs::read_to_string(pid_file).is_ok_and(|text| text.trim().parse::<u32>().is_ok());
        let deadline = Instant::now() + EXEC_START_LIMIT;
        let mut pause = Duration::from_millis(1);
        loop {
            if started() {
                return Ok(pid);
            }
            if has_exited(pid) {
                // The pid file is written before the process can end.
                if started() {
                    return Ok(pid);
                }
                let status = child.wait().map_err(|source| RunscError::Spawn {
                    argv: argv.clone(),
                    source,
                })?;
                return Err(RunscError::Failed {
                    argv,
                    status,
                    stdout: String::new(),
                    stderr: "see the container's stderr".to_owned(),
                    logged: Vec::new(),
                });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunscError::NotStarted {
                    argv,
                    limit: EXEC_START_LIMIT,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Runs a subcommand whose stdio is the container's, so its errors go to
    /// the container's stderr.
    fn run_with_stdio(&self, sub: &Subcommand, stdio: [Stdio; 3]) -> Result<(), RunscError> {
        let mark = self.log_mark();
        let result = self.run_with_stdio_unlogged(sub, stdio);
        self.with_logged(mark, result)
    }

    fn run_with_stdio_unlogged(&self, sub: &Subcommand, stdio: [Stdio; 3]) -> Result<(), RunscError> {
        let (mut command, rendered) = self.command(sub);
        let [stdin, stdout, stderr] = stdio;
        // Streams given as `Stdio::piped()` are captured for the error.
        let output = command
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .output()
            .map_err(|source| RunscError::Spawn {
                argv: rendered.clone(),
                source,
            })?;
        if !output.status.success() {
            let captured = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Err(RunscError::Failed {
                argv: rendered,
                status: output.status,
                stdout: String::new(),
                stderr: if captured.is_empty() {
                    "see the container's stderr".to_owned()
                } else {
                    captured
                },
                logged: Vec::new(),
            });
        }
        Ok(())
    }

    /// Sends `signal` to one process of the container, by its sandbox pid.
    pub fn kill_process(&self, id: &str, pid: u32, signal: i32) -> Result<String, RunscError> {
        self.check(&Subcommand::KillProcess {
            id: id.to_owned(),
            pid,
            signal,
        })
    }

    /// `runsc create` of a container that joins a running sandbox (its spec
    /// carries the CRI annotations). runsc starts no process for it (its
    /// gofer comes at start), so its output is captured; `pid_file` gets the
    /// sandbox's pid.
    pub fn create_joining(&self, bundle: &Path, id: &str, pid_file: &Path) -> Result<String, RunscError> {
        self.check(&Subcommand::Create {
            bundle: bundle.to_owned(),
            id: id.to_owned(),
            pid_file: Some(pid_file.to_owned()),
            console_socket: None,
        })
    }

    pub fn start(&self, id: &str) -> Result<String, RunscError> {
        self.check(&Subcommand::Start { id: id.to_owned() })
    }

    /// `runsc start` of a container that joins a running sandbox: runsc
    /// gives such a container the stdio of the `start` process (a sandbox's
    /// first container takes the stdio of `runsc create` instead).
    pub fn start_with_stdio(&self, id: &str, stdio: [Stdio; 3]) -> Result<(), RunscError> {
        let mark = self.log_mark();
        let (mut command, rendered) = self.command(&Subcommand::Start { id: id.to_owned() });
        let [stdin, stdout, stderr] = stdio;
        let status = command
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .map_err(|source| RunscError::Spawn {
                argv: rendered.clone(),
                source,
            })?;
        if !status.success() {
            let failed = Err(RunscError::Failed {
                argv: rendered,
                status,
                stdout: String::new(),
                stderr: "see the container's stderr".to_owned(),
                logged: Vec::new(),
            });
            return self.with_logged(mark, failed);
        }
        Ok(())
    }

    /// The CPU time container `id`'s processes used, as the Sentry counts
    /// it per container (`runsc events --stats`; its memory and pids
    /// figures are the whole sandbox's).
    pub fn cpu_usage(&self, id: &str) -> Result<Duration, RunscError> {
        let sub = Subcommand::Events {
            id: id.to_owned(),
            stats: true,
        };
        let stdout = self.check(&sub)?;
        cpu_usage_in(&stdout).ok_or_else(|| RunscError::Output {
            argv: render(&self.binary, &argv(&self.global, &self.flags, &sub)),
            reason: format!(
                "expected {{\"data\": {{\"cpu\": {{\"usage\": {{\"total\": N}}}}}}}}, got {:?}",
                stdout.trim()
            ),
        })
    }

    /// The pid of container `id`'s gofer, from runsc's state file
    /// (`<root>/<id>_sandbox:<sandbox id>.state`, field `goferPid`); `None`
    /// when runsc has no state for it or no gofer runs.
    pub fn gofer_pid(&self, id: &str) -> Option<i32> {
        let prefix = format!("{id}_sandbox:");
        let entries = std::fs::read_dir(self.root()).ok()?;
        let state = entries.filter_map(Result::ok).find(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".state")
        })?;
        let text = std::fs::read_to_string(state.path()).ok()?;
        gofer_pid_in(&text)
    }

    /// `runsc wait <id>`: blocks until a started container exits and returns
    /// its status (128 + signal when killed). Works for a container that
    /// joined a sandbox, not for a sandbox's first container (see
    /// docs/runsc-facts.md).
    pub fn wait(&self, id: &str) -> Result<u32, RunscError> {
        let sub = Subcommand::Wait { id: id.to_owned() };
        let stdout = self.check(&sub)?;
        let waited: Result<serde_json::Value, _> = serde_json::from_str(stdout.trim());
        waited
            .ok()
            .and_then(|waited| waited["exitStatus"].as_u64())
            .and_then(|status| u32::try_from(status).ok())
            .ok_or_else(|| RunscError::Output {
                argv: render(&self.binary, &argv(&self.global, &self.flags, &sub)),
                reason: format!("expected {{\"exitStatus\": N}}, got {:?}", stdout.trim()),
            })
    }

    /// The sandbox flags every call repeats.
    pub fn flags(&self) -> &RunscFlags {
        &self.flags
    }

    /// The container's process ids, as the sandbox numbers them.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>, RunscError> {
        let sub = Subcommand::Ps {
            id: id.to_owned(),
            json: true,
        };
        let stdout = self.check(&sub)?;
        serde_json::from_str(stdout.trim()).map_err(|err| RunscError::Output {
            argv: render(&self.binary, &argv(&self.global, &self.flags, &sub)),
            reason: format!("expected a JSON list of pids: {err}"),
        })
    }

    pub fn pause(&self, id: &str) -> Result<String, RunscError> {
        self.check(&Subcommand::Pause { id: id.to_owned() })
    }

    pub fn resume(&self, id: &str) -> Result<String, RunscError> {
        self.check(&Subcommand::Resume { id: id.to_owned() })
    }

    /// Runs a subcommand to completion and returns its stdout.
    pub fn check(&self, sub: &Subcommand) -> Result<String, RunscError> {
        let mark = self.log_mark();
        let (mut command, rendered) = self.command(sub);
        self.with_logged(mark, run_captured(&mut command, rendered))
    }

    /// Sends `signal` to every process of the container.
    pub fn kill(&self, id: &str, signal: i32) -> Result<String, RunscError> {
        self.kill_with(id, signal, true)
    }

    /// Sends `signal` to the container's init, or to all its processes.
    pub fn kill_with(&self, id: &str, signal: i32, all: bool) -> Result<String, RunscError> {
        self.check(&Subcommand::Kill {
            id: id.to_owned(),
            signal,
            all,
        })
    }

    /// Saves the container's state under `image_path`; stops it unless
    /// `leave_running`.
    pub fn checkpoint(&self, id: &str, image_path: &Path, leave_running: bool) -> Result<String, RunscError> {
        self.check(&Subcommand::Checkpoint {
            id: id.to_owned(),
            image_path: image_path.to_owned(),
            leave_running,
        })
    }

    pub fn delete_force(&self, id: &str) -> Result<String, RunscError> {
        let deleted = self.check(&Subcommand::Delete {
            id: id.to_owned(),
            force: true,
        });
        self.remove_stale_locks(id);
        deleted
    }

    /// Removes `<id>_sandbox:*.lock` files left without their `.state`:
    /// a runsc command that loads a container (`wait`, `state`) creates the
    /// lock file first, so one racing a delete leaves it behind.
    fn remove_stale_locks(&self, id: &str) {
        let prefix = format!("{id}_sandbox:");
        let Ok(entries) = std::fs::read_dir(&self.global.root) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".lock"))
            else {
                continue;
            };
            let state = self.global.root.join(format!("{prefix}{stem}.state"));
            if !state.exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// `runsc --version`, parsed; a runsc that does not answer within
    /// [`VERSION_LIMIT`] is killed and reported.
    pub fn version(&self) -> Result<RunscVersion, RunscError> {
        self.version_within(VERSION_LIMIT)
    }

    /// [`Runsc::version`] with another time limit.
    pub fn version_within(&self, limit: Duration) -> Result<RunscVersion, RunscError> {
        let mut command = Command::new(&self.binary);
        command.arg("--version");
        let rendered = format!("{} --version", self.binary.display());
        let (status, output) = output_within(&mut command, &rendered, limit)?;
        let status = status.ok_or_else(|| RunscError::TimedOut {
            argv: rendered.clone(),
            limit,
        })?;
        let stdout = stdout_of_success(rendered.clone(), status, &output)?;
        RunscVersion::parse(&stdout).map_err(|source| RunscError::Parse {
            argv: rendered,
            source,
        })
    }

    /// Tries `bundle` under each network mode, and on each platform this
    /// runsc offers, and reports what works here.
    pub fn probe(&self, bundle: &Path) -> Result<HostCapabilities, RunscError> {
        let version = self.version()?;
        let network = |mode: NetworkMode| -> Result<ModeSupport, RunscError> {
            let flags = RunscFlags {
                network: mode,
                ..self.flags.clone()
            };
            let trial = self.trial(flags, mode.as_str(), bundle)?;
            Ok(runsc_config::classify_trial(mode, trial.success, &trial.stderr))
        };
        let network = runsc_config::NetworkSupport {
            none: network(NetworkMode::None)?,
            sandbox: network(NetworkMode::Sandbox)?,
            host: network(NetworkMode::Host)?,
        };
        let mut platforms = Vec::new();
        for platform in version.platforms() {
            let flags = RunscFlags {
                network: NetworkMode::None,
                platform,
                ..self.flags.clone()
            };
            let trial = self.trial(flags, platform.as_str(), bundle)?;
            platforms.push(PlatformSupport {
                platform,
                support: runsc_config::classify_platform_trial(
                    platform,
                    trial.success,
                    trial.timed_out.then_some(TRIAL_LIMIT.as_secs()),
                    &trial.stderr,
                ),
            });
        }
        Ok(HostCapabilities {
            version,
            network,
            platforms,
        })
    }

    /// Runs `bundle` once with `flags`, killed after [`TRIAL_LIMIT`] (a
    /// platform that cannot work, such as kvm where `/dev/kvm` exists but
    /// virtualisation does not, can hang).
    fn trial(&self, flags: RunscFlags, label: &str, bundle: &Path) -> Result<Trial, RunscError> {
        let runsc = Runsc {
            flags,
            ..self.clone()
        };
        let id = format!("skillbox-probe-{label}-{}", std::process::id());
        let (mut command, rendered) = runsc.command(&Subcommand::Run {
            bundle: bundle.to_owned(),
            id: id.clone(),
            detach: false,
            pid_file: None,
        });
        let (status, output) = output_within(&mut command, &rendered, TRIAL_LIMIT)?;
        let timed_out = status.is_none();
        if timed_out {
            // The sandbox outlives the runsc process killed at the limit.
            let _ = runsc.kill(&id, nix::sys::signal::Signal::SIGKILL as i32);
        }
        let _ = runsc.delete_force(&id);
        // runsc leaves the trial's cgroup (named after the container) when
        // the platform fails early, as kvm does where it cannot run.
        if let Ok(cgroups) = crate::cgroup::CgroupFs::detect() {
            cgroups.remove_if_empty(&[PathBuf::from(&id)]);
        }
        Ok(Trial {
            success: status.is_some_and(|status| status.success()),
            timed_out,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// How long a probe's trial sandbox gets to run `/bin/true`.
pub const TRIAL_LIMIT: Duration = Duration::from_secs(20);

/// How long `runsc --version` gets.
pub const VERSION_LIMIT: Duration = Duration::from_secs(10);

/// How long `runsc exec` may take to start its process (runsc's own
/// `--detach` waits as long).
const EXEC_START_LIMIT: Duration = Duration::from_secs(10);

/// Whether child `pid` has exited, leaving it to be reaped (`WNOWAIT`).
fn has_exited(pid: u32) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(
        waitid(Id::Pid(Pid::from_raw(pid as i32)), flags),
        Ok(WaitStatus::StillAlive) | Err(Errno::EINTR)
    )
}

/// Runs `command` (stdin closed) to its end, or kills it at `limit`: its
/// status (`None` when killed) and what it wrote. For commands that write
/// little: a full pipe would hold them until the limit.
fn output_within(
    command: &mut Command,
    rendered: &str,
    limit: Duration,
) -> Result<(Option<ExitStatus>, std::process::Output), RunscError> {
    let spawn_error = |source| RunscError::Spawn {
        argv: rendered.to_owned(),
        source,
    };
    // A group of its own, so that what it started dies with it and frees
    // the pipes.
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(spawn_error)?;
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => break None,
        }
    };
    if status.is_none() {
        let group = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    Ok((status, output))
}

/// How one trial run went.
struct Trial {
    success: bool,
    timed_out: bool,
    stderr: String,
}

/// How the Go runtime begins the report of a program it ends: an
/// unrecovered panic or a fatal runtime error.
pub const GO_CRASH_PREFIXES: &[&str] = &["panic:", "fatal error:"];

/// The first line of a runsc panic log that reports a crash. runsc writes
/// other lines there as well, such as the rate-limited warning it logs
/// when a skill tries to open a raw socket; those say nothing about the
/// sandbox's state.
pub fn crash_line(panic_log: &str) -> Option<&str> {
    panic_log
        .lines()
        .map(str::trim)
        .find(|line| GO_CRASH_PREFIXES.iter().any(|prefix| line.starts_with(prefix)))
}

fn run_captured(command: &mut Command, rendered: String) -> Result<String, RunscError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RunscError::Spawn {
            argv: rendered.clone(),
            source,
        })?;
    stdout_of_success(rendered, output.status, &output)
}

/// What the command `rendered` wrote on stdout, when `status` is success.
fn stdout_of_success(
    rendered: String,
    status: ExitStatus,
    output: &std::process::Output,
) -> Result<String, RunscError> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !status.success() {
        return Err(RunscError::Failed {
            argv: rendered,
            status,
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            logged: Vec::new(),
        });
    }
    Ok(stdout)
}

fn cpu_usage_in(events: &str) -> Option<Duration> {
    let events: serde_json::Value = serde_json::from_str(events.trim()).ok()?;
    let cpu = &events["data"]["cpu"]["usage"];
    // A container that has not used the CPU yet has no `total`.
    Some(Duration::from_nanos(cpu["total"].as_u64().unwrap_or(0))).filter(|_| cpu.is_object())
}

fn gofer_pid_in(state: &str) -> Option<i32> {
    let state: serde_json::Value = serde_json::from_str(state).ok()?;
    state["goferPid"]
        .as_i64()
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|pid| *pid > 0)
}

/// How many logged errors a failure carries at most (the first ones: the
/// cause comes before its consequences).
const MAX_LOGGED_ERRORS: usize = 5;

/// The `error`-level messages of the JSON log at `path` from byte `mark`
/// on, in order, each once. runsc writes one JSON object per entry, not
/// always newline-separated.
fn errors_logged_since(path: &Path, mark: u64) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(mark))?;
        // Bounded: a sandbox may have logged a lot meanwhile.
        file.take(1 << 20).read_to_end(&mut text)
    });
    if read.is_err() {
        return Vec::new();
    }
    logged_errors_in(&text)
}

fn logged_errors_in(text: &[u8]) -> Vec<String> {
    let mut errors: Vec<String> = Vec::new();
    for entry in serde_json::Deserializer::from_slice(text).into_iter::<serde_json::Value>() {
        let Ok(entry) = entry else { break };
        let (Some("error"), Some(message)) = (entry["level"].as_str(), entry["msg"].as_str()) else {
            continue;
        };
        let message = message.trim().to_owned();
        if !errors.contains(&message) {
            errors.push(message);
        }
        if errors.len() == MAX_LOGGED_ERRORS {
            break;
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containers_cpu_comes_from_its_events() {
        // What runsc 20221219 prints for a pod member and for the pod's
        // first container.
        let member = r#"{"type":"stats","id":"m","data":{"cpu":{"usage":{"total":4982103338}},"memory":{"usage":{"usage":15831040}},"pids":{"current":5}}}"#;
        assert_eq!(cpu_usage_in(member), Some(Duration::from_nanos(4_982_103_338)));
        let idle = r#"{"type":"stats","id":"s","data":{"cpu":{"usage":{}},"memory":{}}}"#;
        assert_eq!(cpu_usage_in(idle), Some(Duration::ZERO));
        assert_eq!(cpu_usage_in("{}"), None);
    }

    #[test]
    fn the_gofer_pid_comes_from_the_state_file() {
        assert_eq!(
            gofer_pid_in(r#"{"id":"a","goferPid":8613,"sandbox":{"pid":8615}}"#),
            Some(8613)
        );
        assert_eq!(gofer_pid_in(r#"{"id":"a","goferPid":0}"#), None);
        assert_eq!(gofer_pid_in("{"), None);
    }

    #[test]
    fn the_errors_runsc_logged_are_read_in_order_and_once() {
        // What runsc 20221219 logs (no newline between entries) when its
        // gofer cannot make a mount point in a read-only root.
        let log = br#"{"msg":"Starting sandbox","level":"info","time":"t"}{"msg":"error setting up FS: mkdir /proc/root/dev: read-only file system","level":"error","time":"t"}
{"msg":"creating container: EOF","level":"error","time":"t"}{"msg":"creating container: EOF","level":"error","time":"t"}"#;
        assert_eq!(
            logged_errors_in(log),
            [
                "error setting up FS: mkdir /proc/root/dev: read-only file system",
                "creating container: EOF"
            ]
        );
        assert!(logged_errors_in(b"not json").is_empty());
    }

    #[test]
    fn only_a_go_crash_in_the_panic_log_is_a_crash() {
        // What runsc 20221219 logs when a skill tries a raw socket.
        let warning = "I1206 01:46:03.986767   20440 rate_limited.go:36] A process tried to create a raw socket without CAP_NET_RAW. Should the container config enable CAP_NET_RAW?\n";
        assert_eq!(crash_line(warning), None);
        assert_eq!(crash_line(""), None);
        let panicked = format!("{warning}panic: error initializing first thread: resource temporarily unavailable\n\ngoroutine 1 [running]:\n");
        assert_eq!(
            crash_line(&panicked),
            Some("panic: error initializing first thread: resource temporarily unavailable")
        );
        let fatal = "runtime: failed to create new OS thread\nfatal error: newosproc\n";
        assert_eq!(crash_line(fatal), Some("fatal error: newosproc"));
    }
}
