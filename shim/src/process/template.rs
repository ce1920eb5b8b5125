//! One way to start a process through runsc and to collect its exit, for
//! the init process (`runsc create`) and every exec (`runsc exec`): stdio
//! opened → runsc → terminal attached → pid file read →
//! a thread that reaps the pid, drains the output and records the exit.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use skillbox_sandbox::reaper;
use skillbox_sandbox::runsc::RunscError;

use super::io::{AttachedIo, PendingIo, Streams};
use super::{Exit, ProcessState};
use crate::error::ContainerError;
use crate::stdio::StdioPaths;

/// How long an exited process's terminal output may take to drain.
pub const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// A process runsc started.
#[derive(Debug)]
pub struct Launched {
    /// Its host pid (the sandbox for init, the `runsc exec` child for an exec).
    pub pid: u32,
    pub io: AttachedIo,
}

/// Reads the pid runsc wrote to `path`.
pub fn pid_from(path: &Path) -> Result<u32, ContainerError> {
    let text = std::fs::read_to_string(path).map_err(|err| ContainerError::PidFile {
        path: path.to_owned(),
        reason: err.to_string(),
    })?;
    text.trim().parse().map_err(|_| ContainerError::PidFile {
        path: path.to_owned(),
        reason: format!("{:?} is not a pid", text.trim()),
    })
}

/// Opens the process's stdio, lets `start` run runsc with the console
/// socket (if any) and the streams, attaches the terminal, and takes the
/// pid `start` returns or else the one runsc wrote to `pid_file`.
pub fn launch(
    stdio: &StdioPaths,
    terminal: bool,
    kind: Streams<'_>,
    pid_file: &Path,
    start: impl FnOnce(Option<&Path>, [Stdio; 3]) -> Result<Option<u32>, RunscError>,
) -> Result<Launched, ContainerError> {
    let mut io = PendingIo::open(stdio, terminal, kind)?;
    let streams = io.take_streams();
    let started = match start(io.console_socket(), streams) {
        Ok(pid) => pid,
        Err(err) => {
            io.abandon();
            return Err(err.into());
        }
    };
    let io = io.attach(stdio)?;
    let pid = match started {
        Some(pid) => pid,
        None => pid_from(pid_file)?,
    };
    Ok(Launched { pid, io })
}

/// Reaps `pid` on a thread. Once it exited, its terminal output is drained
/// (no output is lost: the exit is reported after it) and its stdin
/// released; then `decide` turns the status into the exit recorded in
/// `state`.
pub fn reap(
    pid: u32,
    io: &mut AttachedIo,
    state: ProcessState,
    decide: impl FnOnce(u32) -> Exit + Send + 'static,
) {
    let (output, stdin) = (io.output.take(), io.stdin.clone());
    std::thread::spawn(move || {
        let status = reaper::wait_exit(pid as i32);
        if let Some(output) = output {
            output.finish(OUTPUT_DRAIN);
        }
        if let Some(pipe) = stdin {
            pipe.release();
        }
        state.record(decide(status));
    });
}
