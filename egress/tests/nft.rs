//! The egress table applied with the real `nft`, only inside network
//! namespaces these tests create (`skillbox-test-rules-…`) and delete on
//! every exit, failed or not. Needs root, `nft` and `ip`; python3 for the
//! packet-level test. A missing program fails the test, naming it.

use std::net::IpAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::network::Port;
use policy_compiler::node_config::NodeConfig;
use serde_json::{json, Value};
use skillbox_egress::nft::{Firewall, Namespace, Nft};
use skillbox_egress::rules::{Inbound, SandboxFacts, SandboxTable, FORWARD_CHAIN, INPUT_CHAIN, REFUSE_CHAIN};
use skillbox_test_support::require;
use skillbox_test_support::topology::{connect, Netns, Topology, SANDBOX_VETH};

fn network(value: Value) -> EffectiveNetwork {
    let mut value = value;
    value["always_deny"] = json!(NodeConfig::default().ceiling.always_deny);
    serde_json::from_value(value).unwrap()
}

fn facts(id: &str, veth: &str) -> SandboxFacts {
    SandboxFacts {
        sandbox_id: id.into(),
        outer_veth: veth.into(),
        sandbox_addrs: vec!["10.200.0.2".parse().unwrap()],
        dns_proxy: vec!["10.200.0.1:53".parse().unwrap()],
        node_addrs: vec!["198.18.0.1".parse().unwrap()],
        grace_secs: 1,
        log_group: Some(1),
        inbound: Inbound::Closed,
        recorder: None,
    }
}

fn names(listing: &Value, kind: &str) -> Vec<String> {
    listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item[kind]["name"].as_str().map(str::to_owned))
        .collect()
}

