//! The connection log: every packet a sandbox table's judging rule logs
//! (see `rules`: new connections only) becomes an [`EgressEvent::Connection`]
//! with destination, port, protocol, verdict and rule, written through the
//! sandbox's event sink.
//!
//! **Groups.** nflog groups are per network namespace, and the table lives
//! in the outer one, shared by every sandbox of the node. A sandbox's
//! group is [`GROUP_BASE`] plus its veth slot ([`group_for_slot`]); slots
//! are unique per outer namespace, so groups are too, and a rule's prefix
//! need not name the table. Groups below `GROUP_BASE` are left to others
//! (ulogd and the like usually take small numbers).
//!
//! **Listening.** [`ConnectionLog::start`] opens a `NETLINK_NETFILTER`
//! socket from a thread that first enters the outer namespace (a socket
//! stays in the namespace it was made in, and so does the nflog instance
//! it binds), binds the group with `NFULNL_CFG_CMD_BIND`, copy mode packet
//! with a copy range of [`COPY_RANGE`] bytes (IP and transport headers),
//! and a queue threshold of 1: the kernel sends each packet as it is
//! logged, instead of batching up to 100 of them for up to a second. The
//! same thread then reads the socket until the log is stopped.
//!
//! **Stopping.** Dropping (or [`ConnectionLog::stop`]) sets a flag that
//! the thread sees within [`POLL_INTERVAL`]; it then reads whatever is
//! still queued on the socket without waiting, and only then closes it
//! (which also destroys the kernel's instance). A packet logged before the
//! stop is therefore never lost: it was queued when its rule ran.
//!
//! **Losses** are reported, not hidden: a receive queue overflow
//! (`ENOBUFS`), an undecodable message or a prefix that names no rule of
//! the table is counted and logged with `tracing` at warn level.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{config_request, ConfigCmd, ConfigMode, ConfigNla};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::constants::NETLINK_NETFILTER;
use netlink_sys::Socket;
use nix::sys::socket::sockopt::ReceiveTimeout;
use nix::sys::socket::{setsockopt, MsgFlags};
use nix::sys::time::TimeVal;

use crate::events::{EgressEvent, EventSink};
use crate::rules::JudgingRule;

mod packet;
mod resolved;
pub use packet::{
    connection_event, connection_verdict, logged_packets, summarize, LoggedPacket, PacketSummary,
};
pub use resolved::ResolvedRules;

/// The first group of sandbox tables: slot 0's.
pub const GROUP_BASE: u16 = 0x4000;
/// Bytes of each packet copied to the log: an IPv6 header with a few
/// extension headers and the start of the transport header fit.
pub const COPY_RANGE: u32 = 128;
/// How soon the reader notices it is being stopped.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The socket's receive buffer: room for thousands of logged packets.
const RECEIVE_BUFFER: usize = 1 << 20;
/// The largest datagram read at once (the kernel's batches are smaller).
const DATAGRAM: usize = 1 << 16;

/// The nflog group of the sandbox whose veth has `slot`; `None` past
/// group 65535.
pub fn group_for_slot(slot: u32) -> Option<u16> {
    u16::try_from(u32::from(GROUP_BASE).checked_add(slot)?).ok()
}

#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    #[error("veth slot {slot} has no nflog group: groups are {GROUP_BASE} plus the slot, at most 65535")]
    NoGroup { slot: u32 },
    #[error("cannot enter the network namespace {path} to listen to nflog")]
    Namespace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open a netfilter netlink socket")]
    Socket(#[source] io::Error),
    #[error("cannot bind nflog group {group} (the kernel refuses with EPERM a group another socket holds)")]
    Bind {
        group: u16,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the connection log's thread")]
    Thread(#[source] io::Error),
}

/// A running connection log; stops (after draining) when dropped.
#[derive(Debug)]
pub struct ConnectionLog {
    group: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ConnectionLog {
    /// Listens to `group` in the network namespace at `namespace` (`None`:
    /// the caller's) and writes a connection event through `events` for
    /// each packet one of `rules` (the table's judging rules) logs.
    /// Returns once the group is bound: packets logged from then on are
    /// recorded.
    pub fn start(
        namespace: Option<&Path>,
        group: u16,
        rules: Vec<JudgingRule>,
        events: Arc<ResolvedRules>,
    ) -> Result<ConnectionLog, NflogError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, bound) = mpsc::sync_channel(1);
        let namespace = namespace.map(Path::to_owned);
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("nflog-{group}"))
            .spawn(move || {
                let socket = match subscribe_in(namespace.as_deref(), group) {
                    Ok(socket) => socket,
                    Err(err) => {
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                read(&socket, group, &stopping, &rules, &events);
            })
            .map_err(NflogError::Thread)?;
        let bound = bound.recv().unwrap_or_else(|_| {
            Err(NflogError::Thread(io::Error::other(
                "the connection log's thread ended before binding",
            )))
        });
        let log = ConnectionLog {
            group,
            stop,
            thread: Some(thread),
        };
        bound.map(|()| log)
    }

    /// The nflog group listened to.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Stops the reader once it has written every event queued so far.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!(group = self.group, "the connection log's thread panicked");
            }
        }
    }
}

