//! The CRI v1 client over containerd's Unix socket, synchronous for the
//! tests: every call runs on the client's own tokio runtime under a
//! deadline, so a hung call fails the test naming the call.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long a call may take unless the call says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// A CRI call that failed or did not answer in time.
#[derive(Debug, Clone)]
pub enum CallError {
    Failed {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    Hung {
        call: &'static str,
        deadline: Duration,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Failed { call, code, message } => {
                write!(f, "{call} failed ({code:?}): {message}")
            }
            CallError::Hung { call, deadline } => {
                write!(f, "{call} hung: no answer within {deadline:?}")
            }
        }
    }
}

impl std::error::Error for CallError {}

/// The runtime and image services of one containerd.
#[derive(Debug)]
pub struct Cri {
    runtime: tokio::runtime::Runtime,
    socket: PathBuf,
    /// Replaced by [`Cri::reconnect`] once containerd was restarted.
    channel: Mutex<Channel>,
}

impl Cri {
    /// A client of the CRI plugin listening on `socket`.
    pub fn connect(socket: &Path) -> Cri {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let channel = Mutex::new(open_channel(&runtime, socket));
        Cri {
            runtime,
            socket: socket.to_owned(),
            channel,
        }
    }

    /// Drops the connection and opens a new one on the same socket (as
    /// kubelet does when containerd comes back): later calls go to the
    /// containerd listening there now.
    pub fn reconnect(&self) {
        let channel = open_channel(&self.runtime, &self.socket);
        *self.channel.lock().unwrap_or_else(PoisonError::into_inner) = channel;
    }

    fn channel(&self) -> Channel {
        self.channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs one call on the runtime service under `deadline`.
    fn runtime_call<T, F, Fut>(&self, call: &'static str, deadline: Duration, f: F) -> Result<T, CallError>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = RuntimeServiceClient::new(self.channel());
        self.finish(call, deadline, f(client))
    }

    fn finish<T, Fut>(&self, call: &'static str, deadline: Duration, future: Fut) -> Result<T, CallError>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.runtime
            .block_on(async { tokio::time::timeout(deadline, future).await })
            .map_err(|_| CallError::Hung { call, deadline })?
            .map(tonic::Response::into_inner)
            .map_err(|status| CallError::Failed {
                call,
                code: status.code(),
                message: status.message().to_owned(),
            })
    }

    pub fn version(&self) -> Result<VersionResponse, CallError> {
        self.runtime_call("Version", DEFAULT_DEADLINE, |mut c| async move {
            c.version(VersionRequest {
                version: "v1".to_owned(),
            })
            .await
        })
    }

    pub fn run_pod_sandbox(&self, config: PodSandboxConfig, handler: &str) -> Result<String, CallError> {
        let request = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.to_owned(),
        };
        self.runtime_call("RunPodSandbox", Duration::from_secs(120), |mut c| async move {
            c.run_pod_sandbox(request).await
        })
        .map(|response| response.pod_sandbox_id)
    }

