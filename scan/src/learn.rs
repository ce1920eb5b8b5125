//! The least `security_policy` that allows what a scan's cases did
//! (`skillbox scan --runtime --learn`). Pure and deterministic: the same
//! cases and declared policy give the same YAML, byte for byte.
//!
//! What is learned, from every case together:
//!
//! - `network.allow`: one `{ domain, ports }` rule per DNS name the skill
//!   connected to over TCP (the `name` its destination address was handed
//!   out for), and one `{ cidr: ADDR/32 | ADDR/128, ports }` rule per
//!   literal address it connected to; ports are the ones used, sorted.
//!   Domains come first, sorted, then CIDRs, sorted. Never learned, only
//!   noted: a connection whose rule says it is always denied (or to an
//!   address in the node's always-denied ranges), non-TCP traffic (rules
//!   allow TCP only), a name that is not a valid host name. No deny rules
//!   are written. Without any TCP connection `network` is left out: no
//!   network at all.
//! - `filesystem.writable`: a declared writable directory the skill wrote
//!   in (a write open at or under it, or bytes in use there at the end of a
//!   case), and, for a write the sandbox refused outside every declared
//!   directory (negative result other than `-2` ENOENT), the written file's
//!   parent, if it is a valid writable path. ENOENT outside the declared
//!   directories is a missing directory, not a refusal: noted, not learned.
//!   Writes under `/dev`, `/proc` and `/sys` (`/dev/null`, `/dev/tty`) are
//!   ignored. A directory nested in another learned one is covered by it.
//!   Size: the largest measured use over the cases ×2, rounded up to a
//!   whole MiB, at least 1Mi, at most 1Gi; a directory never measured gets
//!   16Mi, noted as a guess until a scan under the learned policy measures
//!   it. The policy cannot say "no writable directory" (an empty list means
//!   the default `/tmp`), so a skill that wrote nothing gets `/tmp` of 1Mi,
//!   noted.
//! - `resources`: `memory` the largest peak ×1.5 rounded up to a multiple of
//!   16Mi, within 32Mi..2Gi; `pids` (1 + the most successful `clone`s of one
//!   case) ×1.5 rounded up, within 8..256 — an upper bound, since how many
//!   processes ran at once is not measured; `timeout` the longest wall time
//!   ×2 rounded up to whole seconds, within 5s..10m; `cpus` the declared
//!   value (CPU need is not learned).
//! - `entrypoint` (if declared), `env.pass` and `audit.syscalls`: the
//!   declared ones. `version: 1`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use policy_compiler::network::{Cidr, DomainPattern};
use policy_compiler::quantity::{ByteSize, Timeout};
use policy_compiler::scratch_path::{is_at_or_under, ScratchPath};
use policy_compiler::EffectivePolicy;
use serde_json::Value;

use crate::Observed;

/// What one case did, for learning.
#[derive(Debug, Clone)]
pub struct LearnCase<'a> {
    pub events: &'a [Value],
    pub observed: Observed,
    /// Bytes in use at the end of the case in each declared writable dir
    /// (path -> bytes), measured by the runtime.
    pub scratch_used: &'a BTreeMap<String, u64>,
}

/// The learned policy and what could not be learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The `security_policy:` block (YAML, starting with the line
    /// `security_policy:`, two-space indented), ready to paste into
    /// SKILL.md's frontmatter.
    pub yaml: String,
    /// What was not learned and why, one sentence each.
    pub notes: Vec<String>,
}

const MIB: u64 = 1 << 20;
/// Size of a learned writable directory nothing measured.
const GUESSED_SIZE_MIB: u64 = 16;
const MAX_WRITABLE_MIB: u64 = 1024;
const MIN_MEMORY_MIB: u64 = 32;
const MAX_MEMORY_MIB: u64 = 2048;
const MEMORY_STEP_MIB: u64 = 16;
const MIN_PIDS: u64 = 8;
const MAX_PIDS: u64 = 256;
const MIN_TIMEOUT_S: u64 = 5;
const MAX_TIMEOUT_S: u64 = 600;
/// ENOENT: a missing directory, not a refusal.
const ENOENT: i64 = -2;
/// Kernel interfaces: writes there are never scratch.
const KERNEL_DIRS: &[&str] = &["/dev", "/proc", "/sys"];

