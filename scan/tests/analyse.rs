//! The rules, the verdict and the registry record on audit events written
//! as the audit log writes them.

use std::path::Path;

use policy_compiler::effective::resolve;
use policy_compiler::{frontmatter, EffectivePolicy, NodeConfig};
use serde_json::{json, Value};
use skillbox_scan::rules::{self, SkillText};
use skillbox_scan::{analyse, CaseEvidence, Observed, SecurityAudit, Severity, Verdict};

const SKILL_MD: &str = "---
name: probe
description: A test skill
permissions: [network]
security_policy:
  version: 1
  entrypoint: [sh, main.sh]
  network:
    allow:
      - { domain: api.example.com, ports: [443] }
      - { cidr: 198.0.0.0/8, ports: [443] }
  resources: { memory: 64Mi, cpus: 1, pids: 32, timeout: 10s }
---
# probe
";

fn policy() -> EffectivePolicy {
    let manifest = frontmatter::parse(Path::new("SKILL.md"), SKILL_MD).unwrap();
    let node = NodeConfig::from_toml(Path::new("node.toml"), "").unwrap();
    resolve(&manifest, Path::new("SKILL.md"), &node, "node.toml")
        .unwrap()
        .policy
}

fn text() -> (String, Vec<String>) {
    (SKILL_MD.to_owned(), vec!["network".to_owned()])
}

fn findings_of(events: &[Value], observed: Observed) -> Vec<skillbox_scan::Finding> {
    findings_on(events, observed, false)
}

fn findings_on(events: &[Value], observed: Observed, network_observed: bool) -> Vec<skillbox_scan::Finding> {
    let (md, permissions) = text();
    let cases = [CaseEvidence {
        case: "default",
        expected_exit: None,
        events,
        observed,
        network_observed,
    }];
    analyse(
        &cases,
        &policy(),
        SkillText {
            skill_md: &md,
            permissions: &permissions,
        },
    )
}

fn ids(findings: &[skillbox_scan::Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.rule_id).collect()
}

#[test]
fn a_quiet_skill_is_safe_but_its_unused_rules_are_noted() {
    let events = [json!({"type": "exec", "process": "sh", "path": "/bin/sh", "argv": ["sh", "main.sh"]})];
    let findings = findings_of(&events, Observed::default());
    assert_eq!(
        ids(&findings),
        ["SBX-POL-002", "SBX-POL-001", "SBX-POL-001", "SBX-POL-003"]
    );
    assert_eq!(
        Verdict::of(&findings),
        Verdict::Suspicious,
        "198.0.0.0/8 is over-broad"
    );
    let broad = &findings[0];
    assert_eq!(
        (broad.file_path.as_deref(), broad.line_number),
        (Some("SKILL.md"), Some(11))
    );
    assert_eq!(
        broad.code_snippet.as_deref(),
        Some("- { cidr: 198.0.0.0/8, ports: [443] }")
    );
}

#[test]
fn reading_secrets_and_feeding_a_shell_is_dangerous() {
    let events = [
        json!({"type": "file_open", "process": "cat", "path": "/proc/1/environ", "write": false, "result": 3}),
        json!({"type": "file_open", "process": "cat", "path": "/proc/1/environ", "write": false, "result": 3}),
        json!({"type": "file_open", "process": "cat", "path": "/root/.ssh/id_rsa", "write": false, "result": -13}),
        json!({"type": "file_open", "process": "sh", "path": "/etc/passwd", "write": true, "result": -30}),
        json!({"type": "exec", "process": "sh", "path": "/bin/sh", "argv": ["sh", "-c", "echo ZWNobyBoaQ== | base64 -d | sh"]}),
        json!({"type": "exec", "process": "sh", "path": "/usr/bin/curl", "argv": ["curl", "http://x"]}),
        json!({"type": "syscall", "process": "sh", "name": "mount", "result": -1}),
        json!({"type": "socket", "process": "ping", "domain": 2, "socket_type": 3, "protocol": 1}),
    ];
    let findings = findings_of(&events, Observed::default());
    let found = ids(&findings);
    for id in [
        "SBX-SECRET-001",
        "SBX-SECRET-002",
        "SBX-FS-001",
        "SBX-EXEC-002",
        "SBX-SYS-001",
        "SBX-SYS-002",
    ] {
        assert!(found.contains(&id), "{id} missing from {found:?}");
    }
    // curl under a policy that declares its network is judged by its
    // connections; under one without network, running it is a finding.
    assert!(!found.contains(&"SBX-EXEC-001"), "{found:?}");
    let mut offline = policy();
    offline.network.allow.clear();
    let (md, permissions) = text();
    let cases = [CaseEvidence {
        case: "default",
        expected_exit: None,
        events: &events,
        observed: Observed::default(),
        network_observed: false,
    }];
    let text = SkillText {
        skill_md: &md,
        permissions: &permissions,
    };
    assert!(ids(&analyse(&cases, &offline, text)).contains(&"SBX-EXEC-001"));
    let environ = findings.iter().find(|f| f.rule_id == "SBX-SECRET-001").unwrap();
    assert_eq!(environ.message, "read /proc/1/environ (2 times)");
    assert_eq!(environ.metadata["evidence"].as_array().unwrap().len(), 2);
    assert_eq!(Verdict::of(&findings), Verdict::Dangerous);
    // Worst first.
    assert!(findings.windows(2).all(|w| w[0].severity >= w[1].severity));
}

