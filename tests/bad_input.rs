//! Malformed skills, policies and node configs, each pinned to the exact
//! error text a skill author or administrator sees. Each message must name
//! the file and field at fault and say what was expected; a change to any of
//! them is a user-visible change and should show up in review. The CLI's
//! rendering of the same errors is tested in bad_input_cli.rs.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use policy_compiler::{effective_policy, load, CompileOptions, NodeConfig};
use skillbox_test_support::with_policy;

/// How the node config file is named in messages.
const NODE_TOML: &str = "node.toml";
/// Stands in for the per-test skill directory in expected messages.
const SKILL: &str = "<skill>";

fn write(dir: &Path, relative: &str, contents: impl AsRef<[u8]>) {
    let path = dir.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

/// Loads the skill in `dir` and resolves its policy under `node_toml`,
/// returning the warnings, or the error text with `dir` replaced by `<skill>`.
fn check(dir: &Path, node_toml: &str) -> Result<Vec<String>, String> {
    let shorten = |err: policy_compiler::Error| err.to_string().replace(dir.to_str().unwrap(), SKILL);
    let node = NodeConfig::from_toml(Path::new(NODE_TOML), node_toml).map_err(shorten)?;
    let package = load(dir).map_err(shorten)?;
    let env = BTreeMap::new();
    let options = CompileOptions {
        node: &node,
        node_config_name: NODE_TOML,
        base_rootfs: Path::new("/rootfs"),
        extra_args: &[],
        env: &env,
        cgroups_path: Some("/skillbox/test"),
    };
    effective_policy(&package, &options)
        .map(|(_, warnings)| warnings)
        .map_err(shorten)
}

struct Case {
    name: &'static str,
    /// Writes the skill into the (empty) directory.
    setup: Box<dyn Fn(&Path)>,
    node_toml: &'static str,
    expected: &'static str,
}

fn skill_md(text: String) -> Box<dyn Fn(&Path)> {
    Box::new(move |dir| write(dir, "SKILL.md", &text))
}

fn policy(tail: &str) -> Box<dyn Fn(&Path)> {
    skill_md(with_policy(tail))
}

fn case(name: &'static str, setup: Box<dyn Fn(&Path)>, expected: &'static str) -> Case {
    Case {
        name,
        setup,
        node_toml: "",
        expected,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("missing SKILL.md", Box::new(|_| {}), "<skill>: not a skill folder: SKILL.md is missing"),
        case("no frontmatter", skill_md("# probe\nNo metadata.\n".into()), "<skill>/SKILL.md: expected YAML frontmatter: a first line '---', the metadata, then a closing '---' line"),
        case(
            "unterminated frontmatter",
            skill_md("---\nname: probe\ndescription: d\n# body\n".into()),
            "<skill>/SKILL.md: the frontmatter opened by '---' on line 1 has no closing '---' line",
        ),
        case("empty frontmatter", skill_md("---\n---\n".into()), "<skill>/SKILL.md: frontmatter is empty: expected at least `name` and `description`"),
        case(
            "bad YAML",
            skill_md("---\nname: probe\ndescription: d\nsecurity_policy: { version: 1\n---\n".into()),
            "<skill>/SKILL.md: invalid YAML: did not find expected ',' or '}' at line 5 column 1, while parsing a flow mapping at line 4 column 18",
        ),
        case(
            "name is a list",
            skill_md("---\nname: [probe]\ndescription: d\n---\n".into()),
            "<skill>/SKILL.md: name: invalid type: sequence, expected a string at line 2 column 7",
        ),
        case(
            "policy under a merge key",
            skill_md("---\nname: probe\ndescription: d\n<<:\n  security_policy: { version: 1 }\n---\n".into()),
            "<skill>/SKILL.md: anchors, aliases and merge keys are not accepted in the frontmatter: found the merge key `<<` at line 4 column 1; write the values out in full",
        ),
        case("missing name", skill_md("---\ndescription: d\n---\n".into()), "<skill>/SKILL.md: missing field `name` at line 2 column 1"),
        case(
            "bad name",
            skill_md("---\nname: Probe_Skill\ndescription: d\n---\n".into()),
            "<skill>/SKILL.md: name: invalid skill name \"Probe_Skill\": expected 1-64 characters of a-z, 0-9 and single inner hyphens at line 2 column 1",
        ),
        case(
            "missing description",
            skill_md("---\nname: probe\n---\n".into()),
            "<skill>/SKILL.md: missing field `description` at line 2 column 1",
        ),
        case(
            "blank description",
            skill_md("---\nname: probe\ndescription: \"  \"\n---\n".into()),
            "<skill>/SKILL.md: description: description is empty: describe what the skill does at line 2 column 1",
        ),
        case(
            "unknown permission",
            skill_md("---\nname: probe\ndescription: d\npermissions: [teleport]\n---\n".into()),
            "<skill>/SKILL.md: permissions[0]: unknown variant `teleport`, expected one of `bash`, `read`, `write`, `network`, `env` at line 4 column 15",
        ),
        case(
            "SKILL.md not UTF-8",
            Box::new(|dir| write(dir, "SKILL.md", b"---\nname: \xff\n---\n")),
            "<skill>/SKILL.md: not valid UTF-8 text",
        ),
        case("typo netwrok", policy("  netwrok: { allow: [] }\n"), "<skill>/SKILL.md: security_policy.netwrok: unknown field `netwrok`, expected one of `version`, `entrypoint`, `network`, `filesystem`, `resources`, `env`, `audit` at line 6 column 3"),
        case(
            "unknown key in rule",
            policy("  network:\n    allow:\n      - { domain: api.example.com, port: [443] }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0].port: unknown field `port`, expected one of `domain`, `cidr`, `ports` at line 8 column 36",
        ),
        case(
            "policy version 2",
            skill_md("---\nname: probe\ndescription: d\nsecurity_policy:\n  version: 2\n---\n".into()),
            "<skill>/SKILL.md: security_policy.version: unsupported policy version 2: expected 1 at line 5 column 3",
        ),
        case(
            "policy version missing",
            skill_md("---\nname: probe\ndescription: d\nsecurity_policy:\n  entrypoint: [sh]\n---\n".into()),
            "<skill>/SKILL.md: security_policy: missing field `version` at line 5 column 3",
        ),
        case("empty entrypoint", policy("  entrypoint: []\n"), "<skill>/SKILL.md: security_policy.entrypoint: entrypoint is empty: expected a command and its arguments at line 5 column 3"),
        case("memory 0", policy("  resources: { memory: 0 }\n"), "<skill>/SKILL.md: security_policy.resources.memory: invalid size \"0\": must be greater than zero at line 6 column 24"),
        case("writable size 0", policy("  filesystem:\n    writable: [{ path: /out, size: 0Mi }]\n"), "<skill>/SKILL.md: security_policy.filesystem.writable[0].size: invalid size \"0Mi\": must be greater than zero at line 7 column 36"),
        case("memory 64MB", policy("  resources: { memory: 64MB }\n"), "<skill>/SKILL.md: security_policy.resources.memory: invalid size \"64MB\": expected bytes as an integer or a whole number of bytes with a suffix Ki, Mi, Gi, Ti, k, M, G or T (e.g. 64Mi) at line 6 column 24"),
        case("cpus 0.0001", policy("  resources: { cpus: 0.0001 }\n"), "<skill>/SKILL.md: security_policy.resources.cpus: invalid CPU amount \"0.0001\": expected a number of CPUs with at most 3 decimals (e.g. 0.5) or millicores (e.g. 500m) at line 6 column 22"),
        case("cpus 0", policy("  resources: { cpus: 0 }\n"), "<skill>/SKILL.md: security_policy.resources.cpus: invalid CPU amount \"0\": must be greater than zero at line 6 column 22"),
        case(
            "timeout without unit",
            policy("  resources: { timeout: 30 }\n"),
            "<skill>/SKILL.md: security_policy.resources.timeout: invalid duration \"30\": expected a number with a unit ms, s, m or h (e.g. 30s) at line 6 column 25",
        ),
        case("pids 0", policy("  resources: { pids: 0 }\n"), "<skill>/SKILL.md: security_policy.resources.pids: invalid pids 0: expected a positive number of processes at line 6 column 14"),
        case(
            "domain *",
            policy("  network:\n    allow:\n      - { domain: \"*\" }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0].domain: invalid domain \"*\": a wildcard is only allowed as a whole leading label, as in *.example.com at line 8 column 9",
        ),
        case(
            "domain *.com",
            policy("  network:\n    allow:\n      - { domain: \"*.com\" }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0].domain: invalid domain \"*.com\": a wildcard needs a suffix of at least two labels, as in *.example.com at line 8 column 9",
        ),
        case(
            "domain *.co.uk",
            policy("  network:\n    allow:\n      - { domain: \"*.co.uk\" }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0].domain: invalid domain \"*.co.uk\": co.uk is a public suffix (ICANN section of the Public Suffix List), so the wildcard would match names anyone can register; expected a wildcard below a registered domain, as in *.example.co.uk, or exact names at line 8 column 9",
        ),
        case(
            "domain *.github.io",
            policy("  network:\n    allow:\n      - { domain: \"*.github.io\" }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0].domain: invalid domain \"*.github.io\": github.io is a public suffix (private section of the Public Suffix List), so the wildcard would match names anyone can register; expected a wildcard below a registered domain, as in *.example.github.io, or exact names at line 8 column 9",
        ),
        case(
            "domain *foo.com",
            policy("  network:\n    allow:\n      - { domain: \"*foo.com\" }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0].domain: invalid domain \"*foo.com\": a wildcard is only allowed as a whole leading label, as in *.example.com at line 8 column 9",
        ),
        case(
            "domain with trailing dot",
            policy("  network:\n    allow:\n      - { domain: api.example.com. }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0].domain: invalid domain \"api.example.com.\": expected dot-separated labels of 1-63 letters, digits or inner hyphens, without a trailing dot at line 8 column 9",
        ),
        case(
            "bad CIDR",
            policy("  network:\n    deny:\n      - { cidr: 10.0.0.0/33 }\n"),
            "<skill>/SKILL.md: security_policy.network.deny[0].cidr: invalid CIDR \"10.0.0.0/33\": expected an IPv4 or IPv6 network such as 203.0.113.0/24 or 2001:db8::/32 at line 8 column 9",
        ),
        case(
            "CIDR host bits",
            policy("  network:\n    allow:\n      - { cidr: 203.0.113.7/24 }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0].cidr: invalid CIDR \"203.0.113.7/24\": host bits are set; did you mean 203.0.113.0/24? at line 8 column 9",
        ),
        case(
            "port 0",
            policy("  network:\n    allow:\n      - { domain: api.example.com, ports: [0] }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0].ports[0]: invalid port 0: expected 1-65535 at line 8 column 43",
        ),
        case(
            "port 70000",
            policy("  network:\n    allow:\n      - { domain: api.example.com, ports: [443, 70000] }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0].ports[1]: invalid port 70000: expected 1-65535 at line 8 column 43",
        ),
        case(
            "empty ports",
            policy("  network:\n    allow:\n      - { domain: api.example.com, ports: [] }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0]: `ports` is empty: list at least one port, or omit `ports` for every port at line 8 column 7",
        ),
        case(
            "domain and cidr",
            policy("  network:\n    allow:\n      - { domain: api.example.com, cidr: 203.0.113.0/24 }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0]: expected exactly one of `domain` or `cidr` in a rule at line 8 column 7",
        ),
        case(
            "neither domain nor cidr",
            policy("  network:\n    allow:\n      - { ports: [443] }\n"),
            "<skill>/SKILL.md: security_policy.network.allow[0]: expected exactly one of `domain` or `cidr` in a rule at line 8 column 7",
        ),
        case(
            "relative writable path",
            policy("  filesystem:\n    writable:\n      - { path: tmp }\n"),
            "<skill>/SKILL.md: security_policy.filesystem.writable[0].path: invalid writable path \"tmp\": expected an absolute path at line 8 column 9",
        ),
        case(
            "writable /",
            policy("  filesystem:\n    writable:\n      - { path: / }\n"),
            "<skill>/SKILL.md: security_policy.filesystem.writable[0].path: invalid writable path \"/\": the root filesystem stays read-only at line 8 column 9",
        ),
        case(
            "writable /proc/x",
            policy("  filesystem:\n    writable:\n      - { path: /proc/x }\n"),
            "<skill>/SKILL.md: security_policy.filesystem.writable[0].path: invalid writable path \"/proc/x\": /proc is reserved for the kernel at line 8 column 9",
        ),
        case(
            "writable /skill/out",
            policy("  filesystem:\n    writable:\n      - { path: /skill/out }\n"),
            "<skill>/SKILL.md: security_policy.filesystem.writable[0].path: invalid writable path \"/skill/out\": the skill's code at /skill is always read-only at line 8 column 9",
        ),
        case(
            "writable with ..",
            policy("  filesystem:\n    writable:\n      - { path: /tmp/../etc }\n"),
            "<skill>/SKILL.md: security_policy.filesystem.writable[0].path: invalid writable path \"/tmp/../etc\": expected a normalised path without empty, '.' or '..' components or a trailing slash at line 8 column 9",
        ),
        case(
            "overlapping writable",
            policy("  filesystem:\n    writable:\n      - { path: /data }\n      - { path: /data/cache }\n"),
            "<skill>/SKILL.md: security_policy.filesystem.writable[1].path: /data/cache overlaps the writable directory /data; list each directory once",
        ),
        case(
            "writable bad size",
            policy("  filesystem:\n    writable:\n      - { path: /data, size: 1.5 }\n"),
            "<skill>/SKILL.md: security_policy.filesystem.writable[0].size: invalid size \"1.5\": expected bytes as an integer or a whole number of bytes with a suffix Ki, Mi, Gi, Ti, k, M, G or T (e.g. 64Mi) at line 8 column 30",
        ),
        case("bad env name", policy("  env: { pass: [API-KEY] }\n"), "<skill>/SKILL.md: security_policy.env.pass[0]: invalid environment variable name \"API-KEY\": expected letters, digits and underscores, not starting with a digit at line 6 column 16"),
        case("PATH in env.pass", policy("  env: { pass: [PATH] }\n"), "<skill>/SKILL.md: security_policy.env.pass[0]: environment variable PATH is set by skillbox and cannot be passed at line 6 column 16"),
        case("bad audit level", policy("  audit: { syscalls: some }\n"), "<skill>/SKILL.md: security_policy.audit.syscalls: unknown variant `some`, expected one of `none`, `security`, `all` at line 6 column 22"),
        case(
            "memory above ceiling",
            policy("  resources: { memory: 4Gi }\n"),
            "<skill>/SKILL.md: security_policy.resources.memory: asks for 4Gi, above the node ceiling 2Gi (ceiling.memory in node.toml)",
        ),
        case(
            "symlink escaping",
            Box::new(|dir| {
                write(dir, "SKILL.md", with_policy(""));
                fs::create_dir_all(dir.join("scripts")).unwrap();
                std::os::unix::fs::symlink("../../etc/passwd", dir.join("scripts/passwd")).unwrap();
            }),
            "<skill>/scripts/passwd: symlink to \"../../etc/passwd\" leaves the skill folder",
        ),
        case(
            "absolute symlink",
            Box::new(|dir| {
                write(dir, "SKILL.md", with_policy(""));
                std::os::unix::fs::symlink("/etc/shadow", dir.join("shadow")).unwrap();
            }),
            "<skill>/shadow: symlink to \"/etc/shadow\" leaves the skill folder",
        ),
        case(
            "file over 10 MiB",
            Box::new(|dir| {
                write(dir, "SKILL.md", with_policy(""));
                write(dir, "assets/big.bin", vec![0u8; 10 * 1024 * 1024 + 1]);
            }),
            "<skill>/assets/big.bin: 10485761 bytes is over the 10485760-byte limit per file",
        ),
        case(
            "more than 100 files",
            Box::new(|dir| {
                write(dir, "SKILL.md", with_policy(""));
                for i in 0..100 {
                    write(dir, &format!("assets/f{i:03}.txt"), "x");
                }
            }),
            "<skill>/assets/f099.txt: the package has more than 100 files",
        ),
        case(
            "fifo in package",
            Box::new(|dir| {
                write(dir, "SKILL.md", with_policy(""));
                let status = std::process::Command::new("mkfifo")
                    .arg(dir.join("pipe"))
                    .status()
                    .unwrap();
                assert!(status.success());
            }),
            "<skill>/pipe: not a regular file, directory or symlink",
        ),
        Case {
            name: "node config unknown field",
            setup: policy(""),
            node_toml: "[ceiling]\nmemroy = \"1Gi\"\n",
            expected: "node.toml: ceiling.memroy: unknown field `memroy`, expected one of `mode`, `cpus`, `memory`, `pids`, `timeout`, `writable_size`, `always_deny`, `allowed_domain_suffixes`, `bind_mount_sources`, `env_pass_deny`, `env_pass_allow`",
        },
        Case {
            name: "node config bad quantity",
            setup: policy(""),
            node_toml: "[defaults]\ntimeout = \"forever\"\n",
            expected: "node.toml: defaults.timeout: invalid duration \"forever\": expected a number with a unit ms, s, m or h (e.g. 30s)",
        },
        Case {
            name: "node config default above ceiling",
            setup: policy(""),
            node_toml: "[ceiling]\npids = 16\n",
            expected: "node.toml: defaults.pids: default 64 is above ceiling.pids 16",
        },
        Case {
            name: "domain outside allowed suffixes",
            setup: policy("  network:\n    allow:\n      - { domain: api.evil.net, ports: [443] }\n"),
            node_toml: "[ceiling]\nallowed_domain_suffixes = [\"example.com\"]\n",
            expected: "<skill>/SKILL.md: security_policy.network.allow[0].domain: api.evil.net is outside the domains this node allows (example.com; ceiling.allowed_domain_suffixes in node.toml)",
        },
    ]
}

#[test]
fn every_malformed_input_gets_its_exact_error() {
    let cases = cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        (case.setup)(dir.path());
        match check(dir.path(), case.node_toml) {
            Ok(warnings) => failures.push(format!("{}: accepted (warnings {warnings:?})", case.name)),
            Err(got) if got != case.expected => failures.push(format!(
                "{}:\n  expected: {}\n  got:      {got}",
                case.name, case.expected
            )),
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_base_fixture_is_valid() {
    // Every case above breaks exactly one thing of this skill.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "SKILL.md", with_policy(""));
    assert_eq!(check(dir.path(), ""), Ok(Vec::new()));
}

#[test]
fn clamp_mode_lowers_to_the_ceiling_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "SKILL.md",
        with_policy("  resources: { memory: 4Gi, timeout: 1h }\n"),
    );
    let node_toml = "[ceiling]\nmode = \"clamp\"\nmemory = \"1Gi\"\n";
    let warnings = check(dir.path(), node_toml).expect("clamp mode accepts the skill");
    assert_eq!(
        warnings,
        [
            "security_policy.resources.memory: lowered from 4Gi to the node ceiling 1Gi",
            "security_policy.resources.timeout: lowered from 1h to the node ceiling 10m",
        ]
    );

    let node = NodeConfig::from_toml(Path::new(NODE_TOML), node_toml).unwrap();
    let package = load(dir.path()).unwrap();
    let env = BTreeMap::new();
    let options = CompileOptions {
        node: &node,
        node_config_name: NODE_TOML,
        base_rootfs: Path::new("/rootfs"),
        extra_args: &[],
        env: &env,
        cgroups_path: Some("/skillbox/test"),
    };
    let (policy, _) = effective_policy(&package, &options).unwrap();
    assert_eq!(policy.resources.memory.to_string(), "1Gi");
    assert_eq!(policy.resources.timeout.to_string(), "10m");
}