/// Notes in the order first written, each once.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn add(&mut self, note: String) {
        if !self.0.contains(&note) {
            self.0.push(note);
        }
    }
}

/// Learns the least policy that allows what `cases` did, given the policy
/// they ran under.
pub fn learn(cases: &[LearnCase], declared: &EffectivePolicy) -> Learned {
    let mut notes = Notes::default();
    if cases.is_empty() {
        notes.add("no case ran: the limits are the smallest the rules allow".to_owned());
    }
    let network = learn_network(cases, declared, &mut notes);
    let writable = learn_writable(cases, declared, &mut notes);
    let resources = learn_resources(cases, &mut notes);
    let yaml = render(declared, &network, &writable, &resources);
    Learned { yaml, notes: notes.0 }
}

/// Allow rules: by domain, then by literal address; each with its ports.
#[derive(Default)]
struct Network {
    domains: BTreeMap<String, BTreeSet<u16>>,
    cidrs: BTreeMap<Cidr, BTreeSet<u16>>,
}

fn learn_network(cases: &[LearnCase], declared: &EffectivePolicy, notes: &mut Notes) -> Network {
    let mut network = Network::default();
    for event in cases.iter().flat_map(|case| case.events) {
        let kind = event["type"].as_str().unwrap_or("");
        if kind != "observed_connection" && kind != "connection" {
            continue;
        }
        let protocol = event["protocol"].as_str().unwrap_or("other").to_ascii_lowercase();
        let destination = event["destination"].as_str().unwrap_or("an unknown address");
        let port = event["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0);
        let name = event["name"]
            .as_str()
            .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
            .filter(|name| !name.is_empty());
        let shown = match &name {
            Some(name) => format!("{name} ({destination})"),
            None => destination.to_owned(),
        };
        let on_port = port.map(|p| format!(" port {p}")).unwrap_or_default();
        if protocol != "tcp" {
            notes.add(format!(
                "{} to {shown}{on_port} cannot be allowed: network rules allow TCP only",
                protocol.to_ascii_uppercase()
            ));
            continue;
        }
        let Some(port) = port else {
            notes.add(format!("not learned: TCP to {shown} has no port"));
            continue;
        };
        let address = destination.parse::<IpAddr>().ok();
        let always_denied = event["rule"]
            .as_str()
            .is_some_and(|rule| rule.starts_with("always-deny"))
            || address.is_some_and(|ip| {
                name.is_none() && declared.network.always_deny.iter().any(|cidr| cidr.contains(ip))
            });
        if always_denied {
            notes.add(format!("not learned: {shown}{on_port} is always denied"));
            continue;
        }
        if let Some(name) = name {
            match name.parse::<DomainPattern>() {
                Ok(pattern) if !pattern.is_wildcard() => {
                    network.domains.entry(name).or_default().insert(port);
                }
                _ => notes.add(format!(
                    "not learned: {name:?}{on_port} is not a host name a policy can allow"
                )),
            }
            continue;
        }
        let cidr = address.and_then(|ip| {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            format!("{ip}/{bits}").parse::<Cidr>().ok()
        });
        match cidr {
            Some(cidr) => {
                network.cidrs.entry(cidr).or_default().insert(port);
            }
            None => notes.add(format!(
                "not learned: {destination:?}{on_port} is not an IP address"
            )),
        }
    }
    network
}

/// Writable directories with their sizes, sorted by path.
fn learn_writable(
    cases: &[LearnCase],
    declared: &EffectivePolicy,
    notes: &mut Notes,
) -> Vec<(String, ByteSize)> {
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for dir in &declared.writable {
        let used = cases.iter().any(|case| {
            case.scratch_used
                .get(dir.path.as_str())
                .is_some_and(|bytes| *bytes > 0)
        });
        if used {
            dirs.insert(dir.path.as_str().to_owned());
        }
    }
    for event in cases.iter().flat_map(|case| case.events) {
        if event["type"].as_str() != Some("file_open") || event["write"].as_bool() != Some(true) {
            continue;
        }
        let Some(path) = event["path"].as_str() else {
            continue;
        };
        if KERNEL_DIRS.iter().any(|dir| is_at_or_under(path, dir)) {
            continue;
        }
        if let Some(dir) = declared
            .writable
            .iter()
            .find(|dir| is_at_or_under(path, dir.path.as_str()))
        {
            dirs.insert(dir.path.as_str().to_owned());
            continue;
        }
        let result = event["result"].as_i64().unwrap_or(0);
        if result >= 0 {
            notes.add(format!(
                "not learned: the write to {path} succeeded outside every declared writable directory"
            ));
            continue;
        }
        if result == ENOENT {
            notes.add(format!(
                "not learned: the write to {path} failed with ENOENT (a missing directory, not a refusal)"
            ));
            continue;
        }
        let parent = match path.rsplit_once('/') {
            Some(("", _)) => "/",
            Some((parent, _)) => parent,
            None => path,
        };
        match parent.parse::<ScratchPath>() {
            Ok(dir) => {
                dirs.insert(dir.as_str().to_owned());
            }
            Err(reason) => notes.add(format!("the write to {path} cannot be allowed: {reason}")),
        }
    }
    // A directory inside another one is covered by it (and may not be
    // listed too).
    let all: Vec<String> = dirs.into_iter().collect();
    let outer: Vec<&String> = all
        .iter()
        .filter(|dir| {
            !all.iter()
                .any(|other| other != *dir && is_at_or_under(dir, other))
        })
        .collect();
    if outer.is_empty() {
        notes.add(
            "no write was seen, but a policy cannot declare no writable directory (an empty list means the default /tmp): /tmp is kept at 1Mi"
                .to_owned(),
        );
        return vec![("/tmp".to_owned(), ByteSize::mebibytes(1))];
    }
    outer
        .into_iter()
        .map(|dir| {
            let measured = cases.iter().filter_map(|case| case.scratch_used.get(dir)).max();
            let size = match measured {
                Some(bytes) => {
                    let mib = bytes.saturating_mul(2).div_ceil(MIB);
                    if mib > MAX_WRITABLE_MIB {
                        notes.add(format!(
                            "{dir}: twice the {bytes} bytes in use exceeds the 1Gi ceiling; size held at 1Gi"
                        ));
                    }
                    mib.clamp(1, MAX_WRITABLE_MIB)
                }
                None => {
                    notes.add(format!(
                        "{dir}: size {GUESSED_SIZE_MIB}Mi is a guess until a scan under the learned policy measures it"
                    ));
                    GUESSED_SIZE_MIB
                }
            };
            (dir.clone(), ByteSize::mebibytes(size))
        })
        .collect()
}

struct Limits {
    memory: ByteSize,
    pids: u64,
    timeout: Timeout,
}

fn learn_resources(cases: &[LearnCase], notes: &mut Notes) -> Limits {
    let peak = cases
        .iter()
        .map(|c| c.observed.memory_peak_bytes)
        .max()
        .unwrap_or(0);
    let step = MEMORY_STEP_MIB * MIB;
    let memory_mib = (peak.saturating_mul(3).div_ceil(2).div_ceil(step)).saturating_mul(MEMORY_STEP_MIB);
    if memory_mib > MAX_MEMORY_MIB {
        notes.add(format!(
            "memory: 1.5 times the peak of {peak} bytes exceeds the 2Gi ceiling; held at 2Gi"
        ));
    }
    let clones = cases
        .iter()
        .map(|case| {
            case.events
                .iter()
                .filter(|e| {
                    e["type"].as_str() == Some("clone") && e["result"].as_i64().is_some_and(|r| r > 0)
                })
                .count() as u64
        })
        .max()
        .unwrap_or(0);
    let pids = (clones + 1).saturating_mul(3).div_ceil(2);
    if pids > MAX_PIDS {
        notes.add(format!(
            "pids: 1.5 times the {} processes of one case exceeds the ceiling 256; held at 256",
            clones + 1
        ));
    }
    let wall = cases.iter().map(|c| c.observed.wall_ms).max().unwrap_or(0);
    let timeout_s = wall.saturating_mul(2).div_ceil(1000);
    if timeout_s > MAX_TIMEOUT_S {
        notes.add(format!(
            "timeout: twice the longest run of {wall} ms exceeds the 10m ceiling; held at 10m"
        ));
    }
    Limits {
        memory: ByteSize::mebibytes(memory_mib.clamp(MIN_MEMORY_MIB, MAX_MEMORY_MIB)),
        pids: pids.clamp(MIN_PIDS, MAX_PIDS),
        timeout: Timeout::from_secs(timeout_s.clamp(MIN_TIMEOUT_S, MAX_TIMEOUT_S)),
    }
}

/// `text` as a YAML scalar usable in flow context: plain when it is made of
/// unremarkable characters and reads back as the same string, otherwise
/// double-quoted (JSON string syntax, which YAML reads alike).
fn scalar(text: &str) -> String {
    let unremarkable = !text.is_empty()
        && text.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '/' || c == '_')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'));
    let reads_back = || {
        matches!(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text),
            Ok(serde_yaml_ng::Value::String(read)) if read == text)
    };
    if unremarkable && reads_back() {
        text.to_owned()
    } else {
        serde_json::to_string(text).expect("a string serializes")
    }
}

