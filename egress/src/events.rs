//! The egress audit trail: one JSON object per line, one file per sandbox.
//!
//! Every line carries the same common fields, then a `type` and that type's
//! fields:
//!
//! ```json
//! {"timestamp":"2026-11-25T17:32:29.123456789Z","execution_id":"exec-1",
//!  "skill":{"name":"weather","version":"1.2.0","digest":"sha256:…"},
//!  "container_id":"c1","type":"dns_query","name":"api.weather.gov","qtype":"A",
//!  "verdict":"allowed","rcode":"NOERROR","rule":"domain api.weather.gov ports 443",
//!  "reason":null,"answers":[{"name":"api.weather.gov","type":"A","data":"198.51.100.7","ttl":60}]}
//! {"timestamp":"…","execution_id":"exec-1","skill":{…},"container_id":"c1",
//!  "type":"connection","destination":"198.51.100.7","port":443,"protocol":"tcp",
//!  "verdict":"allowed","rule":"allow: domain api.weather.gov ports 443"}
//! ```
//!
//! - `timestamp` is RFC 3339 in UTC with nanoseconds.
//! - `skill.version` and `skill.digest` are `null` when unknown.
//! - `dns_query.verdict` is `allowed` (the name was forwarded upstream, or
//!   answered without forwarding for a type the proxy does not serve) or
//!   `refused` (never forwarded); `rcode` is what the client got, `reason`
//!   says why a query was refused or failed, `rule` names the allow rule(s)
//!   that matched.
//! - `connection` is one new connection the sandbox's nftables table
//!   judged (written by the `nflog` module's connection log): `port` is
//!   `null` for protocols without ports, `protocol` is `tcp`, `udp`, `icmp`
//!   (also ICMPv6) or `other`; `verdict` is `allowed` or `denied`; `rule`
//!   is the rule that decided, as its nftables comment says (`deny: cidr
//!   203.0.113.11/32 (all ports)`, `default-deny`, `always-deny: cidr
//!   169.254.0.0/16`, `node: the node is unreachable`…), except that an
//!   address learned from the DNS proxy is named by the allow rule(s) of
//!   the name that resolved to it (`allow: domain api.weather.gov ports
//!   443`).
//! - `observed_connection` is one TCP connection a scan's observing network
//!   accepted instead of letting it leave (`observe`): `destination` and
//!   `port` as the sandbox addressed them, `name` the DNS name the sinkhole
//!   handed that address out for (`null` for a literal address), `verdict`
//!   and `rule` what the skill's declared policy would have done with it,
//!   and what its first bytes said: `tls_sni`, `http_method`, `http_host`,
//!   `http_path` (each `null` when absent), `bytes` how many arrived.
//! - A `dns_query` answered from a scan's sinkhole has `"sinkhole": true`;
//!   its `verdict`, `rule` and `reason` are then the declared policy's.
//!
//! The envelope, the identity types and the writer are the audit trail's
//! (`skillbox_audit::event`, `skillbox_audit::jsonl`): egress events are
//! audit events, in the same file as the execution's other events. Each
//! event is written with a single `write` on a file opened with
//! `O_APPEND`, so lines never interleave and nothing stays buffered in the
//! process.

use std::net::IpAddr;

use serde::Serialize;
use time::OffsetDateTime;

pub use skillbox_audit::event::{SandboxIdentity, SkillIdentity};
pub use skillbox_audit::jsonl::JsonLinesWriter;

