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
        err.contains(&format!(
            "`nft -j -f -` in network namespace /var/run/netns/{}",
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

const SERVER: &str = r#"
import socket, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen()
    while True:
        c, _ = s.accept()
        c.sendall(b"hi")
        c.close()
for port in (80, 8080):
    threading.Thread(target=serve, args=(port,)).start()
"#;

const CLIENT: &str = r#"
import socket, sys
s = socket.socket()
s.settimeout(1.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("error", e.errno)
"#;

fn connect(ns: &Netns, addr: &str, port: u16) -> String {
    ns.exec(&["python3", "-c", CLIENT, addr, &port.to_string()])
        .trim()
        .to_owned()
}

/// The sandbox's namespace (10.200.0.2) → veth → the node's namespace
/// (10.200.0.1, forwards, holds the table) → veth → a fake internet
/// (198.18.0.2) serving TCP 80 and 8080 on 203.0.113.10, 203.0.113.13 and
/// 198.51.100.20.
#[test]
fn forwarded_connections_follow_the_policy() {
    require(&["ip", "nft", "python3"]);
    let sbx = Netns::new("sbx");
    let node = Netns::new("node");
    let net = Netns::new("net");
    node.exec(&[
        "ip", "link", "add", "sbx-out", "type", "veth", "peer", "name", "sbx-in", "netns", &sbx.0,
    ]);
    node.exec(&[
        "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", &net.0,
    ]);
    for (ns, cmds) in [
        (
            &sbx,
            vec![
                "ip addr add 10.200.0.2/24 dev sbx-in",
                "ip link set sbx-in up",
                "ip route add default via 10.200.0.1",
            ],
        ),
        (
            &node,
            vec![
                "ip addr add 10.200.0.1/24 dev sbx-out",
                "ip link set sbx-out up",
                "ip addr add 198.18.0.1/24 dev up0",
                "ip link set up0 up",
                "ip route add default via 198.18.0.2",
                "sysctl -qw net.ipv4.ip_forward=1",
            ],
        ),
        (
            &net,
            vec![
                "ip addr add 198.18.0.2/24 dev up1",
                "ip link set up1 up",
                "ip route add 10.200.0.0/24 via 198.18.0.1",
                "ip addr add 203.0.113.10/32 dev lo",
                "ip addr add 203.0.113.13/32 dev lo",
                "ip addr add 198.51.100.20/32 dev lo",
            ],
        ),
    ] {
        for cmd in cmds {
            ns.exec(&cmd.split(' ').collect::<Vec<_>>());
        }
    }
    let _server = Killed(
        Command::new("ip")
            .args(["netns", "exec", &net.0, "python3", "-c", SERVER])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while connect(&net, "203.0.113.10", 8080) != "connected" {
        assert!(Instant::now() < deadline, "the test server did not start");
        sleep(Duration::from_millis(100));
    }
    // Without the table the sandbox reaches everything: the setup works.
    assert_eq!(connect(&sbx, "203.0.113.10", 8080), "connected");

    let policy = network(json!({
        "allow": [{"cidr": "203.0.113.0/24", "ports": [80]}, {"domain": "example.org", "ports": [80]}],
        "deny": [{"cidr": "203.0.113.13/32"}],
    }));
    let table = SandboxTable::build(&policy, &facts("rules-packets", "sbx-out")).unwrap();
    let nft = node.nft();
    nft.apply(&table).unwrap();

    assert_eq!(
        connect(&sbx, "203.0.113.10", 80),
        "connected",
        "allowed CIDR and port"
    );
    assert_eq!(
        connect(&sbx, "203.0.113.10", 8080),
        "refused",
        "allowed CIDR, other port"
    );
    assert_eq!(
        connect(&sbx, "203.0.113.13", 80),
        "refused",
        "denied inside an allowed CIDR"
    );
    assert_eq!(
        connect(&sbx, "198.51.100.20", 80),
        "refused",
        "no allowed name resolved to it"
    );
    assert_eq!(
        connect(&sbx, "10.200.0.1", 22),
        "timeout",
        "the node is unreachable"
    );

    let port = Port::try_from(80).unwrap();
    nft.learn(&table, "198.51.100.20".parse().unwrap(), Some(&[port]), 60)
        .unwrap();
    assert_eq!(
        connect(&sbx, "198.51.100.20", 80),
        "connected",
        "learned address and port"
    );
    assert_eq!(
        connect(&sbx, "198.51.100.20", 8080),
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
        connect(&sbx, "203.0.113.10", 8080),
        "connected",
        "removal restores the namespace"
    );
}
