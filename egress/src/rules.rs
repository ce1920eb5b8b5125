//! A sandbox's egress policy as one nftables table, rendered as `nft -j`
//! JSON. Pure: no processes, no clock; `nft` applies what this builds.
//!
//! The table `inet skillbox-<id>` lives in the *outer* network namespace,
//! where the sandbox's veth pair ends, so nothing inside the sandbox can
//! change it. It holds:
//!
//! - chain `sandbox_forward` (hook forward, priority -10, policy accept).
//!   Traffic that neither enters nor leaves through this sandbox's veth is
//!   accepted untouched (other chains judge it). Into the sandbox: replies
//!   are accepted; with [`Inbound`] open, so are new connections the NAT
//!   table DNAT'ed to it (`ct status dnat`, counted, not logged: probes
//!   would flood the audit log); anything else is dropped (`inbound`). From
//!   the sandbox, first match wins (a reply to an inbound connection is
//!   `established`; a new connection from the sandbox never has
//!   `ct status dnat`, since only packets from other interfaces are
//!   DNAT'ed, so it is judged like any other):
//!   1. established/related → accept; invalid → drop;
//!   2. a source address that is not the sandbox's → drop (`spoofed`); an
//!      address family the sandbox has no address in → refuse (`ipv6-off`,
//!      `ipv4-off`);
//!   3. `always_deny` ranges and the node's own addresses → refuse
//!      (`always-deny`), whatever any allow says;
//!   4. deny rules with a CIDR → refuse (`deny`); deny rules with a domain
//!      are the DNS proxy's business (it never resolves them);
//!   5. port 53 (TCP or UDP) → refuse (`dns-bypass`): DNS goes to the
//!      proxy, which the input chain serves;
//!   6. anything not TCP → refuse (`not-tcp`): the policy's ports are TCP
//!      ports, and UDP to anything but the proxy is refused;
//!   7. allow rules with a CIDR → accept (`allow`);
//!   8. the learned sets → accept (`allow-learned`): `allowed_v4`/`_v6`
//!      hold `address . port` for names whose rule lists ports,
//!      `allowed_any_v4`/`_v6` hold addresses for names whose rule allows
//!      every port; each element expires after the record's TTL plus grace;
//!   9. everything else → refuse (`default-deny`).
//!
//!   "Refuse" is a `goto refuse`: a TCP reset, or ICMP administratively
//!   prohibited for other protocols, so a skill fails fast instead of
//!   waiting for a timeout.
//! - chain `sandbox_input` (hook input, priority -10, policy accept): from
//!   the sandbox's veth only DNS (UDP and TCP) to the proxy's address and
//!   port is accepted (plus IPv6 neighbour discovery when IPv6 is on, and,
//!   with [`Inbound::AddressesAndLocalhost`], replies to connections the
//!   outer namespace itself made to 127.0.0.1 and that were DNAT'ed to the
//!   sandbox: `ct direction reply`, `ct status dnat`); everything else is
//!   dropped (`node`), so the node itself is unreachable.
//!
//! - chain `sandbox_left` (hook postrouting), only with an observing
//!   recorder (a scan): a counter of the sandbox's packets that leave the
//!   outer namespace by any interface, which a scan reads to prove that
//!   none did. The input chain then also accepts TCP to the recorder.
//!
//! The DNAT itself is in the sandbox's NAT table (`nat`).
//!
//! **IPv6**: enforced with the same rules and sets when the sandbox has an
//! IPv6 address among its facts; otherwise every IPv6 packet from the
//! sandbox is refused (and IPv4 likewise, for an IPv6-only sandbox). Both
//! are rendered by the same code; no family is left unjudged.
//!
//! **Verdict records**: every judging rule has a counter and a comment
//! naming its verdict (`nft -j list table` shows both, so counts per
//! verdict can be read at any time). With `SandboxFacts::log_group` set,
//! those rules also log to that nflog group with the prefix
//! `<verdict> #<n>`, where `n` indexes [`SandboxTable::judging_rules`]
//! (the rule's comment, and for the always-deny and deny sets the range
//! each member comes from), so the `nflog` module's reader turns each
//! logged packet into a connection event naming verdict and rule. Only new
//! connections are logged (established traffic is accepted before); a
//! refused TCP connection is logged once (the reset ends it), a dropped
//! one once per SYN the client sends, other protocols once per packet.
//! Kernel-log logging is avoided because it is disabled outside the
//! initial namespace by default and is not structured.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::network::Port;
use serde_json::{json, Value};

