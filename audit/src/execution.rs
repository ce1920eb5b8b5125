//! One execution's audit trail as a runtime (the shim, `skillbox run`)
//! drives it: the execution's log file, its `start` event, the gVisor
//! monitor and session file when the policy's audit level asks for one,
//! and at the end the lifecycle events (`oom`, `timeout`, `exit`) after the
//! monitor has read everything the sandbox sent.
//!
//! The same writer is handed to the egress session, so an execution's
//! DNS, connection, process, file and lifecycle events are one file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::budget::{Budget, BUDGET_SOURCE};
use crate::event::{AuditEvent, Outcome, SandboxIdentity};
use crate::gvisor::monitor::Routes;
use crate::gvisor::{pod_init_config, write_pod_init_config, EventSink, Monitor};
use crate::jsonl::{JsonLinesWriter, Rotation, WriteError};
use crate::AuditLevel;

/// Where runtimes put the monitors' sockets and session files (socket
/// paths are limited to 108 bytes: not under a bundle or state directory).
pub const SOCKET_DIR: &str = "/run/skillbox/audit";

#[derive(Debug, thiserror::Error)]
pub enum ExecutionAuditError {
    #[error(transparent)]
    Log(#[from] WriteError),
    #[error(transparent)]
    Monitor(#[from] crate::Error),
    #[error("{path}: cannot create the audit socket directory: {source}")]
    SocketDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where an execution's audit goes.
#[derive(Debug, Clone)]
pub struct AuditSetup<'a> {
    /// The execution's JSON Lines file.
    pub log: &'a Path,
    pub rotation: Rotation,
    /// Routine events recorded in full ([`crate::budget`]).
    pub event_budget: u64,
    pub identity: SandboxIdentity,
    pub level: AuditLevel,
    /// `shim` or `skillbox-run`, for the `start` event.
    pub runtime: &'a str,
    /// A root-only directory for the monitor's socket and session file
    /// (socket paths are limited to 108 bytes: keep it short).
    pub socket_dir: &'a Path,
    /// A name unique on the node, for the socket and session file.
    pub key: &'a str,
    /// The sandbox's container id as runsc knows it.
    pub container_id: &'a str,
}

/// The monitor's socket and the session file of execution `key`.
fn files(socket_dir: &Path, key: &str) -> (PathBuf, PathBuf) {
    (
        socket_dir.join(format!("{key}.sock")),
        socket_dir.join(format!("{key}.json")),
    )
}

/// Removes what [`ExecutionAudit::start`] made in `socket_dir` for `key`,
/// after its process died without dropping it.
pub fn remove_files(socket_dir: &Path, key: &str) {
    let (socket, session) = files(socket_dir, key);
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(session);
}

/// How the execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// The status the runtime reports (128 + signal when killed, 124 after
    /// the timeout).
    pub status: i32,
    pub wall: Option<Duration>,
    pub outcome: Outcome,
    /// The policy's timeout, recorded with a `timeout` outcome.
    pub timeout_limit: Duration,
}

/// Opens `setup`'s log with its identity and records `start`.
fn open_log(setup: &AuditSetup<'_>) -> Result<Arc<JsonLinesWriter>, ExecutionAuditError> {
    let writer = Arc::new(JsonLinesWriter::with_rotation(
        setup.log,
        setup.identity.clone(),
        setup.rotation,
    )?);
    writer.write(&AuditEvent::Start {
        runtime: setup.runtime.to_owned(),
        audit_level: setup.level.as_str().to_owned(),
    })?;
    Ok(writer)
}

/// The monitor's events go to the execution's log within its budget; a
/// failed write is logged (the monitor cannot push back on the sentry).
struct LogSink {
    writer: Arc<JsonLinesWriter>,
    budget: Mutex<Budget>,
}

impl LogSink {
    fn new(writer: &Arc<JsonLinesWriter>, event_budget: u64) -> Arc<LogSink> {
        Arc::new(LogSink {
            writer: Arc::clone(writer),
            budget: Mutex::new(Budget::new(event_budget)),
        })
    }

    /// Records the repeats the budget dropped and has not reported yet.
    fn report_unreported(&self) {
        let unreported = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_unreported();
        self.report_dropped(unreported);
    }

    fn write(&self, event: &AuditEvent) {
        if let Err(err) = self.writer.write(event) {
            tracing::warn!(%err, "an audit event was not written");
        }
    }

    /// Records `count` repeats the budget dropped.
    fn report_dropped(&self, count: u64) {
        if count > 0 {
            self.write(&AuditEvent::EventsDropped {
                count,
                source: BUDGET_SOURCE.to_owned(),
            });
        }
    }
}

impl EventSink for LogSink {
    fn record(&self, event: AuditEvent) {
        let admission = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(&event);
        if admission.record {
            self.write(&event);
        }
        self.report_dropped(admission.report.unwrap_or(0));
    }
}

/// An execution's audit, running.
pub struct ExecutionAudit {
    writer: Arc<JsonLinesWriter>,
    sink: Option<Arc<LogSink>>,
    monitor: Option<Monitor>,
    session_file: Option<PathBuf>,
}

impl std::fmt::Debug for ExecutionAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionAudit")
            .field("log", &self.writer.path())
            .field("session_file", &self.session_file)
            .finish()
    }
}

