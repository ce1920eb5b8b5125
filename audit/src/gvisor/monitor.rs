//! The monitor: serves the Unix SOCK_SEQPACKET socket a sandbox's remote
//! sink connects to, and turns each message into an [`AuditEvent`] for an
//! [`EventSink`].
//!
//! Protocol (runsc 20221219): the sandbox connects and sends its
//! `Handshake{version}`; the monitor refuses versions below 1 and answers
//! `Handshake{version: 1}`; then each packet is one point (`wire`).
//!
//! - One thread per monitor accepts connections one after another (runsc
//!   opens one per sandbox) and reads each until the peer closes it, so the
//!   events the sentry sends while the sandbox exits are all read.
//! - A header's dropped count that grew becomes `events_dropped` with
//!   source `sentry` (the growth, wrapping at `u32::MAX`); a packet that
//!   cannot be decoded or is too large becomes `events_dropped` with source
//!   `monitor` and is counted. Unknown message types, events of another
//!   container and opens the `security` level leaves out are only counted.
//! - [`Monitor::stop`] stops accepting, waits for the current connection to
//!   close (at most the grace period, then it stops reading and counts it),
//!   joins the thread and returns the counters. Dropping the monitor
//!   removes the socket file.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, listen, recv, send, setsockopt, shutdown, socket, sockopt, AddressFamily, Backlog, MsgFlags,
    Shutdown, SockFlag, SockType, UnixAddr,
};
use nix::sys::time::TimeVal;
use prost::Message;

use super::decode::{decode, Body};
use super::proto::Handshake;
use super::{filter, sys, wire};
use crate::{AuditEvent, AuditLevel, Error};

/// The protocol version the monitor speaks (gVisor's `wire.CurrentVersion`).
pub const PROTOCOL_VERSION: u32 = 1;

/// How long [`Monitor::stop`] waits for an open connection to close.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How often a blocked read wakes to look for a stop.
const POLL: Duration = Duration::from_millis(200);

/// Where the monitor's events go.
pub trait EventSink: Send + Sync + 'static {
    fn record(&self, event: AuditEvent);
}

