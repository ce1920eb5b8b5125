//! One sandbox's egress, composed: its network namespace (`netns`), its
//! nftables table (`rules`, `nft`), and the DNS proxy (`dns`) that teaches
//! the table the addresses allowed names resolve to, recording every query
//! (`events`). Dropping the session removes all of it, in reverse order.
//!
//! The proxy listens on the sandbox's gateway (the outer end of its veth),
//! port 53; the sandbox's `/etc/resolv.conf` names that address
//! (`resolv_conf`). Its sockets are bound inside the outer namespace, so
//! the session works for a caller in any namespace.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::network::Port;

use crate::dns::{AddressLearner, DnsError, DnsPolicy, DnsProxy, DnsProxyConfig};
use crate::events::{EventError, JsonLinesWriter, SandboxIdentity};
use crate::netns::{NetnsError, NetnsName, NetworkConfig, SandboxNetwork, SystemRunner};
use crate::nft::{Firewall, Namespace, Nft, NftError};
use crate::rules::{RulesError, SandboxFacts, SandboxTable};

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
    #[error("cannot bind the DNS proxy to {addr} in the outer namespace: {source}")]
    ProxySocket {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the DNS proxy's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// What a session needs besides the policy.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The namespace the sandbox's veth and NAT live in; `None`: the
    /// caller's.
    pub outer: Option<NetnsName>,
    /// The resolvers the proxy forwards allowed names to.
    pub upstreams: Vec<SocketAddr>,
    /// Added to each record's TTL before a learned address expires.
    pub ttl_grace: Duration,
    /// The JSON Lines file the sandbox's egress events are appended to.
    pub events: PathBuf,
    pub identity: SandboxIdentity,
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
    // Field order is drop order: the proxy stops first, the network goes last.
    proxy: Option<DnsProxy>,
    runtime: Option<tokio::runtime::Runtime>,
    firewall: Nft,
    table: SandboxTable,
    network: SandboxNetwork,
}

/// Moves the calling thread into the network namespace at `path` (a
/// thread's network namespace is its own).
fn enter(path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)?;
    Ok(())
}

/// Binds the proxy's UDP and TCP sockets at `addr` inside `outer` (from a
/// thread that enters it: a socket stays in the namespace it was made in).
fn bind_in(outer: Option<&NetnsName>, addr: SocketAddr) -> Result<(UdpSocket, TcpListener), EgressError> {
    let error = |source| EgressError::ProxySocket { addr, source };
    let outer = outer.map(NetnsName::path);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some(path) = &outer {
                    enter(path).map_err(error)?;
                }
                Ok((
                    UdpSocket::bind(addr).map_err(error)?,
                    TcpListener::bind(addr).map_err(error)?,
                ))
            })
            .join()
            .unwrap_or_else(|_| Err(error(std::io::Error::other("the binding thread panicked"))))
    })
}

impl EgressSession {
    /// Sets up egress for sandbox `id` under `policy` in a new namespace
    /// `name`. Anything made before a failure is removed again.
    pub fn start(
        id: &str,
        name: NetnsName,
        policy: &EffectiveNetwork,
        config: &SessionConfig,
    ) -> Result<EgressSession, EgressError> {
        let network_config = NetworkConfig {
            outer: config.outer.clone(),
            ..NetworkConfig::default()
        };
        let network = SandboxNetwork::create(Box::new(SystemRunner), name, &network_config)?;
        let addresses = network.addresses();
        let proxy_addr = SocketAddr::new(IpAddr::V4(addresses.outer), DNS_PORT);
        let facts = SandboxFacts {
            sandbox_id: id.to_owned(),
            outer_veth: network.outer_interface().to_owned(),
            sandbox_addrs: vec![IpAddr::V4(addresses.inner)],
            dns_proxy: vec![proxy_addr],
            node_addrs: Vec::new(),
            grace_secs: 0,
            log_group: None,
        };
        let table = SandboxTable::build(policy, &facts)?;
        let firewall = Nft::new(match &config.outer {
            Some(outer) => Namespace::Named(outer.as_str().to_owned()),
            None => Namespace::Current,
        });
        let mut session = EgressSession {
            proxy: None,
            runtime: None,
            firewall,
            table,
            network,
        };
        session.firewall.apply(&session.table)?;
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
        let events = Arc::new(JsonLinesWriter::open(&config.events, config.identity.clone())?);
        // The learner runs on the proxy's runtime threads, which are in the
        // outer namespace already: the netlink socket it opens on its first
        // answer is too.
        let learner = Arc::new(TableLearner {
            firewall: Nft::new(Namespace::Current),
            table: session.table.clone(),
        });
        let mut proxy_config = DnsProxyConfig::new(config.upstreams.clone());
        proxy_config.ttl_grace = config.ttl_grace;
        let proxy = {
            let _entered = runtime.enter();
            DnsProxy::from_std(
                udp,
                Some(tcp),
                proxy_config,
                DnsPolicy::from_network(policy),
                learner,
                events,
            )?
        };
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

    /// The name of the sandbox's nftables table.
    pub fn table_name(&self) -> &str {
        self.table.name()
    }
}

impl Drop for EgressSession {
    fn drop(&mut self) {
        drop(self.proxy.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        if let Err(err) = self.firewall.remove(self.table.name()) {
            tracing::warn!(%err, "cannot remove the sandbox's nftables table");
        }
        if let Err(err) = self.network.remove() {
            tracing::warn!(%err, "cannot remove the sandbox's network");
        }
    }
}
