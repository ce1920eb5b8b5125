//! One sandbox's egress, composed: its network namespace (`netns`), its
//! nftables table (`rules`, `nft`), and the DNS proxy (`dns`) that teaches
//! the table the addresses allowed names resolve to, recording every query
//! (`events`). Dropping the session removes all of it, in reverse order.
//!
//! The proxy listens on the sandbox's gateway (the outer end of its veth),
//! port 53; the sandbox's `/etc/resolv.conf` names that address
//! (`resolv_conf`). Its sockets are bound inside the outer namespace, so
//! the session works for a caller in any namespace.
//!
//! The table's judging rules log to the nflog group of the sandbox's veth
//! slot (`nflog::group_for_slot`), which a `ConnectionLog`, also bound in
//! the outer namespace, turns into `connection` events in the same file.
//! It stops after the table is removed, writing what was logged first.
//!
//! **Inbound** ([`Inbound`], [`EgressSession::start_with_inbound`]): the
//! NAT table DNATs connections for the outer namespace's own addresses
//! (and, for localhost, the outer namespace's own connections to
//! 127.0.0.1) to the sandbox, and the filter table lets exactly those in.
//! Everything of it is in the session's two tables, and
//! `route_localnet` on its veth: removed with them, also by
//! [`SessionRecord::remove`].
//!
//! **A policy without allow rules** still gets a session (a pod must be
//! reachable): every connection refused and logged, every name REFUSED,
//! and no upstream resolver needed ([`needs_upstream`]).
//!
//! **Observing** ([`EgressSession::start_observing`], for scans): the same
//! namespace, veth and tables, but the DNS proxy answers from a sinkhole,
//! the NAT table sends every TCP connection to a recorder, the filter
//! table has no allow rule, and a counter proves nothing left (`observe`).
//!
//! **Removal** deletes the filter table and the NAT table in one netlink
//! batch (no `nft` process), stops the connection log, then removes the
//! veth pair and the namespace (`SandboxNetwork::remove`).

use std::net::{IpAddr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::network::{Destination, Port};

use crate::command::enter;
use crate::dns::{AddressLearner, DnsError, DnsPolicy, DnsProxy, DnsProxyConfig};
use crate::events::{EventError, EventSink, JsonLinesWriter};
use crate::netns::{NetnsError, NetnsName, NetworkConfig, SandboxNetwork, SystemRunner};
use crate::nflog::{group_for_slot, ConnectionLog, NflogError, ResolvedRules};
use crate::nft::{Firewall, Namespace, Nft, NftError, TableFamily, TableRef};
use crate::observe::judge::DeclaredPolicy;
use crate::observe::recorder::{Recorder, RecorderContext};
use crate::observe::sinkhole::Sinkhole;
pub use crate::rules::Inbound;
use crate::rules::{nat_script, RulesError, SandboxFacts, SandboxTable};

/// The port the proxy serves on the gateway.
pub const DNS_PORT: u16 = 53;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error(transparent)]
    Network(#[from] NetnsError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Firewall(#[from] NftError),
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error(transparent)]
    Events(#[from] EventError),
    #[error(transparent)]
    ConnectionLog(#[from] NflogError),
    #[error("cannot bind the DNS proxy to {addr} in the outer namespace: {source}")]
    ProxySocket {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the observing recorder: {0}")]
    Recorder(#[source] std::io::Error),
    #[error("table {table} has no counter of the packets that left; was it made by an observing session?")]
    NoLeftCounter { table: String },
    #[error("cannot start the DNS proxy's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(
        "no upstream resolver for the DNS proxy: none configured and /etc/resolv.conf names no nameserver"
    )]
    NoUpstream,
    #[error(
        "inbound for sandbox {id} needs a named outer namespace (a pod's): in the caller's own it would take every port of the caller's addresses"
    )]
    InboundInOwnNamespace { id: String },
}

