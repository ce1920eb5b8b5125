//! The rules: what in a skill's audit events, resource use and policy makes
//! a finding. Events are read as JSON (the audit log's lines), so events of
//! every source — gVisor's, the egress session's, the runtime's — are read
//! alike. Findings of one rule on one subject (a path, an address, a name)
//! are one finding, counted, with its first events as evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use policy_compiler::network::Destination;
use policy_compiler::EffectivePolicy;
use serde_json::{json, Value};

use crate::finding::{Finding, Severity, ANALYZER};

/// A rule: its stable id and what every finding of it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    pub category: &'static str,
    pub title: &'static str,
    pub remediation: &'static str,
}

macro_rules! rules {
    ($($name:ident = $id:literal, $severity:ident, $category:literal, $title:literal, $remediation:literal;)*) => {
        $(pub const $name: Rule = Rule {
            id: $id,
            severity: Severity::$severity,
            category: $category,
            title: $title,
            remediation: $remediation,
        };)*
        /// Every rule, in id order.
        pub const ALL: &[Rule] = &[$($name),*];
    };
}

rules! {
    SECRET_READ = "SBX-SECRET-001", High, "secrets", "Read a sensitive file",
        "A skill has no business reading credentials; remove the read, or pass what it needs as an input.";
    SECRET_ATTEMPT = "SBX-SECRET-002", Medium, "secrets", "Tried to read a sensitive file",
        "The sandbox refused the read; remove it from the skill.";
    WRITE_REFUSED = "SBX-FS-001", Medium, "filesystem", "Write outside its writable directories",
        "Write only under a directory the policy declares in filesystem.writable, or declare the one needed.";
    NETWORK_TOOL = "SBX-EXEC-001", Medium, "execution", "Ran a network tool",
        "Declare the destinations the skill needs in network.egress; a skill that only needs data should take it as an input.";
    DECODED_PAYLOAD = "SBX-EXEC-002", High, "execution", "Fed a decoded payload to a shell",
        "Ship scripts as files of the skill: a payload decoded at run time hides what runs from review.";
    ALWAYS_DENIED = "SBX-NET-001", High, "network", "Connection to a range that is always denied",
        "Cloud metadata, private and node addresses are never reachable from a skill; remove the connection.";
    EGRESS_UNDECLARED = "SBX-NET-002", High, "network", "Connection outside the policy",
        "Declare the destination in network.egress if the skill needs it; otherwise remove the connection.";
    DNS_TUNNEL = "SBX-NET-003", High, "network", "DNS names that look like tunnelling",
        "Long random-looking labels and many one-off subdomains carry data out through DNS; remove them.";
    DNS_REFUSED = "SBX-NET-004", Medium, "network", "Looked up a name outside the policy",
        "Declare the name in network.egress if the skill needs it.";
    PRIVILEGED_SYSCALL = "SBX-SYS-001", High, "system", "Privileged system call",
        "A skill needs no mount, ptrace, setuid or namespace calls; remove them.";
    RAW_SOCKET = "SBX-SYS-002", High, "system", "Raw or packet socket",
        "A skill needs no raw sockets; use ordinary TCP or UDP to declared destinations.";
    OOM = "SBX-RES-001", Medium, "resources", "Ran out of memory",
        "Raise resources.memory if the work needs it, or bound the skill's memory use.";
    TIMEOUT = "SBX-RES-002", Medium, "resources", "Timed out",
        "Raise resources.timeout if the work needs it, or make the skill finish.";
    MEMORY_NEAR_LIMIT = "SBX-RES-003", Low, "resources", "Memory peak above 80 % of the limit",
        "Raise resources.memory before real inputs push it over.";
    CPU_SATURATED = "SBX-RES-004", Medium, "resources", "CPU saturated for the whole run",
        "Busy-looping or mining for the whole run: make the skill idle when it waits.";
    PROCESS_STORM = "SBX-RES-005", Medium, "resources", "Process storm hit the pids quota",
        "Bound the number of processes the skill starts.";
    UNUSED_ALLOW = "SBX-POL-001", Low, "policy", "Allow rule never used",
        "Remove network rules the skill does not use: least privilege.";
    BROAD_RULE = "SBX-POL-002", Medium, "policy", "Over-broad network rule",
        "Allow the hosts the skill needs, not whole address ranges.";
    PERMISSIONS_MISMATCH = "SBX-POL-003", Low, "policy", "Coarse permissions do not match what the skill did",
        "Make the permissions list say what the skill does, so static review sees the same.";
    UNEXPECTED_EXIT = "SBX-CASE-001", Low, "behaviour", "Exit status other than the case expects",
        "Fix the skill, or the case's expect_exit.";
}

