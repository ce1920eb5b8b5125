//! The sandbox's DNS proxy. The sandbox's resolv.conf names it; it runs on
//! the outer side of the veth pair and is the only resolver the sandbox can
//! reach.
//!
//! Per query (UDP or TCP):
//!
//! 1. A packet that is not a query (a response, under 12 or over 4096
//!    bytes) is dropped. One that does not parse gets FORMERR; a query
//!    with other than one question FORMERR; an opcode other than QUERY
//!    NOTIMP; a class other than IN REFUSED. Nothing is forwarded.
//! 2. The name is decided by [`DnsPolicy`] (precedence in its module). A
//!    name no allow rule covers, or that a deny rule covers, gets
//!    **REFUSED** for every type and is never forwarded, so queries cannot
//!    carry data out. REFUSED rather than NXDOMAIN: the policy, not the
//!    DNS, said no, and the audit trail and the client can tell.
//! 3. An allowed name with a type other than A or AAAA gets an empty
//!    NOERROR answer (NODATA) without being forwarded: TXT, MX, HTTPS…
//!    records of allowed names are not served.
//! 4. A or AAAA of an allowed name is asked of the upstream resolvers
//!    (node config, default `/etc/resolv.conf`) in order, each within
//!    `upstream_timeout`, with a fresh random id and only the question,
//!    its name spelled as the policy spells it (lower case): the skill's
//!    letter case never reaches upstream, where it could carry data out.
//!    No answer: SERVFAIL. An upstream error code is passed on.
//! 5. The answer keeps only the CNAME chain from the question to its
//!    addresses (at most 16 links); CNAME targets need no rule of their own
//!    since the question was allowed. TTLs are capped at `max_ttl`. The
//!    question and the records owned by its name are spelled as the client
//!    asked, so a client that compares them with its query accepts them.
//!    Addresses in always-denied ranges or port-less deny CIDRs are
//!    withheld. Every other address is given to the [`AddressLearner`]
//!    with the name's ports and `ttl + ttl_grace`, before the answer is sent.
//! 6. Every query is recorded as a `dns_query` event before its answer is
//!    sent; if the event cannot be written the client gets SERVFAIL and
//!    nothing is learned.
//!
//! In a scan's observing network (`DnsProxyConfig::sinkhole`) steps 3-5
//! give way to the sinkhole: nothing is forwarded or learned, and every
//! name, allowed or not, gets an address of its own (`observe`).
//!
//! At most `max_in_flight` UDP queries are worked on at once (more are
//! dropped; clients retry) and at most `max_in_flight` TCP connections are
//! open, each closed after `tcp_idle_timeout` without a query.

mod message;
mod policy;
mod resolve;
mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use policy_compiler::network::Port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use self::message::MAX_QUERY_LEN;
pub use self::policy::{AllowedName, DnsPolicy, NameDecision, Refusal};
use self::resolve::{Resolver, Transport};
pub use self::upstream::parse_resolv_conf;
use crate::events::EventSink;
use crate::observe::sinkhole::Sinkhole;

/// Told every address an allowed name resolved to. The firewall side adds
/// it to the sandbox's allowed set for `ports` (`None`: every port) and
/// drops it again after `ttl`. Called from a blocking thread before the
/// answer is sent; it should return quickly.
pub trait AddressLearner: Send + Sync {
    fn learn(&self, ip: IpAddr, ports: Option<&[Port]>, ttl: Duration);
}

/// How the proxy talks to upstream and how long learned addresses live.
#[derive(Debug, Clone)]
pub struct DnsProxyConfig {
    /// The node's resolvers, asked in order.
    pub upstreams: Vec<SocketAddr>,
    /// How long each upstream gets, per transport. Default 2 s.
    pub upstream_timeout: Duration,
    /// Added to each record's TTL for the learned address. Default 10 s.
    pub ttl_grace: Duration,
    /// TTLs above this are lowered, in the answer and the learned set.
    /// Default 1 h.
    pub max_ttl: Duration,
    /// UDP queries handled at once, and TCP connections open. Default 64.
    pub max_in_flight: usize,
    /// A TCP connection without a query for this long is closed. Default 10 s.
    pub tcp_idle_timeout: Duration,
    /// Set for a scan's observing network: nothing is forwarded or learned;
    /// every A query is answered with the name's sinkhole address, any
    /// other type with an empty answer, and the event records the policy's
    /// verdict on the name all the same. Default: none.
    pub sinkhole: Option<Arc<Sinkhole>>,
}

