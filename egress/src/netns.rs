//! The sandbox's network namespace and its link to the outer namespace.
//!
//! A [`SandboxNetwork`] is, in order of creation:
//!
//! 1. a named network namespace (`ip netns add`, so its path
//!    `/var/run/netns/<name>` can go into the OCI spec's `linux.namespaces`;
//!    runsc `--network=host` then uses that namespace's kernel stack, see
//!    `docs/runsc-facts.md`), with `lo` up;
//! 2. a veth pair: `<prefix><slot>` in the outer namespace, `eth0` in the
//!    sandbox's; a /30 from the [`AddressPool`] for the pair (outer end
//!    first), a default route in the sandbox via the outer end;
//! 3. per-interface IPv4 forwarding on the outer end only
//!    (`/proc/sys/net/ipv4/conf/<outer>/forwarding`, written from a thread
//!    inside the outer namespace): it dies with the interface,
//!    so there is nothing to restore and no other sandbox is affected. The
//!    outer namespace's uplink must forward too; that is a node-wide
//!    setting, see [`Forwarding`];
//! 4. optionally, masquerading of the sandbox's address in an nftables
//!    table of its own in the outer namespace, `ip skillbox_nat_<slot>`
//!    (rendered by `rules::nat_script`; the session adds inbound DNAT);
//! 5. for localhost inbound only, `route_localnet` on the outer end
//!    ([`SandboxNetwork::route_localnet`]): per interface, like
//!    forwarding, so it too dies with the interface.
//!
//! Filtering is not done here: `rules`/`nft` apply the policy in the outer
//! namespace, on [`SandboxNetwork::outer_interface`] and the addresses.
//!
//! **Slots.** A slot is claimed by creating its outer veth: the kernel
//! refuses a second link of the same name in one namespace, so concurrent
//! sandboxes (threads or processes) never share a slot, without lock
//! files. Addresses are unique per outer namespace, the scope in which
//! they are routed.
//!
//! **Removal** (`remove`, or `Drop`) deletes the NAT table, the outer veth
//! (which takes its peer with it) and the namespace; each step treats
//! "already gone" as done, so it is idempotent and also cleans up after a
//! half-finished `create`.
//!
//! **Cost.** Creation starts four programs: `ip netns add`; one `ip -n
//! <outer> -batch -` per slot tried (link, address, up: a taken slot
//! fails on the batch's first line, nothing else ran); one `ip -n
//! <sandbox> -batch -` (lo, address, up, route); `nft` for NAT. Removal
//! starts three, or two when the caller removed the NAT table itself
//! ([`SandboxNetwork::forget_nat_table`]; an `EgressSession` does, in one
//! netlink batch with its filter table). `nft` runs from a thread inside the outer namespace, not
//! through `ip netns exec` (an extra exec, mount namespace and `/sys`
//! remount each time).
//!
//! Every effect goes through a [`CommandRunner`], so unit tests record the
//! exact argv; the real one runs `ip` and `nft` and writes `/proc/sys`
//! (iproute2 is already required, and its commands are the documented
//! interface of namespaces named in `/var/run/netns`; a netlink crate would
//! need its own `setns` handling for every operation inside another
//! namespace).

use std::path::PathBuf;

use ipnet::Ipv4Net;
use tracing::{debug, info_span, warn};

use crate::command::RunError;

/// What `ip -batch` prints when the batch's first line failed.
const FIRST_LINE_FAILED: &str = "Command failed -:1\n";

/// The name of the sandbox's interface inside its namespace.
pub const INNER_INTERFACE: &str = "eth0";

/// Where `ip netns add` puts a namespace.
pub const NETNS_DIR: &str = "/var/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid network namespace name {0:?} (1-64 of [A-Za-z0-9_.-], not starting with '.')")]
    InvalidName(String),
    #[error("invalid interface prefix {0:?} (1-9 of [a-z0-9-], leaving room for the slot number)")]
    InvalidPrefix(String),
    #[error("invalid address pool {0} (must be at least a /30)")]
    InvalidPool(Ipv4Net),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("cannot set sysctl {key}{}: {source}", netns.as_ref().map(|ns| format!(" in network namespace {ns}")).unwrap_or_default())]
    Sysctl {
        key: String,
        netns: Option<NetnsName>,
        #[source]
        source: std::io::Error,
    },
    #[error("will not route 127.0.0.0/8 over {interface} in the caller's own network namespace: localhost inbound needs a named outer namespace")]
    LocalnetInOwnNamespace { interface: String },
    #[error("will not turn on forwarding for {interface}'s inbound in the caller's own network namespace: inbound needs a named outer namespace")]
    ForwardingInOwnNamespace { interface: String },
    #[error("every slot of the address pool {pool} is taken in the outer namespace")]
    PoolExhausted { pool: Ipv4Net },
    #[error("cannot create the network namespace {name}: {source}")]
    CreateNamespace {
        name: String,
        #[source]
        source: Box<NetnsError>,
    },
    #[error("cannot set up the veth pair {interface}: {source}")]
    SetUpLink {
        interface: String,
        #[source]
        source: Box<NetnsError>,
    },
    #[error("cannot set up NAT for {interface}: {source}")]
    SetUpNat {
        interface: String,
        #[source]
        source: Box<NetnsError>,
    },
    #[error("cannot remove the network of sandbox namespace {name}: {source}")]
    Remove {
        name: String,
        #[source]
        source: Box<NetnsError>,
    },
}

