use std::path::PathBuf;

use policy_compiler::node_config::NodeConfig;
use serde_json::json;

use super::*;

fn network() -> EffectiveNetwork {
    serde_json::from_value(json!({
        "allow": [
            {"domain": "api.weather.gov", "ports": [443]},
            {"domain": "*.noaa.gov", "ports": [443]},
            {"cidr": "203.0.113.0/24", "ports": [80, 443]},
            {"cidr": "2001:db8:1::/48"},
        ],
        "deny": [
            {"cidr": "203.0.113.13/32"},
            {"cidr": "203.0.113.0/24", "ports": [25]},
            {"domain": "evil.noaa.gov"},
        ],
        "always_deny": NodeConfig::default().ceiling.always_deny,
    }))
    .unwrap()
}

fn facts() -> SandboxFacts {
    SandboxFacts {
        sandbox_id: "weather-0001".into(),
        outer_veth: "sbx-weather0".into(),
        sandbox_addrs: vec!["10.200.0.2".parse().unwrap()],
        dns_proxy: vec!["10.200.0.1:53".parse().unwrap()],
        node_addrs: vec!["10.1.2.3".parse().unwrap(), "198.18.0.1".parse().unwrap()],
        grace_secs: 5,
        log_group: Some(7),
        inbound: Inbound::Closed,
        recorder: None,
    }
}

fn facts_v6() -> SandboxFacts {
    let mut facts = facts();
    facts.sandbox_addrs.push("fd00:200::2".parse().unwrap());
    facts.dns_proxy.push("[fd00:200::1]:53".parse().unwrap());
    facts
}

fn golden(name: &str, value: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0") {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    assert_eq!(
        text,
        expected,
        "{} differs; UPDATE_GOLDEN=1 regenerates it",
        path.display()
    );
}