impl DnsProxyConfig {
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        DnsProxyConfig {
            upstreams,
            upstream_timeout: Duration::from_secs(2),
            ttl_grace: Duration::from_secs(10),
            max_ttl: Duration::from_secs(3600),
            max_in_flight: 64,
            tcp_idle_timeout: Duration::from_secs(10),
            sinkhole: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot bind the DNS proxy to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the DNS proxy's socket")]
    Socket(#[source] std::io::Error),
}

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct DnsProxy {
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsProxy {
    /// Serves UDP and TCP on `listen` (port 0: one free port for both).
    /// Must be called within a tokio runtime.
    pub async fn bind(
        listen: SocketAddr,
        config: DnsProxyConfig,
        policy: DnsPolicy,
        learner: Arc<dyn AddressLearner>,
        events: Arc<dyn EventSink>,
    ) -> Result<Self, DnsError> {
        let bind_error = |source| DnsError::Bind { addr: listen, source };
        let mut attempts = 0;
        let (udp, tcp) = loop {
            let udp = std::net::UdpSocket::bind(listen).map_err(bind_error)?;
            let addr = udp.local_addr().map_err(DnsError::Socket)?;
            match std::net::TcpListener::bind(addr) {
                Ok(tcp) => break (udp, tcp),
                // The UDP port the OS picked is taken for TCP: pick again.
                Err(_) if listen.port() == 0 && attempts < 8 => attempts += 1,
                Err(source) => return Err(DnsError::Bind { addr, source }),
            }
        };
        Self::from_std(udp, Some(tcp), config, policy, learner, events)
    }

    /// Serves on sockets bound elsewhere (e.g. by a thread inside another
    /// network namespace). Must be called within a tokio runtime.
    pub fn from_std(
        udp: std::net::UdpSocket,
        tcp: Option<std::net::TcpListener>,
        config: DnsProxyConfig,
        policy: DnsPolicy,
        learner: Arc<dyn AddressLearner>,
        events: Arc<dyn EventSink>,
    ) -> Result<Self, DnsError> {
        udp.set_nonblocking(true).map_err(DnsError::Socket)?;
        let local_addr = udp.local_addr().map_err(DnsError::Socket)?;
        let udp = UdpSocket::from_std(udp).map_err(DnsError::Socket)?;
        let limit = config.max_in_flight.max(1);
        let resolver = Arc::new(Resolver {
            config,
            policy,
            learner,
            events,
        });
        let mut tasks = vec![tokio::spawn(serve_udp(
            Arc::new(udp),
            Arc::clone(&resolver),
            Arc::new(Semaphore::new(limit)),
        ))];
        if let Some(tcp) = tcp {
            tcp.set_nonblocking(true).map_err(DnsError::Socket)?;
            let tcp = TcpListener::from_std(tcp).map_err(DnsError::Socket)?;
            tasks.push(tokio::spawn(serve_tcp(
                tcp,
                resolver,
                Arc::new(Semaphore::new(limit)),
            )));
        }
        Ok(DnsProxy { local_addr, tasks })
    }

    /// The UDP (and TCP) address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for DnsProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, resolver: Arc<Resolver>, slots: Arc<Semaphore>) {
    let mut buffer = vec![0; MAX_QUERY_LEN + 1];
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(err) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!(error = %err, "DNS proxy UDP receive failed");
                continue;
            }
        };
        if len > MAX_QUERY_LEN {
            continue;
        }
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "DNS proxy busy; dropping a query");
            continue;
        };
        let query = buffer[..len].to_vec();
        let (socket, resolver) = (Arc::clone(&socket), Arc::clone(&resolver));
        tokio::spawn(async move {
            if let Some(answer) = resolver.handle(&query, Transport::Udp).await {
                let _ = socket.send_to(&answer, peer).await;
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(listener: TcpListener, resolver: Arc<Resolver>, slots: Arc<Semaphore>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "DNS proxy busy; closing a TCP connection");
            continue;
        };
        let resolver = Arc::clone(&resolver);
        tokio::spawn(async move {
            serve_connection(stream, &resolver).await;
            drop(permit);
        });
    }
}

async fn serve_connection(mut stream: TcpStream, resolver: &Resolver) {
    let idle = resolver.config.tcp_idle_timeout;
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(idle, stream.read_u16()).await else {
            return;
        };
        let len = usize::from(len);
        if len > MAX_QUERY_LEN {
            return;
        }
        let mut query = vec![0; len];
        if !matches!(
            tokio::time::timeout(idle, stream.read_exact(&mut query)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(answer) = resolver.handle(&query, Transport::Tcp).await else {
            continue;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&answer);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