/// The table's family.
pub const FAMILY: &str = "inet";
/// Prefix of every sandbox table's name.
pub const TABLE_PREFIX: &str = "skillbox-";
/// Hook priority of both base chains: before the usual `filter` (0).
pub const PRIORITY: i32 = -10;
pub const FORWARD_CHAIN: &str = "sandbox_forward";
pub const INPUT_CHAIN: &str = "sandbox_input";
/// With an observing recorder: counts the sandbox's packets that leave the
/// outer namespace (hook postrouting).
pub const LEFT_CHAIN: &str = "sandbox_left";
/// The comment of `LEFT_CHAIN`'s counting rule.
pub(crate) const LEFT_COMMENT: &str = "left the outer namespace";
/// Regular chain that rejects: TCP reset, else ICMP admin-prohibited.
pub const REFUSE_CHAIN: &str = "refuse";

/// Longest sandbox-id part of a table name before it is shortened.
const MAX_ID_LEN: usize = 32;
/// nft's limit on a rule comment, in bytes.
const MAX_COMMENT_LEN: usize = 127;

/// One IP family's names and nft keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn payload(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    /// The family's always-denied ranges plus the node's addresses.
    pub fn always_deny_set(self) -> String {
        format!("always_deny_{}", self.suffix())
    }
    /// CIDR deny rules without ports.
    pub fn deny_set(self) -> String {
        format!("deny_{}", self.suffix())
    }
    /// Learned `address . port` pairs.
    pub fn allowed_set(self) -> String {
        format!("allowed_{}", self.suffix())
    }
    /// Learned addresses open on every TCP port.
    pub fn allowed_any_set(self) -> String {
        format!("allowed_any_{}", self.suffix())
    }
}

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// What the policy does not say about one sandbox: supplied by the code
/// that sets up its network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxFacts {
    /// The sandbox (container) id; the table name is derived from it.
    pub sandbox_id: String,
    /// Name of the veth end in the outer namespace.
    pub outer_veth: String,
    /// The sandbox's own addresses (the only accepted sources). Enforcement
    /// covers exactly the families listed; other families are refused.
    pub sandbox_addrs: Vec<IpAddr>,
    /// Where the DNS proxy listens (UDP and TCP), on the outer side.
    pub dns_proxy: Vec<SocketAddr>,
    /// The node's own addresses, denied like `always_deny`.
    pub node_addrs: Vec<IpAddr>,
    /// Seconds added to a record's TTL before a learned address expires.
    pub grace_secs: u32,
    /// nflog group that judging rules log to; `None` logs nothing.
    pub log_group: Option<u16>,
    /// Which connections from outside are let into the sandbox.
    pub inbound: Inbound,
    /// A scan's observing recorder, to which the NAT table redirects every
    /// TCP connection from the sandbox: the input chain lets them in, and
    /// the `sandbox_left` chain counts what leaves (see `observe`).
    pub recorder: Option<SocketAddr>,
}

/// Which connections from outside the sandbox reach it. The NAT table
/// ([`nat_script`]) DNATs them to the sandbox's address, same port; the
/// filter table lets exactly those in (`ct status dnat`). Nothing here
/// changes how connections the sandbox originates are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inbound {
    /// None: a new connection into the sandbox is dropped and logged
    /// (`inbound`).
    #[default]
    Closed,
    /// TCP and UDP to the outer namespace's own addresses (`fib daddr type
    /// local`: a pod's IP), any port, arriving on any interface but the
    /// sandbox's veth, except the sockets the outer namespace serves itself
    /// (the DNS proxy's): Services and kubelet's probes.
    Addresses,
    /// [`Inbound::Addresses`], and connections made inside the outer
    /// namespace to 127.0.0.1 (containerd's CRI `PortForward` dials
    /// `localhost:<port>` there). The sandbox sees them come from its
    /// gateway. Needs `route_localnet` on the sandbox's veth (the session
    /// sets it, only in a named outer namespace).
    AddressesAndLocalhost,
}