/// The comments of a chain's rules, in order.
fn comments(batch: &Value, chain: &str) -> Vec<String> {
    batch["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|cmd| cmd["add"].get("rule"))
        .filter(|rule| rule["chain"] == chain)
        .map(|rule| rule["comment"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn elements(batch: &Value, set: &str) -> Vec<Value> {
    batch["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|cmd| cmd["add"].get("element"))
        .filter(|element| element["name"] == set)
        .flat_map(|element| element["elem"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn v4_table_matches_golden_file() {
    let table = SandboxTable::build(&network(), &facts()).unwrap();
    golden("rules.weather.v4.json", &table.apply_batch());
}

#[test]
fn v6_table_matches_golden_file() {
    let mut facts = facts_v6();
    facts.log_group = None;
    let table = SandboxTable::build(&network(), &facts).unwrap();
    golden("rules.weather.v6.json", &table.apply_batch());
}

#[test]
fn forward_rules_judge_in_documented_order() {
    let batch = SandboxTable::build(&network(), &facts()).unwrap().apply_batch();
    assert_eq!(
        comments(&batch, FORWARD_CHAIN),
        [
            "replies to the sandbox",
            "inbound: new connections into the sandbox",
            "not from this sandbox",
            "",
            "invalid",
            "spoofed: ip",
            "family-off: ipv6",
            "always-deny: always_deny_v4",
            "deny: deny_v4",
            "deny: cidr 203.0.113.0/24 ports 25",
            "dns-bypass: DNS only through the proxy",
            "not-tcp",
            "allow: cidr 203.0.113.0/24 ports 80,443",
            "allow-learned: allowed_v4",
            "allow-learned: allowed_any_v4",
            "default-deny",
        ]
    );
    assert_eq!(
        comments(&batch, INPUT_CHAIN),
        ["dns proxy 10.200.0.1:53", "node: the node is unreachable"]
    );
}

#[test]
fn inbound_is_let_in_before_the_inbound_drop_and_only_when_open() {
    let mut facts = facts();
    facts.inbound = Inbound::AddressesAndLocalhost;
    let table = SandboxTable::build(&network(), &facts).unwrap();
    let batch = table.apply_batch();
    golden("rules.weather.inbound.v4.json", &batch);
    let forward = comments(&batch, FORWARD_CHAIN);
    assert_eq!(
        forward[..3],
        [
            "replies to the sandbox",
            "inbound: forwarded to the sandbox",
            "inbound: new connections into the sandbox",
        ]
    );
    // Everything from the sandbox is judged as without inbound.
    let closed = SandboxTable::build(&network(), &self::facts()).unwrap();
    assert_eq!(forward[2..], comments(&closed.apply_batch(), FORWARD_CHAIN)[1..]);
    assert_eq!(table.judging_rules(), closed.judging_rules());
    assert_eq!(
        comments(&batch, INPUT_CHAIN),
        [
            "dns proxy 10.200.0.1:53",
            "inbound: replies to the outer namespace's own connections",
            "node: the node is unreachable"
        ]
    );
    // The accept into the sandbox needs a DNAT'ed new connection; the one
    // in the input chain a reply to one.
    let rule = |chain: &str, comment: &str| {
        batch["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|cmd| cmd["add"].get("rule"))
            .find(|rule| rule["chain"] == chain && rule["comment"] == comment)
            .unwrap()["expr"]
            .clone()
    };
    let forwarded = rule(FORWARD_CHAIN, "inbound: forwarded to the sandbox");
    assert_eq!(forwarded[0]["match"]["left"], json!({"meta": {"key": "oifname"}}));
    assert_eq!(forwarded[1]["match"]["right"], "new");
    assert_eq!(forwarded[2]["match"]["right"], "dnat");
    let replies = rule(
        INPUT_CHAIN,
        "inbound: replies to the outer namespace's own connections",
    );
    assert_eq!(replies[0]["match"]["left"], json!({"meta": {"key": "iifname"}}));
    assert_eq!(replies[1]["match"]["right"], "reply");
    assert_eq!(replies[2]["match"]["right"], "dnat");

    facts.inbound = Inbound::Addresses;
    let batch = SandboxTable::build(&network(), &facts).unwrap().apply_batch();
    assert_eq!(comments(&batch, FORWARD_CHAIN), forward);
    assert_eq!(
        comments(&batch, INPUT_CHAIN),
        ["dns proxy 10.200.0.1:53", "node: the node is unreachable"]
    );
}

#[test]
fn ipv6_is_enforced_when_the_sandbox_has_an_ipv6_address() {
    let table = SandboxTable::build(&network(), &facts_v6()).unwrap();
    assert!(table.ipv6_enforced());
    let batch = table.apply_batch();
    let forward = comments(&batch, FORWARD_CHAIN);
    for expected in [
        "spoofed: ip6",
        "always-deny: always_deny_v6",
        "allow: cidr 2001:db8:1::/48 (all ports)",
        "allow-learned: allowed_v6",
    ] {
        assert!(
            forward.iter().any(|c| c == expected),
            "{expected} missing: {forward:?}"
        );
    }
    assert!(!forward.iter().any(|c| c.starts_with("family-off")));
    assert!(comments(&batch, INPUT_CHAIN).contains(&"ipv6 neighbour discovery".to_owned()));
    // ...and refused, with no IPv6 rule left, when it has none.
    let table = SandboxTable::build(&network(), &facts()).unwrap();
    assert!(!table.ipv6_enforced());
    assert!(!table.apply_batch().to_string().contains("\"ip6\""));
}

#[test]
fn always_denied_ranges_and_node_addresses_are_merged() {
    let batch = SandboxTable::build(&network(), &facts()).unwrap().apply_batch();
    let always = elements(&batch, "always_deny_v4");
    // 10.1.2.3 lies in 10.0.0.0/8: one interval, as nft refuses overlaps.
    assert!(always.contains(&json!({"prefix": {"addr": "10.0.0.0", "len": 8}})));
    assert!(!always.contains(&json!("10.1.2.3")));
    assert!(always.contains(&json!("198.18.0.1")));
    assert!(elements(&batch, "always_deny_v6").contains(&json!({"prefix": {"addr": "fe80::", "len": 10}})));
    assert_eq!(elements(&batch, "deny_v4"), [json!("203.0.113.13")]);
}

#[test]
fn logging_follows_the_log_group() {
    let batch = SandboxTable::build(&network(), &facts()).unwrap().apply_batch();
    let text = batch.to_string();
    let table = SandboxTable::build(&network(), &facts()).unwrap();
    let rules = table.judging_rules();
    assert_eq!(text.matches("\"log\"").count(), rules.len());
    let index = rules.iter().position(|rule| rule.text == "default-deny").unwrap();
    assert!(text.contains(&format!(
        r#"{{"log":{{"group":7,"prefix":"default-deny #{index}"}}}}"#
    )));
    // Set members are named by the policy rule or node address they come from.
    let deny = rules.iter().find(|rule| rule.text == "deny: deny_v4").unwrap();
    assert_eq!(
        deny.describe("203.0.113.13".parse().unwrap()),
        "deny: cidr 203.0.113.13/32 (all ports)"
    );
    let always = rules
        .iter()
        .find(|rule| rule.text == "always-deny: always_deny_v4")
        .unwrap();
    assert_eq!(
        always.describe("198.18.0.1".parse().unwrap()),
        "always-deny: node address 198.18.0.1"
    );
    assert_eq!(
        always.describe("169.254.169.254".parse().unwrap()),
        "always-deny: cidr 169.254.0.0/16"
    );
    let mut quiet = facts();
    quiet.log_group = None;
    let text = SandboxTable::build(&network(), &quiet)
        .unwrap()
        .apply_batch()
        .to_string();
    assert!(!text.contains("\"log\""));
}

#[test]
fn apply_replaces_any_previous_table_atomically() {
    let batch = SandboxTable::build(&network(), &facts()).unwrap().apply_batch();
    let table = json!({"family": "inet", "name": "skillbox-weather-0001"});
    assert_eq!(batch["nftables"][0], json!({"add": {"table": table}}));
    assert_eq!(batch["nftables"][1], json!({"delete": {"table": table}}));
    assert_eq!(batch["nftables"][2], json!({"add": {"table": table}}));
}

#[test]
fn learned_addresses_expire_after_ttl_plus_grace() {
    let table = SandboxTable::build(&network(), &facts_v6()).unwrap();
    let port: Port = Port::try_from(443).unwrap();
    let addr: IpAddr = "198.51.100.7".parse().unwrap();
    assert_eq!(
        table.learned(addr, Some(&[port]), 60),
        Some(LearnedElements {
            table: "skillbox-weather-0001".into(),
            set: "allowed_v4".into(),
            keys: vec![ElementKey::AddrPort(addr, port)],
            timeout_secs: 65,
        })
    );
    let v6: IpAddr = "2001:db8::7".parse().unwrap();
    let any = table.learned(v6, None, 0).unwrap();
    assert_eq!(any.set, "allowed_any_v6");
    assert_eq!(any.keys, [ElementKey::Addr(v6)]);
    assert_eq!(any.timeout_secs, 5);
}

#[test]
fn a_zero_timeout_never_means_forever() {
    let mut facts = facts();
    facts.grace_secs = 0;
    let table = SandboxTable::build(&network(), &facts).unwrap();
    let learned = table.learned("198.51.100.7".parse().unwrap(), None, 0).unwrap();
    assert_eq!(learned.timeout_secs, 1);
    // IPv6 is refused for this sandbox: nothing to learn.
    assert_eq!(table.learned("2001:db8::7".parse().unwrap(), None, 60), None);
}

#[test]
fn table_names_are_short_safe_and_distinct() {
    assert_eq!(table_name("weather-0001"), "skillbox-weather-0001");
    let long = "a".repeat(64);
    let name = table_name(&long);
    assert!(name.len() <= TABLE_PREFIX.len() + MAX_ID_LEN, "{name}");
    assert_ne!(name, table_name(&"a".repeat(65)));
    assert_ne!(table_name("Pod.1"), table_name("pod_1"));
    assert!(table_name("Pod.1")
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
    assert!(table_name("").starts_with(TABLE_PREFIX));
}

#[test]
fn invalid_facts_are_refused() {
    let mut bad = facts();
    bad.outer_veth = "a-name-far-too-long".into();
    assert!(matches!(
        SandboxTable::build(&network(), &bad),
        Err(RulesError::InterfaceName { .. })
    ));
    let mut bad = facts();
    bad.outer_veth = "eth0\"; flush".into();
    assert!(SandboxTable::build(&network(), &bad).is_err());
    let mut bad = facts();
    bad.sandbox_addrs.clear();
    assert!(matches!(
        SandboxTable::build(&network(), &bad),
        Err(RulesError::NoSandboxAddress { .. })
    ));
    let mut bad = facts();
    bad.dns_proxy.clear();
    assert!(matches!(
        SandboxTable::build(&network(), &bad),
        Err(RulesError::NoDnsProxy { .. })
    ));
    let mut bad = facts();
    bad.dns_proxy = vec!["[fd00::1]:53".parse().unwrap()];
    assert!(matches!(
        SandboxTable::build(&network(), &bad),
        Err(RulesError::DnsProxyFamily { .. })
    ));
}

#[test]
fn remove_is_add_then_delete() {
    let table = json!({"family": "inet", "name": "skillbox-x"});
    assert_eq!(
        remove_batch("skillbox-x"),
        json!({"nftables": [{"add": {"table": table}}, {"delete": {"table": table}}]})
    );
}

#[test]
fn an_observing_table_lets_tcp_reach_the_recorder_and_counts_what_leaves() {
    let mut observing = facts();
    observing.recorder = Some("10.200.0.1:40000".parse().unwrap());
    let table = SandboxTable::build(&network(), &observing).unwrap();
    let batch = table.apply_batch().to_string();
    assert!(batch.contains("observing recorder 10.200.0.1:40000"), "{batch}");
    assert!(batch.contains(LEFT_CHAIN), "{batch}");
    // An enforcing table has neither.
    let enforcing = SandboxTable::build(&network(), &facts())
        .unwrap()
        .apply_batch()
        .to_string();
    assert!(!enforcing.contains(LEFT_CHAIN) && !enforcing.contains("recorder"));

    // The counter as `nft -j list table` shows it.
    let listed = json!({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"rule": {"family": "inet", "table": "skillbox-weather-0001", "chain": LEFT_CHAIN, "handle": 40,
                  "comment": LEFT_COMMENT,
                  "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "sbx-weather0"}},
                           {"counter": {"packets": 3, "bytes": 180}}]}},
    ]});
    assert_eq!(SandboxTable::packets_left(&listed), Some(3));
    assert_eq!(SandboxTable::packets_left(&json!({"nftables": []})), None);
}
