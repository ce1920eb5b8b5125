//! A process exec'd into a running container: added (Exec), started
//! (Start: `runsc exec`), reaped, deleted.
//!
//! Start leaves a `runsc exec` child that waits for the process inside the
//! sandbox and exits with its status (`Runsc::exec`); the shim, a child
//! subreaper, reaps it. Signals go to the process itself by its
//! sandbox pid (`runsc kill --pid`), as that child forwards none without a
//! terminal.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use skillbox_sandbox::runsc::Runsc;

use crate::console::Console;
use crate::enforce::enforce_exec_process;
use crate::error::ContainerError;
use crate::process::io::Streams;
use crate::process::template::{launch, pid_from, reap};
use crate::process::{Exit, ProcessState, Status};
use crate::stdin::StdinPipe;
use crate::stdio::StdioPaths;

/// What is known of a started exec.
#[derive(Debug, Default)]
struct Running {
    /// Host pid of the `runsc exec` child, 0 before Start.
    pid: u32,
    /// The process's pid inside the sandbox.
    sandbox_pid: u32,
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
    state: ProcessState,
    running: Arc<Mutex<Running>>,
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
        Ok(ExecProcess {
            exec_id: exec_id.to_owned(),
            stdio,
            terminal,
            files,
            state: ProcessState::new(),
            running: Arc::new(Mutex::new(Running::default())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> (Status, Option<Exit>) {
        self.state.status()
    }

    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    /// Starts the process in container `id`; returns its (host) pid.
    /// Blocking.
    pub fn start(&self, runsc: &Runsc, id: &str) -> Result<u32, ContainerError> {
        let full_id = format!("{id}/{}", self.exec_id);
        self.state.require(Status::Created, &full_id, "start")?;
        let (pid_file, sandbox_pid_file) = (
            self.files.with_extension("pid"),
            self.files.with_extension("ipid"),
        );
        let spec = self.files.with_extension("json");
        let mut launched = launch(
            &self.stdio,
            self.terminal,
            Streams::Exec,
            &pid_file,
            |console_socket, streams| {
                runsc.exec(id, &spec, (&pid_file, &sandbox_pid_file), console_socket, streams)
            },
        )?;
        let pid = launched.pid;
        {
            let mut running = self.lock();
            running.pid = pid;
            running.sandbox_pid = pid_from(&sandbox_pid_file).unwrap_or_default();
            running.console = launched.io.console.take();
            running.stdin = launched.io.stdin.clone();
        }
        self.state.advance(Status::Created, Status::Running);
        reap(pid, &mut launched.io, self.state.clone(), Exit::with_status);
        Ok(pid)
    }

    /// Waits for the process to exit.
    pub async fn wait(&self) -> Exit {
        self.state.wait().await
    }

    /// Signals the process. An exited one is not an error. Blocking.
    pub fn kill(&self, runsc: &Runsc, id: &str, signal: u32) -> Result<(), ContainerError> {
        let (status, sandbox_pid) = (self.status().0, self.lock().sandbox_pid);
        match status {
            Status::Running if sandbox_pid > 0 => match runsc.kill_process(id, sandbox_pid, signal as i32) {
                Err(_) if self.status().0 == Status::Stopped => Ok(()),
                other => other.map(|_| ()).map_err(ContainerError::from),
            },
            Status::Stopped => Ok(()),
            other => Err(ContainerError::State {
                id: format!("{id}/{}", self.exec_id),
                state: other,
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