#[test]
fn keeping_ones_identity_is_not_a_finding_but_trying_to_change_it_is() {
    let kept = [json!({"type": "syscall", "process": "sh", "name": "setuid", "result": 0})];
    assert!(!ids(&findings_of(&kept, Observed::default())).contains(&"SBX-SYS-001"));
    let refused = [json!({"type": "syscall", "process": "sh", "name": "setuid", "result": -1})];
    assert!(ids(&findings_of(&refused, Observed::default())).contains(&"SBX-SYS-001"));
}

#[test]
fn connections_are_judged_against_the_policy_and_the_always_denied_ranges() {
    let events = [
        json!({"type": "connect", "process": "nc", "address": "169.254.169.254", "port": 80, "result": -101}),
        json!({"type": "connect", "process": "nc", "address": "10.1.2.3", "port": 443, "result": -101}),
        json!({"type": "connect", "process": "nc", "address": "198.51.100.7", "port": 443, "result": 0}),
        json!({"type": "connect", "process": "nc", "address": "127.0.0.1", "port": 8080, "result": 0}),
        json!({"type": "connection", "destination": "203.0.113.9", "port": 25, "protocol": "tcp", "verdict": "denied"}),
        json!({"type": "dns_query", "name": "evil.example.net", "verdict": "refused"}),
        json!({"type": "dns_query", "name": "api.example.com", "verdict": "allowed"}),
    ];
    let findings = findings_of(&events, Observed::default());
    let found = ids(&findings);
    let always: Vec<_> = findings
        .iter()
        .filter(|f| f.rule_id == "SBX-NET-001")
        .map(|f| f.metadata["subject"].clone())
        .collect();
    assert_eq!(
        always,
        [json!("10.1.2.3"), json!("169.254.169.254")],
        "metadata, and private ranges the node always denies"
    );
    assert!(found.contains(&"SBX-NET-002"), "{found:?}");
    assert!(found.contains(&"SBX-NET-004"), "{found:?}");
    let undeclared: Vec<_> = findings
        .iter()
        .filter(|f| f.rule_id == "SBX-NET-002")
        .map(|f| f.metadata["subject"].clone())
        .collect();
    assert_eq!(
        undeclared,
        [json!("203.0.113.9")],
        "198.51.100.7:443 is allowed, loopback is not egress"
    );
    // Both allow rules were used: neither is reported unused.
    assert!(!found.contains(&"SBX-POL-001"), "{found:?}");
    assert!(
        !found.contains(&"SBX-POL-003"),
        "the skill used the network it declared"
    );
}

