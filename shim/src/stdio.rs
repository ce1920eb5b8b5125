//! A container's stdio as containerd names it in Create: FIFO paths, a
//! `file://` log URI, or a `binary://` logger (`ctr run --log-uri
//! binary:///path/to/logger?key=value`).
//!
//! The binary logger follows containerd's contract (its `pkg/process/io.go`
//! and `utils.go`, checked in containerd's source, see
//! `docs/containerd-shim-facts.md`):
//!
//! 1. The program is the URI's path; each query parameter `k=v` becomes the
//!    arguments `k v` (`k` alone when `v` is empty), in the URI's order;
//!    a parameter `env.NAME=v` sets `NAME=v` in the environment instead.
//! 2. Its environment is only `CONTAINER_ID`, `CONTAINER_NAMESPACE` and the
//!    `env.` parameters (which cannot override those two).
//! 3. fd 3 is the read end of the container's stdout pipe, fd 4 of its
//!    stderr pipe, and fd 5 the write end of a pipe the logger closes (or
//!    writes a byte to) once ready. The shim waits for that at most
//!    [`LOGGER_READY_TIMEOUT`]; a logger that is not ready by then is
//!    killed and Create fails.
//! 4. The container gets the pipes' write ends; the shim keeps none (they
//!    are closed once `runsc create` has passed them on), so the logger
//!    reads EOF when the sandbox is gone.
//! 5. At Delete, after the sandbox is gone, the shim waits for the logger
//!    to exit on its own (it has read everything) at most
//!    [`LOGGER_DRAIN_TIMEOUT`], then sends SIGTERM (containerd's stop
//!    signal) and waits [`LOGGER_TERM_TIMEOUT`], then SIGKILL.
//!
//! Only the stdout URI decides, as in containerd: with `binary://` the
//! logger receives both streams and the stderr URI is not opened again.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::stdin::StdinPipe;

/// How long a logger gets to signal readiness on fd 5.
pub const LOGGER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a logger gets to drain its pipes and exit after the sandbox.
pub const LOGGER_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a logger gets to exit after SIGTERM before SIGKILL.
pub const LOGGER_TERM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("{path}: cannot open container stdio: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{uri}: unsupported log URI: {reason}")]
    Uri { uri: String, reason: String },
    #[error("{uri}: cannot make the logger's pipes: {source}")]
    Pipe {
        uri: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{uri}: cannot start the logger {program}: {source}")]
    Spawn {
        uri: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{uri}: the logger did not signal readiness (closing fd 5) within {timeout:?}; it was killed")]
    NotReady { uri: String, timeout: Duration },
}

/// A parsed `binary://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryUri {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

fn unhex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding as Go's `url.QueryUnescape` (`+` is a space in a query).
fn decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let high = unhex(*bytes.get(at + 1)?)?;
                let low = unhex(*bytes.get(at + 2)?)?;
                out.push(high << 4 | low);
                at += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                at += 1;
            }
            other => {
                out.push(other);
                at += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl BinaryUri {
    /// Parses `binary:///abs/path?k=v&env.NAME=v`.
    pub fn parse(uri: &str) -> Result<BinaryUri, StdioError> {
        let error = |reason: &str| StdioError::Uri {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = uri
            .strip_prefix("binary://")
            .ok_or_else(|| error("not a binary:// URI"))?;
        let rest = rest.split('#').next().unwrap_or_default();
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !path.starts_with('/') {
            return Err(error(
                "the logger must be an absolute path with no host (binary:///path/to/logger)",
            ));
        }
        let path = decode(path, false).ok_or_else(|| error("bad percent-encoding in the path"))?;
        let mut args = Vec::new();
        let mut env = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key, true).ok_or_else(|| error("bad percent-encoding in the query"))?;
            let value = decode(value, true).ok_or_else(|| error("bad percent-encoding in the query"))?;
            if let Some(name) = key.strip_prefix("env.") {
                if !name.is_empty() && name != "CONTAINER_ID" && name != "CONTAINER_NAMESPACE" {
                    env.push((name.to_owned(), value));
                }
                continue;
            }
            args.push(key);
            if !value.is_empty() {
                args.push(value);
            }
        }
        Ok(BinaryUri {
            program: PathBuf::from(path),
            args,
            env,
        })
    }
}

/// A running binary logger. Dropping it without [`Logger::finish`] kills it
/// (the failure paths of Create).
#[derive(Debug)]
pub struct Logger {
    uri: String,
    pid: Pid,
    done: bool,
}

/// How a logger ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggerEnd {
    /// It exited on its own after reading everything.
    Drained,
    /// It exited only after SIGTERM.
    Terminated,
    /// It had to be SIGKILLed.
    Killed,
}

/// Whether `pid` (a child) has exited, reaping it. A child reaped by
/// someone else (the shim's orphan reaper) counts as exited.
fn exited(pid: Pid) -> bool {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => false,
        Ok(_) => true,
        Err(_) => true,
    }
}

