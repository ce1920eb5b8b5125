//! The effective policy of skills under node configs, from their YAML and TOML.

use super::*;
use crate::frontmatter;

fn resolve_yaml(frontmatter_yaml: &str, node_toml: &str) -> Result<Resolution> {
    let text = format!("---\nname: t\ndescription: d\n{frontmatter_yaml}---\n");
    let manifest = frontmatter::parse(Path::new("SKILL.md"), &text)?;
    let node = NodeConfig::from_toml(Path::new("node.toml"), node_toml)?;
    resolve(&manifest, Path::new("SKILL.md"), &node, "node.toml")
}

fn paths(policy: &EffectivePolicy) -> Vec<&str> {
    policy.writable.iter().map(|dir| dir.path.as_str()).collect()
}

#[test]
fn no_policy_means_defaults() {
    let resolution = resolve_yaml("", "").unwrap();
    let policy = resolution.policy;
    assert!(!policy.has_egress());
    assert_eq!(paths(&policy), ["/tmp"]);
    assert_eq!(policy.writable[0].size, ByteSize::mebibytes(64));
    assert_eq!(policy.resources.cpus, Cpus::from_millis(500));
    assert_eq!(policy.resources.memory, ByteSize::mebibytes(256));
    assert_eq!(policy.resources.pids.get(), 64);
    assert_eq!(policy.resources.timeout, Timeout::from_secs(30));
    assert!(policy.env_pass.is_empty());
    assert!(resolution.warnings.is_empty());
}

#[test]
fn coarse_permissions_grant_only_scratch() {
    let resolution = resolve_yaml("permissions: [read, write, network]\n", "").unwrap();
    assert_eq!(paths(&resolution.policy), ["/tmp", COARSE_WRITE_DIR]);
    assert!(!resolution.policy.has_egress());
    assert_eq!(resolution.warnings.len(), 1, "{:?}", resolution.warnings);
    assert!(resolution.warnings[0].contains("security_policy.network.allow"));
}

#[test]
fn declared_scratch_replaces_tmp() {
    let policy = resolve_yaml(
        "security_policy:\n  version: 1\n  filesystem:\n    writable: [{ path: /out, size: 1Mi }]\n",
        "",
    )
    .unwrap()
    .policy;
    assert_eq!(paths(&policy), ["/out"]);
    assert_eq!(policy.writable[0].size, ByteSize::mebibytes(1));
}

#[test]
fn ceiling_rejects_or_clamps() {
    let asks = "security_policy:\n  version: 1\n  resources: { memory: 4Gi }\n";
    let err = resolve_yaml(asks, "").unwrap_err().to_string();
    assert_eq!(
        err,
        "SKILL.md: security_policy.resources.memory: asks for 4Gi, above the node ceiling 2Gi (ceiling.memory in node.toml)"
    );
    let resolution = resolve_yaml(asks, "[ceiling]\nmode = \"clamp\"\n").unwrap();
    assert_eq!(resolution.policy.resources.memory, ByteSize::mebibytes(2048));
    assert_eq!(
        resolution.warnings,
        ["security_policy.resources.memory: lowered from 4Gi to the node ceiling 2Gi"]
    );
}

#[test]
fn domain_suffixes_are_enforced() {
    let asks = "security_policy:\n  version: 1\n  network:\n    allow: [{ domain: a.example.com }, { domain: evil.test }]\n";
    let node = "[ceiling]\nallowed_domain_suffixes = [\"example.com\"]\n";
    let err = resolve_yaml(asks, node).unwrap_err().to_string();
    assert_eq!(
        err,
        "SKILL.md: security_policy.network.allow[1].domain: evil.test is outside the domains this node allows (example.com; ceiling.allowed_domain_suffixes in node.toml)"
    );
    let clamped = resolve_yaml(asks, &format!("{node}mode = \"clamp\"\n")).unwrap();
    assert_eq!(clamped.policy.network.allow.len(), 1);
}

#[test]
fn secret_looking_env_names_are_refused_or_dropped_unless_allowed() {
    let asks = "security_policy:\n  version: 1\n  env: { pass: [LANG, GITHUB_TOKEN, anthropic_api_key] }\n";
    let names = |resolution: &Resolution| -> Vec<String> {
        resolution
            .policy
            .env_pass
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect()
    };
    let err = resolve_yaml(asks, "").unwrap_err().to_string();
    assert_eq!(
        err,
        "SKILL.md: security_policy.env.pass[1]: this node does not pass GITHUB_TOKEN to skills: it matches *TOKEN* \
         in ceiling.env_pass_deny, names that look like secrets; to pass it, add it to ceiling.env_pass_allow in node.toml"
    );
    let clamped = resolve_yaml(asks, "[ceiling]\nmode = \"clamp\"\n").unwrap();
    assert_eq!(names(&clamped), ["LANG"]);
    assert_eq!(
        clamped.warnings,
        [
            "security_policy.env.pass[1]: GITHUB_TOKEN matches *TOKEN* in ceiling.env_pass_deny; not passed",
            "security_policy.env.pass[2]: anthropic_api_key matches *API_KEY* in ceiling.env_pass_deny; not passed",
        ]
    );
    let refused: Vec<String> = clamped.env_refused.iter().map(ToString::to_string).collect();
    assert_eq!(
        refused,
        [
            "GITHUB_TOKEN (matches *TOKEN*)",
            "anthropic_api_key (matches *API_KEY*)"
        ]
    );
    let allowed = resolve_yaml(
        asks,
        "[ceiling]\nenv_pass_allow = [\"GITHUB_TOKEN\", \"ANTHROPIC_*\"]\n",
    )
    .unwrap();
    assert_eq!(names(&allowed), ["LANG", "GITHUB_TOKEN", "anthropic_api_key"]);
    assert!(allowed.env_refused.is_empty() && allowed.warnings.is_empty());
    // An emptied deny list passes everything, as before the list existed.
    let open = resolve_yaml(asks, "[ceiling]\nenv_pass_deny = []\n").unwrap();
    assert_eq!(names(&open).len(), 3);
}