#[test]
fn the_observing_networks_records_are_judged_by_name() {
    let sinkholed = |name: &str, verdict: &str, address: &str| {
        json!({"type": "dns_query", "name": name, "qtype": "A", "verdict": verdict, "rcode": "NOERROR",
               "sinkhole": true, "answers": [{"name": name, "type": "A", "data": address, "ttl": 60}]})
    };
    let events = [
        sinkholed("api.example.com", "allowed", "198.18.128.1"),
        sinkholed("exfil.example.net", "refused", "198.18.128.2"),
        json!({"type": "connect", "address": "198.18.128.2", "port": 443, "result": 0}),
        json!({"type": "observed_connection", "destination": "198.18.128.1", "port": 443, "protocol": "tcp",
               "name": "api.example.com", "verdict": "allowed", "rule": "allow: domain api.example.com ports 443",
               "tls_sni": "api.example.com", "http_method": null, "http_host": null, "http_path": null, "bytes": 517}),
        json!({"type": "observed_connection", "destination": "198.18.128.2", "port": 80, "protocol": "tcp",
               "name": "exfil.example.net", "verdict": "denied", "rule": "dns: exfil.example.net: no allow rule matches the name",
               "tls_sni": null, "http_method": "POST", "http_host": "exfil.example.net", "http_path": "/u", "bytes": 120}),
        json!({"type": "observed_connection", "destination": "169.254.169.254", "port": 80, "protocol": "tcp",
               "name": null, "verdict": "denied", "rule": "always-deny: cidr 169.254.0.0/16",
               "tls_sni": null, "http_method": "GET", "http_host": "169.254.169.254", "http_path": "/latest/meta-data/", "bytes": 80}),
        json!({"type": "connection", "destination": "198.18.128.2", "port": 9999, "protocol": "udp",
               "verdict": "denied", "rule": "not-tcp"}),
    ];
    let findings = findings_on(&events, Observed::default(), true);
    let subjects: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f.rule_id, f.metadata["subject"].as_str().unwrap()))
        .collect();
    assert!(
        subjects.contains(&("SBX-NET-001", "169.254.169.254")),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&("SBX-NET-002", "exfil.example.net")),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&("SBX-NET-004", "exfil.example.net")),
        "{subjects:?}"
    );
    // The sandbox's own connect to the sinkhole address is not judged again.
    assert!(
        !subjects.iter().any(|(_, subject)| subject.starts_with("198.18.")),
        "{subjects:?}"
    );
    // The allowed name was used: its rule is not reported unused.
    assert!(
        !subjects.contains(&("SBX-POL-001", "api.example.com")),
        "{subjects:?}"
    );
    let exfil = findings.iter().find(|f| f.rule_id == "SBX-NET-002").unwrap();
    assert_eq!(exfil.metadata["count"], 2, "the TCP and the UDP attempt");
    assert!(
        exfil
            .message
            .starts_with("connected to exfil.example.net port 80 (HTTP POST exfil.example.net/u)"),
        "{}",
        exfil.message
    );
}

#[test]
fn dns_tunnelling_is_seen_by_label_and_by_count() {
    let long = json!({"type": "dns_query", "name": "a3f9c2e8b1d7f0a6c4e2b9d8f7a1c3e5b2d4f6a8c9.t.example.org", "verdict": "refused"});
    assert!(rules::looks_encoded("a3f9c2e8b1d7f0a6c4e2b9d8f7a1c3e5b2d4f6a8c9"));
    assert!(!rules::looks_encoded("www"));
    assert!(!rules::looks_encoded("static-assets-eu-west"));
    let findings = findings_of(&[long], Observed::default());
    assert!(ids(&findings).contains(&"SBX-NET-003"));
    let many: Vec<Value> = (0..25)
        .map(|i| json!({"type": "dns_query", "name": format!("c{i}.x.example.org"), "verdict": "refused"}))
        .collect();
    let findings = findings_of(&many, Observed::default());
    let tunnel = findings
        .iter()
        .find(|f| f.rule_id == "SBX-NET-003")
        .expect("many names");
    assert!(
        tunnel.message.contains("25 different names under x.example.org"),
        "{}",
        tunnel.message
    );
}

#[test]
fn resource_patterns_are_findings() {
    let events = [
        json!({"type": "oom"}),
        json!({"type": "timeout", "limit_ms": 10000}),
        json!({"type": "clone", "process": "sh", "result": -11}),
    ];
    let miner = Observed {
        wall_ms: 10_000,
        cpu_ms: 9_800,
        memory_peak_bytes: 60 << 20,
        ..Observed::default()
    };
    let findings = findings_of(&events, miner);
    let found = ids(&findings);
    for id in [
        "SBX-RES-001",
        "SBX-RES-002",
        "SBX-RES-003",
        "SBX-RES-004",
        "SBX-RES-005",
    ] {
        assert!(found.contains(&id), "{id} missing from {found:?}");
    }
    let idle = Observed {
        wall_ms: 10_000,
        cpu_ms: 200,
        memory_peak_bytes: 8 << 20,
        ..Observed::default()
    };
    let found_idle = ids(&findings_of(&[], idle));
    assert!(
        !found_idle.iter().any(|id| id.starts_with("SBX-RES")),
        "{found_idle:?}"
    );
}

