//! The connection log on real nftables and real packets: a table whose
//! rules log to an nflog group in the node namespace of test-support's
//! `topology::Topology`, read by `ConnectionLog`. Needs root, `nft`, `ip`
//! and python3; a missing program fails the test.

use std::path::PathBuf;
use std::sync::Arc;

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::network::Port;
use policy_compiler::node_config::NodeConfig;
use serde_json::{json, Value};
use skillbox_egress::events::{
    DnsAnswer, DnsQueryEvent, DnsVerdict, EgressEvent, EventSink, JsonLinesWriter, SandboxIdentity,
    SkillIdentity,
};
use skillbox_egress::nflog::{group_for_slot, ConnectionLog, NflogError, ResolvedRules, COPY_RANGE};
use skillbox_egress::nft::Firewall;
use skillbox_egress::rules::{Inbound, SandboxFacts, SandboxTable};
use skillbox_test_support::topology::{connect, Netns, Topology, SANDBOX_VETH};

fn identity() -> SandboxIdentity {
    SandboxIdentity {
        execution_id: "exec-nflog".into(),
        skill: SkillIdentity {
            name: "nflog-test".into(),
            version: None,
            digest: None,
        },
        container_id: "c-nflog".into(),
    }
}

fn table(group: u16) -> SandboxTable {
    let policy: EffectiveNetwork = serde_json::from_value(json!({
        "allow": [{"cidr": "203.0.113.0/24", "ports": [80]}, {"domain": "example.org", "ports": [8080]}],
        "deny": [{"cidr": "203.0.113.13/32"}],
        "always_deny": NodeConfig::default().ceiling.always_deny,
    }))
    .unwrap();
    let facts = SandboxFacts {
        sandbox_id: "nflog-packets".into(),
        outer_veth: SANDBOX_VETH.into(),
        sandbox_addrs: vec!["10.200.0.2".parse().unwrap()],
        dns_proxy: vec!["10.200.0.1:53".parse().unwrap()],
        node_addrs: vec!["198.18.0.1".parse().unwrap()],
        grace_secs: 0,
        log_group: Some(group),
        inbound: Inbound::Closed,
        recorder: None,
    };
    SandboxTable::build(&policy, &facts).unwrap()
}

fn path(ns: &Netns) -> PathBuf {
    PathBuf::from("/var/run/netns").join(&ns.0)
}

/// The nflog instances of `ns`: `(group, copy range)` from
/// `/proc/net/netfilter/nfnetlink_log`.
fn instances(ns: &Netns) -> Vec<(u16, u32)> {
    ns.exec(&["cat", "/proc/net/netfilter/nfnetlink_log"])
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((fields.first()?.parse().ok()?, fields.get(4)?.parse().ok()?))
        })
        .collect()
}

/// What the proxy records for an answered `example.org`.
fn answered_example_org() -> EgressEvent {
    EgressEvent::DnsQuery(DnsQueryEvent {
        name: "example.org".into(),
        qtype: "A".into(),
        verdict: DnsVerdict::Allowed,
        rcode: "NOERROR".into(),
        rule: Some("domain example.org ports 8080".into()),
        reason: None,
        answers: vec![DnsAnswer {
            name: "example.org".into(),
            record_type: "A".into(),
            data: "198.51.100.20".into(),
            ttl: 60,
        }],
        sinkhole: false,
    })
}