/// What one case's run looked like from outside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// As `skillbox run` reports it: 124 after the timeout, 137 after an
    /// OOM kill.
    pub exit_status: i32,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub memory_peak_bytes: u64,
}

/// One case's evidence.
#[derive(Debug, Clone)]
pub struct CaseEvidence<'a> {
    pub case: &'a str,
    /// The exit status the case expects, if it says.
    pub expected_exit: Option<i32>,
    pub events: &'a [Value],
    pub observed: Observed,
    /// The case ran on a scan's observing network, whose records of names
    /// and connections are judged; the sandbox's own `connect` calls are
    /// then not judged again.
    pub network_observed: bool,
}

/// The skill as written: what policy findings point at.
#[derive(Debug, Clone, Copy)]
pub struct SkillText<'a> {
    /// `SKILL.md`'s text.
    pub skill_md: &'a str,
    /// The frontmatter's coarse `permissions` list.
    pub permissions: &'a [String],
}

/// Files whose read is a finding: prefixes, and substrings anywhere.
const SENSITIVE_PREFIXES: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/root/",
    "/var/run/secrets/",
    "/run/secrets/",
];
const SENSITIVE_PARTS: &[&str] = &[
    "/.ssh/",
    "/.aws/credentials",
    "/.aws/config",
    "/.config/gcloud/",
    "/.azure/",
    "/.kube/config",
    "/.docker/config.json",
    "/.netrc",
    "/.git-credentials",
];
const NETWORK_TOOLS: &[&str] = &[
    "curl", "wget", "nc", "ncat", "netcat", "socat", "ssh", "scp", "sftp", "telnet", "ftp", "dig",
    "nslookup", "host",
];
const PRIVILEGED_SYSCALLS: &[&str] = &[
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "setns",
    "unshare",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "bpf",
];
/// Identity changes: programs such as busybox call them to keep the
/// identity they have, which succeeds; a refused one is an attempt to
/// become someone else.
const IDENTITY_SYSCALLS: &[&str] = &[
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
];
/// Cloud metadata addresses (besides the policy's always-denied ranges).
const METADATA: &[&str] = &["169.254.169.254", "100.100.100.200", "fd00:ec2::254"];
const EAGAIN: i64 = 11;
/// Calls that make a process; a refused one is reported as a `syscall`
/// event.
const PROCESS_CREATION: &[&str] = &["clone", "clone3", "fork", "vfork"];
/// A run shorter than this is not judged a miner: short skills may well
/// keep their CPU busy from start to end.
const MINER_MIN_WALL_MS: u64 = 5_000;
const SOCK_RAW: i32 = 3;
const AF_PACKET: i32 = 17;

fn str_of<'v>(event: &'v Value, key: &str) -> &'v str {
    event[key].as_str().unwrap_or_default()
}

fn result_of(event: &Value) -> Option<i64> {
    event["result"].as_i64()
}

/// Whether `path` is one of the sensitive files.
pub fn is_sensitive(path: &str) -> bool {
    let environ = path.starts_with("/proc/") && path.ends_with("/environ");
    environ
        || SENSITIVE_PREFIXES.iter().any(|p| path.starts_with(p))
        || SENSITIVE_PARTS.iter().any(|p| path.contains(p))
}

/// Whether a DNS label looks like encoded data: long, and random-looking.
pub fn looks_encoded(label: &str) -> bool {
    label.len() >= 40 || (label.len() >= 20 && entropy(label) >= 3.5)
}