/// Whether the DNS proxy may ever ask upstream under `policy`: only for a
/// name some allow rule names. Without one, every name is REFUSED and an
/// empty upstream list is valid.
pub fn needs_upstream(policy: &EffectiveNetwork) -> bool {
    policy
        .allow
        .iter()
        .any(|rule| matches!(rule.destination, Destination::Domain(_)))
}

/// The resolvers a session under `policy` needs: none when
/// [`needs_upstream`] is false (`configured` is returned as it is, maybe
/// empty, and /etc/resolv.conf is not read), else
/// [`upstreams_or_resolv_conf`].
pub fn upstreams_for(
    policy: &EffectiveNetwork,
    configured: &[SocketAddr],
) -> Result<Vec<SocketAddr>, EgressError> {
    if needs_upstream(policy) {
        upstreams_or_resolv_conf(configured)
    } else {
        Ok(configured.to_vec())
    }
}

/// The resolvers the proxy forwards to: `configured` if any, else the
/// nameservers of this node's /etc/resolv.conf.
pub fn upstreams_or_resolv_conf(configured: &[SocketAddr]) -> Result<Vec<SocketAddr>, EgressError> {
    if !configured.is_empty() {
        return Ok(configured.to_vec());
    }
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let found = crate::dns::parse_resolv_conf(&text);
    if found.is_empty() {
        return Err(EgressError::NoUpstream);
    }
    Ok(found)
}

/// What a session made in the kernel, by name: enough for another process
/// to remove it after the session's own process died (the shim's `delete`
/// after a killed shim). The proxy's sockets die with their process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    pub namespace: String,
    pub outer: Option<String>,
    pub interface: String,
    pub nat_table: Option<String>,
    pub table: String,
}

impl SessionRecord {
    /// Removes the table, the NAT table, the veth pair and the namespace;
    /// whatever is already gone counts as removed.
    pub fn remove(&self) -> Result<(), EgressError> {
        let outer = self.outer.as_deref().map(NetnsName::new).transpose()?;
        let firewall = Nft::new(Namespace::of(outer.as_ref()));
        let mut network = SandboxNetwork::adopt(
            Box::new(SystemRunner),
            NetnsName::new(&self.namespace)?,
            outer,
            self.interface.clone(),
            self.nat_table.clone(),
        );
        let tables = remove_tables(&firewall, &self.table, &mut network);
        let network = network.remove();
        tables?;
        Ok(network?)
    }
}

/// Removes the filter table `table` and the network's NAT table in one
/// batch; once they are gone, the network's removal leaves the NAT table
/// alone (it would start `nft` for it).
fn remove_tables(firewall: &Nft, table: &str, network: &mut SandboxNetwork) -> Result<(), NftError> {
    let mut tables = vec![TableRef {
        family: TableFamily::Inet,
        name: table.to_owned(),
    }];
    if let Some(nat) = network.nat_table() {
        tables.push(TableRef {
            family: TableFamily::Ip,
            name: nat.to_owned(),
        });
    }
    firewall.remove_tables(&tables)?;
    network.forget_nat_table();
    Ok(())
}

/// What a session needs besides the policy.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The namespace the sandbox's veth and NAT live in; `None`: the
    /// caller's.
    pub outer: Option<NetnsName>,
    /// The resolvers the proxy forwards allowed names to; may be empty
    /// when the policy allows no domain ([`needs_upstream`]).
    pub upstreams: Vec<SocketAddr>,
    /// Added to each record's TTL before a learned address expires.
    pub ttl_grace: Duration,
    /// The execution's audit log, which the egress events join (shared
    /// with the execution's other event sources).
    pub events: Arc<JsonLinesWriter>,
}

/// Teaches the sandbox's table what the proxy resolved.
struct TableLearner {
    firewall: Nft,
    table: SandboxTable,
}

impl AddressLearner for TableLearner {
    fn learn(&self, ip: IpAddr, ports: Option<&[Port]>, ttl: Duration) {
        // The proxy's TTL already holds the grace (the table's is 0).
        let ttl_secs = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        if let Err(err) = self.firewall.learn(&self.table, ip, ports, ttl_secs) {
            tracing::warn!(%err, %ip, "cannot add a resolved address to the sandbox's table");
        }
    }
}