#[test]
fn each_connection_attempt_is_one_event_naming_verdict_and_rule() {
    let topology = Topology::start();
    let dir = tempfile::tempdir().unwrap();
    let events_path = dir.path().join("egress.jsonl");
    let writer = Arc::new(JsonLinesWriter::open(&events_path, identity()).unwrap());
    let resolved = Arc::new(ResolvedRules::new(writer));
    let group = group_for_slot(3).unwrap();
    let table = table(group);
    let nft = topology.node.nft();
    let log = ConnectionLog::start(
        Some(&path(&topology.node)),
        group,
        table.judging_rules().to_vec(),
        Arc::clone(&resolved),
    )
    .unwrap();
    // Bound in the node's namespace, with the copy range asked for.
    assert_eq!(instances(&topology.node), [(group, COPY_RANGE)]);
    nft.apply(&table).unwrap();
    // The proxy would record the answer, then teach the table.
    resolved.record(&answered_example_org()).unwrap();
    let port = Port::try_from(8080).unwrap();
    nft.learn(&table, "198.51.100.20".parse().unwrap(), Some(&[port]), 60)
        .unwrap();

    let sbx = &topology.sbx;
    assert_eq!(connect(sbx, "203.0.113.10", 80), "connected");
    assert_eq!(connect(sbx, "203.0.113.13", 80), "refused");
    assert_eq!(connect(sbx, "198.51.100.20", 8080), "connected");
    assert_eq!(connect(sbx, "198.51.100.20", 80), "refused");
    assert_eq!(connect(sbx, "169.254.169.254", 80), "refused");
    // Stopped right after the last attempt: what was logged is drained.
    log.stop();
    nft.remove(table.name()).unwrap();
    assert_eq!(instances(&topology.node), [], "the nflog instance is gone");

    let text = std::fs::read_to_string(&events_path).unwrap();
    let connections: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["type"] == "connection")
        .collect();
    let summary: Vec<Value> = connections
        .iter()
        .map(|event| {
            json!([
                event["destination"],
                event["port"],
                event["protocol"],
                event["verdict"],
                event["rule"]
            ])
        })
        .collect();
    assert_eq!(
        summary,
        [
            json!([
                "203.0.113.10",
                80,
                "tcp",
                "allowed",
                "allow: cidr 203.0.113.0/24 ports 80"
            ]),
            json!([
                "203.0.113.13",
                80,
                "tcp",
                "denied",
                "deny: cidr 203.0.113.13/32 (all ports)"
            ]),
            json!([
                "198.51.100.20",
                8080,
                "tcp",
                "allowed",
                "allow: domain example.org ports 8080"
            ]),
            json!(["198.51.100.20", 80, "tcp", "denied", "default-deny"]),
            json!([
                "169.254.169.254",
                80,
                "tcp",
                "denied",
                "always-deny: cidr 169.254.0.0/16"
            ]),
        ],
        "{text}"
    );
    for event in &connections {
        assert_eq!(event["execution_id"], "exec-nflog");
        assert_eq!(event["skill"]["name"], "nflog-test");
        assert_eq!(event["container_id"], "c-nflog");
    }
}

#[test]
fn a_group_another_socket_holds_is_refused_naming_it() {
    let node = Netns::new("nflog-busy");
    let group = group_for_slot(5).unwrap();
    // One events file per log, all removed with the test's directory.
    let dir = tempfile::tempdir().unwrap();
    let sink = |name: &str| {
        let writer = JsonLinesWriter::open(&dir.path().join(name), identity()).unwrap();
        Arc::new(ResolvedRules::new(Arc::new(writer)))
    };
    let first = ConnectionLog::start(Some(&path(&node)), group, Vec::new(), sink("first.jsonl")).unwrap();
    let err = ConnectionLog::start(Some(&path(&node)), group, Vec::new(), sink("second.jsonl")).unwrap_err();
    assert!(
        matches!(err, NflogError::Bind { group: g, .. } if g == group),
        "{err:?}"
    );
    // The kernel says EPERM, not EBUSY, for a group another socket holds.
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("Operation not permitted"), "{source}");
    assert!(err.to_string().contains(&group.to_string()), "{err}");
    drop(first);
    // Once the first is gone, the group is free again.
    ConnectionLog::start(Some(&path(&node)), group, Vec::new(), sink("third.jsonl"))
        .unwrap()
        .stop();
    assert_eq!(instances(&node), []);
}
