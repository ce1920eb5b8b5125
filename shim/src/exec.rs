//! A process exec'd into a running container: added (Exec), started
//! (Start: `runsc exec --detach`), reaped, deleted.
//!
//! `runsc exec --detach` leaves a `runsc exec` child that waits for the
//! process inside the sandbox and exits with its status; the shim, a child
//! subreaper, inherits and reaps it. Signals go to the process itself by its
//! sandbox pid (`runsc kill --pid`), as that child forwards none without a
//! terminal.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::console::{Console, ConsoleSocket};
use crate::container::{pid_from, stdio_error, wait_for_exit, ContainerError, Exit, Status, StdioPaths};
use crate::enforce::enforce_exec_process;
use crate::stdin::StdinPipe;
use crate::stdio::{open_input, open_output};
use skillbox_sandbox::reaper;
use skillbox_sandbox::runsc::Runsc;

/// How long an exited process's terminal output may take to drain.
pub const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Running {
    status: Option<Status>,
    /// Host pid of the `runsc exec` child, 0 before Start.
    pid: u32,
    /// The process's pid inside the sandbox.
    sandbox_pid: u32,
    exit: Option<Exit>,
    console: Option<Console>,
    stdin: Option<StdinPipe>,
}

#[derive(Debug)]
pub struct ExecProcess {
    pub exec_id: String,
    pub stdio: StdioPaths,
    terminal: bool,
    /// Where the process spec and pid files go: `<bundle>/exec-<n>.*`.
    files: PathBuf,
    state: Arc<Mutex<Running>>,
    exited: watch::Receiver<Option<Exit>>,
    exited_sender: Arc<watch::Sender<Option<Exit>>>,
}