/// A sandbox's egress, running.
pub struct EgressSession {
    // Field order is drop order: the recorder and proxy stop first, the
    // network goes last.
    recorder: Option<Recorder>,
    proxy: Option<DnsProxy>,
    runtime: Option<tokio::runtime::Runtime>,
    firewall: Nft,
    table: SandboxTable,
    network: SandboxNetwork,
    /// Stopped in `drop` once the table is gone.
    connections: Option<ConnectionLog>,
}

/// Binds the proxy's UDP and TCP sockets at `addr` inside `outer` (from a
/// thread that enters it: a socket stays in the namespace it was made in).
fn bind_in(outer: Option<&NetnsName>, addr: SocketAddr) -> Result<(UdpSocket, TcpListener), EgressError> {
    let error = |source| EgressError::ProxySocket { addr, source };
    let outer = outer.map(NetnsName::path);
    let bind = || Ok((UdpSocket::bind(addr)?, TcpListener::bind(addr)?));
    crate::command::in_netns(outer.as_deref(), bind)
        .and_then(|bound| bound)
        .map_err(error)
}

impl EgressSession {
    /// Sets up egress for sandbox `id` under `policy` in a new namespace
    /// `name`, with nothing let in from outside ([`Inbound::Closed`]).
    /// Anything made before a failure is removed again.
    pub fn start(
        id: &str,
        name: NetnsName,
        policy: &EffectiveNetwork,
        config: &SessionConfig,
    ) -> Result<EgressSession, EgressError> {
        Self::start_with_inbound(id, name, policy, config, Inbound::Closed)
    }

    /// [`EgressSession::start`], letting `inbound` connections reach the
    /// sandbox. Any inbound but [`Inbound::Closed`] is refused, before
    /// anything is made, when `config.outer` is `None`: the caller's own
    /// namespace is the host's (`skillbox run`, `ctr run`), whose every
    /// port it would hand to the sandbox, and whose loopback it would open
    /// to routing.
    pub fn start_with_inbound(
        id: &str,
        name: NetnsName,
        policy: &EffectiveNetwork,
        config: &SessionConfig,
        inbound: Inbound,
    ) -> Result<EgressSession, EgressError> {
        if inbound.is_open() && config.outer.is_none() {
            return Err(EgressError::InboundInOwnNamespace { id: id.to_owned() });
        }
        if config.upstreams.is_empty() && needs_upstream(policy) {
            return Err(EgressError::NoUpstream);
        }
        Self::start_in_mode(id, name, policy, config, inbound, Mode::Enforce)
    }

    /// A scan's observing network for sandbox `id` (see `observe`): every
    /// name is answered from a sinkhole, every TCP connection is accepted by
    /// the recorder, everything else is dropped, and each is recorded with
    /// what `declared`, the skill's policy, would have done. Nothing is
    /// forwarded upstream or out of the node whatever `declared` allows;
    /// [`EgressSession::packets_left`] counts what did.
    pub fn start_observing(
        id: &str,
        name: NetnsName,
        declared: &EffectiveNetwork,
        config: &SessionConfig,
    ) -> Result<EgressSession, EgressError> {
        Self::start_in_mode(id, name, declared, config, Inbound::Closed, Mode::Observe)
    }

