//! Delivers the shim's events to containerd's ttrpc socket in order, across
//! a containerd restart, and lets the shim wait for them before it exits.
//!
//! The `containerd-shim` 0.11 `RemotePublisher` keeps one connection. After
//! containerd restarts, its first forward fails on the dead connection, the
//! event is requeued only after a 1 s sleep (up to 5 times), and whatever is
//! still queued is lost when the shim exits: a TaskExit and TaskDelete sent
//! just after a restart never reached containerd (see
//! `docs/containerd-shim-facts.md`). This publisher reconnects at once on any
//! transport error, retries with a short backoff while containerd is away,
//! and `flush` waits for the queue to drain.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::{Client, EventsClient};
use containerd_shim::protos::ttrpc;
use tokio::sync::{mpsc, watch};

/// How long one forward may take before the connection is considered dead.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long an event is retried while containerd is unreachable.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// A queue of events for containerd with one delivery task.
pub struct Publisher {
    queue: mpsc::UnboundedSender<Envelope>,
    /// Events queued or in flight.
    pending: Arc<watch::Sender<usize>>,
}

/// `unix://<path>` for a bare socket path, as containerd passes
/// `TTRPC_ADDRESS`.
fn socket_uri(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("unix://{address}")
    }
}

impl Publisher {
    /// Starts the delivery task (on the current tokio runtime) for the
    /// ttrpc socket at `address`. Connecting waits for the first event.
    pub fn new(address: &str) -> Publisher {
        let (queue, receiver) = mpsc::unbounded_channel();
        let pending = Arc::new(watch::Sender::new(0));
        tokio::spawn(deliver(socket_uri(address), receiver, Arc::clone(&pending)));
        Publisher { queue, pending }
    }

    /// Queues `event` on `topic` in `namespace`; never blocks.
    pub fn publish(&self, topic: &str, namespace: &str, event: Box<dyn MessageDyn>) {
        let event = match containerd_shim::util::convert_to_any(event) {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(%err, topic, "cannot encode an event for containerd");
                return;
            }
        };
        let mut envelope = Envelope::new();
        envelope.set_topic(topic.to_owned());
        envelope.set_namespace(namespace.to_owned());
        envelope.timestamp =
            containerd_shim::protos::protobuf::MessageField::some(timestamp(std::time::SystemTime::now()));
        envelope.set_event(event);
        self.pending.send_modify(|pending| *pending += 1);
        if self.queue.send(envelope).is_err() {
            self.pending.send_modify(|pending| *pending -= 1);
            tracing::warn!(topic, "the event queue is closed; event dropped");
        }
    }

    /// Waits until every queued event was delivered or given up, for at
    /// most `timeout`. Returns whether the queue drained.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let mut pending = self.pending.subscribe();
        let drained = tokio::time::timeout(timeout, pending.wait_for(|pending| *pending == 0)).await;
        drained.is_ok()
    }
}

async fn connect(uri: &str) -> Result<EventsClient, ttrpc::Error> {
    Ok(EventsClient::new(Client::connect(uri).await?))
}

/// Forwards each queued envelope in order. A transport error drops the
/// connection and retries at once on a new one, then with a growing pause
/// up to `MAX_BACKOFF`, for up to `GIVE_UP_AFTER`. An error status from
/// containerd is final: the same event would be refused again.
async fn deliver(
    uri: String,
    mut queue: mpsc::UnboundedReceiver<Envelope>,
    pending: Arc<watch::Sender<usize>>,
) {
    let mut client: Option<EventsClient> = None;
    while let Some(envelope) = queue.recv().await {
        let topic = envelope.topic.clone();
        let mut request = ForwardRequest::new();
        request.set_envelope(envelope);
        let first_try = Instant::now();
        let mut backoff = Duration::ZERO;
        loop {
            let result = match client.take() {
                Some(connected) => Ok(connected),
                None => connect(&uri).await,
            };
            let result = match result {
                Ok(connected) => {
                    let context = ttrpc::context::with_duration(FORWARD_TIMEOUT);
                    let forwarded = connected.forward(context, &request).await;
                    client = Some(connected);
                    forwarded.map(|_| ())
                }
                Err(err) => Err(err),
            };
            match result {
                Ok(()) => break,
                Err(ttrpc::Error::RpcStatus(status)) => {
                    tracing::warn!(topic, ?status, "containerd refused an event");
                    break;
                }
                Err(err) if first_try.elapsed() >= GIVE_UP_AFTER => {
                    tracing::warn!(%err, topic, "containerd unreachable; event dropped");
                    break;
                }
                Err(err) => {
                    tracing::debug!(%err, topic, "forwarding an event failed; reconnecting");
                    client = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF);
                }
            }
        }
        pending.send_modify(|pending| *pending -= 1);
    }
}

/// A protobuf timestamp for `at`.
pub fn timestamp(at: SystemTime) -> Timestamp {
    let since_epoch = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut stamp = Timestamp::new();
    stamp.seconds = since_epoch.as_secs() as i64;
    stamp.nanos = since_epoch.subsec_nanos() as i32;
    stamp
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use containerd_shim::protos::api::Empty;
    use containerd_shim::protos::events::task::TaskExit;
    use containerd_shim::protos::shim_async::{create_events, Events};
    use containerd_shim::protos::ttrpc::asynchronous::{Server, TtrpcContext};

    use super::*;

    /// A stand-in for containerd's events service, recording topics.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    #[async_trait]
    impl Events for Recorder {
        async fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
            self.0.lock().unwrap().push(req.envelope.topic.clone());
            Ok(Empty::new())
        }
    }

    async fn serve(path: &std::path::Path, seen: &Arc<Mutex<Vec<String>>>) -> Server {
        let _ = std::fs::remove_file(path);
        let mut server = Server::new()
            .bind(&socket_uri(&path.display().to_string()))
            .unwrap()
            .register_service(create_events(Arc::new(Recorder(Arc::clone(seen)))));
        server.start().await.unwrap();
        server
    }

    fn exit() -> Box<dyn MessageDyn> {
        Box::new(TaskExit::new())
    }

    #[tokio::test]
    async fn events_survive_a_restart_of_the_receiver_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ttrpc.sock");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut server = serve(&socket, &seen).await;
        let publisher = Publisher::new(&socket.display().to_string());
        publisher.publish("/tasks/start", "ns", exit());
        assert!(publisher.flush(Duration::from_secs(5)).await);

        // The receiver goes away; events queued meanwhile wait for it.
        server.shutdown().await.unwrap();
        drop(server);
        publisher.publish("/tasks/exit", "ns", exit());
        publisher.publish("/tasks/delete", "ns", exit());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!publisher.flush(Duration::from_millis(10)).await);

        let started = Instant::now();
        let _server = serve(&socket, &seen).await;
        assert!(publisher.flush(Duration::from_secs(5)).await);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            *seen.lock().unwrap(),
            ["/tasks/start", "/tasks/exit", "/tasks/delete"]
        );
    }
}