/// What the monitor saw, besides the events it recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorStats {
    pub connections: u64,
    pub messages: u64,
    pub recorded: u64,
    /// Packets that could not be decoded or exceeded the size limit.
    pub decode_failures: u64,
    pub unknown_types: u64,
    /// Events whose context names another container.
    pub foreign_container: u64,
    /// Events the level's filter left out.
    pub filtered: u64,
    /// The sentry's dropped-point count, summed over connections.
    pub sentry_dropped: u64,
    /// Connections still open when the stop grace ran out.
    pub abandoned: u64,
    /// Handshakes refused (malformed or too old).
    pub bad_handshakes: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    messages: AtomicU64,
    recorded: AtomicU64,
    decode_failures: AtomicU64,
    unknown_types: AtomicU64,
    foreign_container: AtomicU64,
    filtered: AtomicU64,
    sentry_dropped: AtomicU64,
    abandoned: AtomicU64,
    bad_handshakes: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> MonitorStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MonitorStats {
            connections: get(&self.connections),
            messages: get(&self.messages),
            recorded: get(&self.recorded),
            decode_failures: get(&self.decode_failures),
            unknown_types: get(&self.unknown_types),
            foreign_container: get(&self.foreign_container),
            filtered: get(&self.filtered),
            sentry_dropped: get(&self.sentry_dropped),
            abandoned: get(&self.abandoned),
            bad_handshakes: get(&self.bad_handshakes),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Where one container's events go, at which level.
#[derive(Clone)]
struct Route {
    level: AuditLevel,
    sink: Arc<dyn EventSink>,
}

struct Shared {
    /// The sandbox's own container: events naming no container, and the
    /// monitor's own (losses), go to it.
    container_id: String,
    /// Every container whose events are recorded (the sandbox's own, and a
    /// pod's other containers once routed), by container id.
    routes: Mutex<HashMap<String, Route>>,
    counters: Counters,
    stopping: AtomicBool,
    /// Set by `stop`: reading gives up on an idle open connection after it.
    deadline: Mutex<Option<Instant>>,
}

/// A running monitor for one sandbox.
pub struct Monitor {
    path: PathBuf,
    listener: Arc<OwnedFd>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    stop_grace: Duration,
}

/// A handle on a running monitor's routes: another container of the
/// sandbox (a pod's) has its events recorded through its own sink while it
/// is routed.
#[derive(Clone)]
pub struct Routes {
    shared: Arc<Shared>,
}

impl Routes {
    /// Records container `container_id`'s events at `level` into `sink`.
    pub fn add(&self, container_id: &str, level: AuditLevel, sink: Arc<dyn EventSink>) {
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(container_id.to_owned(), Route { level, sink });
    }

    /// Stops recording container `container_id`'s events.
    pub fn remove(&self, container_id: &str) {
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(container_id);
    }
}

impl Monitor {
    /// Where the sandbox's other containers are routed.
    pub fn routes(&self) -> Routes {
        Routes {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Binds `path` (mode 0600; put it in a directory only root can
    /// enter) and starts serving. `container_id` is the sandbox's container:
    /// events of other containers are counted, not recorded, unless routed
    /// ([`Monitor::routes`]). `level` picks
    /// the filter ([`filter::keep`]); subscribe the sandbox with the same
    /// level's [`super::pod_init_config`] pointing at `path`.
    pub fn bind(
        path: &Path,
        container_id: &str,
        level: AuditLevel,
        sink: Arc<dyn EventSink>,
    ) -> Result<Monitor, Error> {
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|source| Error::CreateSocket {
            path: path.to_owned(),
            source,
        })?;
        let bind_error = |source| Error::BindSocket {
            path: path.to_owned(),
            source,
        };
        let address = UnixAddr::new(path).map_err(bind_error)?;
        bind(listener.as_raw_fd(), &address).map_err(bind_error)?;
        let listener = Arc::new(listener);
        let mut monitor = Monitor {
            path: path.to_owned(),
            listener: Arc::clone(&listener),
            shared: Arc::new(Shared {
                container_id: container_id.to_owned(),
                routes: Mutex::new(HashMap::from([(container_id.to_owned(), Route { level, sink })])),
                counters: Counters::default(),
                stopping: AtomicBool::new(false),
                deadline: Mutex::new(None),
            }),
            thread: None,
            stop_grace: DEFAULT_STOP_GRACE,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
            Error::SetSocketMode {
                path: path.to_owned(),
                source,
            }
        })?;
        listen(&*listener, Backlog::new(4).expect("4 is a valid backlog")).map_err(bind_error)?;
        let shared = Arc::clone(&monitor.shared);
        let thread = std::thread::Builder::new()
            .name("audit-monitor".to_owned())
            .spawn(move || serve(&listener, &shared))
            .map_err(|source| Error::SpawnMonitor {
                path: path.to_owned(),
                source,
            })?;
        monitor.thread = Some(thread);
        Ok(monitor)
    }

    /// How long [`Monitor::stop`] waits for an open connection to close.
    pub fn with_stop_grace(mut self, grace: Duration) -> Monitor {
        self.stop_grace = grace;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> MonitorStats {
        self.shared.counters.snapshot()
    }

    /// Stops accepting, reads the open connection until the sandbox closes
    /// it (or the grace period ends), joins the thread.
    pub fn stop(mut self) -> Result<MonitorStats, Error> {
        self.begin_stop(self.stop_grace);
        if let Some(thread) = self.thread.take() {
            thread.join().map_err(|_| Error::MonitorPanicked {
                path: self.path.clone(),
            })?;
        }
        Ok(self.stats())
    }

    fn begin_stop(&self, grace: Duration) {
        *self.shared.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + grace);
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes a blocked accept(2) (Linux returns EINVAL).
        let _ = shutdown(self.listener.as_raw_fd(), Shutdown::Both);
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.begin_stop(Duration::ZERO);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(listener: &OwnedFd, shared: &Shared) {
    while !shared.stopping.load(Ordering::SeqCst) {
        match sys::accept(listener) {
            Ok(connection) => {
                bump(&shared.counters.connections, 1);
                read_connection(&connection, shared);
            }
            Err(Errno::EINTR | Errno::ECONNABORTED) => {}
            Err(error) => {
                if !shared.stopping.load(Ordering::SeqCst) {
                    tracing::warn!(%error, "audit monitor: accept failed; no more connections");
                }
                return;
            }
        }
    }
}

fn read_connection(connection: &OwnedFd, shared: &Shared) {
    let timeout = TimeVal::new(0, POLL.as_micros() as i64);
    if setsockopt(connection, sockopt::ReceiveTimeout, &timeout).is_err() {
        tracing::warn!("audit monitor: cannot set a receive timeout; stop may wait for the sandbox");
    }
    let mut buf = vec![0u8; wire::MAX_MESSAGE_BYTES];
    let mut last_dropped: u32 = 0;
    let mut handshaken = false;
    loop {
        let len = match recv(connection.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC) {
            Ok(0) => return,
            Ok(len) => len,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                if past_deadline(shared) {
                    bump(&shared.counters.abandoned, 1);
                    return;
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "audit monitor: reading the sandbox's messages failed");
                return;
            }
        };
        if !handshaken {
            if !handshake(connection, &buf[..len.min(buf.len())], len) {
                bump(&shared.counters.bad_handshakes, 1);
                return;
            }
            handshaken = true;
            continue;
        }
        bump(&shared.counters.messages, 1);
        // With MSG_TRUNC, `len` is the packet's real length.
        let packet = if len > buf.len() { &buf[..0] } else { &buf[..len] };
        handle_packet(packet, len, shared, &mut last_dropped);
    }
}

fn past_deadline(shared: &Shared) -> bool {
    let deadline = *shared.deadline.lock().unwrap_or_else(|e| e.into_inner());
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}

fn handshake(connection: &OwnedFd, packet: &[u8], len: usize) -> bool {
    if len > packet.len() {
        return false;
    }
    match Handshake::decode(packet) {
        Ok(theirs) if theirs.version >= PROTOCOL_VERSION => {
            let ours = Handshake {
                version: PROTOCOL_VERSION,
            }
            .encode_to_vec();
            send(connection.as_raw_fd(), &ours, MsgFlags::MSG_NOSIGNAL).is_ok()
        }
        _ => false,
    }
}

/// Decodes one packet (`len` is its real length; `packet` is empty when it
/// exceeded the buffer) and records what it says.
fn handle_packet(packet: &[u8], len: usize, shared: &Shared, last_dropped: &mut u32) {
    let counters = &shared.counters;
    let decoded = if len > wire::MAX_MESSAGE_BYTES {
        Err(Error::TooLarge { len })
    } else {
        decode(packet)
    };
    let decoded = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            bump(&counters.decode_failures, 1);
            tracing::debug!(%error, "audit monitor: undecodable packet");
            record(
                shared,
                AuditEvent::EventsDropped {
                    count: 1,
                    source: "monitor".to_owned(),
                },
            );
            return;
        }
    };
    let dropped = decoded.header.dropped_count.wrapping_sub(*last_dropped);
    if dropped != 0 {
        *last_dropped = decoded.header.dropped_count;
        bump(&counters.sentry_dropped, u64::from(dropped));
        record(
            shared,
            AuditEvent::EventsDropped {
                count: u64::from(dropped),
                source: "sentry".to_owned(),
            },
        );
    }
    match decoded.body {
        Body::Unknown => bump(&counters.unknown_types, 1),
        Body::Event { event, container_id } => {
            let id = container_id.as_deref().unwrap_or(&shared.container_id);
            match shared.route(id) {
                None => bump(&counters.foreign_container, 1),
                Some(route) if !filter::keep(route.level, &event) => bump(&counters.filtered, 1),
                Some(route) => {
                    bump(&shared.counters.recorded, 1);
                    route.sink.record(event);
                }
            }
        }
    }
}

/// Records one of the monitor's own events (a loss) for the sandbox's own
/// container.
fn record(shared: &Shared, event: AuditEvent) {
    if let Some(route) = shared.route(&shared.container_id) {
        bump(&shared.counters.recorded, 1);
        route.sink.record(event);
    }
}

impl Shared {
    fn route(&self, container_id: &str) -> Option<Route> {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(container_id)
            .cloned()
    }
}
