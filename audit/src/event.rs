//! The audit event schema: one JSON object per event, the same envelope
//! for every source.
//!
//! ```json
//! {"timestamp":"2026-11-25T17:32:29.123456789Z","execution_id":"default/weather-1",
//!  "skill":{"name":"weather","version":"1.2.0","digest":"sha256:…"},
//!  "container_id":"weather-1","type":"exec","pid":12,"tid":12,"process":"sh",
//!  "path":"/bin/nc","argv":["nc","198.51.100.7","443"],"env_names":["PATH"]}
//! ```
//!
//! - The envelope ([`Envelope`]): `timestamp` (RFC 3339, UTC, nanoseconds),
//!   `execution_id`, `skill` (`version` and `digest` are `null` when
//!   unknown), `container_id`, then `type` and the type's fields, flattened.
//! - Events about a task in the sandbox carry `pid` (thread group id as
//!   gVisor numbers it), `tid` and `process` (the task's command name).
//! - `verdict` and `rule` appear where a policy decided something (egress
//!   events; `events_dropped` has neither).
//! - Environment *values* are never recorded: gVisor's exec and container
//!   start messages carry the environment, of which only the names are kept.
//!
//! Types, by source:
//! - lifecycle (the runtime): `start`, `exit`, `oom`, `timeout`;
//! - gVisor runtime monitoring: `container_start`, `clone`, `exec`,
//!   `process_exit`, `file_open`, `socket`, `connect`, `bind`, `listen`,
//!   `syscall` (any other system call, at audit level `all`);
//! - loss: `events_dropped` (the sentry's dropped-message count, or an
//!   exporter that could not keep up) — loss is never silent;
//! - egress (`skillbox-egress`): `dns_query`, `connection`.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Whom the events of one sandbox belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxIdentity {
    pub execution_id: String,
    pub skill: SkillIdentity,
    pub container_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillIdentity {
    pub name: String,
    pub version: Option<String>,
    /// The skill package's digest, `sha256:<hex>`.
    pub digest: Option<String>,
}

/// The task inside the sandbox an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    /// The task's command name (`comm`).
    pub process: Option<String>,
}

/// How a sandbox ended: one vocabulary for `skillbox run`'s report, the
/// shim, the audit `exit` event and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The skill's process exited on its own (any status).
    Exited,
    /// The sandbox's cgroup recorded an OOM kill and the sandbox died of it.
    Oom,
    /// The policy's wall-clock timeout fired and the sandbox was killed.
    Timeout,
    /// Someone else ended it: a signal to `skillbox run`, a Kill or Delete
    /// through containerd.
    Killed,
    /// The sandbox itself failed (runsc or the Sentry), not the skill.
    SandboxFailed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Exited,
        Outcome::Oom,
        Outcome::Timeout,
        Outcome::Killed,
        Outcome::SandboxFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Exited => "exited",
            Outcome::Oom => "oom",
            Outcome::Timeout => "timeout",
            Outcome::Killed => "killed",
            Outcome::SandboxFailed => "sandbox_failed",
        }
    }
}

/// One audit event, without the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditEvent {
    /// The sandbox was created and its skill is about to run.
    Start {
        /// `shim` or `skillbox-run`.
        runtime: String,
        /// The policy's audit level: `none`, `security` or `all`.
        audit_level: String,
    },
    /// The sandbox's init process ended; `outcome` says how (absent in
    /// logs written before it was recorded).
    Exit {
        status: i32,
        wall_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<Outcome>,
    },
    /// The sandbox's cgroup recorded an OOM kill.
    Oom,
    /// The policy's wall-clock timeout ended the run.
    Timeout { limit_ms: u64 },
    ContainerStart {
        #[serde(flatten)]
        task: Task,
        argv: Vec<String>,
        env_names: Vec<String>,
        cwd: Option<String>,
    },
    Clone {
        #[serde(flatten)]
        task: Task,
        child_tid: Option<u32>,
        flags: Option<u64>,
    },
    Exec {
        #[serde(flatten)]
        task: Task,
        path: String,
        argv: Vec<String>,
        env_names: Vec<String>,
    },
    ProcessExit {
        #[serde(flatten)]
        task: Task,
        exit_status: Option<i32>,
    },
    FileOpen {
        #[serde(flatten)]
        task: Task,
        path: String,
        /// `open(2)` flags as given.
        flags: u32,
        mode: Option<u32>,
        /// The flags ask for writing, creating or truncating.
        write: bool,
        /// The syscall's return value (`-errno` on failure), when known.
        result: Option<i64>,
    },
    Socket {
        #[serde(flatten)]
        task: Task,
        domain: i32,
        socket_type: i32,
        protocol: i32,
        result: Option<i64>,
    },
    Connect {
        #[serde(flatten)]
        task: Task,
        /// The address as text (`203.0.113.7`, `2001:db8::1`, a Unix path).
        address: String,
        port: Option<u16>,
        result: Option<i64>,
    },
    Bind {
        #[serde(flatten)]
        task: Task,
        address: String,
        port: Option<u16>,
        result: Option<i64>,
    },
    Listen {
        #[serde(flatten)]
        task: Task,
        fd: i64,
        backlog: i64,
        result: Option<i64>,
    },
    /// Any other system call (audit level `all`, or one the security level
    /// names without a richer type).
    Syscall {
        #[serde(flatten)]
        task: Task,
        name: String,
        sysno: u64,
        result: Option<i64>,
    },
    /// Events were lost before they reached this record.
    EventsDropped {
        count: u64,
        /// `sentry` (gVisor's dropped-message count) or an exporter's name.
        source: String,
    },
}