/// Shannon entropy of the label's characters, in bits.
fn entropy(text: &str) -> f64 {
    let mut counts = BTreeMap::new();
    for c in text.chars() {
        *counts.entry(c).or_insert(0u32) += 1;
    }
    let n = text.chars().count() as f64;
    counts
        .values()
        .map(|&k| {
            let p = f64::from(k) / n;
            -p * p.log2()
        })
        .sum()
}

/// What one rule found on one subject: its first message, how often, and
/// its first events.
struct Grouped {
    rule: Rule,
    message: String,
    count: u64,
    evidence: Vec<Value>,
}

/// Findings grouped by rule and subject.
#[derive(Default)]
struct Collector {
    found: BTreeMap<(&'static str, String), Grouped>,
}

/// How many events of one finding are kept as its evidence.
const EVIDENCE_KEPT: usize = 3;

impl Collector {
    fn add(&mut self, rule: Rule, subject: &str, message: String, case: &str, event: Option<&Value>) {
        let entry = self
            .found
            .entry((rule.id, subject.to_owned()))
            .or_insert_with(|| Grouped {
                rule,
                message,
                count: 0,
                evidence: Vec::new(),
            });
        entry.count += 1;
        if entry.evidence.len() < EVIDENCE_KEPT {
            let event = event.cloned().unwrap_or(Value::Null);
            entry.evidence.push(json!({ "case": case, "event": event }));
        }
    }
}

/// Every finding, ordered by severity (worst first), then rule id, then
/// subject.
pub fn analyse(cases: &[CaseEvidence], policy: &EffectivePolicy, skill: SkillText) -> Vec<Finding> {
    let mut found = Collector::default();
    let mut network_used = false;
    let mut names_resolved = BTreeSet::new();
    let mut addresses_reached = BTreeSet::new();
    for case in cases {
        let mut subdomains: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        // Sinkhole addresses and the names they were handed out for.
        let mut sinkhole_names: BTreeMap<String, String> = BTreeMap::new();
        let mut clone_failures = 0u64;
        for event in case.events {
            match str_of(event, "type") {
                "file_open" => file_open(&mut found, case.case, event),
                "exec" | "container_start" => exec(&mut found, case.case, event, policy.has_egress()),
                "connect" => {
                    let address = str_of(event, "address");
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        if !ip.is_loopback() {
                            network_used = true;
                            if !case.network_observed && connect(&mut found, case.case, event, ip, policy) {
                                addresses_reached.insert(ip.to_string());
                            }
                        }
                    }
                }
                "connection" => {
                    network_used = true;
                    let destination = str_of(event, "destination");
                    let subject = sinkhole_names
                        .get(destination)
                        .map_or(destination, String::as_str);
                    if str_of(event, "verdict") == "denied" {
                        let message = format!(
                            "sent {} to {subject} port {}, which the policy denies",
                            str_of(event, "protocol"),
                            event["port"]
                        );
                        found.add(EGRESS_UNDECLARED, subject, message, case.case, Some(event));
                    } else {
                        addresses_reached.insert(destination.to_owned());
                    }
                }
                "observed_connection" => {
                    network_used = true;
                    observed_connection(
                        &mut found,
                        case.case,
                        event,
                        &mut names_resolved,
                        &mut addresses_reached,
                    );
                }
                "dns_query" => {
                    network_used = true;
                    if event["sinkhole"] == true {
                        for answer in event["answers"].as_array().into_iter().flatten() {
                            sinkhole_names.insert(
                                str_of(answer, "data").to_owned(),
                                str_of(event, "name").to_owned(),
                            );
                        }
                    }
                    let name = str_of(event, "name").trim_end_matches('.').to_ascii_lowercase();
                    if str_of(event, "verdict") == "refused" {
                        found.add(
                            DNS_REFUSED,
                            &name,
                            format!("looked up {name}, which the policy does not allow"),
                            case.case,
                            Some(event),
                        );
                    } else {
                        names_resolved.insert(name.clone());
                    }
                    if let Some((label, parent)) = name.split_once('.') {
                        subdomains
                            .entry(parent.to_owned())
                            .or_default()
                            .insert(label.to_owned());
                        if looks_encoded(label) {
                            found.add(
                                DNS_TUNNEL,
                                parent,
                                format!(
                                    "looked up names under {parent} with encoded-looking labels ({label})"
                                ),
                                case.case,
                                Some(event),
                            );
                        }
                    }
                }
                "socket" => {
                    let raw = event["socket_type"].as_i64().map(|t| (t & 0xf) as i32) == Some(SOCK_RAW)
                        || event["domain"].as_i64() == Some(i64::from(AF_PACKET));
                    if raw {
                        found.add(
                            RAW_SOCKET,
                            str_of(event, "process"),
                            format!("{} opened a raw or packet socket", str_of(event, "process")),
                            case.case,
                            Some(event),
                        );
                    }
                }
                "syscall" => {
                    let name = str_of(event, "name");
                    if PROCESS_CREATION.contains(&name) && result_of(event) == Some(-EAGAIN) {
                        clone_failures += 1;
                    }
                    let refused = result_of(event).is_some_and(|r| r < 0);
                    if PRIVILEGED_SYSCALLS.contains(&name) || (IDENTITY_SYSCALLS.contains(&name) && refused) {
                        found.add(
                            PRIVILEGED_SYSCALL,
                            name,
                            format!("{} called {name}", str_of(event, "process")),
                            case.case,
                            Some(event),
                        );
                    }
                }
                "clone" if result_of(event) == Some(-EAGAIN) => clone_failures += 1,
                "oom" => found.add(
                    OOM,
                    "",
                    format!("hit its memory limit of {}", policy.resources.memory),
                    case.case,
                    Some(event),
                ),
                "timeout" => found.add(
                    TIMEOUT,
                    "",
                    format!("ran past its timeout of {}", policy.resources.timeout),
                    case.case,
                    Some(event),
                ),
                _ => {}
            }
        }
        for (parent, labels) in &subdomains {
            if labels.len() >= 20 {
                found.add(
                    DNS_TUNNEL,
                    parent,
                    format!("looked up {} different names under {parent}", labels.len()),
                    case.case,
                    None,
                );
            }
        }
        if clone_failures > 0 {
            found.add(
                PROCESS_STORM,
                "",
                format!(
                    "{clone_failures} process creations failed at the pids quota of {}",
                    policy.resources.pids
                ),
                case.case,
                None,
            );
        }
        resources(&mut found, case, policy);
        if let Some(expected) = case.expected_exit.filter(|e| *e != case.observed.exit_status) {
            let message = format!(
                "exited {}, the case expects {expected}",
                case.observed.exit_status
            );
            found.add(UNEXPECTED_EXIT, case.case, message, case.case, None);
        }
    }
    policy_hygiene(
        &mut found,
        policy,
        skill,
        network_used,
        &names_resolved,
        &addresses_reached,
    );

