//! The recorder: accepts every TCP connection the sandbox makes (the NAT
//! table redirects them all to it), notes where the connection was meant to
//! go (the original destination, from conntrack) and what its first bytes
//! said, records an `observed_connection` event, and closes it. Nothing is
//! ever sent on or answered.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::OriginalDst};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::first_bytes::inspect;
use super::judge::DeclaredPolicy;
use super::sinkhole::Sinkhole;
use crate::events::{EgressEvent, EventSink, ObservedConnectionEvent, Protocol};

/// How many bytes of a connection are looked at.
const FIRST_BYTES: usize = 4096;
/// Connections served at once; more wait in the listen backlog.
const MAX_OPEN: usize = 64;

/// What the recorder needs to name and judge a connection.
pub struct RecorderContext {
    pub sinkhole: Arc<Sinkhole>,
    pub declared: DeclaredPolicy,
    pub events: Arc<dyn EventSink>,
    /// How long a client gets to send its first bytes (a client that waits
    /// for the server to speak first sends none).
    pub first_bytes_timeout: Duration,
}

/// A running recorder; dropping it stops it.
#[derive(Debug)]
pub struct Recorder {
    task: JoinHandle<()>,
}

impl Recorder {
    /// Serves on `listener`, bound elsewhere (in the outer namespace).
    /// Must be called within a tokio runtime.
    pub fn from_std(listener: std::net::TcpListener, context: RecorderContext) -> std::io::Result<Recorder> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let context = Arc::new(context);
        let slots = Arc::new(Semaphore::new(MAX_OPEN));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let context = Arc::clone(&context);
                tokio::spawn(async move {
                    record(stream, &context).await;
                    drop(permit);
                });
            }
        });
        Ok(Recorder { task })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the sandbox addressed the connection before the NAT table
/// redirected it.
fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let raw = getsockopt(stream, OriginalDst).ok()?;
    let ip = Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr));
    Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(raw.sin_port)))
}

async fn record(mut stream: TcpStream, context: &RecorderContext) {
    let Some(destination) = original_destination(&stream) else {
        tracing::warn!("observing recorder: a connection without an original destination; closed");
        return;
    };
    let mut buffer = vec![0; FIRST_BYTES];
    let mut received = 0;
    // Until the client stops sending, the buffer is full, or it is quiet
    // for the timeout.
    while received < FIRST_BYTES {
        match tokio::time::timeout(context.first_bytes_timeout, stream.read(&mut buffer[received..])).await {
            Ok(Ok(n)) if n > 0 => received += n,
            _ => break,
        }
        if inspect(&buffer[..received]).recognised() {
            break;
        }
    }
    let seen = inspect(&buffer[..received]);
    let name = context.sinkhole.name_of(destination.ip());
    let (verdict, rule) = context
        .declared
        .judge(name.as_deref(), destination.ip(), destination.port());
    let event = EgressEvent::ObservedConnection(ObservedConnectionEvent {
        destination: destination.ip(),
        port: destination.port(),
        protocol: Protocol::Tcp,
        name,
        verdict,
        rule,
        tls_sni: seen.tls_sni,
        http_method: seen.http_method,
        http_host: seen.http_host,
        http_path: seen.http_path,
        bytes: received,
    });
    if let Err(err) = context.events.record(&event) {
        tracing::error!(error = %err, %destination, "cannot record an observed connection");
    }
}