impl AuditEvent {
    /// The `type` field's value.
    pub fn type_name(&self) -> &'static str {
        match self {
            AuditEvent::Start { .. } => "start",
            AuditEvent::Exit { .. } => "exit",
            AuditEvent::Oom => "oom",
            AuditEvent::Timeout { .. } => "timeout",
            AuditEvent::ContainerStart { .. } => "container_start",
            AuditEvent::Clone { .. } => "clone",
            AuditEvent::Exec { .. } => "exec",
            AuditEvent::ProcessExit { .. } => "process_exit",
            AuditEvent::FileOpen { .. } => "file_open",
            AuditEvent::Socket { .. } => "socket",
            AuditEvent::Connect { .. } => "connect",
            AuditEvent::Bind { .. } => "bind",
            AuditEvent::Listen { .. } => "listen",
            AuditEvent::Syscall { .. } => "syscall",
            AuditEvent::EventsDropped { .. } => "events_dropped",
        }
    }
}

/// An event in its envelope, as written: any serializable event type
/// whose `type` tag is flattened in (this crate's [`AuditEvent`], or the
/// egress crate's events).
#[derive(Debug, Serialize)]
pub struct Envelope<'a, E: Serialize> {
    pub timestamp: String,
    #[serde(flatten)]
    pub identity: &'a SandboxIdentity,
    #[serde(flatten)]
    pub event: &'a E,
}

/// RFC 3339 in UTC with nanoseconds, as every event's `timestamp`.
pub fn timestamp(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("an RFC 3339 timestamp of a UTC time between years 0 and 9999 always formats")
}

/// One event as a JSON line (with its newline), stamped with `at`.
pub fn render_line<E: Serialize>(
    identity: &SandboxIdentity,
    event: &E,
    at: OffsetDateTime,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = serde_json::to_vec(&Envelope {
        timestamp: timestamp(at),
        identity,
        event,
    })?;
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn identity() -> SandboxIdentity {
        SandboxIdentity {
            execution_id: "default/weather-1".to_owned(),
            skill: SkillIdentity {
                name: "weather".to_owned(),
                version: Some("1.2.0".to_owned()),
                digest: None,
            },
            container_id: "weather-1".to_owned(),
        }
    }

    #[test]
    fn an_exec_event_is_the_envelope_then_its_flattened_fields() {
        let event = AuditEvent::Exec {
            task: Task {
                pid: Some(12),
                tid: Some(12),
                process: Some("sh".to_owned()),
            },
            path: "/bin/nc".to_owned(),
            argv: vec!["nc".to_owned(), "198.51.100.7".to_owned(), "443".to_owned()],
            env_names: vec!["PATH".to_owned()],
        };
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap();
        let line = render_line(&identity(), &event, at).unwrap();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            value,
            json!({
                "timestamp": "2023-11-14T22:13:20.123Z",
                "execution_id": "default/weather-1",
                "skill": {"name": "weather", "version": "1.2.0", "digest": null},
                "container_id": "weather-1",
                "type": "exec",
                "pid": 12, "tid": 12, "process": "sh",
                "path": "/bin/nc",
                "argv": ["nc", "198.51.100.7", "443"],
                "env_names": ["PATH"],
            })
        );
        assert_eq!(event.type_name(), value["type"]);
    }

    #[test]
    fn events_read_back_as_they_were_written() {
        for event in [
            AuditEvent::Oom,
            AuditEvent::Exit {
                status: 137,
                wall_ms: Some(12),
                outcome: Some(Outcome::Oom),
            },
            AuditEvent::EventsDropped {
                count: 3,
                source: "sentry".to_owned(),
            },
        ] {
            let text = serde_json::to_string(&event).unwrap();
            let back: AuditEvent = serde_json::from_str(&text).unwrap();
            assert_eq!(back, event);
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["type"], event.type_name());
        }
    }
}
