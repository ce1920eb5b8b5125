//! Terminals: the console socket runsc sends a pseudoterminal's master end
//! to (`--console-socket`), and the copying between that master and the
//! FIFOs containerd gave.
//!
//! runsc connects, sends the master and closes before `runsc create` or
//! `runsc exec --detach` returns, so the shim binds the socket, runs runsc
//! to completion, then accepts: no thread waits on a runsc that failed.

use std::fs::{File, OpenOptions};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// Where console sockets live: short paths, as a socket path is limited to
/// 108 bytes and containerd's bundle paths can be longer.
pub const CONSOLE_SOCKET_DIR: &str = "/run/skillbox/console";

/// A listening socket for one pseudoterminal master; removed on drop.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    pub fn bind() -> std::io::Result<ConsoleSocket> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(CONSOLE_SOCKET_DIR)?;
        let name = format!(
            "{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = Path::new(CONSOLE_SOCKET_DIR).join(name);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The master runsc sent, once runsc has returned successfully.
    pub fn receive(&self) -> std::io::Result<Console> {
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|err| std::io::Error::new(err.kind(), format!("runsc sent no terminal: {err}")))?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buffer = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let message = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for control in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = control {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed `fd` in this process
                    // for us; nothing else owns it. Extra fds are closed.
                    for &extra in &fds[1..] {
                        drop(unsafe { OwnedFd::from_raw_fd(extra) });
                    }
                    let master = unsafe { File::from_raw_fd(fd) };
                    return Ok(Console {
                        master: Arc::new(master),
                    });
                }
            }
        }
        Err(std::io::Error::other(
            "runsc's console message carried no file descriptor",
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The master end of a process's pseudoterminal.
#[derive(Debug, Clone)]
pub struct Console {
    master: Arc<File>,
}

nix::ioctl_write_ptr_bad!(set_window_size, nix::libc::TIOCSWINSZ, nix::pty::Winsize);

impl Console {
    pub fn resize(&self, width: u32, height: u32) -> std::io::Result<()> {
        let size = nix::pty::Winsize {
            ws_row: height.min(u16::MAX as u32) as u16,
            ws_col: width.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one Winsize from the pointer, which
        // lives for the call.
        unsafe { set_window_size(self.master.as_raw_fd(), &size) }?;
        Ok(())
    }

    /// Copies the `stdin` FIFO into the terminal and the terminal into the
    /// `stdout` FIFO (either may be empty). The returned handle finishes
    /// when the terminal closes, i.e. when every process holding it exited.
    pub fn forward(&self, stdin: &str, stdout: &str) -> std::io::Result<ConsoleOutput> {
        if !stdin.is_empty() {
            let master = Arc::clone(&self.master);
            let fifo = stdin.to_owned();
            std::thread::spawn(move || {
                // Blocks until the client opens its end; ends with it.
                if let Ok(mut input) = File::open(&fifo) {
                    let _ = copy(&mut input, &mut &*master);
                }
            });
        }
        let output = if stdout.is_empty() {
            None
        } else {
            // Read-write: opening never blocks, whether or not the client
            // has opened its end yet.
            Some(OpenOptions::new().read(true).write(true).open(stdout)?)
        };
        let master = Arc::clone(&self.master);
        let copier = std::thread::spawn(move || {
            let mut sink: Box<dyn Write> = match output {
                Some(file) => Box::new(file),
                None => Box::new(std::io::sink()),
            };
            // The master reads EIO once the last replica is closed.
            let _ = copy(&mut &*master, &mut sink);
        });
        Ok(ConsoleOutput { copier })
    }
}

/// The thread copying a terminal's output.
#[derive(Debug)]
pub struct ConsoleOutput {
    copier: JoinHandle<()>,
}

impl ConsoleOutput {
    /// Waits, up to `limit`, for the output to be fully copied.
    pub fn finish(self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.copier.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Copies until end of file or an error (EIO from a closed terminal).
fn copy(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buffer = [0u8; 8192];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        to.write_all(&buffer[..read])?;
    }
}