    pub fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatusResponse, CallError> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: true,
        };
        self.runtime_call("PodSandboxStatus", DEFAULT_DEADLINE, |mut c| async move {
            c.pod_sandbox_status(request).await
        })
    }

    pub fn list_pod_sandboxes(&self, labels: &[(&str, &str)]) -> Result<Vec<PodSandbox>, CallError> {
        let request = ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
        };
        self.runtime_call("ListPodSandbox", DEFAULT_DEADLINE, |mut c| async move {
            c.list_pod_sandbox(request).await
        })
        .map(|response| response.items)
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), CallError> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.runtime_call("StopPodSandbox", DEFAULT_DEADLINE, |mut c| async move {
            c.stop_pod_sandbox(request).await
        })
        .map(drop)
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), CallError> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.runtime_call("RemovePodSandbox", DEFAULT_DEADLINE, |mut c| async move {
            c.remove_pod_sandbox(request).await
        })
        .map(drop)
    }

    pub fn create_container(
        &self,
        pod_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String, CallError> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        self.runtime_call("CreateContainer", DEFAULT_DEADLINE, |mut c| async move {
            c.create_container(request).await
        })
        .map(|response| response.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), CallError> {
        let request = StartContainerRequest {
            container_id: id.to_owned(),
        };
        self.runtime_call("StartContainer", DEFAULT_DEADLINE, |mut c| async move {
            c.start_container(request).await
        })
        .map(drop)
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatus, CallError> {
        let request = ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        self.runtime_call("ContainerStatus", DEFAULT_DEADLINE, |mut c| async move {
            c.container_status(request).await
        })
        .map(|response| response.status.unwrap_or_default())
    }

    pub fn list_containers(&self, pod_id: &str) -> Result<Vec<Container>, CallError> {
        let request = ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.to_owned(),
                ..Default::default()
            }),
        };
        self.runtime_call("ListContainers", DEFAULT_DEADLINE, |mut c| async move {
            c.list_containers(request).await
        })
        .map(|response| response.containers)
    }

    /// StopContainer with kubelet's grace period `timeout` (seconds); the
    /// call's own deadline leaves 60 s beyond it.
    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<(), CallError> {
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout,
        };
        let deadline = Duration::from_secs(timeout.max(0) as u64 + 60);
        self.runtime_call("StopContainer", deadline, |mut c| async move {
            c.stop_container(request).await
        })
        .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<(), CallError> {
        let request = RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        self.runtime_call("RemoveContainer", DEFAULT_DEADLINE, |mut c| async move {
            c.remove_container(request).await
        })
        .map(drop)
    }

    /// ExecSync of `cmd` with its own `timeout` (seconds, as kubelet's
    /// probes give it); the call's deadline leaves 30 s beyond it.
    pub fn exec_sync(&self, id: &str, cmd: &[&str], timeout: i64) -> Result<ExecSyncResponse, CallError> {
        let request = ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: cmd.iter().map(|arg| arg.to_string()).collect(),
            timeout,
        };
        let deadline = Duration::from_secs(timeout.max(0) as u64 + 30);
        self.runtime_call(
            "ExecSync",
            deadline,
            |mut c| async move { c.exec_sync(request).await },
        )
    }

    /// Exec, the streaming call behind `kubectl exec`: `cmd` in container
    /// `id` with stdout, and stderr unless `tty` (CRI allows no stderr on a
    /// terminal). Returns the URL on containerd's streaming server where the
    /// session is to be opened ([`crate::stream`]).
    pub fn exec(&self, id: &str, cmd: &[&str], tty: bool, stdin: bool) -> Result<String, CallError> {
        let request = ExecRequest {
            container_id: id.to_owned(),
            cmd: cmd.iter().map(|arg| arg.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        };
        self.runtime_call(
            "Exec",
            DEFAULT_DEADLINE,
            |mut c| async move { c.exec(request).await },
        )
        .map(|response| response.url)
    }

    pub fn container_stats(&self, id: &str) -> Result<ContainerStats, CallError> {
        let request = ContainerStatsRequest {
            container_id: id.to_owned(),
        };
        self.runtime_call("ContainerStats", DEFAULT_DEADLINE, |mut c| async move {
            c.container_stats(request).await
        })
        .map(|response| response.stats.unwrap_or_default())
    }

    pub fn update_container_resources(
        &self,
        id: &str,
        resources: LinuxContainerResources,
    ) -> Result<(), CallError> {
        let request = UpdateContainerResourcesRequest {
            container_id: id.to_owned(),
            linux: Some(resources),
            ..Default::default()
        };
        self.runtime_call("UpdateContainerResources", DEFAULT_DEADLINE, |mut c| async move {
            c.update_container_resources(request).await
        })
        .map(drop)
    }

    /// ImageStatus of `image`: `None` when containerd does not have it.
    pub fn image_status(&self, image: &str) -> Result<Option<Image>, CallError> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        };
        let client = ImageServiceClient::new(self.channel());
        let future = async move {
            let mut client = client;
            client.image_status(request).await
        };
        self.finish("ImageStatus", DEFAULT_DEADLINE, future)
            .map(|response| response.image)
    }
}

/// A channel to the Unix socket `socket`, connecting on first use.
fn open_channel(runtime: &tokio::runtime::Runtime, socket: &Path) -> Channel {
    let socket = socket.to_owned();
    runtime.block_on(async {
        Endpoint::try_from("http://[::]:0")
            .expect("a valid placeholder URI")
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
                }
            }))
    })
}
