//! Which audit events become rows of the registry's `audit_log` table, and
//! what those rows hold. Pure: the exporter (`skillbox audit export`) does
//! the database work.
//!
//! The registry's table: `audit_log(id, actor_user_id, action VARCHAR(64)
//! NOT NULL, target_type, target_id BIGINT, request_id, client_ip,
//! user_agent, detail_json JSONB, created_at)`. Only lifecycle events and
//! policy violations go there; per-syscall detail stays in the JSON Lines
//! log:
//!
//! | event | action |
//! |---|---|
//! | `start` | `SKILL_RUNTIME_START` |
//! | `exit` | `SKILL_RUNTIME_EXIT` |
//! | `oom` | `SKILL_RUNTIME_OOM` |
//! | `timeout` | `SKILL_RUNTIME_TIMEOUT` |
//! | `connection`, verdict `denied` | `SKILL_RUNTIME_EGRESS_DENIED` |
//! | `dns_query`, verdict `refused` | `SKILL_RUNTIME_DNS_REFUSED` |
//! | `events_dropped` | `SKILL_RUNTIME_EVENTS_DROPPED` |
//!
//! `target_type` is `SKILL_VERSION`; `target_id` is the registry's id of
//! the skill version when the event names one (`skill.registry_id`), else
//! NULL; `detail_json` is the whole event; `created_at` its timestamp.
//! `request_id` is a digest of the event's line, so an exporter that
//! retries a batch whose commit it could not confirm inserts no row twice.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `target_type` of every row.
pub const TARGET_TYPE: &str = "SKILL_VERSION";

/// One `audit_log` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub action: &'static str,
    pub target_id: Option<i64>,
    /// `sha256:<first 32 hex digits>` of the event's line.
    pub request_id: String,
    pub detail: Value,
    /// The event's `timestamp` (RFC 3339).
    pub created_at: String,
}

/// The row for `event` (its raw `line`), if it is one the registry keeps.
pub fn row(event: &Value, line: &[u8]) -> Option<Row> {
    let verdict = event["verdict"].as_str();
    let action = match (event["type"].as_str()?, verdict) {
        ("start", _) => "SKILL_RUNTIME_START",
        ("exit", _) => "SKILL_RUNTIME_EXIT",
        ("oom", _) => "SKILL_RUNTIME_OOM",
        ("timeout", _) => "SKILL_RUNTIME_TIMEOUT",
        ("connection", Some("denied")) => "SKILL_RUNTIME_EGRESS_DENIED",
        ("dns_query", Some("refused")) => "SKILL_RUNTIME_DNS_REFUSED",
        ("events_dropped", _) => "SKILL_RUNTIME_EVENTS_DROPPED",
        _ => return None,
    };
    let digest = Sha256::digest(line);
    Some(Row {
        action,
        target_id: event["skill"]["registry_id"].as_i64(),
        request_id: format!("sha256:{}", &hex::encode(digest)[..32]),
        detail: event.clone(),
        created_at: event["timestamp"].as_str()?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lifecycle_and_violations_become_rows_the_rest_stays_in_the_log() {
        let event = |kind: &str, verdict: Option<&str>| json!({"timestamp": "2026-11-25T10:00:00Z", "type": kind, "verdict": verdict, "skill": {"name": "w"}});
        let action = |kind, verdict| row(&event(kind, verdict), b"line").map(|row| row.action);
        assert_eq!(action("start", None), Some("SKILL_RUNTIME_START"));
        assert_eq!(action("exit", None), Some("SKILL_RUNTIME_EXIT"));
        assert_eq!(action("oom", None), Some("SKILL_RUNTIME_OOM"));
        assert_eq!(action("timeout", None), Some("SKILL_RUNTIME_TIMEOUT"));
        assert_eq!(
            action("connection", Some("denied")),
            Some("SKILL_RUNTIME_EGRESS_DENIED")
        );
        assert_eq!(
            action("dns_query", Some("refused")),
            Some("SKILL_RUNTIME_DNS_REFUSED")
        );
        assert_eq!(
            action("events_dropped", None),
            Some("SKILL_RUNTIME_EVENTS_DROPPED")
        );
        assert_eq!(action("connection", Some("allowed")), None);
        assert_eq!(action("exec", None), None);
        assert_eq!(action("syscall", None), None);
    }

    #[test]
    fn the_request_id_is_the_lines_digest_and_the_detail_the_event() {
        let event = json!({"timestamp": "2026-11-25T10:00:00Z", "type": "oom", "skill": {"name": "w", "registry_id": 42}});
        let one = row(&event, b"line one").unwrap();
        assert_eq!(one.request_id, row(&event, b"line one").unwrap().request_id);
        assert_ne!(one.request_id, row(&event, b"line two").unwrap().request_id);
        assert!(one.request_id.starts_with("sha256:") && one.request_id.len() == 39);
        assert_eq!(one.target_id, Some(42));
        assert_eq!(one.detail, event);
        assert_eq!(one.created_at, "2026-11-25T10:00:00Z");
    }
}