impl Drop for ConnectionLog {
    fn drop(&mut self) {
        self.halt();
    }
}

fn subscribe_in(namespace: Option<&Path>, group: u16) -> Result<Socket, NflogError> {
    if let Some(path) = namespace {
        crate::command::enter(path).map_err(|source| NflogError::Namespace {
            path: path.to_owned(),
            source,
        })?;
    }
    subscribe(group)
}

/// A netfilter netlink socket bound to nflog `group` in the calling
/// thread's network namespace, with a receive timeout of [`POLL_INTERVAL`].
fn subscribe(group: u16) -> Result<Socket, NflogError> {
    let bind_error = |source| NflogError::Bind { group, source };
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NflogError::Socket)?;
    socket.bind_auto().map_err(bind_error)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    if let Err(err) = socket.set_rx_buf_sz(RECEIVE_BUFFER) {
        tracing::debug!(%err, "cannot enlarge the nflog socket's receive buffer");
    }
    let timeout = TimeVal::new(0, POLL_INTERVAL.as_micros() as _);
    setsockopt(&socket.as_fd(), ReceiveTimeout, &timeout).map_err(|errno| bind_error(errno.into()))?;
    let request = config_request(
        NetfilterProtoFamily::Unspec,
        group,
        vec![
            ConfigCmd::Bind.into(),
            ConfigMode::new_packet(COPY_RANGE).into(),
            ConfigNla::QThresh(1),
        ],
    );
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0).map_err(bind_error)?;
    // The acknowledgement (or the kernel's refusal, e.g. EBUSY when another
    // socket has the group) comes back within the receive timeout.
    let mut buffer = vec![0; 4096];
    for _ in 0..20 {
        let len = match socket.recv(&mut &mut buffer[..], 0) {
            Ok(len) => len.min(buffer.len()),
            Err(err) if is_timeout(&err) => continue,
            Err(err) => return Err(bind_error(err)),
        };
        if let Ok(message) = NetlinkMessage::<NetfilterMessage>::deserialize(&buffer[..len]) {
            if let NetlinkPayload::Error(error) = message.payload {
                return match error.code {
                    None => Ok(socket),
                    Some(_) => Err(bind_error(error.to_io())),
                };
            }
        }
    }
    Err(bind_error(io::Error::new(
        io::ErrorKind::TimedOut,
        "no acknowledgement from nfnetlink_log",
    )))
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads `socket` until `stop` is set and the socket is drained.
fn read(socket: &Socket, group: u16, stop: &AtomicBool, rules: &[JudgingRule], events: &ResolvedRules) {
    let mut buffer = vec![0; DATAGRAM];
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let flags = if stopping {
            MsgFlags::MSG_DONTWAIT.bits()
        } else {
            0
        };
        match socket.recv(&mut &mut buffer[..], flags) {
            Ok(len) => record(&buffer[..len.min(DATAGRAM)], group, rules, events),
            Err(err) if is_timeout(&err) => {
                if stopping {
                    return;
                }
            }
            Err(err) if err.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => {
                tracing::warn!(group, "nflog queue overflowed: connection events were lost");
            }
            Err(err) => {
                tracing::warn!(group, %err, "cannot read the nflog socket; the connection log stops");
                return;
            }
        }
    }
}

/// Writes the connection event of each packet in `datagram`.
fn record(datagram: &[u8], group: u16, rules: &[JudgingRule], events: &ResolvedRules) {
    let (packets, undecodable) = logged_packets(datagram);
    if undecodable > 0 {
        tracing::warn!(group, undecodable, "undecodable nflog messages");
    }
    for logged in packets {
        let learned = |ip: IpAddr| events.rule_for(ip);
        match connection_event(&logged, rules, learned) {
            Some(event) => {
                if let Err(err) = events.record(&EgressEvent::Connection(event)) {
                    tracing::warn!(group, %err, "cannot record a connection event");
                }
            }
            None => tracing::warn!(
                group,
                prefix = logged.prefix,
                length = logged.payload.len(),
                "a logged packet names no rule of the table or has no readable destination"
            ),
        }
    }
}
