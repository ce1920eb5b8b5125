//! Learning the least policy from what a scan's cases did.

use std::collections::BTreeMap;
use std::path::Path;

use policy_compiler::effective::resolve;
use policy_compiler::network::Destination;
use policy_compiler::{frontmatter, EffectivePolicy, NodeConfig};
use serde_json::{json, Value};
use skillbox_scan::{learn, LearnCase, Learned, Observed};

const MIB: u64 = 1 << 20;

fn policy_of(skill_md: &str) -> EffectivePolicy {
    let manifest = frontmatter::parse(Path::new("SKILL.md"), skill_md).unwrap();
    let node = NodeConfig::from_toml(Path::new("node.toml"), "").unwrap();
    resolve(&manifest, Path::new("SKILL.md"), &node, "node.toml")
        .unwrap()
        .policy
}

fn declared() -> EffectivePolicy {
    policy_of(
        "---
name: probe
description: A test skill
security_policy:
  version: 1
  entrypoint: [sh, main.sh, \"a b: c\"]
  network:
    allow:
      - { domain: api.example.org, ports: [443] }
  filesystem:
    writable:
      - { path: /tmp, size: 64Mi }
      - { path: /var/cache/probe }
  resources: { cpus: 1, memory: 256Mi, pids: 64, timeout: 30s }
  env: { pass: [PROBE_UNITS] }
---
",
    )
}

/// The learned block as the frontmatter of a SKILL.md, resolved.
fn reparsed(learned: &Learned) -> EffectivePolicy {
    policy_of(&format!("---\nname: x\ndescription: y\n{}---\n", learned.yaml))
}

fn observed(wall_ms: u64, memory_peak_bytes: u64) -> Observed {
    Observed {
        exit_status: 0,
        wall_ms,
        cpu_ms: wall_ms / 2,
        memory_peak_bytes,
    }
}

fn tcp(destination: &str, port: u16, name: Option<&str>) -> Value {
    json!({"type": "observed_connection", "protocol": "tcp", "destination": destination,
           "port": port, "name": name, "verdict": "allowed", "rule": "allow[0]"})
}

fn write(path: &str, result: i64) -> Value {
    json!({"type": "file_open", "path": path, "write": true, "result": result})
}

fn learn_one(events: &[Value], observed: Observed, scratch: &BTreeMap<String, u64>) -> Learned {
    learn(
        &[LearnCase {
            events,
            observed,
            scratch_used: scratch,
        }],
        &declared(),
    )
}

#[test]
fn domains_and_addresses_are_learned_sorted_with_their_ports() {
    let events = [
        tcp("198.18.0.9", 443, Some("zeta.example.org")),
        tcp("198.18.0.7", 8443, Some("API.example.org.")),
        tcp("198.18.0.7", 443, Some("api.example.org")),
        tcp("198.18.0.7", 443, Some("api.example.org")),
        tcp("203.0.113.20", 80, None),
        tcp("2001:db8::1", 443, None),
        tcp("203.0.113.5", 8080, None),
        json!({"type": "dns_query", "name": "lookup-only.example.org", "qtype": "A", "verdict": "allowed"}),
    ];
    let learned = learn_one(&events, observed(100, 10 * MIB), &BTreeMap::new());
    assert!(
        learned.yaml.contains(
            "  network:
    allow:
      - { domain: api.example.org, ports: [443, 8443] }
      - { domain: zeta.example.org, ports: [443] }
      - { cidr: 203.0.113.5/32, ports: [8080] }
      - { cidr: 203.0.113.20/32, ports: [80] }
      - { cidr: \"2001:db8::1/128\", ports: [443] }
"
        ),
        "{}",
        learned.yaml
    );
    assert!(!learned.yaml.contains("lookup-only"));
    let policy = reparsed(&learned);
    let allowed: Vec<String> = policy
        .network
        .allow
        .iter()
        .map(|rule| {
            let ports: Vec<u16> = rule.ports.iter().flatten().map(|p| p.get()).collect();
            match &rule.destination {
                Destination::Domain(d) => format!("{d} {ports:?}"),
                Destination::Cidr(c) => format!("{c} {ports:?}"),
            }
        })
        .collect();
    assert_eq!(
        allowed,
        [
            "api.example.org [443, 8443]",
            "zeta.example.org [443]",
            "203.0.113.5/32 [8080]",
            "203.0.113.20/32 [80]",
            "2001:db8::1/128 [443]",
        ]
    );
    assert!(policy.network.deny.is_empty());
}

#[test]
fn always_denied_and_non_tcp_are_noted_not_learned() {
    let events = [
        json!({"type": "observed_connection", "protocol": "tcp", "destination": "169.254.169.254",
               "port": 80, "name": null, "verdict": "denied", "rule": "always-deny 169.254.0.0/16"}),
        // Always denied by the node's ranges even though the rule says otherwise.
        json!({"type": "observed_connection", "protocol": "tcp", "destination": "10.1.2.3",
               "port": 22, "name": null, "verdict": "denied", "rule": "no allow rule"}),
        json!({"type": "connection", "protocol": "udp", "destination": "10.0.0.9", "port": 9999,
               "verdict": "denied", "rule": "tcp-only"}),
        json!({"type": "connection", "protocol": "icmp", "destination": "192.0.2.1", "port": null,
               "verdict": "denied", "rule": "tcp-only"}),
    ];
    let learned = learn_one(&events, observed(100, MIB), &BTreeMap::new());
    assert!(!learned.yaml.contains("network"), "{}", learned.yaml);
    for note in [
        "not learned: 169.254.169.254 port 80 is always denied",
        "not learned: 10.1.2.3 port 22 is always denied",
        "UDP to 10.0.0.9 port 9999 cannot be allowed: network rules allow TCP only",
        "ICMP to 192.0.2.1 cannot be allowed: network rules allow TCP only",
    ] {
        assert!(
            learned.notes.iter().any(|n| n == note),
            "{note} not in {:?}",
            learned.notes
        );
    }
    assert!(reparsed(&learned).network.allow.is_empty());
}

#[test]
fn nothing_connected_means_no_network_key() {
    let learned = learn_one(&[], observed(100, MIB), &BTreeMap::new());
    assert!(!learned.yaml.contains("network"));
    assert!(!reparsed(&learned).has_egress());
}

#[test]
fn writes_under_declared_dirs_are_sized_from_measurement() {
    let events = [
        write("/tmp/out/result.json", 3),
        write("/tmp/cache", -2),
        write("/dev/null", 1),
        write("/dev/tty", -13),
        write("/proc/self/attr/current", -30),
    ];
    let scratch = BTreeMap::from([
        ("/tmp".to_owned(), 5 * MIB + 1),
        ("/var/cache/probe".to_owned(), 0),
    ]);
    let learned = learn_one(&events, observed(100, MIB), &scratch);
    assert!(
        learned
            .yaml
            .contains("  filesystem:\n    writable:\n      - { path: /tmp, size: 11Mi }\n"),
        "{}",
        learned.yaml
    );
    assert!(!learned.yaml.contains("/dev"));
    assert!(
        !learned.yaml.contains("/var/cache/probe"),
        "unused declared dir dropped"
    );
    let policy = reparsed(&learned);
    assert_eq!(policy.writable.len(), 1);
    assert_eq!(policy.writable[0].path.as_str(), "/tmp");
    assert_eq!(policy.writable[0].size.bytes(), 11 * MIB);
}

#[test]
fn the_largest_measurement_of_all_cases_counts_and_sizes_are_clamped() {
    let small = BTreeMap::from([("/tmp".to_owned(), 100)]);
    let big = BTreeMap::from([("/tmp".to_owned(), 700 * MIB)]);
    let events = [write("/tmp/x", 3)];
    let case = |scratch| LearnCase {
        events: &events,
        observed: observed(10, MIB),
        scratch_used: scratch,
    };
    let learned = learn(&[case(&small)], &declared());
    assert!(
        learned.yaml.contains("{ path: /tmp, size: 1Mi }"),
        "{}",
        learned.yaml
    );
    let learned = learn(&[case(&small), case(&big)], &declared());
    assert!(
        learned.yaml.contains("{ path: /tmp, size: 1Gi }"),
        "{}",
        learned.yaml
    );
    assert!(learned.notes.iter().any(|n| n.contains("1Gi ceiling")));
    reparsed(&learned);
}

#[test]
fn a_refused_write_outside_learns_its_parent_with_a_guessed_size() {
    let events = [
        write("/var/lib/app/state.db", -30),
        write("/var/lib/app/sub/more", -13),
        write("/var/lib/other/x", -2),
        write("/skill/out.txt", -30),
        write("/toplevel", -30),
    ];
    let learned = learn_one(&events, observed(100, MIB), &BTreeMap::new());
    assert!(
        learned
            .yaml
            .contains("  filesystem:\n    writable:\n      - { path: /var/lib/app, size: 16Mi }\n"),
        "{}",
        learned.yaml
    );
    assert!(
        learned
            .notes
            .iter()
            .any(|n| n
                == "/var/lib/app: size 16Mi is a guess until a scan under the learned policy measures it")
    );
    assert!(learned
        .notes
        .iter()
        .any(|n| n.contains("/var/lib/other/x") && n.contains("ENOENT")));
    assert!(learned
        .notes
        .iter()
        .any(|n| n.contains("/skill/out.txt") && n.contains("read-only")));
    assert!(learned.notes.iter().any(|n| n.contains("/toplevel")));
    let policy = reparsed(&learned);
    assert_eq!(policy.writable.len(), 1);
    assert_eq!(policy.writable[0].path.as_str(), "/var/lib/app");
    assert_eq!(policy.writable[0].size.bytes(), 16 * MIB);
}

#[test]
fn no_write_keeps_the_smallest_tmp_and_says_why() {
    let learned = learn_one(&[write("/dev/null", 1)], observed(100, MIB), &BTreeMap::new());
    assert!(learned
        .yaml
        .contains("    writable:\n      - { path: /tmp, size: 1Mi }\n"));
    assert!(learned
        .notes
        .iter()
        .any(|n| n.contains("cannot declare no writable directory")));
    let policy = reparsed(&learned);
    assert_eq!(policy.writable.len(), 1);
    assert_eq!(policy.writable[0].size.bytes(), MIB);
}

#[test]
fn limits_have_headroom_and_stay_within_the_ceiling() {
    let clones: Vec<Value> = (0..5)
        .map(|pid| json!({"type": "clone", "result": 100 + pid}))
        .chain([json!({"type": "clone", "result": -11})])
        .collect();
    let none = BTreeMap::new();
    let case = |events, wall_ms, peak| LearnCase {
        events,
        observed: observed(wall_ms, peak),
        scratch_used: &none,
    };
    // Peak 40Mi ×1.5 = 60Mi -> 64Mi; (1 + 5) ×1.5 = 9 pids; 2.2 s ×2 -> 5s.
    let learned = learn(
        &[case(&clones, 2_200, 40 * MIB), case(&[], 1_000, MIB)],
        &declared(),
    );
    assert!(
        learned
            .yaml
            .contains("  resources: { cpus: 1, memory: 64Mi, pids: 9, timeout: 5s }\n"),
        "{}",
        learned.yaml
    );
    let policy = reparsed(&learned);
    assert_eq!(policy.resources.memory.bytes(), 64 * MIB);
    assert_eq!(policy.resources.pids.get(), 9);
    assert_eq!(policy.resources.timeout.millis(), 5_000);
    assert_eq!(policy.resources.cpus.millis(), 1_000);
    // Floors.
    let learned = learn(&[case(&[], 10, 1)], &declared());
    assert!(learned
        .yaml
        .contains("{ cpus: 1, memory: 32Mi, pids: 8, timeout: 5s }"));
    // 7.3 s ×2 -> 15s; peak 100Mi ×1.5 = 150Mi -> 160Mi.
    let learned = learn(&[case(&[], 7_300, 100 * MIB)], &declared());
    assert!(
        learned.yaml.contains("memory: 160Mi, pids: 8, timeout: 15s"),
        "{}",
        learned.yaml
    );
    // Ceilings.
    let many: Vec<Value> = (0..400)
        .map(|pid| json!({"type": "clone", "result": pid + 2}))
        .collect();
    let learned = learn(&[case(&many, 400_000, 1900 * MIB)], &declared());
    assert!(
        learned
            .yaml
            .contains("{ cpus: 1, memory: 2Gi, pids: 256, timeout: 10m }"),
        "{}",
        learned.yaml
    );
    assert_eq!(learned.notes.iter().filter(|n| n.contains("held at")).count(), 3);
    reparsed(&learned);
}

#[test]
fn declared_entrypoint_env_and_audit_are_kept() {
    let learned = learn_one(&[write("/tmp/x", 3)], observed(100, MIB), &BTreeMap::new());
    assert!(learned.yaml.starts_with("security_policy:\n  version: 1\n"));
    assert!(learned.yaml.contains("  entrypoint: [sh, main.sh, \"a b: c\"]\n"));
    assert!(learned.yaml.contains("  env: { pass: [PROBE_UNITS] }\n"));
    assert!(learned.yaml.ends_with("  audit: { syscalls: security }\n"));
    let policy = reparsed(&learned);
    assert_eq!(policy.entrypoint, ["sh", "main.sh", "a b: c"]);
    assert_eq!(policy.env_pass.len(), 1);
    assert_eq!(policy.env_pass[0].as_str(), "PROBE_UNITS");

    let bare = policy_of("---\nname: x\ndescription: y\nsecurity_policy:\n  version: 1\n---\n");
    let learned = learn(&[], &bare);
    assert!(!learned.yaml.contains("entrypoint"));
    assert!(!learned.yaml.contains("env:"));
    assert!(reparsed(&learned).entrypoint.is_empty());
}

#[test]
fn learning_is_deterministic() {
    let events = [
        tcp("198.18.0.9", 443, Some("b.example.org")),
        tcp("198.18.0.7", 443, Some("a.example.org")),
        tcp("203.0.113.5", 80, None),
        write("/opt/data/x", -30),
        write("/tmp/y", 3),
        json!({"type": "connection", "protocol": "udp", "destination": "10.0.0.9", "port": 53, "verdict": "denied", "rule": "tcp-only"}),
    ];
    let mut reversed = events.to_vec();
    reversed.reverse();
    let scratch = BTreeMap::from([("/tmp".to_owned(), 3 * MIB)]);
    let first = learn_one(&events, observed(900, 20 * MIB), &scratch);
    let again = learn_one(&events, observed(900, 20 * MIB), &scratch);
    assert_eq!(first, again);
    let other_order = learn_one(&reversed, observed(900, 20 * MIB), &scratch);
    assert_eq!(first.yaml, other_order.yaml);
}