impl ExecProcess {
    /// Records an exec (nothing runs yet): its process spec, held within the
    /// container's init process (`init`), is written next to the bundle.
    pub fn add(
        exec_id: &str,
        stdio: StdioPaths,
        terminal: bool,
        spec: &[u8],
        init: &Value,
        files: PathBuf,
    ) -> Result<ExecProcess, ContainerError> {
        let mut process: Value = serde_json::from_slice(spec).map_err(|err| ContainerError::ExecSpec {
            exec_id: exec_id.to_owned(),
            reason: err.to_string(),
        })?;
        if !process.is_object() || process["args"].as_array().is_none_or(|args| args.is_empty()) {
            return Err(ContainerError::ExecSpec {
                exec_id: exec_id.to_owned(),
                reason: "expected an OCI process with a non-empty `args`".to_owned(),
            });
        }
        for change in enforce_exec_process(&mut process, init) {
            tracing::warn!(%exec_id, field = %change.field, from = %change.from, to = %change.to, "exec tightened");
        }
        process["terminal"] = Value::Bool(terminal);
        let path = files.with_extension("json");
        std::fs::write(&path, process.to_string()).map_err(|err| ContainerError::ExecSpec {
            exec_id: exec_id.to_owned(),
            reason: format!("{}: {err}", path.display()),
        })?;
        let (sender, exited) = watch::channel(None);
        Ok(ExecProcess {
            exec_id: exec_id.to_owned(),
            stdio,
            terminal,
            files,
            state: Arc::new(Mutex::new(Running {
                status: Some(Status::Created),
                ..Default::default()
            })),
            exited,
            exited_sender: Arc::new(sender),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> (Status, Option<Exit>) {
        let state = self.lock();
        (state.status.unwrap_or(Status::Created), state.exit)
    }

    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    /// Starts the process in container `id`; returns its (host) pid.
    /// Blocking.
    pub fn start(&self, runsc: &Runsc, id: &str) -> Result<u32, ContainerError> {
        let current = self.status().0;
        if current != Status::Created {
            return Err(ContainerError::State {
                id: format!("{id}/{}", self.exec_id),
                state: current,
                action: "start",
            });
        }
        let console_socket = match self.terminal {
            true => Some(
                ConsoleSocket::bind().map_err(|source| stdio_error("console socket".to_owned(), source))?,
            ),
            false => None,
        };
        let mut stdin_pipe = None;
        let streams = match console_socket {
            // runsc's own errors are captured; the process gets the terminal.
            Some(_) => [Stdio::null(), Stdio::null(), Stdio::piped()],
            None => {
                let (stdin, pipe) = open_input(&self.stdio.stdin)?;
                stdin_pipe = pipe;
                [
                    stdin,
                    open_output(&self.stdio.stdout)?,
                    open_output(&self.stdio.stderr)?,
                ]
            }
        };
        let (pid_file, sandbox_pid_file) = (
            self.files.with_extension("pid"),
            self.files.with_extension("ipid"),
        );
        let started = runsc.exec(
            id,
            &self.files.with_extension("json"),
            (&pid_file, &sandbox_pid_file),
            console_socket.as_ref().map(ConsoleSocket::path),
            streams,
        );
        if let Err(err) = started {
            if let Some(pipe) = &stdin_pipe {
                pipe.release();
            }
            return Err(err.into());
        }
        let pid = pid_from(&pid_file)?;
        let sandbox_pid = pid_from(&sandbox_pid_file).unwrap_or_default();
        let (console, output) = match &console_socket {
            Some(socket) => {
                let console = socket
                    .receive()
                    .map_err(|source| stdio_error(socket.path().display().to_string(), source))?;
                let output = console
                    .forward(&self.stdio.stdin, &self.stdio.stdout)
                    .map_err(|source| stdio_error(self.stdio.stdout.clone(), source))?;
                (Some(console), Some(output))
            }
            None => (None, None),
        };
        {
            let mut state = self.lock();
            state.status = Some(Status::Running);
            state.pid = pid;
            state.sandbox_pid = sandbox_pid;
            state.console = console;
            state.stdin = stdin_pipe.clone();
        }
        let (state, sender) = (Arc::clone(&self.state), Arc::clone(&self.exited_sender));
        std::thread::spawn(move || {
            let status = reaper::wait_exit(pid as i32);
            if let Some(output) = output {
                output.finish(OUTPUT_DRAIN);
            }
            if let Some(pipe) = stdin_pipe {
                pipe.release();
            }
            let exit = Exit::with_status(status);
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            state.status = Some(Status::Stopped);
            state.exit = Some(exit);
            let _ = sender.send(Some(exit));
        });
        Ok(pid)
    }

    /// Waits for the process to exit.
    pub async fn wait(&self) -> Exit {
        wait_for_exit(&self.exited).await
    }

    /// Signals the process. An exited one is not an error. Blocking.
    pub fn kill(&self, runsc: &Runsc, id: &str, signal: u32) -> Result<(), ContainerError> {
        let (status, sandbox_pid) = {
            let state = self.lock();
            (state.status, state.sandbox_pid)
        };
        match status {
            Some(Status::Running) if sandbox_pid > 0 => {
                match runsc.kill_process(id, sandbox_pid, signal as i32) {
                    Err(_) if self.status().0 == Status::Stopped => Ok(()),
                    other => other.map(|_| ()).map_err(ContainerError::from),
                }
            }
            Some(Status::Stopped) => Ok(()),
            other => Err(ContainerError::State {
                id: format!("{id}/{}", self.exec_id),
                state: other.unwrap_or(Status::Created),
                action: "signal",
            }),
        }
    }

    pub fn console(&self) -> Option<Console> {
        self.lock().console.clone()
    }

    pub fn close_stdin(&self) {
        if let Some(pipe) = &self.lock().stdin {
            pipe.close();
        }
    }

    /// Removes the process's files. A running process is refused.
    pub fn delete(&self, id: &str) -> Result<Option<Exit>, ContainerError> {
        let (status, exit) = self.status();
        if status == Status::Running {
            return Err(ContainerError::State {
                id: format!("{id}/{}", self.exec_id),
                state: status,
                action: "delete",
            });
        }
        for extension in ["json", "pid", "ipid"] {
            let _ = std::fs::remove_file(self.files.with_extension(extension));
        }
        Ok(exit)
    }
}