    let mut findings: Vec<Finding> = found
        .found
        .into_iter()
        .map(
            |(
                (_, subject),
                Grouped {
                    rule,
                    message,
                    count,
                    evidence,
                },
            )| {
                let line = line_of(skill.skill_md, rule, &subject);
                Finding {
                    rule_id: rule.id,
                    severity: rule.severity,
                    category: rule.category,
                    title: rule.title,
                    message: if count > 1 {
                        format!("{message} ({count} times)")
                    } else {
                        message
                    },
                    file_path: line.as_ref().map(|_| "SKILL.md".to_owned()),
                    line_number: line.as_ref().map(|(n, _)| *n),
                    code_snippet: line.map(|(_, text)| text),
                    remediation: rule.remediation,
                    analyzer: ANALYZER,
                    metadata: json!({ "subject": subject, "count": count, "evidence": evidence }),
                }
            },
        )
        .collect();
    findings.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then(a.rule_id.cmp(b.rule_id)).then(
            a.metadata["subject"]
                .as_str()
                .cmp(&b.metadata["subject"].as_str()),
        )
    });
    findings
}

fn file_open(found: &mut Collector, case: &str, event: &Value) {
    let path = str_of(event, "path");
    let failed = result_of(event).is_some_and(|r| r < 0);
    if event["write"].as_bool() == Some(true) && failed {
        found.add(
            WRITE_REFUSED,
            path,
            format!("tried to write {path}, outside its writable directories"),
            case,
            Some(event),
        );
    } else if is_sensitive(path) {
        if failed {
            found.add(
                SECRET_ATTEMPT,
                path,
                format!("tried to read {path}"),
                case,
                Some(event),
            );
        } else {
            found.add(SECRET_READ, path, format!("read {path}"), case, Some(event));
        }
    }
}