impl Inbound {
    /// Whether any connection from outside reaches the sandbox.
    pub fn is_open(self) -> bool {
        self != Inbound::Closed
    }

    /// Whether the outer namespace's own connections to 127.0.0.1 do.
    pub fn localhost(self) -> bool {
        self == Inbound::AddressesAndLocalhost
    }
}

/// Why a table could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulesError {
    #[error("invalid interface name {name:?}: expected 1-15 characters of letters, digits, '_', '.' or '-'")]
    InterfaceName { name: String },
    #[error("sandbox {sandbox_id:?} has no address: at least one sandbox address is needed")]
    NoSandboxAddress { sandbox_id: String },
    #[error("sandbox {sandbox_id:?} has no DNS proxy address")]
    NoDnsProxy { sandbox_id: String },
    #[error("the DNS proxy address {proxy} is in a family the sandbox has no address in")]
    DnsProxyFamily { proxy: SocketAddr },
}

/// The nftables table of one sandbox, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxTable {
    name: String,
    veth: String,
    grace_secs: u32,
    enabled: Vec<Family>,
    objects: Vec<Value>,
    judging: Vec<JudgingRule>,
}

/// The table name of a sandbox: `skillbox-` and the id, with characters
/// outside `[a-z0-9_-]` replaced by `_`; an id longer than 32 characters
/// or changed by the replacement keeps its first 23 characters followed by
/// `-` and a hash of the whole id, so distinct ids keep distinct tables.
pub fn table_name(sandbox_id: &str) -> String {
    let clean: String = sandbox_id
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    if clean == sandbox_id && !clean.is_empty() && clean.len() <= MAX_ID_LEN {
        return format!("{TABLE_PREFIX}{clean}");
    }
    let head: String = clean.chars().take(23).collect();
    format!("{TABLE_PREFIX}{head}-{:08x}", fnv1a32(sandbox_id.as_bytes()))
}

/// FNV-1a, 32 bits: stable across Rust versions, enough to keep names apart.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Removes the table `table` if it exists, whatever it holds: one atomic
/// batch (`add` then `delete`), so it succeeds when the table is absent.
pub fn remove_batch(table: &str) -> Value {
    let table = json!({"family": FAMILY, "name": table});
    json!({"nftables": [{"add": {"table": table}}, {"delete": {"table": table}}]})
}

fn valid_interface(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The verdict a judging rule records (its comment and log prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Inbound,
    Spoofed,
    FamilyOff,
    AlwaysDeny,
    Deny,
    DnsBypass,
    NotTcp,
    Allow,
    AllowLearned,
    DefaultDeny,
    Node,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Inbound => "inbound",
            Verdict::Spoofed => "spoofed",
            Verdict::FamilyOff => "family-off",
            Verdict::AlwaysDeny => "always-deny",
            Verdict::Deny => "deny",
            Verdict::DnsBypass => "dns-bypass",
            Verdict::NotTcp => "not-tcp",
            Verdict::Allow => "allow",
            Verdict::AllowLearned => "allow-learned",
            Verdict::DefaultDeny => "default-deny",
            Verdict::Node => "node",
        })
    }
}

impl SandboxTable {
    /// Builds the table for `network` on a sandbox described by `facts`.
    pub fn build(network: &EffectiveNetwork, facts: &SandboxFacts) -> Result<SandboxTable, RulesError> {
        if !valid_interface(&facts.outer_veth) {
            return Err(RulesError::InterfaceName {
                name: facts.outer_veth.clone(),
            });
        }
        if facts.sandbox_addrs.is_empty() {
            return Err(RulesError::NoSandboxAddress {
                sandbox_id: facts.sandbox_id.clone(),
            });
        }
        if facts.dns_proxy.is_empty() {
            return Err(RulesError::NoDnsProxy {
                sandbox_id: facts.sandbox_id.clone(),
            });
        }
        let enabled: Vec<Family> = FAMILIES
            .into_iter()
            .filter(|family| facts.sandbox_addrs.iter().any(|a| Family::of(*a) == *family))
            .collect();
        if let Some(proxy) = facts
            .dns_proxy
            .iter()
            .find(|proxy| !enabled.contains(&Family::of(proxy.ip())))
        {
            return Err(RulesError::DnsProxyFamily { proxy: *proxy });
        }
        let mut table = SandboxTable {
            name: table_name(&facts.sandbox_id),
            veth: facts.outer_veth.clone(),
            grace_secs: facts.grace_secs,
            enabled,
            objects: Vec::new(),
            judging: Vec::new(),
        };
        let mut builder = Builder {
            table: &table.name,
            log_group: facts.log_group,
            objects: Vec::new(),
            judging: Vec::new(),
        };
        builder.header();
        builder.sets(network, facts);
        builder.forward(network, facts, &table.enabled);
        builder.input(facts, &table.enabled);
        if facts.recorder.is_some() {
            builder.left(facts, LEFT_COMMENT);
        }
        table.objects = builder.objects;
        table.judging = builder.judging;
        Ok(table)
    }

