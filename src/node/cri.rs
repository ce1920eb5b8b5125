//! The host containerd's CRI, reached on its socket as kubelet reaches it:
//! whether it answers, which containerd it is, which runtime handlers it
//! knows and which pods run under a handler.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ListPodSandboxRequest, PodSandboxState, StatusRequest, StatusResponse, VersionRequest};
use tonic::transport::{Channel, Endpoint, Uri};

/// How long one CRI call may take.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// How often [`Cri::wait_until`] asks again.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// What the CRI said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriView {
    /// `containerd`.
    pub runtime_name: String,
    /// `1.6.20~ds1`, `v2.1.9`.
    pub runtime_version: String,
    /// Its `RuntimeReady` condition.
    pub runtime_ready: bool,
    /// The runtime handlers it knows.
    pub handlers: BTreeSet<String>,
}

impl CriView {
    /// containerd 2.x, whose config is version 3.
    pub fn is_containerd_2(&self) -> bool {
        let version = self.runtime_version.trim_start_matches('v');
        version
            .split('.')
            .next()
            .and_then(|major| major.parse::<u32>().ok())
            >= Some(2)
    }
}

/// A pod sandbox that is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPod {
    pub namespace: String,
    pub name: String,
}

/// A client of one CRI socket, synchronous: every call runs on its own
/// runtime under [`CALL_LIMIT`].
pub struct Cri {
    runtime: tokio::runtime::Runtime,
    socket: PathBuf,
}

impl Cri {
    pub fn new(socket: &Path) -> anyhow::Result<Cri> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a tokio runtime for the CRI client")?;
        Ok(Cri {
            runtime,
            socket: socket.to_owned(),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One `Version` and one verbose `Status` call.
    pub fn view(&self) -> anyhow::Result<CriView> {
        let version = self.call("Version", |mut client| async move {
            client
                .version(VersionRequest {
                    version: "v1".to_owned(),
                })
                .await
        })?;
        let status = self.call("Status", |mut client| async move {
            client.status(StatusRequest { verbose: true }).await
        })?;
        Ok(CriView {
            runtime_name: version.runtime_name,
            runtime_version: version.runtime_version,
            runtime_ready: runtime_ready(&status),
            handlers: handlers_of(&status),
        })
    }

    /// The running pod sandboxes whose runtime handler is `handler`.
    pub fn running_pods(&self, handler: &str) -> anyhow::Result<Vec<RunningPod>> {
        let pods = self.call("ListPodSandbox", |mut client| async move {
            client
                .list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await
        })?;
        Ok(pods
            .items
            .into_iter()
            .filter(|pod| pod.runtime_handler == handler && pod.state == PodSandboxState::SandboxReady as i32)
            .map(|pod| {
                let meta = pod.metadata.unwrap_or_default();
                RunningPod {
                    namespace: meta.namespace,
                    name: meta.name,
                }
            })
            .collect())
    }

    /// Asks until the CRI answers and `done` holds, for at most `limit`;
    /// the error says what it last saw.
    pub fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&CriView) -> bool,
    ) -> anyhow::Result<CriView> {
        let start = Instant::now();
        loop {
            let last = match self.view() {
                Ok(view) if done(&view) => return Ok(view),
                Ok(view) => format!(
                    "it answers ({} {}, runtime ready: {}, handlers: {})",
                    view.runtime_name,
                    view.runtime_version,
                    view.runtime_ready,
                    view.handlers.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                Err(err) => format!("{err:#}"),
            };
            if start.elapsed() >= limit {
                anyhow::bail!(
                    "containerd's CRI on {} did not {what} within {limit:?}; last: {last}",
                    self.socket.display()
                );
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    fn call<T, F, Fut>(&self, name: &str, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let socket = self.socket.clone();
        let answer = self.runtime.block_on(async move {
            let endpoint = Endpoint::try_from("http://[::]:0").expect("a valid placeholder URI");
            let channel = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
                }
            }));
            let channel = tokio::time::timeout(CALL_LIMIT, channel).await;
            match channel {
                Err(_) => Err(format!("no connection within {CALL_LIMIT:?}")),
                Ok(Err(err)) => Err(format!("cannot connect: {}", error_chain(&err))),
                Ok(Ok(channel)) => {
                    match tokio::time::timeout(CALL_LIMIT, f(RuntimeServiceClient::new(channel))).await {
                        Err(_) => Err(format!("no answer within {CALL_LIMIT:?}")),
                        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                        Ok(Ok(response)) => Ok(response.into_inner()),
                    }
                }
            }
        });
        answer.map_err(|why| anyhow::anyhow!("CRI {name} on {}: {why}", self.socket.display()))
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

fn runtime_ready(status: &StatusResponse) -> bool {
    status
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.r#type == "RuntimeReady" && c.status)
}

/// The handlers a `Status` names: its `runtime_handlers` (containerd 2.x),
/// else the runtimes of the CRI config in its verbose info (1.6 and 1.7
/// send `info.config` as JSON with `containerd.runtimes`).
pub fn handlers_of(status: &StatusResponse) -> BTreeSet<String> {
    let listed: BTreeSet<String> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.clone())
        .filter(|name| !name.is_empty())
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    status
        .info
        .get("config")
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|config| {
            config
                .pointer("/containerd/runtimes")
                .and_then(|runtimes| runtimes.as_object())
                .map(|runtimes| runtimes.keys().cloned().collect())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::RuntimeHandler;

    #[test]
    fn handlers_come_from_the_list_when_containerd_sends_one() {
        let status = StatusResponse {
            runtime_handlers: vec![
                RuntimeHandler {
                    name: "runc".into(),
                    features: None,
                },
                RuntimeHandler {
                    name: "skillbox".into(),
                    features: None,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            handlers_of(&status),
            ["runc", "skillbox"].map(String::from).into()
        );
    }

    #[test]
    fn handlers_come_from_the_verbose_config_of_containerd_1() {
        let mut status = StatusResponse::default();
        status.info.insert(
            "config".into(),
            r#"{"containerd":{"defaultRuntimeName":"runc","runtimes":{"runc":{},"skillbox":{"runtimeType":"io.containerd.skillbox.v1"}}}}"#.into(),
        );
        assert_eq!(
            handlers_of(&status),
            ["runc", "skillbox"].map(String::from).into()
        );
        status.info.insert("config".into(), "not json".into());
        assert!(handlers_of(&status).is_empty());
    }

    #[test]
    fn containerd_major_version_is_read_with_or_without_a_v() {
        let view = |v: &str| CriView {
            runtime_name: "containerd".into(),
            runtime_version: v.into(),
            runtime_ready: true,
            handlers: BTreeSet::new(),
        };
        assert!(!view("1.6.20~ds1").is_containerd_2());
        assert!(!view("v1.7.24").is_containerd_2());
        assert!(view("v2.1.9").is_containerd_2());
        assert!(view("2.0.0").is_containerd_2());
        assert!(!view("").is_containerd_2());
    }
}
