//! The containerd task API (v2) over ttrpc. Each call finds the container
//! and forwards to it; the work lives in `Container`. Blocking runsc calls
//! run on tokio's blocking pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::protobuf::{EnumOrUnknown, MessageField};
use containerd_shim::protos::ttrpc::{Code, Error as TtrpcError, Status as RpcStatus};
use containerd_shim::protos::types::task::Status as TaskStatus;
use containerd_shim::{api, Task, TtrpcContext, TtrpcResult};
use skillbox_sandbox::{BundleSpec, Outcome, PodRole, SandboxError};

use crate::config::{self, ShimConfig};
use crate::container::{Container, ContainerError, Exit, Status, StdioPaths};
use crate::events::{timestamp, EventSink, TaskEvent};
use crate::pod::PodError;
use crate::rootfs;
use crate::stats::metrics_any;
use crate::update::limits_within_ceiling;

/// The task service of one shim process.
#[derive(Clone)]
pub struct TaskService {
    pub runsc_root: PathBuf,
    /// The containerd namespace of this shim's containers (its `-namespace`).
    namespace: String,
    /// The config the current task was created under (used by Update).
    config: Arc<Mutex<Option<ShimConfig>>>,
    /// Every container of this shim: one, or a pod's (see service.rs).
    containers: Arc<Mutex<HashMap<String, Arc<Container>>>>,
    exit: Arc<ExitSignal>,
    events: Arc<dyn EventSink>,
}

fn rpc_error(code: Code, message: String) -> TtrpcError {
    TtrpcError::RpcStatus(RpcStatus {
        code: EnumOrUnknown::new(code),
        message,
        ..Default::default()
    })
}

impl From<ContainerError> for TtrpcError {
    fn from(err: ContainerError) -> Self {
        let code = match err {
            ContainerError::Sandbox(ref failed) if matches!(**failed, SandboxError::Spec { .. }) => {
                Code::FAILED_PRECONDITION
            }
            ContainerError::Enforce(_)
            | ContainerError::State { .. }
            | ContainerError::NoCgroup { .. }
            | ContainerError::Pod(_)
            | ContainerError::CheckpointUnsupported { .. } => Code::FAILED_PRECONDITION,
            ContainerError::ExecSpec { .. } => Code::INVALID_ARGUMENT,
            ContainerError::NoExec { .. } => Code::NOT_FOUND,
            ContainerError::ExecExists { .. } => Code::ALREADY_EXISTS,
            ContainerError::NoTerminal { .. } => Code::FAILED_PRECONDITION,
            ContainerError::Spec(_)
            | ContainerError::Stdio { .. }
            | ContainerError::PidFile { .. }
            | ContainerError::Runsc(_)
            | ContainerError::CheckpointDir { .. }
            | ContainerError::Sandbox(_)
            | ContainerError::EgressUpstreams { .. }
            | ContainerError::Cgroup(_) => Code::INTERNAL,
        };
        rpc_error(code, err.to_string())
    }
}

fn exited_at(
    exit: Option<Exit>,
) -> MessageField<containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp> {
    MessageField::from_option(exit.map(|exit| timestamp(exit.at)))
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> TtrpcResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| rpc_error(Code::INTERNAL, format!("shim worker failed: {err}")))
}

impl TaskService {
    pub fn new(runsc_root: &Path, exit: Arc<ExitSignal>, events: Arc<dyn EventSink>) -> TaskService {
        TaskService {
            runsc_root: runsc_root.to_owned(),
            namespace: String::new(),
            config: Arc::new(Mutex::new(None)),
            containers: Arc::new(Mutex::new(HashMap::new())),
            exit,
            events,
        }
    }