    fn start_in_mode(
        id: &str,
        name: NetnsName,
        policy: &EffectiveNetwork,
        config: &SessionConfig,
        inbound: Inbound,
        mode: Mode,
    ) -> Result<EgressSession, EgressError> {
        // The NAT table is applied below, in process, with the filter table.
        let network_config = NetworkConfig {
            outer: config.outer.clone(),
            masquerade: false,
            ..NetworkConfig::default()
        };
        let network = SandboxNetwork::create(Box::new(SystemRunner), name, &network_config)?;
        let addresses = network.addresses();
        let proxy_addr = SocketAddr::new(IpAddr::V4(addresses.outer), DNS_PORT);
        let slot = network.slot();
        let log_group = group_for_slot(slot).ok_or(NflogError::NoGroup { slot })?;
        let recorder_listener = match mode {
            Mode::Enforce => None,
            Mode::Observe => Some(bind_recorder_in(
                config.outer.as_ref(),
                SocketAddr::new(IpAddr::V4(addresses.outer), 0),
            )?),
        };
        let recorder_addr = match &recorder_listener {
            Some(listener) => Some(listener.local_addr().map_err(EgressError::Recorder)?),
            None => None,
        };
        // Observing, the table allows nothing: TCP goes to the recorder.
        let table_policy = match mode {
            Mode::Enforce => policy.clone(),
            Mode::Observe => EffectiveNetwork {
                allow: Vec::new(),
                ..policy.clone()
            },
        };
        let facts = SandboxFacts {
            sandbox_id: id.to_owned(),
            outer_veth: network.outer_interface().to_owned(),
            sandbox_addrs: vec![IpAddr::V4(addresses.inner)],
            dns_proxy: vec![proxy_addr],
            node_addrs: Vec::new(),
            grace_secs: 0,
            log_group: Some(log_group),
            inbound,
            recorder: recorder_addr,
        };
        let table = SandboxTable::build(&table_policy, &facts)?;
        let firewall = Nft::new(Namespace::of(config.outer.as_ref()));
        let mut session = EgressSession {
            recorder: None,
            proxy: None,
            runtime: None,
            firewall,
            table,
            network,
            connections: None,
        };
        if inbound.is_open() {
            session.network.forward_in_outer_namespace()?;
        }
        if inbound.localhost() {
            session.network.route_localnet()?;
        }
        session.firewall.apply(&session.table)?;
        let mut nat = session.network.nat_facts();
        nat.inbound = inbound;
        nat.keep_local = vec![SocketAddrV4::new(addresses.outer, DNS_PORT)];
        nat.recorder = recorder_addr.and_then(|addr| match addr {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        });
        session.firewall.apply_commands(&nat_script(&nat))?;
        session.network.adopt_nat_table(nat.table);
        let (udp, tcp) = bind_in(config.outer.as_ref(), proxy_addr)?;
        // The proxy's own upstream queries must leave from the outer
        // namespace too: every runtime thread enters it as it starts.
        let outer_path = config.outer.as_ref().map(NetnsName::path);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_start(move || {
                if let Some(path) = &outer_path {
                    enter(path).expect("entering the sandbox's outer network namespace");
                }
            })
            .build()
            .map_err(EgressError::Runtime)?;
        let writer = Arc::clone(&config.events);
        // The proxy's events go through `events`, which remembers the allow
        // rules of answered addresses to name `allow-learned` connections.
        let events = Arc::new(ResolvedRules::new(writer));
        session.connections = Some(ConnectionLog::start(
            config.outer.as_ref().map(NetnsName::path).as_deref(),
            log_group,
            session.table.judging_rules().to_vec(),
            Arc::clone(&events),
        )?);
        // The learner runs on the proxy's runtime threads, which are in the
        // outer namespace already: the netlink socket it opens on its first
        // answer is too.
        let learner = Arc::new(TableLearner {
            firewall: Nft::new(Namespace::Current),
            table: session.table.clone(),
        });
        let mut proxy_config = DnsProxyConfig::new(config.upstreams.clone());
        proxy_config.ttl_grace = config.ttl_grace;
        let sinkhole = Arc::new(Sinkhole::default());
        if mode == Mode::Observe {
            proxy_config.sinkhole = Some(Arc::clone(&sinkhole));
        }
        let entered = runtime.enter();
        if let Some(listener) = recorder_listener {
            let context = RecorderContext {
                sinkhole,
                declared: DeclaredPolicy::new(policy),
                events: Arc::clone(&events) as Arc<dyn EventSink>,
                first_bytes_timeout: FIRST_BYTES_TIMEOUT,
            };
            session.recorder = Some(Recorder::from_std(listener, context).map_err(EgressError::Recorder)?);
        }
        let proxy = DnsProxy::from_std(
            udp,
            Some(tcp),
            proxy_config,
            DnsPolicy::from_network(policy),
            learner,
            events,
        )?;
        drop(entered);
        session.proxy = Some(proxy);
        session.runtime = Some(runtime);
        Ok(session)
    }