/// One egress event, without the common fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EgressEvent {
    DnsQuery(DnsQueryEvent),
    Connection(ConnectionEvent),
    ObservedConnection(ObservedConnectionEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsQueryEvent {
    /// The queried name, lower case, without the trailing dot.
    pub name: String,
    /// `A`, `AAAA`, `TXT`… or the number for unknown types.
    pub qtype: String,
    pub verdict: DnsVerdict,
    /// The response code the client got: `NOERROR`, `REFUSED`, `SERVFAIL`…
    pub rcode: String,
    /// The allow rule(s) that matched the name, `;`-separated.
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub answers: Vec<DnsAnswer>,
    /// Answered from a scan's sinkhole, whatever the verdict.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sinkhole: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsVerdict {
    Allowed,
    Refused,
}

/// One record of the answer the client got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsAnswer {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    /// The address, or the CNAME target.
    pub data: String,
    pub ttl: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionEvent {
    pub destination: IpAddr,
    pub port: Option<u16>,
    pub protocol: Protocol,
    pub verdict: ConnectionVerdict,
    pub rule: Option<String>,
}

/// A TCP connection a scan's observing network accepted and recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedConnectionEvent {
    pub destination: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// The name the sinkhole answered with `destination`, if any.
    pub name: Option<String>,
    /// What the declared policy would have done.
    pub verdict: ConnectionVerdict,
    pub rule: String,
    pub tls_sni: Option<String>,
    pub http_method: Option<String>,
    pub http_host: Option<String>,
    pub http_path: Option<String>,
    /// Bytes received before the recorder closed the connection.
    pub bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionVerdict {
    Allowed,
    Denied,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Write(#[from] skillbox_audit::jsonl::WriteError),
}

/// Where the DNS proxy (and the connection logger) send their events. An
/// error means the event was not recorded; the DNS proxy then answers
/// SERVFAIL rather than answer without a record.
pub trait EventSink: Send + Sync {
    fn record(&self, event: &EgressEvent) -> Result<(), EventError>;
}

/// One event as a JSON line (with its newline), stamped with `at`.
pub fn render_line(
    identity: &SandboxIdentity,
    event: &EgressEvent,
    at: OffsetDateTime,
) -> Result<Vec<u8>, EventError> {
    skillbox_audit::event::render_line(identity, event, at)
        .map_err(|err| EventError::Write(skillbox_audit::jsonl::WriteError::Encode(err)))
}

impl EventSink for JsonLinesWriter {
    fn record(&self, event: &EgressEvent) -> Result<(), EventError> {
        Ok(self.write(event)?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn identity() -> SandboxIdentity {
        SandboxIdentity {
            execution_id: "exec-1".to_owned(),
            skill: SkillIdentity {
                name: "weather".to_owned(),
                version: Some("1.2.0".to_owned()),
                digest: None,
            },
            container_id: "c1".to_owned(),
        }
    }

    fn dns_event() -> EgressEvent {
        EgressEvent::DnsQuery(DnsQueryEvent {
            name: "api.weather.gov".to_owned(),
            qtype: "A".to_owned(),
            verdict: DnsVerdict::Allowed,
            rcode: "NOERROR".to_owned(),
            rule: Some("domain api.weather.gov ports 443".to_owned()),
            reason: None,
            answers: vec![DnsAnswer {
                name: "api.weather.gov".to_owned(),
                record_type: "A".to_owned(),
                data: "198.51.100.7".to_owned(),
                ttl: 60,
            }],
            sinkhole: false,
        })
    }

    #[test]
    fn dns_query_line() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap();
        let line = render_line(&identity(), &dns_event(), at).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            value,
            json!({
                "timestamp": "2023-11-14T22:13:20.123Z",
                "execution_id": "exec-1",
                "skill": {"name": "weather", "version": "1.2.0", "digest": null},
                "container_id": "c1",
                "type": "dns_query",
                "name": "api.weather.gov",
                "qtype": "A",
                "verdict": "allowed",
                "rcode": "NOERROR",
                "rule": "domain api.weather.gov ports 443",
                "reason": null,
                "answers": [{"name": "api.weather.gov", "type": "A", "data": "198.51.100.7", "ttl": 60}],
            })
        );
    }

    #[test]
    fn connection_line() {
        let event = EgressEvent::Connection(ConnectionEvent {
            destination: "2001:db8::1".parse().unwrap(),
            port: Some(25),
            protocol: Protocol::Tcp,
            verdict: ConnectionVerdict::Denied,
            rule: None,
        });
        let line = render_line(&identity(), &event, OffsetDateTime::UNIX_EPOCH).unwrap();
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(value["type"], "connection");
        assert_eq!(value["destination"], "2001:db8::1");
        assert_eq!(value["port"], 25);
        assert_eq!(value["protocol"], "tcp");
        assert_eq!(value["verdict"], "denied");
        assert_eq!(value["rule"], Value::Null);
        assert_eq!(value["execution_id"], "exec-1");
    }

    #[test]
    fn writer_appends_one_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let writer = JsonLinesWriter::open(&path, identity()).unwrap();
        writer.record(&dns_event()).unwrap();
        // Visible without dropping or flushing the writer.
        let text = std::fs::read_to_string(&path).unwrap();
        writer.record(&dns_event()).unwrap();
        assert_eq!(text.lines().count(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        for line in &lines[1..] {
            let value: Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["type"], "dns_query");
            let stamp = value["timestamp"].as_str().unwrap();
            assert!(
                OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).is_ok(),
                "{stamp}"
            );
        }
    }
}