    /// Starts an exec and reports its TaskExecStarted, then its TaskExit.
    async fn start_exec(
        &self,
        container: Arc<Container>,
        exec_id: String,
    ) -> TtrpcResult<api::StartResponse> {
        let (starter, started_id) = (Arc::clone(&container), exec_id.clone());
        let pid = blocking(move || starter.start_exec(&started_id)).await??;
        let exec = container.exec(&exec_id)?;
        self.events
            .send(TaskEvent::ExecStarted {
                id: container.id.clone(),
                exec_id: exec_id.clone(),
                pid,
            })
            .await;
        let events = Arc::clone(&self.events);
        tokio::spawn(async move {
            let exit = exec.wait().await;
            events
                .send(TaskEvent::Exit {
                    id: container.id.clone(),
                    process: exec_id,
                    pid,
                    status: exit.status,
                    at: exit.at,
                })
                .await;
        });
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    /// The sandbox container `sandbox` that container `id` joins: it must
    /// run in this shim and not be a member itself.
    fn pod_sandbox(&self, id: &str, sandbox: &str) -> TtrpcResult<Arc<Container>> {
        let found = self.container(sandbox).map_err(|_| PodError::NoSandbox {
            id: id.to_owned(),
            sandbox: sandbox.to_owned(),
        });
        let found = found.map_err(ContainerError::from)?;
        if let Some(owner) = found.sandbox_id() {
            return Err(ContainerError::from(PodError::SandboxIsMember {
                id: id.to_owned(),
                sandbox: sandbox.to_owned(),
                owner: owner.to_owned(),
            })
            .into());
        }
        Ok(found)
    }

    /// The containers that joined the sandbox of container `id`.
    fn members_of(&self, id: &str) -> Vec<String> {
        let containers = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        let mut members: Vec<String> = containers
            .values()
            .filter(|container| container.sandbox_id() == Some(id))
            .map(|container| container.id.clone())
            .collect();
        members.sort();
        members
    }

    /// The containerd namespace the containers live in (given to
    /// `binary://` loggers).
    pub fn with_namespace(mut self, namespace: &str) -> TaskService {
        self.namespace = namespace.to_owned();
        self
    }

    fn container(&self, id: &str) -> TtrpcResult<Arc<Container>> {
        let containers = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        containers
            .get(id)
            .map(Arc::clone)
            .ok_or_else(|| rpc_error(Code::NOT_FOUND, format!("container {id} not found")))
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        tracing::info!(id = %req.id, bundle = %req.bundle, "create");
        if self.container(&req.id).is_ok() {
            return Err(rpc_error(
                Code::ALREADY_EXISTS,
                format!("container {} already exists in this shim", req.id),
            ));
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let (id, bundle, terminal) = (req.id.clone(), PathBuf::from(&req.bundle), req.terminal);
        let config_path = config::config_path(req.options.as_ref())
            .map_err(|message| rpc_error(Code::INVALID_ARGUMENT, message))?;
        let shim_config = config::load(config_path.as_deref())
            .map_err(|message| rpc_error(Code::FAILED_PRECONDITION, message))?;
        let root = self.runsc_root.clone();
        let namespace = self.namespace.clone();
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = Some(shim_config.clone());
        let mounts = req.rootfs.to_vec();
        let sandbox = match BundleSpec::pod_role_of(&bundle) {
            PodRole::Own => None,
            PodRole::Member { sandbox } => Some(self.pod_sandbox(&id, &sandbox)?),
        };
        // An image root is mounted (read-only) at <bundle>/rootfs first and
        // unmounted again if the sandbox cannot be created (rootfs.rs).
        let container = blocking(move || {
            rootfs::mount(&bundle, &mounts)
                .map_err(|err| rpc_error(Code::FAILED_PRECONDITION, err.to_string()))?;
            let created = match sandbox {
                None => Container::create(&id, &bundle, stdio, terminal, &root, &shim_config, &namespace),
                Some(sandbox) => {
                    Container::create_member(&id, &bundle, stdio, &sandbox, &shim_config, &namespace)
                }
            };
            created.map_err(|err| {
                if let Err(undo) = rootfs::unmount(&bundle) {
                    tracing::warn!(%undo, "image root left mounted");
                }
                TtrpcError::from(err)
            })
        })
        .await??;
        let container = Arc::new(container);
        let pid = container.pid;
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req.id.clone(), Arc::clone(&container));
        self.events
            .send(TaskEvent::Create {
                id: req.id.clone(),
                bundle: req.bundle.clone(),
                pid,
                stdio: container.stdio.clone(),
            })
            .await;
        // TaskExit goes out as soon as the sandbox pid is reaped, preceded
        // by TaskOOM when the memory limit killed it.
        let events = Arc::clone(&self.events);
        tokio::spawn(async move {
            let exit = container.wait().await;
            if exit.outcome == Outcome::Oom {
                events
                    .send(TaskEvent::Oom {
                        id: container.id.clone(),
                    })
                    .await;
            }
            events
                .send(TaskEvent::Exit {
                    id: container.id.clone(),
                    process: container.id.clone(),
                    pid,
                    status: exit.status,
                    at: exit.at,
                })
                .await;
        });
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let container = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            return self.start_exec(container, req.exec_id).await;
        }
        let pid = container.pid;
        blocking(move || container.start()).await??;
        self.events
            .send(TaskEvent::Start {
                id: req.id.clone(),
                pid,
            })
            .await;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        let container = self.container(&req.id)?;
        let (status, exit, pid, stdio) = match req.exec_id.as_str() {
            "" => {
                let (status, exit) = container.status();
                (status, exit, container.pid, container.stdio.clone())
            }
            exec_id => {
                let exec = container.exec(exec_id)?;
                let (status, exit) = exec.status();
                (status, exit, exec.pid(), exec.stdio.clone())
            }
        };
        let status = match status {
            Status::Created => TaskStatus::CREATED,
            Status::Running => TaskStatus::RUNNING,
            Status::Paused => TaskStatus::PAUSED,
            Status::Stopped => TaskStatus::STOPPED,
        };
        Ok(api::StateResponse {
            id: container.id.clone(),
            exec_id: req.exec_id.clone(),
            bundle: container.bundle.display().to_string(),
            pid,
            status: EnumOrUnknown::new(status),
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            exit_status: exit.map(|exit| exit.status).unwrap_or_default(),
            exited_at: exited_at(exit),
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let container = self.container(&req.id)?;
        let exit = match req.exec_id.as_str() {
            "" => container.wait().await,
            exec_id => container.exec(exec_id)?.wait().await,
        };
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: exited_at(Some(exit)),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        let (signal, all) = (req.signal, req.all);
        match req.exec_id {
            exec_id if exec_id.is_empty() => blocking(move || container.kill(signal, all)).await??,
            exec_id => blocking(move || container.kill_exec(&exec_id, signal)).await??,
        }
        Ok(api::Empty::new())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        let container = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            // As containerd's own shims do, no TaskDelete for an exec.
            let (pid, exit) = container.delete_exec(&req.exec_id)?;
            let exit = exit.unwrap_or(Exit::with_status(255));
            return Ok(api::DeleteResponse {
                pid,
                exit_status: exit.status,
                exited_at: exited_at(Some(exit)),
                ..Default::default()
            });
        }
        // Removing the sandbox would take its members' state with it.
        let members = self.members_of(&req.id);
        if !members.is_empty() {
            return Err(ContainerError::from(PodError::HasMembers {
                id: req.id.clone(),
                members,
            })
            .into());
        }
        let pid = container.pid;
        let exit = blocking(move || {
            let exit = container.delete();
            // After the sandbox (and its gofer) are gone.
            if let Err(err) = rootfs::unmount(&container.bundle) {
                tracing::warn!(%err, "image root left mounted");
            }
            exit
        })
        .await??;
        let last = {
            let mut containers = self.containers.lock().unwrap_or_else(|e| e.into_inner());
            containers.remove(&req.id);
            containers.is_empty()
        };
        // The namespace's runsc root goes with its last container (a root
        // other shims still use is not empty, and stays).
        if last {
            let _ = std::fs::remove_dir(&self.runsc_root);
        }
        let (status, at) = exit
            .map(|exit| (exit.status, exit.at))
            .unwrap_or((137, std::time::SystemTime::now()));
        self.events
            .send(TaskEvent::Delete {
                id: req.id.clone(),
                pid,
                status,
                at,
            })
            .await;
        Ok(api::DeleteResponse {
            pid,
            exit_status: status,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        blocking(move || container.set_paused(true)).await??;
        self.events.send(TaskEvent::Paused { id: req.id.clone() }).await;
        Ok(api::Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        blocking(move || container.set_paused(false)).await??;
        self.events.send(TaskEvent::Resumed { id: req.id.clone() }).await;
        Ok(api::Empty::new())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let container = self.container(&req.id)?;
        let stats = blocking(move || container.stats()).await?;
        Ok(api::StatsResponse {
            stats: MessageField::some(metrics_any(&stats)),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let container = self.container(&req.id)?;
        let pids = blocking(move || container.pids()).await??;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| containerd_shim::protos::types::task::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        let shim_config = self.config.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let shim_config = match shim_config {
            Some(loaded) => loaded,
            None => config::load(None).map_err(|message| rpc_error(Code::FAILED_PRECONDITION, message))?,
        };
        let update = limits_within_ceiling(&req.resources.value, &shim_config.node, &shim_config.origin)
            .map_err(|message| rpc_error(Code::FAILED_PRECONDITION, message))?;
        blocking(move || container.update(&update)).await??;
        Ok(api::Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let spec = req.spec.as_ref().map(|any| any.value.clone()).unwrap_or_default();
        container.add_exec(&req.exec_id, stdio, req.terminal, &spec)?;
        self.events
            .send(TaskEvent::ExecAdded {
                id: req.id.clone(),
                exec_id: req.exec_id.clone(),
            })
            .await;
        Ok(api::Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        container.resize(&req.exec_id, req.width, req.height)?;
        Ok(api::Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        if req.stdin {
            container.close_stdin(&req.exec_id)?;
        }
        Ok(api::Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        let request = crate::container::checkpoint_request(&req.path, req.options.as_ref())
            .map_err(|message| rpc_error(Code::INVALID_ARGUMENT, message))?;
        tracing::info!(id = %req.id, path = %request.image_path.display(), exit = request.exit, "checkpoint");
        blocking(move || container.checkpoint(&request.image_path, request.exit)).await??;
        Ok(api::Empty::new())
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.container(&req.id).map(|c| c.pid).unwrap_or_default();
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // Once its last container is gone the shim may exit.
        if self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