#[test]
fn the_same_events_give_the_same_findings_in_the_same_order() {
    let events = [
        json!({"type": "file_open", "path": "/etc/shadow", "write": false, "result": -13}),
        json!({"type": "connect", "address": "198.51.100.7", "port": 80, "result": -101}),
        json!({"type": "exec", "path": "/usr/bin/wget", "argv": ["wget", "x"]}),
    ];
    let first = serde_json::to_string(&findings_of(&events, Observed::default())).unwrap();
    for _ in 0..5 {
        assert_eq!(
            serde_json::to_string(&findings_of(&events, Observed::default())).unwrap(),
            first
        );
    }
}

#[test]
fn the_registry_record_has_its_columns_and_camel_case_findings() {
    let events = [json!({"type": "file_open", "path": "/etc/shadow", "write": false, "result": 3})];
    let audit = SecurityAudit::new(findings_of(&events, Observed::default()), 1.5);
    let value = serde_json::to_value(&audit).unwrap();
    assert_eq!(value["scanner_type"], "CUSTOM");
    assert_eq!(value["verdict"], "DANGEROUS");
    assert_eq!(value["is_safe"], false);
    assert_eq!(value["max_severity"], "HIGH");
    assert_eq!(
        value["findings_count"],
        value["findings"].as_array().unwrap().len()
    );
    assert_eq!(value["scan_duration_seconds"], 1.5);
    let finding = &value["findings"][0];
    for key in [
        "ruleId",
        "severity",
        "category",
        "title",
        "message",
        "filePath",
        "lineNumber",
        "codeSnippet",
        "remediation",
        "analyzer",
        "metadata",
    ] {
        assert!(finding.get(key).is_some(), "{key} missing from {finding}");
    }
    assert_eq!(SecurityAudit::new(Vec::new(), 0.1).verdict, Verdict::Safe);
    assert_eq!(Severity::High.as_str(), "HIGH");
    // Every rule id is unique and stable in form.
    let mut seen = std::collections::BTreeSet::new();
    for rule in rules::ALL {
        assert!(rule.id.starts_with("SBX-") && seen.insert(rule.id), "{}", rule.id);
    }
}

#[test]
fn a_case_that_exits_otherwise_than_expected_is_a_low_finding() {
    let (md, permissions) = text();
    let cases = [
        CaseEvidence {
            case: "fails",
            expected_exit: Some(0),
            events: &[],
            observed: Observed {
                exit_status: 3,
                ..Observed::default()
            },
            network_observed: false,
        },
        CaseEvidence {
            case: "ok",
            expected_exit: Some(0),
            events: &[],
            observed: Observed::default(),
            network_observed: false,
        },
    ];
    let findings = analyse(
        &cases,
        &policy(),
        SkillText {
            skill_md: &md,
            permissions: &permissions,
        },
    );
    let unexpected: Vec<_> = findings.iter().filter(|f| f.rule_id == "SBX-CASE-001").collect();
    assert_eq!(unexpected.len(), 1, "{findings:?}");
    assert_eq!(unexpected[0].message, "exited 3, the case expects 0");
    assert_eq!(unexpected[0].severity, Severity::Low);
}

/// Compares a committed schema with the generated one (`UPDATE_GOLDEN=1`
/// rewrites it).
fn committed_schema_matches(file: &str, generated: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schema")
        .join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0") {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schema/{file} differs from the crate's; run with UPDATE_GOLDEN=1 to rewrite it"
    );
}

#[test]
fn the_committed_cases_schema_is_the_one_the_crate_generates() {
    let generated = skillbox_scan::cases::schema();
    committed_schema_matches("scan-cases.schema.json", &generated);
    let value: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(value["title"], "scan cases");
}

#[test]
fn records_validate_against_the_committed_record_schema() {
    let generated = skillbox_scan::report::schema();
    committed_schema_matches("scan-record.schema.json", &generated);
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(schema["title"], "security_audit");
    let validator = jsonschema::validator_for(&schema).expect("the record schema compiles");
    let events = [
        json!({"type": "file_open", "path": "/etc/shadow", "write": false, "result": 3}),
        json!({"type": "connect", "address": "169.254.169.254", "port": 80, "result": -101}),
    ];
    for findings in [findings_of(&events, Observed::default()), Vec::new()] {
        let record = serde_json::to_value(SecurityAudit::new(findings, 0.5)).unwrap();
        let errors: Vec<String> = validator.iter_errors(&record).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{record:#}");
    }
    let mut wrong = serde_json::to_value(SecurityAudit::new(Vec::new(), 0.5)).unwrap();
    wrong["verdict"] = json!("FINE");
    assert!(
        !validator.is_valid(&wrong),
        "the schema accepts a verdict the registry does not have"
    );
}
