//! The egress table applied with the real `nft`, only inside network
//! namespaces these tests create (`skillbox-test-rules-…`) and delete on
//! every exit, failed or not. Needs root, `nft` and `ip`; python3 for the
//! packet-level test. A missing program fails the test, naming it.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::network::Port;
use policy_compiler::node_config::NodeConfig;
use serde_json::{json, Value};
use skillbox_egress::nft::{Firewall, Namespace, Nft};
use skillbox_egress::rules::{SandboxFacts, SandboxTable, FORWARD_CHAIN, INPUT_CHAIN, REFUSE_CHAIN};

fn require(programs: &[&str]) {
    for program in programs {
        let found = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "this test needs `{program}` on PATH (Debian: nftables, iproute2, python3)"
        );
    }
}

fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "skillbox-test-rules-{role}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn exec(&self, argv: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(argv);
        sh(&full)
    }

    fn nft(&self) -> Nft {
        Nft::new(Namespace::Named(self.0.clone()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    require(&["ip", "nft"]);
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
    require(&["ip", "nft"]);
    let ns = Netns::new("errors");
    let nft = ns.nft();
    let err = nft.apply_batch(&json!({"nftables": [{"add": {"chain": {"family": "inet", "table": "skillbox-absent", "name": "c"}}}]}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("ip netns exec {} nft -j -f -", ns.0)),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");
    let gone = Nft::new(Namespace::Named("skillbox-test-rules-never-made".into()));
    let err = gone.remove("skillbox-x").unwrap_err().to_string();
    assert!(err.contains("skillbox-test-rules-never-made"), "{err}");
}