    /// The sandbox's network namespace, for the spec's `linux.namespaces`.
    pub fn namespace_path(&self) -> PathBuf {
        self.network.namespace_path()
    }

    /// The sandbox's `/etc/resolv.conf`: the proxy on its gateway.
    pub fn resolv_conf(&self) -> String {
        self.network.resolv_conf()
    }

    /// What this session made, by name (see [`SessionRecord`]).
    pub fn record(&self) -> SessionRecord {
        SessionRecord {
            namespace: self.network.namespace().as_str().to_owned(),
            outer: self
                .network
                .outer_namespace()
                .map(|outer| outer.as_str().to_owned()),
            interface: self.network.outer_interface().to_owned(),
            nat_table: self.network.nat_table().map(str::to_owned),
            table: self.table.name().to_owned(),
        }
    }

    /// The name of the sandbox's nftables table.
    pub fn table_name(&self) -> &str {
        self.table.name()
    }

    /// How many of the sandbox's packets left the outer namespace since
    /// an observing session started: 0 is its promise.
    pub fn packets_left(&self) -> Result<u64, EgressError> {
        let table = self.table.name().to_owned();
        let listed = self.firewall.list(&table)?;
        listed
            .as_ref()
            .and_then(SandboxTable::packets_left)
            .ok_or(EgressError::NoLeftCounter { table })
    }
}

/// Enforcing the policy, or observing what the skill tries under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Enforce,
    Observe,
}

/// How long the recorder waits for a connection's first bytes.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds the recorder's listener at `addr` inside `outer`.
fn bind_recorder_in(outer: Option<&NetnsName>, addr: SocketAddr) -> Result<TcpListener, EgressError> {
    let outer = outer.map(NetnsName::path);
    crate::command::in_netns(outer.as_deref(), || TcpListener::bind(addr))
        .and_then(|bound| bound)
        .map_err(EgressError::Recorder)
}

impl Drop for EgressSession {
    fn drop(&mut self) {
        drop(self.recorder.take());
        drop(self.proxy.take());
        if let Some(runtime) = self.runtime.take() {
            // Blocking on another runtime's shutdown panics inside an async
            // context (a session dropped by a shim's task).
            if tokio::runtime::Handle::try_current().is_ok() {
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(Duration::from_secs(1));
            }
        }
        if let Err(err) = remove_tables(&self.firewall, self.table.name(), &mut self.network) {
            tracing::warn!(%err, "cannot remove the sandbox's nftables tables");
        }
        drop(self.connections.take());
        if let Err(err) = self.network.remove() {
            tracing::warn!(%err, "cannot remove the sandbox's network");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn network(allow: serde_json::Value) -> EffectiveNetwork {
        serde_json::from_value(json!({"allow": allow, "deny": [], "always_deny": []})).unwrap()
    }

    #[test]
    fn only_a_domain_allow_rule_needs_an_upstream() {
        let deny_all = network(json!([]));
        let cidr_only = network(json!([{"cidr": "203.0.113.0/24", "ports": [443]}]));
        let domain = network(json!([{"domain": "example.org", "ports": [443]}]));
        assert!(!needs_upstream(&deny_all));
        assert!(!needs_upstream(&cidr_only));
        assert!(needs_upstream(&domain));
        // Without a domain rule, no upstream is looked for, not even in
        // /etc/resolv.conf.
        assert_eq!(upstreams_for(&deny_all, &[]).unwrap(), Vec::<SocketAddr>::new());
        let one: SocketAddr = "198.18.0.53:53".parse().unwrap();
        assert_eq!(upstreams_for(&cidr_only, &[one]).unwrap(), [one]);
        assert_eq!(upstreams_for(&domain, &[one]).unwrap(), [one]);
    }
}
