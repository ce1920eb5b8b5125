//! The skill's stdio for `skillbox run`: skillbox's own, except that a
//! regular file is handed over through a pipe that skillbox relays.
//!
//! gVisor writes an imported regular file at an offset of its own that
//! starts at 0, so `(echo first; skillbox run …) > out` lost `first`: the
//! skill's output overwrote it. Through a pipe, skillbox writes to its own
//! descriptor, at the file's real offset (or its end, when opened to append).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

/// How long the relays may take to drain after the sandbox ended.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Relays running for the duration of one execution.
pub struct Relays {
    done: mpsc::Receiver<()>,
    count: usize,
}

impl Relays {
    /// Waits until every relay has copied what the sandbox wrote (they end
    /// when the sandbox's last writer is gone), for at most [`DRAIN_LIMIT`].
    pub fn finish(self) {
        for _ in 0..self.count {
            if self.done.recv_timeout(DRAIN_LIMIT).is_err() {
                return;
            }
        }
    }
}

fn is_regular_file(fd: &OwnedFd) -> bool {
    fd.try_clone()
        .map(File::from)
        .and_then(|file| file.metadata())
        .is_ok_and(|meta| meta.file_type().is_file())
}

/// Copies until the pipe's writers are gone, with plain reads and writes:
/// `io::copy` would splice into the file at an offset of its own.
fn relay(mut from: File, mut to: File) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// stdin, stdout and stderr for runsc: skillbox's own, with a relayed pipe
/// in place of each output that is a regular file.
pub fn with_relays() -> io::Result<([Stdio; 3], Relays)> {
    let (sender, done) = mpsc::channel();
    let mut count = 0;
    let mut outputs = Vec::new();
    for target in [
        io::stdout().as_fd().try_clone_to_owned()?,
        io::stderr().as_fd().try_clone_to_owned()?,
    ] {
        if !is_regular_file(&target) {
            outputs.push(Stdio::from(target));
            continue;
        }
        let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().map_err(io::Error::from)?;
        relay_reporting(read, target, &sender);
        count += 1;
        outputs.push(Stdio::from(write));
    }
    let stderr = outputs.pop().expect("two outputs");
    let stdout = outputs.pop().expect("two outputs");
    Ok(([Stdio::inherit(), stdout, stderr], Relays { done, count }))
}

/// Relays the stdio of a sandbox handed out by the pool (pipes): skillbox's
/// stdin into `stdin`, `stdout` and `stderr` out to skillbox's own. Only
/// the outputs are waited for: a stdin nobody closes must not hold the end.
pub fn relay_handed_out(stdin: OwnedFd, stdout: OwnedFd, stderr: OwnedFd) -> io::Result<Relays> {
    let own_stdin = io::stdin().as_fd().try_clone_to_owned()?;
    std::thread::spawn(move || relay(File::from(own_stdin), File::from(stdin)));
    let (sender, done) = mpsc::channel();
    relay_reporting(stdout, io::stdout().as_fd().try_clone_to_owned()?, &sender);
    relay_reporting(stderr, io::stderr().as_fd().try_clone_to_owned()?, &sender);
    Ok(Relays { done, count: 2 })
}

/// Relays `from` to `to` on a thread of its own, which says on `done` when
/// it has copied everything ([`Relays::finish`] waits for that).
fn relay_reporting(from: OwnedFd, to: OwnedFd, done: &mpsc::Sender<()>) {
    let done = done.clone();
    std::thread::spawn(move || {
        relay(File::from(from), File::from(to));
        let _ = done.send(());
    });
}
