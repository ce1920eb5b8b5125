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
//!    (`net.ipv4.conf.<outer>.forwarding=1`): it dies with the interface,
//!    so there is nothing to restore and no other sandbox is affected. The
//!    outer namespace's uplink must forward too; that is a node-wide
//!    setting, see [`Forwarding`];
//! 4. optionally, masquerading of the sandbox's address in an nftables
//!    table of its own in the outer namespace, `ip skillbox_nat_<slot>`.
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
//! Every command goes through a [`CommandRunner`], so unit tests record the
//! exact argv; the real one runs `ip`, `sysctl` and `nft` (iproute2 is
//! already required, and its commands are the documented interface of
//! namespaces named in `/var/run/netns`; a netlink crate would need its own
//! `setns` handling for every operation inside another namespace).

use std::path::PathBuf;

use ipnet::Ipv4Net;
use tracing::{debug, info_span, warn};

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
    #[error("cannot start {argv:?}: {source}")]
    Spawn {
        argv: Vec<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("{argv:?} failed ({status}): {stderr}{stdout}")]
    Command {
        argv: Vec<String>,
        status: String,
        stdout: String,
        stderr: String,
    },
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
        matches!(self, NetnsError::Command { stderr, .. } if stderr.contains(needle))
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

/// `[ip netns exec outer] <args>`.
fn exec_in(outer: Option<&NetnsName>, args: &[&str]) -> Vec<String> {
    let mut argv = Vec::new();
    if let Some(ns) = outer {
        argv.extend(["ip", "netns", "exec", ns.as_str()].map(str::to_owned));
    }
    argv.extend(args.iter().map(|arg| (*arg).to_owned()));
    argv
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

/// Moves the calling thread into the network namespace at `path` (a
/// thread's network namespace is its own; sockets it makes stay there).
pub fn enter(path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)?;
    Ok(())
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
            .run(&strings(&["ip", "netns", "add", name.as_str()]), None)
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

    /// Creates the veth pair of the first free slot.
    fn claim_slot(&mut self, config: &NetworkConfig) -> Result<(), NetnsError> {
        for slot in 0..config.pool.slots() {
            let interface = format!("{}{slot}", config.interface_prefix);
            let argv = ip_in(
                self.outer.as_ref(),
                &[
                    "link",
                    "add",
                    &interface,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    INNER_INTERFACE,
                    "netns",
                    self.name.as_str(),
                ],
            );
            match self.runner.run(&argv, None) {
                Ok(_) => {
                    self.interface = interface;
                    self.slot = slot;
                    self.addresses = config.pool.slot(slot).expect("slot is in the pool");
                    return Ok(());
                }
                Err(error) if error.stderr_contains("File exists") => continue,
                Err(error) => {
                    return Err(NetnsError::SetUpLink {
                        interface,
                        source: Box::new(error),
                    })
                }
            }
        }
        Err(NetnsError::PoolExhausted {
            pool: config.pool.net(),
        })
    }

    fn configure_link(&self) -> Result<(), NetnsError> {
        let outer = self.outer.as_ref();
        let inner = Some(&self.name);
        let net = self.addresses.net;
        let outer_cidr = format!("{}/{}", self.addresses.outer, net.prefix_len());
        let inner_cidr = format!("{}/{}", self.addresses.inner, net.prefix_len());
        let gateway = self.addresses.outer.to_string();
        let sysctl = format!("net.ipv4.conf.{}.forwarding=1", self.interface);
        let steps = [
            ip_in(outer, &["addr", "add", &outer_cidr, "dev", &self.interface]),
            exec_in(outer, &["sysctl", "-q", "-w", &sysctl]),
            ip_in(outer, &["link", "set", &self.interface, "up"]),
            ip_in(inner, &["link", "set", "lo", "up"]),
            ip_in(inner, &["addr", "add", &inner_cidr, "dev", INNER_INTERFACE]),
            ip_in(inner, &["link", "set", INNER_INTERFACE, "up"]),
            ip_in(inner, &["route", "add", "default", "via", &gateway]),
        ];
        for argv in steps {
            self.runner
                .run(&argv, None)
                .map_err(|source| NetnsError::SetUpLink {
                    interface: self.interface.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    fn configure_nat(&mut self) -> Result<(), NetnsError> {
        let table = format!("skillbox_nat_{}", self.slot);
        // Declaring and deleting first replaces a table a crashed run left.
        let script = format!(
            "table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n  \
             chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
             ip saddr {inner} oifname != \"{interface}\" masquerade\n  }}\n}}\n",
            inner = self.addresses.inner,
            interface = self.interface,
        );
        self.nat_table = Some(table);
        self.runner
            .run(&exec_in(self.outer.as_ref(), &["nft", "-f", "-"]), Some(&script))
            .map_err(|source| NetnsError::SetUpNat {
                interface: self.interface.clone(),
                source: Box::new(source),
            })?;
        Ok(())
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
        let mut steps: Vec<(Vec<String>, Option<String>, &str)> = Vec::new();
        if let Some(table) = &self.nat_table {
            steps.push((
                exec_in(outer, &["nft", "-f", "-"]),
                Some(format!("table ip {table} {{}}\ndelete table ip {table}\n")),
                "",
            ));
        }
        if !self.interface.is_empty() {
            steps.push((
                ip_in(outer, &["link", "del", &self.interface]),
                None,
                "Cannot find device",
            ));
        }
        steps.push((
            strings(&["ip", "netns", "del", self.name.as_str()]),
            None,
            "No such file or directory",
        ));
        let mut first_error = None;
        for (argv, stdin, gone) in steps {
            match self.runner.run(&argv, stdin.as_deref()) {
                Ok(_) => {}
                Err(error) if !gone.is_empty() && error.stderr_contains(gone) => {}
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
pub use forwarding::Forwarding;
pub use pool::{AddressPool, LinkAddresses};

#[cfg(test)]
mod tests;
