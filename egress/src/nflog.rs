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
//! **Stopping.** Dropping (or [`ConnectionLog::stop`]) writes a byte to a
//! pipe that the thread polls together with the socket, so it wakes at
//! once; it then reads whatever is still queued on the socket without
//! waiting, unbinds the group (`NFULNL_CFG_CMD_UNBIND`, acknowledged: the
//! kernel's instance is gone and the group free again) and only then
//! reports back. A packet logged before the stop is therefore never lost:
//! it was queued when its rule ran. Closing the socket happens after that,
//! on the thread, without the caller waiting: releasing a netfilter
//! netlink socket waits for nf_tables' pending transaction cleanup (an RCU
//! grace period, ~10 ms; see `docs/nftables-facts.md`).
//!
//! **Losses** are reported, not hidden: a receive queue overflow
//! (`ENOBUFS`), an undecodable message or a prefix that names no rule of
//! the table is counted and logged with `tracing` at warn level.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{config_request, ConfigCmd, ConfigMode, ConfigNla};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::constants::NETLINK_NETFILTER;
use netlink_sys::Socket;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::sockopt::ReceiveTimeout;
use nix::sys::socket::{setsockopt, MsgFlags};
use nix::sys::time::TimeVal;
use nix::unistd::{pipe2, write};

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
/// How long binding and unbinding wait for the kernel's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
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
    #[error("cannot make the pipe that stops the connection log")]
    Pipe(#[source] io::Error),
}

/// A running connection log; stops (after draining) when dropped.
#[derive(Debug)]
pub struct ConnectionLog {
    group: u16,
    /// Written to stop the reader; `None` once stopped.
    wake: Option<OwnedFd>,
    /// Closed by the reader once it has drained and unbound.
    drained: mpsc::Receiver<()>,
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
        let (ready, bound) = mpsc::sync_channel(1);
        let (done, drained) = mpsc::channel::<()>();
        let (woken, wake) =
            pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| NflogError::Pipe(errno.into()))?;
        let namespace = namespace.map(Path::to_owned);
        std::thread::Builder::new()
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
                read(&socket, group, &woken, &rules, &events);
                unbind(&socket, group, &rules, &events);
                // The caller goes on; this thread closes the socket.
                drop(done);
            })
            .map_err(NflogError::Thread)?;
        let bound = bound.recv().unwrap_or_else(|_| {
            Err(NflogError::Thread(io::Error::other(
                "the connection log's thread ended before binding",
            )))
        });
        let log = ConnectionLog {
            group,
            wake: Some(wake),
            drained,
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
        let Some(wake) = self.wake.take() else {
            return;
        };
        if let Err(err) = write(&wake, &[1]) {
            tracing::warn!(group = self.group, %err, "cannot wake the connection log's thread");
        }
        // Disconnected once the thread has drained and unbound (or ended,
        // or panicked).
        let _ = self.drained.recv();
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
/// thread's network namespace, with a receive timeout of [`ACK_TIMEOUT`].
fn subscribe(group: u16) -> Result<Socket, NflogError> {
    let bind_error = |source| NflogError::Bind { group, source };
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NflogError::Socket)?;
    socket.bind_auto().map_err(bind_error)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    if let Err(err) = socket.set_rx_buf_sz(RECEIVE_BUFFER) {
        tracing::debug!(%err, "cannot enlarge the nflog socket's receive buffer");
    }
    let timeout = TimeVal::new(ACK_TIMEOUT.as_secs() as _, 0);
    setsockopt(&socket.as_fd(), ReceiveTimeout, &timeout).map_err(|errno| bind_error(errno.into()))?;
    let bind = vec![
        ConfigCmd::Bind.into(),
        ConfigMode::new_packet(COPY_RANGE).into(),
        ConfigNla::QThresh(1),
    ];
    // The acknowledgement, or the kernel's refusal (e.g. EPERM when another
    // socket has the group); no packet comes before it.
    configure(&socket, group, bind, |_| {}).map_err(bind_error)?;
    Ok(socket)
}

/// Sends one nflog config request for `group` and waits (up to the receive
/// timeout) for its answer; datagrams read meanwhile go to `other`.
fn configure(
    socket: &Socket,
    group: u16,
    nlas: Vec<ConfigNla>,
    mut other: impl FnMut(&[u8]),
) -> io::Result<()> {
    let request = config_request(NetfilterProtoFamily::Unspec, group, nlas);
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    let mut buffer = vec![0; DATAGRAM];
    loop {
        let len = match socket.recv(&mut &mut buffer[..], 0) {
            Ok(len) => len.min(DATAGRAM),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if is_timeout(&err) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no acknowledgement from nfnetlink_log",
                ))
            }
            Err(err) if err.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => continue,
            Err(err) => return Err(err),
        };
        if let Ok(message) = NetlinkMessage::<NetfilterMessage>::deserialize(&buffer[..len]) {
            if let NetlinkPayload::Error(error) = message.payload {
                return match error.code {
                    None => Ok(()),
                    Some(_) => Err(error.to_io()),
                };
            }
        }
        other(&buffer[..len]);
    }
}

/// Unbinds the group: the kernel's instance goes now, not when the socket
/// is closed later. Packets read before the answer are recorded.
fn unbind(socket: &Socket, group: u16, rules: &[JudgingRule], events: &ResolvedRules) {
    let record = |datagram: &[u8]| record(datagram, group, rules, events);
    if let Err(err) = configure(socket, group, vec![ConfigCmd::Unbind.into()], record) {
        tracing::warn!(group, %err, "cannot unbind the nflog group; it is freed when the socket closes");
    }
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads `socket` until `wake` is readable (or closed) and the socket is
/// drained.
fn read(socket: &Socket, group: u16, wake: &OwnedFd, rules: &[JudgingRule], events: &ResolvedRules) {
    let mut buffer = vec![0; DATAGRAM];
    let mut stopping = false;
    loop {
        if !stopping {
            let mut fds = [
                PollFd::new(socket.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(group, %err, "cannot poll the nflog socket; the connection log stops");
                    return;
                }
            }
            // Woken (POLLIN) or the writer gone (POLLHUP): drain, then stop.
            stopping = fds[1].any().unwrap_or(true);
        }
        match socket.recv(&mut &mut buffer[..], MsgFlags::MSG_DONTWAIT.bits()) {
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
