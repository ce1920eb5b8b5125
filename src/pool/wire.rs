//! The pool's API on its unix socket: one JSON object per line, a request
//! from the client and the pool's replies; the stdio of a handed-out
//! sandbox travels as descriptors (`SCM_RIGHTS`) with the `Started` reply.
//!
//! A `run` connection lives as long as its execution: the pool answers
//! `Cold` (run it yourself), `Failed`, or `Started` and later `Finished`.
//! The client may send `Interrupt` lines meanwhile; a client that hangs
//! up gets its sandbox killed.

use std::collections::BTreeMap;
use std::io::{self, BufRead, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::commands::run::RunSummary;

/// Where `skillbox pool serve` listens and `skillbox run` looks, unless told.
pub const DEFAULT_SOCKET: &str = "/run/skillbox/pool.sock";

/// The longest line either side reads.
const MAX_LINE: usize = 4 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Run(Box<RunRequest>),
    Status,
}

/// Everything `skillbox run` was asked, with its paths made absolute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    pub skill_dir: PathBuf,
    pub base_rootfs: PathBuf,
    /// As given (`None`: the default node config).
    pub node_config: Option<PathBuf>,
    /// The runsc binary the run would use.
    pub runsc: PathBuf,
    pub state_dir: PathBuf,
    /// Set only when the run overrides the node's egress settings or names
    /// its own audit log; the pool then declines.
    pub egress_overridden: bool,
    pub args: Vec<String>,
    /// The invoking environment (only the policy's `env.pass` names are used).
    pub env: BTreeMap<String, String>,
    pub inputs: Vec<PathBuf>,
    pub output: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// No pre-booted sandbox serves this run: run it without the pool.
    Cold {
        reason: String,
    },
    /// The run failed before its sandbox started (as a cold run would).
    Failed {
        error: String,
    },
    /// A sandbox was handed out; its stdin, stdout and stderr come with
    /// this line.
    Started {
        execution_id: String,
        warnings: Vec<String>,
    },
    Finished(Box<RunSummary>),
    Status(Status),
}

/// From the client while its execution runs.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "snake_case")]
pub enum ClientMessage {
    /// A signal reached `skillbox run`: kill the sandbox.
    Interrupt { signal: i32 },
}

/// What the pool holds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Pre-booted sandboxes waiting to be handed out.
    pub ready: usize,
    pub booting: usize,
    /// Handed out and still running.
    pub running: usize,
    /// Executions served from the pool, and runs it declined, since it started.
    pub served: u64,
    pub declined: u64,
    /// The memory the ready sandboxes hold: their cgroups and the PSS of
    /// their `runsc run` processes.
    pub ready_memory_bytes: u64,
    pub capacity: usize,
    /// What the pool keeps warm, most recently used first.
    pub skills: Vec<SkillStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkillStatus {
    pub skill_dir: PathBuf,
    pub base_rootfs: PathBuf,
    pub inputs: bool,
    pub output: bool,
    pub ready: usize,
    pub booting: usize,
    /// Why its last boot failed (it is not booted again until asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Writes `message` as one line.
pub fn send<T: Serialize>(mut stream: &UnixStream, message: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Writes `message` as one line with `fds` attached.
pub fn send_with_fds<T: Serialize>(stream: &UnixStream, message: &T, fds: &[RawFd]) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    let rights = [ControlMessage::ScmRights(fds)];
    let mut sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&line)],
        &rights,
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    // The descriptors went with the first byte; the rest is plain data.
    while sent < line.len() {
        sent += (&*stream).write(&line[sent..])?;
    }
    Ok(())
}

/// Reads one line and the descriptors that came with it. Reads stop at a
/// message carrying descriptors (the kernel does not merge past one), so
/// what follows the line in `rest` is only plain data sent after it.
pub fn receive_with_fds(stream: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>, Vec<u8>)> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let (received, fds) = {
        let mut slices = [IoSliceMut::new(&mut buffer)];
        let message = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut slices,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for control in message.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = control {
                // Ours from here on: the kernel installed them for us.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (message.bytes, fds)
    };
    buffer.truncate(received);
    if received == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the pool closed the connection",
        ));
    }
    // A line longer than one read: the rest of it follows as plain data.
    while !buffer.contains(&b'\n') {
        if buffer.len() >= MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        let mut more = [0u8; 16 * 1024];
        match (&*stream).read(&mut more)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection ended mid-line",
                ))
            }
            n => buffer.extend_from_slice(&more[..n]),
        }
    }
    let end = buffer
        .iter()
        .position(|b| *b == b'\n')
        .expect("a newline was read");
    let rest = buffer.split_off(end + 1);
    buffer.pop();
    Ok((buffer, fds, rest))
}

/// One line, without its newline; an error at end of stream or past
/// [`MAX_LINE`].
pub fn read_line(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    reader.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    match line.pop() {
        Some(b'\n') => Ok(line),
        _ if line.len() + 1 >= MAX_LINE => Err(io::Error::new(io::ErrorKind::InvalidData, "line too long")),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection ended mid-line",
        )),
    }
}

/// Parses a line as `T`, naming what was expected.
pub fn parse<T: for<'de> Deserialize<'de>>(line: &[u8], what: &str) -> io::Result<T> {
    serde_json::from_slice(line)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, format!("not a {what}: {err}")))
}