/// A network tool is a finding only for a skill whose policy allows no
/// network: under one that declares its destinations, the connections are
/// what is judged.
fn exec(found: &mut Collector, case: &str, event: &Value, declares_network: bool) {
    let argv: Vec<&str> = event["argv"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let program = str_of(event, "path").rsplit('/').next().unwrap_or_default();
    let first = argv
        .first()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_default();
    for name in [program, first] {
        if !declares_network && NETWORK_TOOLS.contains(&name) {
            found.add(NETWORK_TOOL, name, format!("ran {name}"), case, Some(event));
            break;
        }
    }
    let line = argv.join(" ");
    let decodes = line.contains("base64 -d") || line.contains("base64 --decode") || line.contains("xxd -r");
    let into_shell = ["| sh", "|sh", "| bash", "|bash", "| ash", "|ash"]
        .iter()
        .any(|p| line.contains(p));
    if decodes && into_shell {
        found.add(DECODED_PAYLOAD, &line, format!("ran `{line}`"), case, Some(event));
    }
}

/// One TCP connection the observing network recorded, judged already
/// against the declared policy: its subject is the name the skill looked
/// up, else the address it used.
fn observed_connection(
    found: &mut Collector,
    case: &str,
    event: &Value,
    names: &mut BTreeSet<String>,
    addresses: &mut BTreeSet<String>,
) {
    let address = str_of(event, "destination");
    let name = event["name"].as_str();
    let subject = name.unwrap_or(address);
    if str_of(event, "verdict") != "denied" {
        match name {
            Some(name) => names.insert(name.to_owned()),
            None => addresses.insert(address.to_owned()),
        };
        return;
    }
    let mut said = Vec::new();
    if let Some(sni) = event["tls_sni"].as_str() {
        said.push(format!("TLS for {sni}"));
    }
    if let Some(method) = event["http_method"].as_str() {
        let host = event["http_host"].as_str().unwrap_or("?");
        let path = event["http_path"].as_str().unwrap_or("");
        said.push(format!("HTTP {method} {host}{path}"));
    }
    let said = match said.is_empty() {
        true => String::new(),
        false => format!(" ({})", said.join(", ")),
    };
    let port = &event["port"];
    if str_of(event, "rule").starts_with("always-deny") {
        let message = format!("connected to {subject} port {port}{said}, in a range always denied");
        found.add(ALWAYS_DENIED, subject, message, case, Some(event));
    } else {
        let message = format!("connected to {subject} port {port}{said}, which the policy does not allow");
        found.add(EGRESS_UNDECLARED, subject, message, case, Some(event));
    }
}

/// Judges one connection; true when a CIDR rule allows it.
fn connect(found: &mut Collector, case: &str, event: &Value, ip: IpAddr, policy: &EffectivePolicy) -> bool {
    let address = ip.to_string();
    let port = event["port"].as_u64();
    let shown = port.map_or(address.clone(), |p| format!("{address} port {p}"));
    let always =
        METADATA.contains(&address.as_str()) || policy.network.always_deny.iter().any(|c| c.contains(ip));
    if always {
        found.add(
            ALWAYS_DENIED,
            &address,
            format!("connected to {shown}, in a range always denied"),
            case,
            Some(event),
        );
        return false;
    }
    let allowed = policy.network.allow.iter().any(|rule| match &rule.destination {
        Destination::Cidr(cidr) => {
            cidr.contains(ip)
                && rule
                    .ports
                    .as_ref()
                    .is_none_or(|ports| port.is_some_and(|p| ports.iter().any(|q| u64::from(q.get()) == p)))
        }
        // A name rule is judged where the name was resolved: the egress
        // session's `connection` events say.
        Destination::Domain(_) => false,
    });
    let has_domain_rules = policy
        .network
        .allow
        .iter()
        .any(|r| matches!(r.destination, Destination::Domain(_)));
    if !allowed && !has_domain_rules {
        found.add(
            EGRESS_UNDECLARED,
            &address,
            format!("connected to {shown}, which the policy does not allow"),
            case,
            Some(event),
        );
    }
    allowed
}

fn resources(found: &mut Collector, case: &CaseEvidence, policy: &EffectivePolicy) {
    let limit = policy.resources.memory.bytes();
    let observed = &case.observed;
    if limit > 0 && observed.memory_peak_bytes * 10 > limit * 8 {
        found.add(
            MEMORY_NEAR_LIMIT,
            "",
            format!(
                "memory peaked at {} of its {} limit",
                observed.memory_peak_bytes, policy.resources.memory
            ),
            case.case,
            None,
        );
    }
    let cpus = policy.resources.cpus.millis() as f64 / 1000.0;
    if observed.wall_ms >= MINER_MIN_WALL_MS
        && (observed.cpu_ms as f64) >= 0.9 * cpus * observed.wall_ms as f64
    {
        found.add(
            CPU_SATURATED,
            "",
            format!(
                "used {} ms of CPU in {} ms on {cpus} CPU(s)",
                observed.cpu_ms, observed.wall_ms
            ),
            case.case,
            None,
        );
    }
}

fn policy_hygiene(
    found: &mut Collector,
    policy: &EffectivePolicy,
    skill: SkillText,
    network_used: bool,
    names: &BTreeSet<String>,
    addresses: &BTreeSet<String>,
) {
    for rule in &policy.network.allow {
        let (subject, used, broad) = match &rule.destination {
            Destination::Domain(pattern) => (
                pattern.name().to_owned(),
                names.iter().any(|n| pattern.matches(n)),
                false,
            ),
            Destination::Cidr(cidr) => {
                let net = cidr.net();
                let broad = match net {
                    ipnet::IpNet::V4(v4) => v4.prefix_len() < 16,
                    ipnet::IpNet::V6(v6) => v6.prefix_len() < 32,
                };
                let used = addresses
                    .iter()
                    .filter_map(|a| a.parse().ok())
                    .any(|ip| cidr.contains(ip));
                (net.to_string(), used, broad)
            }
        };
        if broad {
            found.add(BROAD_RULE, &subject, format!("allows all of {subject}"), "", None);
        }
        if !used {
            found.add(
                UNUSED_ALLOW,
                &subject,
                format!("allows {subject}, which no case used"),
                "",
                None,
            );
        }
    }
    let declares_network = skill.permissions.iter().any(|p| p == "network");
    if declares_network && !network_used {
        found.add(
            PERMISSIONS_MISMATCH,
            "network",
            "declares the network permission but never used the network".to_owned(),
            "",
            None,
        );
    } else if !declares_network && network_used {
        found.add(
            PERMISSIONS_MISMATCH,
            "network",
            "used the network without declaring the network permission".to_owned(),
            "",
            None,
        );
    }
}

/// The line of `SKILL.md` a policy finding concerns: the first line naming
/// its subject, else the `security_policy:` line.
fn line_of(skill_md: &str, rule: Rule, subject: &str) -> Option<(u32, String)> {
    if rule.category != "policy" {
        return None;
    }
    let lines = || skill_md.lines().enumerate();
    let needle = if subject == "network" {
        "permissions"
    } else {
        subject
    };
    lines()
        .find(|(_, line)| !needle.is_empty() && line.contains(needle))
        .or_else(|| lines().find(|(_, line)| line.trim_start().starts_with("security_policy:")))
        .map(|(n, line)| (n as u32 + 1, line.trim().to_owned()))
}