fn elements(listing: &Value, set: &str) -> Vec<Value> {
    listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["set"]["name"] == set)
        .flat_map(|item| item["set"]["elem"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn table_is_applied_learns_expiring_elements_and_is_removed() {
    require("ip", "iproute2");
    require("nft", "nftables");
    let ns = Netns::new("table");
    let nft = ns.nft();
    let policy = network(json!({"allow": [{"domain": "example.org", "ports": [443]}], "deny": []}));
    let table = SandboxTable::build(&policy, &facts("rules-table", "sbx-v0")).unwrap();

    nft.apply(&table).unwrap();
    // Applying again replaces the table rather than failing or duplicating.
    nft.apply(&table).unwrap();
    let listing = nft.list(table.name()).unwrap().expect("table applied");
    assert_eq!(names(&listing, "table"), [table.name()]);
    let mut chains = names(&listing, "chain");
    chains.sort();
    assert_eq!(chains, [REFUSE_CHAIN, FORWARD_CHAIN, INPUT_CHAIN]);
    for set in [
        "always_deny_v4",
        "deny_v4",
        "allowed_v4",
        "allowed_any_v4",
        "allowed_v6",
    ] {
        assert!(names(&listing, "set").iter().any(|s| s == set), "{set} missing");
    }
    let rules = listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("rule").is_some())
        .count();
    assert_eq!(rules, 2 + 14 + 2, "refuse, forward, input");

    // Timeout 2 s: TTL 1 plus grace 1.
    let port = Port::try_from(443).unwrap();
    let addr: IpAddr = "198.51.100.7".parse().unwrap();
    nft.learn(&table, addr, Some(&[port]), 1).unwrap();
    let listing = nft.list(table.name()).unwrap().unwrap();
    let learned = elements(&listing, "allowed_v4");
    assert_eq!(learned.len(), 1, "{learned:?}");
    assert_eq!(
        learned[0]["elem"]["val"],
        json!({"concat": ["198.51.100.7", 443]})
    );
    assert_eq!(learned[0]["elem"]["timeout"], 2);
    // Learning again refreshes the timeout without a duplicate or an error.
    nft.learn(&table, addr, Some(&[port]), 1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let listing = nft.list(table.name()).unwrap().unwrap();
        if elements(&listing, "allowed_v4").is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the element did not expire");
        sleep(Duration::from_millis(250));
    }

    nft.remove(table.name()).unwrap();
    assert_eq!(nft.list(table.name()).unwrap(), None);
    assert!(nft.tables().unwrap().is_empty());
    assert_eq!(ns.exec(&["nft", "list", "ruleset"]).trim(), "");
    // Removing what is gone is fine.
    nft.remove(table.name()).unwrap();
}

#[test]
fn errors_name_the_namespace_and_nft_stderr() {
    require("ip", "iproute2");
    require("nft", "nftables");
    let ns = Netns::new("errors");
    let nft = ns.nft();
    let err = nft.apply_batch(&json!({"nftables": [{"add": {"chain": {"family": "inet", "table": "skillbox-absent", "name": "c"}}}]}))
        .unwrap_err()
        .to_string();
    // Applied through libnftables: the namespace and nft's own message.
    assert!(
        err.contains(&format!(
            "nftables in network namespace {} refused the batch",
            ns.0
        )),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");
    // Learning into a table that is not there: the kernel's refusal.
    let policy = network(json!({"allow": [{"domain": "example.org", "ports": [443]}], "deny": []}));
    let table = SandboxTable::build(&policy, &facts("rules-errors", "sbx-v0")).unwrap();
    let port = Port::try_from(443).unwrap();
    let err = nft
        .learn(&table, "198.51.100.7".parse().unwrap(), Some(&[port]), 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot add elements to set allowed_v4 of table skillbox-rules-errors")
            && err.contains("No such file or directory"),
        "{err}"
    );
    let gone = Nft::new(Namespace::Named("skillbox-test-rules-never-made".into()));
    let err = gone.remove("skillbox-x").unwrap_err().to_string();
    assert!(err.contains("skillbox-test-rules-never-made"), "{err}");
}

/// The sandbox's namespace (10.200.0.2) → veth → the node's namespace
/// (10.200.0.1, forwards, holds the table) → veth → a fake internet
/// (198.18.0.2) serving TCP 80 and 8080 on 203.0.113.10, 203.0.113.13 and
/// 198.51.100.20.
#[test]
fn forwarded_connections_follow_the_policy() {
    let Topology { sbx, node, .. } = &Topology::start();
    let policy = network(json!({
        "allow": [{"cidr": "203.0.113.0/24", "ports": [80]}, {"domain": "example.org", "ports": [80]}],
        "deny": [{"cidr": "203.0.113.13/32"}],
    }));
    let table = SandboxTable::build(&policy, &facts("rules-packets", SANDBOX_VETH)).unwrap();
    let nft = node.nft();
    nft.apply(&table).unwrap();

    assert_eq!(
        connect(sbx, "203.0.113.10", 80),
        "connected",
        "allowed CIDR and port"
    );
    assert_eq!(
        connect(sbx, "203.0.113.10", 8080),
        "refused",
        "allowed CIDR, other port"
    );
    assert_eq!(
        connect(sbx, "203.0.113.13", 80),
        "refused",
        "denied inside an allowed CIDR"
    );
    assert_eq!(
        connect(sbx, "198.51.100.20", 80),
        "refused",
        "no allowed name resolved to it"
    );
    assert_eq!(
        connect(sbx, "10.200.0.1", 22),
        "timeout",
        "the node is unreachable"
    );

    let port = Port::try_from(80).unwrap();
    nft.learn(&table, "198.51.100.20".parse().unwrap(), Some(&[port]), 60)
        .unwrap();
    assert_eq!(
        connect(sbx, "198.51.100.20", 80),
        "connected",
        "learned address and port"
    );
    assert_eq!(
        connect(sbx, "198.51.100.20", 8080),
        "refused",
        "learned address, other port"
    );

    let listing = nft.list(table.name()).unwrap().unwrap();
    let counted = |comment: &str| -> u64 {
        listing["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| item["rule"]["comment"] == comment)
            .flat_map(|item| item["rule"]["expr"].as_array().unwrap().clone())
            .filter_map(|expr| expr["counter"]["packets"].as_u64())
            .sum()
    };
    assert!(counted("default-deny") >= 3, "{listing}");
    assert!(counted("deny: deny_v4") >= 1);
    assert!(counted("allow: cidr 203.0.113.0/24 ports 80") >= 1);
    assert!(counted("allow-learned: allowed_v4") >= 1);
    assert!(counted("node: the node is unreachable") >= 1);

    nft.remove(table.name()).unwrap();
    assert_eq!(
        connect(sbx, "203.0.113.10", 8080),
        "connected",
        "removal restores the namespace"
    );
}