fn ports(ports: &BTreeSet<u16>) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    list.join(", ")
}

fn render(
    declared: &EffectivePolicy,
    network: &Network,
    writable: &[(String, ByteSize)],
    limits: &Limits,
) -> String {
    let mut yaml = String::from("security_policy:\n  version: 1\n");
    if !declared.entrypoint.is_empty() {
        let argv: Vec<String> = declared.entrypoint.iter().map(|arg| scalar(arg)).collect();
        yaml.push_str(&format!("  entrypoint: [{}]\n", argv.join(", ")));
    }
    if !network.domains.is_empty() || !network.cidrs.is_empty() {
        yaml.push_str("  network:\n    allow:\n");
        for (domain, used) in &network.domains {
            yaml.push_str(&format!(
                "      - {{ domain: {}, ports: [{}] }}\n",
                scalar(domain),
                ports(used)
            ));
        }
        for (cidr, used) in &network.cidrs {
            yaml.push_str(&format!(
                "      - {{ cidr: {}, ports: [{}] }}\n",
                scalar(&cidr.to_string()),
                ports(used)
            ));
        }
    }
    yaml.push_str("  filesystem:\n    writable:\n");
    for (path, size) in writable {
        yaml.push_str(&format!("      - {{ path: {}, size: {size} }}\n", scalar(path)));
    }
    yaml.push_str(&format!(
        "  resources: {{ cpus: {}, memory: {}, pids: {}, timeout: {} }}\n",
        declared.resources.cpus, limits.memory, limits.pids, limits.timeout
    ));
    if !declared.env_pass.is_empty() {
        let names: Vec<String> = declared
            .env_pass
            .iter()
            .map(|name| scalar(name.as_str()))
            .collect();
        yaml.push_str(&format!("  env: {{ pass: [{}] }}\n", names.join(", ")));
    }
    yaml.push_str(&format!("  audit: {{ syscalls: {} }}\n", declared.audit.as_str()));
    yaml
}