fn wait_until(pid: Pid, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if exited(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Logger {
    /// Starts the logger named by `uri` for container `id` of `namespace`;
    /// returns it with the write ends of the stdout and stderr pipes.
    pub fn start(uri: &str, id: &str, namespace: &str) -> Result<(Logger, OwnedFd, OwnedFd), StdioError> {
        Logger::start_within(uri, id, namespace, LOGGER_READY_TIMEOUT)
    }

    fn start_within(
        uri: &str,
        id: &str,
        namespace: &str,
        ready_timeout: Duration,
    ) -> Result<(Logger, OwnedFd, OwnedFd), StdioError> {
        let parsed = BinaryUri::parse(uri)?;
        let pipe_error = |source| StdioError::Pipe {
            uri: uri.to_owned(),
            source,
        };
        // Close-on-exec pipes: neither runsc nor other children inherit
        // them; the pre-exec step below hands three to the logger.
        let pipe =
            || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| pipe_error(errno.into()));
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let (ready_read, ready_write) = pipe()?;
        let sources = [
            out_read.as_raw_fd(),
            err_read.as_raw_fd(),
            ready_write.as_raw_fd(),
        ];

        let mut command = Command::new(&parsed.program);
        command
            .args(&parsed.args)
            .env_clear()
            .env("CONTAINER_ID", id)
            .env("CONTAINER_NAMESPACE", namespace)
            .envs(parsed.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only
        // calls fcntl(2) and dup2(2), which are async-signal-safe; it
        // allocates nothing and touches no lock.
        unsafe {
            command.pre_exec(move || {
                // Lift every source above 5 first, so that placing one on
                // 3, 4 or 5 cannot overwrite another still to be placed.
                let mut lifted = [0; 3];
                for (slot, fd) in lifted.iter_mut().zip(sources) {
                    let copy = nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, 10);
                    if copy < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    *slot = copy;
                }
                for (target, fd) in (3..).zip(lifted) {
                    // dup2 clears close-on-exec on the target.
                    if nix::libc::dup2(fd, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| StdioError::Spawn {
            uri: uri.to_owned(),
            program: parsed.program.clone(),
            source,
        })?;
        let logger = Logger {
            uri: uri.to_owned(),
            pid: Pid::from_raw(child.id() as i32),
            done: false,
        };
        // Dropping a std Child neither kills nor waits: the logger is
        // waited for by pid in `finish`.
        drop(child);
        drop((out_read, err_read, ready_write));

        // Readiness: EOF (or a byte) on fd 5's pipe, read on a thread so
        // that the wait is bounded.
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut ready_read = File::from(ready_read);
            let mut byte = [0u8; 1];
            let _ = sender.send(ready_read.read(&mut byte).is_ok());
        });
        if receiver.recv_timeout(ready_timeout).is_err() {
            // Dropping the logger kills it, which ends the reader thread.
            return Err(StdioError::NotReady {
                uri: uri.to_owned(),
                timeout: ready_timeout,
            });
        }
        tracing::info!(%id, %namespace, pid = logger.pid.as_raw(), "binary logger ready");
        Ok((logger, out_write, err_write))
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Waits for the logger to finish once the container's write ends are
    /// all closed (the sandbox is gone), bounded as the module doc says.
    /// Blocking.
    pub fn finish(mut self) -> LoggerEnd {
        self.done = true;
        if wait_until(self.pid, LOGGER_DRAIN_TIMEOUT) {
            return LoggerEnd::Drained;
        }
        tracing::warn!(uri = %self.uri, "the logger did not exit after the container; sending SIGTERM");
        let _ = kill(self.pid, Signal::SIGTERM);
        if wait_until(self.pid, LOGGER_TERM_TIMEOUT) {
            return LoggerEnd::Terminated;
        }
        tracing::warn!(uri = %self.uri, "the logger ignored SIGTERM; killing it");
        let _ = kill(self.pid, Signal::SIGKILL);
        wait_until(self.pid, LOGGER_TERM_TIMEOUT);
        LoggerEnd::Killed
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        if !self.done && !exited(self.pid) {
            let _ = kill(self.pid, Signal::SIGKILL);
            wait_until(self.pid, LOGGER_TERM_TIMEOUT);
        }
    }
}

/// The paths containerd gave for a container's stdio (FIFOs, `file://` or
/// `binary://` URIs, or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

/// A container's opened stdio: the three streams for `runsc create`, and
/// the logger to wait for at Delete.
#[derive(Debug)]
pub struct OpenedStdio {
    pub streams: [Stdio; 3],
    pub logger: Option<Logger>,
    /// The shim's end of stdin, closed by CloseIO (see stdin.rs).
    pub stdin: Option<StdinPipe>,
}

/// Opens a process's stdout or stderr (see [`open_path`]).
pub fn open_output(path: &str) -> Result<Stdio, StdioError> {
    open_path(path)
}

/// Gives a process the stdin FIFO `path` through a pipe the shim owns, so
/// that CloseIO can end it; nothing when `path` is empty.
pub fn open_input(path: &str) -> Result<(Stdio, Option<StdinPipe>), StdioError> {
    if path.is_empty() {
        return Ok((Stdio::null(), None));
    }
    let (stdin, pipe) = StdinPipe::open(path).map_err(|source| StdioError::Open {
        path: path.to_owned(),
        source,
    })?;
    Ok((stdin, Some(pipe)))
}

/// Opens one stream as containerd named it: a FIFO path (opened read-write,
/// which never blocks on Linux whether or not the other end is open yet), a
/// `file://` log URI (appended to, created 0600), or nothing.
fn open_path(path: &str) -> Result<Stdio, StdioError> {
    if path.is_empty() {
        return Ok(Stdio::null());
    }
    let error = |source| StdioError::Open {
        path: path.to_owned(),
        source,
    };
    let file: File = match path.strip_prefix("file://") {
        Some(log) => {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new().create(true).append(true).mode(0o600).open(log)
        }
        None if path.contains("://") => {
            return Err(StdioError::Uri {
                uri: path.to_owned(),
                reason: "only FIFOs, file:// and binary:// log URIs are supported".to_owned(),
            })
        }
        None => OpenOptions::new().read(true).write(true).open(path),
    }
    .map_err(error)?;
    Ok(Stdio::from(file))
}

impl StdioPaths {
    /// Opens the streams of container `id` in `namespace`; a `binary://`
    /// stdout starts its logger (ready when this returns). Blocking.
    pub fn open(&self, id: &str, namespace: &str) -> Result<OpenedStdio, StdioError> {
        if self.stdout.starts_with("binary://") {
            let (logger, out, err) = Logger::start(&self.stdout, id, namespace)?;
            let (stdin, pipe) = open_input(&self.stdin)?;
            return Ok(OpenedStdio {
                streams: [stdin, Stdio::from(out), Stdio::from(err)],
                logger: Some(logger),
                stdin: pipe,
            });
        }
        let (stdout, stderr) = (open_path(&self.stdout)?, open_path(&self.stderr)?);
        let (stdin, pipe) = open_input(&self.stdin)?;
        Ok(OpenedStdio {
            streams: [stdin, stdout, stderr],
            logger: None,
            stdin: pipe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_uris_become_program_args_and_env() {
        let uri = BinaryUri::parse(
            "binary:///usr/bin/my%20logger?--dir=%2Fvar%2Flog&-v&env.LEVEL=debug&env.CONTAINER_ID=x&k=a+b",
        )
        .unwrap();
        assert_eq!(uri.program, PathBuf::from("/usr/bin/my logger"));
        assert_eq!(uri.args, ["--dir", "/var/log", "-v", "k", "a b"]);
        assert_eq!(uri.env, [("LEVEL".to_owned(), "debug".to_owned())]);
    }

    #[test]
    fn relative_or_hosted_loggers_are_refused() {
        for uri in [
            "binary://logger",
            "binary://host/usr/bin/logger",
            "binary://",
            "file:///x",
        ] {
            assert!(BinaryUri::parse(uri).is_err(), "{uri}");
        }
        assert!(BinaryUri::parse("binary:///x?a=%zz").is_err());
    }

    #[test]
    fn other_schemes_are_refused() {
        let err = open_path("tcp://127.0.0.1:9").unwrap_err();
        assert!(err.to_string().contains("binary://"), "{err}");
    }

    #[test]
    fn a_logger_gets_both_streams_and_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("logger.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nenv > {0}/env\ncat <&3 > {0}/out 5>&- &\ncat <&4 > {0}/err 5>&- &\nexec 5>&-\nwait\n",
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let uri = format!("binary://{}?x=1", script.display());
        let (logger, out, err) = Logger::start(&uri, "c1", "ns1").unwrap();
        let mut out = File::from(out);
        let mut err = File::from(err);
        use std::io::Write;
        writeln!(out, "to-out").unwrap();
        writeln!(err, "to-err").unwrap();
        drop((out, err));
        assert_eq!(logger.finish(), LoggerEnd::Drained);
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("out"), "to-out\n");
        assert_eq!(read("err"), "to-err\n");
        let env = read("env");
        assert!(env.contains("CONTAINER_ID=c1\n"), "{env}");
        assert!(env.contains("CONTAINER_NAMESPACE=ns1\n"), "{env}");
    }

    #[test]
    fn a_logger_that_never_gets_ready_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("stuck.sh");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 98761\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // `sleep` keeps fd 5 open: never ready.
        let started = Instant::now();
        let uri = format!("binary://{}", script.display());
        let err = Logger::start_within(&uri, "c", "n", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, StdioError::NotReady { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let left = std::process::Command::new("pgrep")
            .args(["-f", "sleep 98761"])
            .output()
            .unwrap();
        assert!(
            left.stdout.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&left.stdout)
        );
    }
}