impl NetnsError {
    fn stderr_contains(&self, needle: &str) -> bool {
        matches!(self, NetnsError::Run(error) if error.stderr_contains(needle))
    }
}

/// The name of a network namespace in [`NETNS_DIR`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetnsName(String);

impl NetnsName {
    pub fn new(name: &str) -> Result<Self, NetnsError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(NetnsName(name.to_owned()))
        } else {
            Err(NetnsError::InvalidName(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `/var/run/netns/<name>`, for the spec's network namespace entry.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.0)
    }
}

impl std::fmt::Display for NetnsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where and how sandbox networks are made.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The namespace holding the outer ends (`None`: the caller's).
    pub outer: Option<NetnsName>,
    pub pool: AddressPool,
    /// Outer interface names are `<prefix><slot>` (≤ 15 characters).
    pub interface_prefix: String,
    /// Masquerade the sandbox's address on its way out.
    pub masquerade: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            outer: None,
            pool: AddressPool::default(),
            interface_prefix: "sbxv".to_owned(),
            masquerade: true,
        }
    }
}

/// A sandbox's network namespace, veth pair, routes and NAT.
pub struct SandboxNetwork {
    runner: Box<dyn CommandRunner>,
    name: NetnsName,
    outer: Option<NetnsName>,
    interface: String,
    slot: u32,
    addresses: LinkAddresses,
    nat_table: Option<String>,
    removed: bool,
    span: tracing::Span,
}

impl std::fmt::Debug for SandboxNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxNetwork")
            .field("name", &self.name)
            .field("outer", &self.outer)
            .field("interface", &self.interface)
            .field("addresses", &self.addresses)
            .field("removed", &self.removed)
            .finish()
    }
}

