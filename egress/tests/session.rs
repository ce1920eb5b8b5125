//! The egress pieces composed (`EgressSession`): a runsc sandbox whose policy
//! allows `allowed.example` on port 8080 reaches it by name through the DNS
//! proxy and the nftables table, and nothing else: not another name (never
//! asked upstream), not an address it did not resolve, not another port.
//! The sandbox asks in mixed case; upstream sees only the policy's spelling.
//! Everything runs in the fake internet's namespaces.

use skillbox_egress::netns::{Forwarding, NetnsName, SystemRunner};
use skillbox_egress::session::EgressSession;
use skillbox_test_support::events::connection_events;
use skillbox_test_support::fake_internet::{
    self, netns_list, FakeInternet, DNS_SERVER, NODE_ADDRESS, NODE_UPLINK,
};
use skillbox_test_support::session::session_config;
use skillbox_test_support::{fake_sandbox, must, require_sandbox_prerequisites, Skill};

const PROBE: &str = r#"exec 2>&1
nslookup ALLowED.EXaMplE > /tmp/lookup 2>&1; cat /tmp/lookup
addr=$(awk '/^Address: 203/ {print $2}' /tmp/lookup)
echo "allowed.example is $addr"
printf 'GET / HTTP/1.0\r\n\r\n' | nc "$addr" 8080 | tail -1
nc -w 3 "$addr" 8081 </dev/null || echo "other port: refused"
nc -w 3 198.51.100.20 8080 </dev/null || echo "unresolved address: refused"
nc -w 3 203.0.113.11 8080 </dev/null || echo "unlearned address: refused"
nslookup other.example >/dev/null 2>&1 || echo "other.example: not resolved"
nslookup x7f3k9q2exfiltrated.example >/dev/null 2>&1 || echo "exfil name: not resolved"
"#;

#[test]
fn a_sandbox_reaches_only_what_its_policy_allows_by_name() {
    require_sandbox_prerequisites();
    let fake = FakeInternet::start("ses");
    let node = NetnsName::new(&fake.node).unwrap();
    let uplink = Forwarding::enable(Box::new(SystemRunner), Some(node.clone()), NODE_UPLINK).unwrap();

    let skill = Skill::sh(
        "egress-session",
        "  resources: { cpus: 0.5, memory: 128Mi, pids: 16, timeout: 60s }\n  network:\n    allow:\n      - { domain: allowed.example, ports: [8080] }\n",
        PROBE,
    );
    let work = tempfile::Builder::new()
        .prefix("skillbox-egress-session.")
        .tempdir()
        .unwrap();
    let bundle = fake_sandbox::compile_on_busybox(&skill, work.path());
    let annotations = policy_compiler::bundle::read_annotations(&bundle).unwrap();

    let name = NetnsName::new(&format!("{}-sbx", fake.node.trim_end_matches("-node"))).unwrap();
    let id = name.as_str().to_owned();
    let events = work.path().join("egress.jsonl");
    let upstream = format!("{DNS_SERVER}:53").parse().unwrap();
    let config = session_config(&id, &annotations, &node, upstream, &events);
    let session = EgressSession::start(&id, name, &annotations.policy.network, &config).unwrap();
    let table = session.table_name().to_owned();
    let output = fake_sandbox::run_sandboxed(
        &fake,
        &session.namespace_path(),
        &session.resolv_conf(),
        &bundle,
        &id,
    );
    let text = output.stdout.clone();
    let expect = |line: &str| assert!(text.contains(line), "missing {line:?}:\n{}", output.describe());
    expect("allowed.example is 203.0.113.10");
    expect(&fake_internet::http_body("203.0.113.10"));
    expect("other port: refused");
    expect("unresolved address: refused");
    expect("unlearned address: refused");
    expect("other.example: not resolved");
    expect("exfil name: not resolved");

    // Upstream saw the allowed name only, spelled as the policy spells it
    // (busybox's resolver took the answer to its mixed-case question).
    let asked = fake.dns_log();
    assert!(
        !asked.contains("ALLowED"),
        "the skill's spelling reached upstream:\n{asked}"
    );
    // ...and from the node's address: the proxy's own queries leave from
    // the outer namespace, never from the caller's.
    assert!(
        asked.contains(&format!("query[A] allowed.example from {NODE_ADDRESS}")),
        "{asked}"
    );
    assert!(
        !asked.contains("other.example") && !asked.contains("x7f3k9q2exfiltrated"),
        "a refused name reached upstream:\n{asked}"
    );
    let events_text = std::fs::read_to_string(&events).unwrap();
    let verdicts: Vec<(String, String)> = events_text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["type"] == "dns_query")
        .map(|event| {
            (
                event["name"]
                    .as_str()
                    .unwrap_or("")
                    .trim_end_matches('.')
                    .to_owned(),
                event["verdict"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        verdicts.contains(&("allowed.example".to_owned(), "allowed".to_owned()))
            && verdicts.contains(&("other.example".to_owned(), "refused".to_owned())),
        "{events_text}"
    );
    assert!(events_text.contains(&annotations.skill_digest), "{events_text}");

    drop(session);
    // Read after the session is gone: stopping it wrote every connection
    // event. The learned address is named by the domain rule that let it in.
    let events_text = std::fs::read_to_string(&events).unwrap();
    let connections = connection_events(&events_text);
    for expected in [
        "203.0.113.10 8080 tcp allowed allow: domain allowed.example ports 8080",
        "203.0.113.10 8081 tcp denied default-deny",
        "198.51.100.20 8080 tcp denied default-deny",
        "203.0.113.11 8080 tcp denied default-deny",
    ] {
        let seen = connections.iter().filter(|c| *c == expected).count();
        assert_eq!(seen, 1, "{expected:?} in:\n{events_text}");
    }
    assert!(!netns_list().contains(&id), "namespace {id} left behind");
    let ruleset = must(&["ip", "netns", "exec", node.as_str(), "nft", "list", "ruleset"]);
    assert!(
        !ruleset.contains(&table) && !ruleset.contains("skillbox_nat"),
        "nftables left behind:\n{ruleset}"
    );
    let links = must(&["ip", "-n", node.as_str(), "-o", "link"]);
    assert!(!links.contains("sbxv"), "veth left behind:\n{links}");
    drop(uplink);
}