    /// The packets `LEFT_CHAIN` counted, in `listed` (the table as `nft -j
    /// list table` prints it); `None` when the table has no such counter.
    pub fn packets_left(listed: &Value) -> Option<u64> {
        listed["nftables"].as_array()?.iter().find_map(|object| {
            let rule = &object["rule"];
            if rule["chain"] != LEFT_CHAIN || rule["comment"] != LEFT_COMMENT {
                return None;
            }
            rule["expr"]
                .as_array()?
                .iter()
                .find_map(|expr| expr["counter"]["packets"].as_u64())
        })
    }

    /// The table's name, `skillbox-<id>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The veth the table judges.
    pub fn veth(&self) -> &str {
        &self.veth
    }

    /// The judging rules, indexed by the number in their log prefix (see
    /// [`log_prefix`]).
    pub fn judging_rules(&self) -> &[JudgingRule] {
        &self.judging
    }

    /// Whether the sandbox's IPv6 traffic is enforced (otherwise refused).
    pub fn ipv6_enforced(&self) -> bool {
        self.enabled.contains(&Family::V6)
    }

    /// The batch that (re)creates the whole table atomically: any previous
    /// table of that name, even a partial one, is replaced.
    pub fn apply_batch(&self) -> Value {
        json!({"nftables": self.objects})
    }

    /// The elements that let the sandbox reach `addr` on `ports` (`None`:
    /// every TCP port) for `ttl_secs` plus the grace. `None` when the
    /// address's family is refused for this sandbox: there is nothing to
    /// learn, and the proxy may as well drop such answers.
    ///
    /// A name matched by several allow rules needs the union of their
    /// ports, or `None` if one of them allows every port.
    pub fn learned(&self, addr: IpAddr, ports: Option<&[Port]>, ttl_secs: u32) -> Option<LearnedElements> {
        let family = Family::of(addr);
        if !self.enabled.contains(&family) {
            return None;
        }
        // A timeout of 0 would mean "never expires": at least one second.
        let timeout_secs = u64::from(ttl_secs)
            .saturating_add(u64::from(self.grace_secs))
            .max(1);
        let (set, keys) = match ports {
            None => (family.allowed_any_set(), vec![ElementKey::Addr(addr)]),
            Some(ports) => (
                family.allowed_set(),
                ports
                    .iter()
                    .map(|port| ElementKey::AddrPort(addr, *port))
                    .collect(),
            ),
        };
        Some(LearnedElements {
            table: self.name.clone(),
            set,
            keys,
            timeout_secs,
        })
    }

    /// The batch that removes this table (see [`remove_batch`]).
    pub fn remove_batch(&self) -> Value {
        remove_batch(&self.name)
    }
}

/// Elements to put, each with a timeout, into one set of a sandbox's
/// table. An element already present gets the new timeout, so the newest
/// answer's TTL counts (`nft::Nft::learn` adds, deletes and adds again in
/// one atomic batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedElements {
    pub table: String,
    pub set: String,
    pub keys: Vec<ElementKey>,
    pub timeout_secs: u64,
}

/// The key of a learned element: an address (`allowed_any_*` sets) or an
/// `address . port` concatenation (`allowed_*` sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementKey {
    Addr(IpAddr),
    AddrPort(IpAddr, Port),
}

mod builder;
mod log;
mod nat;
use builder::Builder;
pub use log::{log_prefix, parse_log_prefix, rule_for_prefix, JudgingRule, MAX_PREFIX_LEN};
pub use nat::{nat_script, NatFacts};

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
