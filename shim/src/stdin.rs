//! A process's stdin from containerd's FIFO, through a pipe the shim owns so
//! that CloseIO (or the client closing its end) gives the process end of
//! file. Passing the FIFO itself would not: the shim must open it
//! read-write not to block, and then no end of file ever comes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

/// The shim's (writing) end of a process's stdin.
#[derive(Debug, Clone)]
pub struct StdinPipe {
    fifo: String,
    writer: Arc<Mutex<Option<File>>>,
}

impl StdinPipe {
    /// The process's end of the pipe, and the shim's, fed from `fifo` by a
    /// thread until the client closes it.
    pub fn open(fifo: &str) -> std::io::Result<(Stdio, StdinPipe)> {
        // Close-on-exec: a copy of the writing end inherited by runsc's
        // processes would keep the pipe open and end of file would never come.
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let pipe = StdinPipe {
            fifo: fifo.to_owned(),
            writer: Arc::new(Mutex::new(Some(File::from(writer)))),
        };
        let feeder = pipe.clone();
        std::thread::spawn(move || feeder.feed());
        Ok((Stdio::from(File::from(reader)), pipe))
    }

    fn feed(&self) {
        // Blocks until the client opens its end.
        let Ok(mut input) = File::open(&self.fifo) else {
            return self.close();
        };
        let mut buffer = [0u8; 8192];
        loop {
            let read = match input.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let written = match writer.as_mut() {
                Some(pipe) => pipe.write_all(&buffer[..read]).is_ok(),
                None => false,
            };
            if !written {
                break;
            }
        }
        self.close();
    }

    /// Closes the process's stdin (CloseIO).
    pub fn close(&self) {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Ends the feeding thread, even if the client never opened its end:
    /// called once the process has exited.
    pub fn release(&self) {
        self.close();
        // A thread blocked opening the FIFO for reading is let through by
        // a writer that comes and goes.
        let _ = OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&self.fifo);
    }
}