#[test]
fn overlapping_scratch_dirs_are_rejected() {
    let asks =
        "security_policy:\n  version: 1\n  filesystem:\n    writable: [{ path: /out }, { path: /out/sub }]\n";
    let err = resolve_yaml(asks, "").unwrap_err().to_string();
    assert_eq!(
        err,
        "SKILL.md: security_policy.filesystem.writable[1].path: /out/sub overlaps the writable directory /out; list each directory once"
    );
}

#[test]
fn node_default_is_what_a_skill_without_policy_gets() {
    let node = NodeConfig::from_toml(Path::new("node.toml"), "[defaults]\nmemory = \"128Mi\"\n").unwrap();
    let text = "---\nname: t\ndescription: d\n---\n";
    let manifest = frontmatter::parse(Path::new("SKILL.md"), text).unwrap();
    let resolved = resolve(&manifest, Path::new("SKILL.md"), &node, "node.toml").unwrap();
    assert_eq!(node_default(&node), resolved.policy);
    assert_eq!(node_default(&node).resources.memory, ByteSize::mebibytes(128));
}

#[test]
fn a_read_back_policy_is_held_within_the_ceiling_again() {
    let mut policy = node_default(&NodeConfig::default());
    policy.resources.memory = ByteSize::mebibytes(4096);
    let prefix = "annotations.\"io.skillbox.policy\"";
    let err = within_ceiling(
        &policy,
        Path::new("b/config.json"),
        prefix,
        &NodeConfig::default(),
        "n.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "b/config.json: annotations.\"io.skillbox.policy\".resources.memory: asks for 4Gi, above the node ceiling 2Gi (ceiling.memory in n.toml)"
    );
    let clamp = NodeConfig::from_toml(Path::new("n.toml"), "[ceiling]\nmode = \"clamp\"\n").unwrap();
    let held = within_ceiling(&policy, Path::new("b/config.json"), prefix, &clamp, "n.toml").unwrap();
    assert_eq!(held.policy.resources.memory, ByteSize::mebibytes(2048));
    assert_eq!(held.warnings.len(), 1);
    let fine = node_default(&NodeConfig::default());
    let held = within_ceiling(&fine, Path::new("b"), prefix, &NodeConfig::default(), "n.toml").unwrap();
    assert_eq!((held.policy, held.warnings.len()), (fine, 0));
}

#[test]
fn policy_round_trips_through_json() {
    let asks = "security_policy:\n  version: 1\n  network:\n    allow: [{ domain: \"*.example.com\", ports: [443, 80, 443] }, { cidr: 10.0.0.0/8 }]\n";
    let policy = resolve_yaml(asks, "").unwrap().policy;
    assert_eq!(policy.network.allow[0].ports.as_ref().unwrap().len(), 2);
    let json = serde_json::to_string(&policy).unwrap();
    let back: EffectivePolicy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, policy);
}

#[test]
fn the_audit_level_is_at_least_the_node_minimum() {
    let asks = |level: &str| format!("security_policy:\n  version: 1\n  audit: {{ syscalls: {level} }}\n");
    let none = resolve_yaml(&asks("none"), "").unwrap();
    assert_eq!(none.policy.audit, AuditLevel::Security);
    assert_eq!(
        none.warnings,
        ["security_policy.audit.syscalls: raised from none to the node minimum security (audit.min_syscalls in node.toml)"]
    );
    let all = resolve_yaml(&asks("all"), "").unwrap();
    assert_eq!((all.policy.audit, all.warnings.len()), (AuditLevel::All, 0));
    // The administrator may allow less, or ask for more.
    let allow_none = "[audit]\nmin_syscalls = \"none\"\n";
    assert_eq!(
        resolve_yaml(&asks("none"), allow_none).unwrap().policy.audit,
        AuditLevel::None
    );
    let node_all = "[audit]\nmin_syscalls = \"all\"\n";
    assert_eq!(
        resolve_yaml(&asks("security"), node_all).unwrap().policy.audit,
        AuditLevel::All
    );
    let node = NodeConfig::from_toml(Path::new("node.toml"), node_all).unwrap();
    assert_eq!(node_default(&node).audit, AuditLevel::All);

    // A bundle's annotation is raised again where it is run.
    let mut policy = node_default(&NodeConfig::default());
    policy.audit = AuditLevel::None;
    let prefix = "annotations.\"io.skillbox.policy\"";
    let held = within_ceiling(&policy, Path::new("b"), prefix, &NodeConfig::default(), "n.toml").unwrap();
    assert_eq!(held.policy.audit, AuditLevel::Security);
    assert_eq!(
        held.warnings,
        ["annotations.\"io.skillbox.policy\".audit: raised from none to the node minimum security (audit.min_syscalls in n.toml)"]
    );
}