/// `ip [-n outer] <args>`.
fn ip_in(outer: Option<&NetnsName>, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["ip".to_owned()];
    if let Some(ns) = outer {
        argv.extend(["-n".to_owned(), ns.0.clone()]);
    }
    argv.extend(args.iter().map(|arg| (*arg).to_owned()));
    argv
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

impl SandboxNetwork {
    /// Creates the namespace `name` and joins it to the outer namespace.
    /// On failure, whatever was made is removed again.
    pub fn create(
        runner: Box<dyn CommandRunner>,
        name: NetnsName,
        config: &NetworkConfig,
    ) -> Result<Self, NetnsError> {
        let prefix = &config.interface_prefix;
        let digits = config.pool.slots().saturating_sub(1).to_string().len();
        let prefix_ok = !prefix.is_empty()
            && prefix.len() + digits <= 15
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !prefix_ok {
            return Err(NetnsError::InvalidPrefix(prefix.clone()));
        }
        let span = info_span!("sandbox_network", netns = name.as_str());
        let _entered = span.clone().entered();
        runner
            .run(None, &strings(&["ip", "netns", "add", name.as_str()]), None)
            .map_err(|source| NetnsError::CreateNamespace {
                name: name.0.clone(),
                source: Box::new(source),
            })?;
        let mut network = SandboxNetwork {
            runner,
            name,
            outer: config.outer.clone(),
            interface: String::new(),
            slot: 0,
            addresses: config.pool.slot(0).expect("a pool has slot 0"),
            nat_table: None,
            removed: false,
            span: span.clone(),
        };
        // From here on, dropping `network` undoes what was done.
        network.claim_slot(config)?;
        network.configure_link()?;
        if config.masquerade {
            network.configure_nat()?;
        }
        debug!(interface = network.interface, addresses = ?network.addresses, "sandbox network ready");
        Ok(network)
    }

    /// Creates the veth pair of the first free slot, addresses its outer
    /// end and brings it up: one `ip -batch` per slot tried.
    fn claim_slot(&mut self, config: &NetworkConfig) -> Result<(), NetnsError> {
        for slot in 0..config.pool.slots() {
            let interface = format!("{}{slot}", config.interface_prefix);
            let addresses = config.pool.slot(slot).expect("slot is in the pool");
            let script = format!(
                "link add {interface} type veth peer name {INNER_INTERFACE} netns {name}\n\
                 addr add {outer}/{len} dev {interface}\n\
                 link set {interface} up\n",
                name = self.name,
                outer = addresses.outer,
                len = addresses.net.prefix_len(),
            );
            let argv = ip_in(self.outer.as_ref(), &["-batch", "-"]);
            match self.runner.run(None, &argv, Some(&script)) {
                Ok(_) => {}
                // Line 1, `link add`, failed: the slot is another's.
                Err(error)
                    if error.stderr_contains("File exists") && error.stderr_contains(FIRST_LINE_FAILED) =>
                {
                    continue
                }
                Err(error) => {
                    if !error.stderr_contains(FIRST_LINE_FAILED) {
                        // The link was made: removal deletes it.
                        self.interface = interface.clone();
                    }
                    return Err(NetnsError::SetUpLink {
                        interface,
                        source: Box::new(error),
                    });
                }
            }
            self.interface = interface;
            self.slot = slot;
            self.addresses = addresses;
            return Ok(());
        }
        Err(NetnsError::PoolExhausted {
            pool: config.pool.net(),
        })
    }

    /// Forwarding on the outer end; the sandbox's side: `lo`, the address,
    /// the default route (one `ip -batch`).
    fn configure_link(&self) -> Result<(), NetnsError> {
        let link_error = |source| NetnsError::SetUpLink {
            interface: self.interface.clone(),
            source: Box::new(source),
        };
        self.runner
            .write_sysctl(self.outer.as_ref(), &forwarding_key(&self.interface), "1")
            .map_err(link_error)?;
        let script = format!(
            "link set lo up\n\
             addr add {inner}/{len} dev {INNER_INTERFACE}\n\
             link set {INNER_INTERFACE} up\n\
             route add default via {gateway}\n",
            inner = self.addresses.inner,
            len = self.addresses.net.prefix_len(),
            gateway = self.addresses.outer,
        );
        self.runner
            .run(None, &ip_in(Some(&self.name), &["-batch", "-"]), Some(&script))
            .map_err(link_error)?;
        Ok(())
    }

    fn configure_nat(&mut self) -> Result<(), NetnsError> {
        let (table, script) = self.nat_rules();
        self.nat_table = Some(table);
        self.runner
            .run(self.outer.as_ref(), &strings(&["nft", "-f", "-"]), Some(&script))
            .map_err(|source| NetnsError::SetUpNat {
                interface: self.interface.clone(),
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// The masquerade table for this network: its name and the nft script
    /// that (re)creates it, for a caller that applies it itself (the
    /// session, in process) instead of `NetworkConfig::masquerade`. Then
    /// [`SandboxNetwork::adopt_nat_table`] once applied.
    pub fn nat_rules(&self) -> (String, String) {
        let facts = self.nat_facts();
        let script = crate::rules::nat_script(&facts);
        (facts.table, script)
    }

    /// What this network's NAT table is made from, inbound closed: a
    /// caller opening it renders [`crate::rules::nat_script`] itself.
    pub fn nat_facts(&self) -> crate::rules::NatFacts {
        crate::rules::NatFacts {
            table: format!("skillbox_nat_{}", self.slot),
            veth: self.interface.clone(),
            inner: self.addresses.inner,
            inbound: crate::rules::Inbound::Closed,
            keep_local: Vec::new(),
            recorder: None,
        }
    }

    /// Lets 127.0.0.0/8 be routed over the outer veth
    /// (`net.ipv4.conf.<veth>.route_localnet=1` in the outer namespace),
    /// as localhost inbound needs. The setting dies with the interface.
    /// Refused when the outer namespace is the caller's own: that is the
    /// host's, whose loopback is not the sandbox's to open.
    pub fn route_localnet(&self) -> Result<(), NetnsError> {
        let Some(outer) = &self.outer else {
            return Err(NetnsError::LocalnetInOwnNamespace {
                interface: self.interface.clone(),
            });
        };
        let key = format!("net/ipv4/conf/{}/route_localnet", self.interface);
        self.runner
            .write_sysctl(Some(outer), &key, "1")
            .map_err(|source| NetnsError::SetUpLink {
                interface: self.interface.clone(),
                source: Box::new(source),
            })
    }

    /// Turns IPv4 forwarding on for every interface of the outer namespace
    /// (`net.ipv4.conf.all.forwarding=1`): inbound connections and the
    /// replies to the sandbox's own arrive on the outer namespace's uplink
    /// (a pod's `eth0`), and IPv4 forwards by the input interface. Only for
    /// an outer namespace of the sandbox's own (a pod's, which dies with
    /// the pod); refused when it is the caller's, which is the host's.
    pub fn forward_in_outer_namespace(&self) -> Result<(), NetnsError> {
        let Some(outer) = &self.outer else {
            return Err(NetnsError::ForwardingInOwnNamespace {
                interface: self.interface.clone(),
            });
        };
        self.runner
            .write_sysctl(Some(outer), "net/ipv4/conf/all/forwarding", "1")
            .map_err(|source| NetnsError::SetUpLink {
                interface: self.interface.clone(),
                source: Box::new(source),
            })
    }

    /// Records the NAT table a caller applied from [`SandboxNetwork::nat_rules`].
    pub fn adopt_nat_table(&mut self, table: String) {
        self.nat_table = Some(table);
    }

    /// Takes charge of a network an earlier process created and recorded
    /// (`namespace`, `outer`, `interface`, `nat_table`), so that [`remove`]
    /// can delete it after that process died (a killed shim).
    ///
    /// [`remove`]: SandboxNetwork::remove
    pub fn adopt(
        runner: Box<dyn CommandRunner>,
        name: NetnsName,
        outer: Option<NetnsName>,
        interface: String,
        nat_table: Option<String>,
    ) -> SandboxNetwork {
        let span = info_span!("sandbox_network", netns = name.as_str());
        SandboxNetwork {
            runner,
            name,
            outer,
            interface,
            slot: 0,
            addresses: AddressPool::default().slot(0).expect("a pool has slot 0"),
            nat_table,
            removed: false,
            span,
        }
    }

    /// The sandbox's namespace.
    pub fn namespace(&self) -> &NetnsName {
        &self.name
    }

    /// The path to put in the spec's `linux.namespaces` network entry.
    pub fn namespace_path(&self) -> PathBuf {
        self.name.path()
    }

    /// The namespace holding the outer end (`None`: the caller's).
    pub fn outer_namespace(&self) -> Option<&NetnsName> {
        self.outer.as_ref()
    }

    /// The outer end of the veth pair, where the sandbox's packets enter
    /// the outer namespace (`iifname` of the filter rules).
    pub fn outer_interface(&self) -> &str {
        &self.interface
    }

    /// The slot of the veth pair: unique among the outer namespace's
    /// sandboxes while this network exists.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    pub fn addresses(&self) -> LinkAddresses {
        self.addresses
    }

    /// The nftables table holding the masquerade rule, if any.
    pub fn nat_table(&self) -> Option<&str> {
        self.nat_table.as_deref()
    }

    /// Leaves the NAT table to the caller, who removed it (with the
    /// sandbox's filter table, in one batch): `remove` no longer does.
    pub fn forget_nat_table(&mut self) {
        self.nat_table = None;
    }

    /// A `resolv.conf` naming the outer end (where the DNS proxy listens),
    /// to bind-mount read-only over the sandbox's `/etc/resolv.conf`.
    pub fn resolv_conf(&self) -> String {
        format!("nameserver {}\noptions ndots:1\n", self.addresses.outer)
    }

    /// Deletes the NAT table, the veth pair and the namespace. Idempotent;
    /// every step runs even when an earlier one failed, and the first
    /// failure is returned.
    pub fn remove(&mut self) -> Result<(), NetnsError> {
        if self.removed {
            return Ok(());
        }
        let _entered = self.span.clone().entered();
        let outer = self.outer.as_ref();
        /// One removal command, and the stderr meaning "already gone".
        struct Step<'a> {
            netns: Option<&'a NetnsName>,
            argv: Vec<String>,
            stdin: Option<String>,
            gone: &'static str,
        }
        let mut steps = Vec::new();
        if let Some(table) = &self.nat_table {
            steps.push(Step {
                netns: outer,
                argv: strings(&["nft", "-f", "-"]),
                stdin: Some(format!("table ip {table} {{}}\ndelete table ip {table}\n")),
                gone: "",
            });
        }
        if !self.interface.is_empty() {
            steps.push(Step {
                netns: None,
                argv: ip_in(outer, &["link", "del", &self.interface]),
                stdin: None,
                gone: "Cannot find device",
            });
        }
        steps.push(Step {
            netns: None,
            argv: strings(&["ip", "netns", "del", self.name.as_str()]),
            stdin: None,
            gone: "No such file or directory",
        });
        let mut first_error = None;
        for step in steps {
            match self.runner.run(step.netns, &step.argv, step.stdin.as_deref()) {
                Ok(_) => {}
                Err(error) if !step.gone.is_empty() && error.stderr_contains(step.gone) => {}
                Err(error) => {
                    warn!(%error, "removing the sandbox network");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            None => {
                self.removed = true;
                Ok(())
            }
            Some(source) => Err(NetnsError::Remove {
                name: self.name.0.clone(),
                source: Box::new(source),
            }),
        }
    }
}

impl Drop for SandboxNetwork {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

mod command;
mod forwarding;
mod pool;
pub use command::{CommandRunner, SystemRunner};
use forwarding::forwarding_key;
pub use forwarding::Forwarding;
pub use pool::{AddressPool, LinkAddresses};

#[cfg(test)]
mod tests;
