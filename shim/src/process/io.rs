//! A process's stdio as runsc gets it: a terminal through a console socket,
//! or containerd's FIFOs, `file://` log or `binary://` logger; attached once
//! runsc has started the process (the terminal received and forwarded).

use std::path::Path;
use std::process::Stdio;

use crate::console::{Console, ConsoleOutput, ConsoleSocket};
use crate::error::{stdio_error, ContainerError};
use crate::stdin::StdinPipe;
use crate::stdio::{open_input, open_output, Logger, StdioPaths};

/// Which kind of process the stdio is for.
#[derive(Debug, Clone, Copy)]
pub enum Streams<'a> {
    /// A container's init process: containerd's log URIs apply (its
    /// `binary://` logger is named with the container and namespace).
    Init { id: &'a str, namespace: &'a str },
    /// An exec: FIFOs only; with a terminal, runsc's own errors are kept.
    Exec,
}

/// Stdio opened for a process runsc is about to start.
#[derive(Debug)]
pub struct PendingIo {
    console_socket: Option<ConsoleSocket>,
    streams: Option<[Stdio; 3]>,
    stdin: Option<StdinPipe>,
    logger: Option<Logger>,
}

/// Stdio of a process runsc started.
#[derive(Debug, Default)]
pub struct AttachedIo {
    /// The terminal, when the process has one.
    pub console: Option<Console>,
    /// The terminal's output being copied to containerd's stdout.
    pub output: Option<ConsoleOutput>,
    /// The shim's end of stdin (CloseIO ends it).
    pub stdin: Option<StdinPipe>,
    /// The `binary://` logger, waited for at delete.
    pub logger: Option<Logger>,
}

impl PendingIo {
    /// Opens `stdio` for one process; with `terminal`, a console socket
    /// instead of the streams.
    pub fn open(stdio: &StdioPaths, terminal: bool, kind: Streams<'_>) -> Result<PendingIo, ContainerError> {
        if terminal {
            let socket = ConsoleSocket::bind().map_err(|source| stdio_error("console socket", source))?;
            let stderr = match kind {
                // runsc create's own errors go to the container's stderr.
                Streams::Init { .. } => open_output(&stdio.stderr)?,
                // runsc exec's own errors are captured.
                Streams::Exec => Stdio::piped(),
            };
            return Ok(PendingIo {
                console_socket: Some(socket),
                streams: Some([Stdio::null(), Stdio::null(), stderr]),
                stdin: None,
                logger: None,
            });
        }
        match kind {
            Streams::Init { id, namespace } => {
                let opened = stdio.open(id, namespace)?;
                Ok(PendingIo {
                    console_socket: None,
                    streams: Some(opened.streams),
                    stdin: opened.stdin,
                    logger: opened.logger,
                })
            }
            Streams::Exec => {
                let (stdin, pipe) = open_input(&stdio.stdin)?;
                Ok(PendingIo {
                    console_socket: None,
                    streams: Some([stdin, open_output(&stdio.stdout)?, open_output(&stdio.stderr)?]),
                    stdin: pipe,
                    logger: None,
                })
            }
        }
    }

    /// The console socket runsc sends the terminal to, if any.
    pub fn console_socket(&self) -> Option<&Path> {
        self.console_socket.as_ref().map(ConsoleSocket::path)
    }

    /// The three streams for runsc (taken once).
    pub fn take_streams(&mut self) -> [Stdio; 3] {
        self.streams
            .take()
            .unwrap_or_else(|| [Stdio::null(), Stdio::null(), Stdio::null()])
    }

    /// runsc did not start the process: stdin ends, and the logger keeps
    /// what runsc wrote to the container's stderr.
    pub fn abandon(self) {
        if let Some(pipe) = &self.stdin {
            pipe.release();
        }
        if let Some(logger) = self.logger {
            logger.finish();
        }
    }

    /// runsc started the process: its terminal is received and forwarded.
    pub fn attach(self, stdio: &StdioPaths) -> Result<AttachedIo, ContainerError> {
        let (console, output) = match &self.console_socket {
            Some(socket) => {
                let console = socket
                    .receive()
                    .map_err(|source| stdio_error(socket.path().display().to_string(), source))?;
                let output = console
                    .forward(&stdio.stdin, &stdio.stdout)
                    .map_err(|source| stdio_error(stdio.stdout.clone(), source))?;
                (Some(console), Some(output))
            }
            None => (None, None),
        };
        Ok(AttachedIo {
            console,
            output,
            stdin: self.stdin,
            logger: self.logger,
        })
    }
}