impl ExecutionAudit {
    /// Opens the log, records `start`, and (unless the level is `none`)
    /// starts the monitor and writes the session file runsc must be
    /// started with ([`ExecutionAudit::pod_init_config`]).
    pub fn start(setup: &AuditSetup<'_>) -> Result<ExecutionAudit, ExecutionAuditError> {
        let mut audit = ExecutionAudit {
            writer: open_log(setup)?,
            sink: None,
            monitor: None,
            session_file: None,
        };
        let (socket, session_file) = files(setup.socket_dir, setup.key);
        if let Some(config) = pod_init_config(setup.level, &socket) {
            std::fs::create_dir_all(setup.socket_dir).map_err(|source| ExecutionAuditError::SocketDir {
                path: setup.socket_dir.to_owned(),
                source,
            })?;
            // A socket left by a killed runtime with the same key.
            let _ = std::fs::remove_file(&socket);
            let sink = LogSink::new(&audit.writer, setup.event_budget);
            audit.sink = Some(Arc::clone(&sink));
            audit.monitor = Some(Monitor::bind(&socket, setup.container_id, setup.level, sink)?);
            write_pod_init_config(&config, &session_file)?;
            audit.session_file = Some(session_file);
        }
        Ok(audit)
    }

    /// The execution's log, for the other event sources (egress).
    pub fn writer(&self) -> &Arc<JsonLinesWriter> {
        &self.writer
    }

    /// The session file to start runsc with (`--pod-init-config`), if any.
    pub fn pod_init_config(&self) -> Option<&Path> {
        self.session_file.as_deref()
    }

    /// Records how the execution ended, once the sandbox is gone (so the
    /// monitor has read all it sent).
    pub fn finish(mut self, ending: Ending) {
        if let Some(monitor) = self.monitor.take() {
            match monitor.stop() {
                Ok(stats) => tracing::debug!(?stats, "audit monitor stopped"),
                Err(err) => tracing::warn!(%err, "the audit monitor did not stop cleanly"),
            }
        }
        if let Some(sink) = &self.sink {
            sink.report_unreported();
        }
        write_end(&self.writer, ending);
    }

    /// Starts the audit trail of another container of this sandbox (a
    /// pod's): its own log with its identity and `start`, and its events
    /// from this sandbox's monitor, at `setup.level`. `setup`'s socket
    /// fields are not used: the pod has one monitor.
    pub fn join(&self, setup: &AuditSetup<'_>) -> Result<MemberAudit, ExecutionAuditError> {
        let writer = open_log(setup)?;
        let sink = LogSink::new(&writer, setup.event_budget);
        let routes = self.monitor.as_ref().map(Monitor::routes);
        if let Some(routes) = &routes {
            routes.add(
                setup.container_id,
                setup.level,
                Arc::clone(&sink) as Arc<dyn EventSink>,
            );
        }
        Ok(MemberAudit {
            writer,
            sink,
            routes,
            container_id: setup.container_id.to_owned(),
        })
    }
}

/// Writes the lifecycle events of `ending`: `oom` or `timeout`, then `exit`.
fn write_end(writer: &JsonLinesWriter, ending: Ending) {
    let mut events = Vec::new();
    match ending.outcome {
        Outcome::Oom => events.push(AuditEvent::Oom),
        Outcome::Timeout => events.push(AuditEvent::Timeout {
            limit_ms: ending.timeout_limit.as_millis() as u64,
        }),
        Outcome::Exited | Outcome::Killed | Outcome::SandboxFailed => {}
    }
    events.push(AuditEvent::Exit {
        status: ending.status,
        wall_ms: ending.wall.map(|wall| wall.as_millis() as u64),
        outcome: Some(ending.outcome),
    });
    for event in events {
        if let Err(err) = writer.write(&event) {
            tracing::warn!(%err, "a lifecycle event was not written");
        }
    }
}

/// The audit trail of a container that joined another's sandbox (a pod
/// member): its own log, fed by the pod's monitor while it is routed.
pub struct MemberAudit {
    writer: Arc<JsonLinesWriter>,
    sink: Arc<LogSink>,
    routes: Option<Routes>,
    container_id: String,
}

impl std::fmt::Debug for MemberAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberAudit")
            .field("log", &self.writer.path())
            .field("container_id", &self.container_id)
            .finish()
    }
}

impl MemberAudit {
    /// Stops recording the member's events and records how it ended.
    pub fn finish(mut self, ending: Ending) {
        if let Some(routes) = self.routes.take() {
            routes.remove(&self.container_id);
        }
        self.sink.report_unreported();
        write_end(&self.writer, ending);
    }
}

impl Drop for MemberAudit {
    fn drop(&mut self) {
        if let Some(routes) = self.routes.take() {
            routes.remove(&self.container_id);
        }
    }
}

impl Drop for ExecutionAudit {
    fn drop(&mut self) {
        drop(self.monitor.take());
        if let Some(file) = self.session_file.take() {
            let _ = std::fs::remove_file(file);
        }
    }
}
