//! The containerd task API (v2) over ttrpc. The `Task` impl only forwards
//! each call to a `task_*` method that takes no ttrpc context (so unit
//! tests call them directly); each looks up the container, asks it through
//! the [`Instance`] seam, and publishes the task events. Blocking container
//! calls run on tokio's blocking pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

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
use crate::instance::{CreateRequest, Instance};
use crate::pod::PodError;
use crate::stats::metrics_any;
use crate::update::limits_within_ceiling;

#[cfg(test)]
mod tests;

/// How long a TaskExit waits for the Kills of its container being served.
const KILL_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One Kill being served, counted while it lives.
struct KillInFlight(watch::Sender<usize>);

impl KillInFlight {
    fn start(count: watch::Sender<usize>) -> KillInFlight {
        count.send_modify(|in_flight| *in_flight += 1);
        KillInFlight(count)
    }
}

impl Drop for KillInFlight {
    fn drop(&mut self) {
        self.0.send_modify(|in_flight| *in_flight -= 1);
    }
}

/// How long TaskDelete waits for the container's TaskExit to go out (it is
/// sent as soon as the exit is recorded, which Delete waits for).
const EXIT_REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The task service of one shim process, over containers of type `I`.
pub struct TaskService<I: Instance = Container> {
    pub runsc_root: PathBuf,
    /// The containerd namespace of this shim's containers (its `-namespace`).
    namespace: String,
    /// The config the current task was created under (used by Update).
    config: Arc<Mutex<Option<ShimConfig>>>,
    /// Every container of this shim: one, or a pod's (see service.rs).
    containers: Arc<Mutex<HashMap<String, Arc<I>>>>,
    /// Per container, whether its TaskExit went out: TaskDelete waits for
    /// it, so containerd always sees the exit first.
    exits_reported: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
    /// Per container, how many Kills of its init process are being served:
    /// its TaskExit waits for them, so containerd gets a Kill's answer
    /// before it deletes the task and closes the connection (`runsc kill`
    /// can outlast the process it ends).
    kills_in_flight: Arc<Mutex<HashMap<String, watch::Sender<usize>>>>,
    exit: Arc<ExitSignal>,
    events: Arc<dyn EventSink>,
}

impl<I: Instance> Clone for TaskService<I> {
    fn clone(&self) -> Self {
        TaskService {
            runsc_root: self.runsc_root.clone(),
            namespace: self.namespace.clone(),
            config: Arc::clone(&self.config),
            containers: Arc::clone(&self.containers),
            exits_reported: Arc::clone(&self.exits_reported),
            kills_in_flight: Arc::clone(&self.kills_in_flight),
            exit: Arc::clone(&self.exit),
            events: Arc::clone(&self.events),
        }
    }
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
            | ContainerError::Rootfs(_)
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<I: Instance> TaskService<I> {
    pub fn new(runsc_root: &Path, exit: Arc<ExitSignal>, events: Arc<dyn EventSink>) -> Self {
        TaskService {
            runsc_root: runsc_root.to_owned(),
            namespace: String::new(),
            config: Arc::new(Mutex::new(None)),
            containers: Arc::new(Mutex::new(HashMap::new())),
            exits_reported: Arc::new(Mutex::new(HashMap::new())),
            kills_in_flight: Arc::new(Mutex::new(HashMap::new())),
            exit,
            events,
        }
    }

    /// The containerd namespace the containers live in (given to
    /// `binary://` loggers).
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }

    fn container(&self, id: &str) -> TtrpcResult<Arc<I>> {
        lock(&self.containers)
            .get(id)
            .map(Arc::clone)
            .ok_or_else(|| rpc_error(Code::NOT_FOUND, format!("container {id} not found")))
    }

    /// The sandbox container `sandbox` that container `id` joins: it must
    /// run in this shim and not be a member itself.
    fn pod_sandbox(&self, id: &str, sandbox: &str) -> TtrpcResult<Arc<I>> {
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
        let mut members: Vec<String> = lock(&self.containers)
            .values()
            .filter(|container| container.sandbox_id() == Some(id))
            .map(|container| container.id().to_owned())
            .collect();
        members.sort();
        members
    }

    /// Reports the init process's exit once it happens: TaskOOM first when
    /// the memory limit killed it, then TaskExit.
    fn report_exit(&self, container: Arc<I>) {
        let events = Arc::clone(&self.events);
        let (reported, receiver) = watch::channel(false);
        lock(&self.exits_reported).insert(container.id().to_owned(), receiver);
        let mut kills = self.kills_of(container.id()).subscribe();
        tokio::spawn(async move {
            let Ok(exit) = container.wait("").await else {
                return;
            };
            let id = container.id().to_owned();
            let answered = kills.wait_for(|in_flight| *in_flight == 0);
            if tokio::time::timeout(KILL_ANSWER_WAIT, answered).await.is_err() {
                tracing::warn!(%id, "TaskExit sent while a Kill is still being served");
            }
            if exit.outcome == Outcome::Oom {
                events.send(TaskEvent::Oom { id: id.clone() }).await;
            }
            events
                .send(TaskEvent::Exit {
                    process: id.clone(),
                    id,
                    pid: container.pid(),
                    status: exit.status,
                    at: exit.at,
                })
                .await;
            let _ = reported.send(true);
        });
    }

    /// Ends the container when its policy's deadline passes before it
    /// exits (a timer on the runtime, no thread of its own).
    fn watch_deadline(&self, container: Arc<I>) {
        let Some(limit) = container.deadline() else {
            return;
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = container.wait("") => {}
                _ = tokio::time::sleep(limit) => {
                    let expiring = Arc::clone(&container);
                    match tokio::task::spawn_blocking(move || expiring.expire()).await {
                        Ok(Err(err)) => tracing::warn!(id = container.id(), %err, "cannot end the container at its deadline"),
                        Err(err) => tracing::warn!(id = container.id(), %err, "the deadline's worker failed"),
                        Ok(Ok(())) => {}
                    }
                }
            }
        });
    }

    /// Waits (a bounded while) until container `id`'s TaskExit went out.
    async fn exit_reported(&self, id: &str) {
        let receiver = lock(&self.exits_reported).remove(id);
        if let Some(mut receiver) = receiver {
            let reported = receiver.wait_for(|reported| *reported);
            if tokio::time::timeout(EXIT_REPORT_WAIT, reported).await.is_err() {
                tracing::warn!(%id, "TaskDelete sent before TaskExit went out");
            }
        }
    }

    pub async fn task_create(&self, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        tracing::info!(id = %req.id, bundle = %req.bundle, "create");
        if self.container(&req.id).is_ok() {
            return Err(rpc_error(
                Code::ALREADY_EXISTS,
                format!("container {} already exists in this shim", req.id),
            ));
        }
        let config_path = config::config_path(req.options.as_ref())
            .map_err(|message| rpc_error(Code::INVALID_ARGUMENT, message))?;
        let shim_config = config::load(config_path.as_deref())
            .map_err(|message| rpc_error(Code::FAILED_PRECONDITION, message))?;
        *lock(&self.config) = Some(shim_config.clone());
        // The one read of the bundle's spec in this shim.
        let spec = BundleSpec::load(Path::new(&req.bundle)).map_err(ContainerError::from)?;
        let sandbox = match spec.pod_role() {
            PodRole::Own => None,
            PodRole::Member { sandbox } => Some(self.pod_sandbox(&req.id, &sandbox)?),
        };
        let (id, root, namespace) = (req.id.clone(), self.runsc_root.clone(), self.namespace.clone());
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let (terminal, rootfs) = (req.terminal, req.rootfs.to_vec());
        let container = blocking(move || {
            let request = CreateRequest {
                id: &id,
                spec,
                stdio,
                terminal,
                rootfs: &rootfs,
                runsc_root: &root,
                config: &shim_config,
                namespace: &namespace,
            };
            match sandbox {
                None => I::create(&request),
                Some(sandbox) => I::create_member(&request, &sandbox),
            }
        })
        .await??;
        let container = Arc::new(container);
        let pid = container.pid();
        let stdio = container.process("")?.stdio;
        lock(&self.containers).insert(req.id.clone(), Arc::clone(&container));
        self.events
            .send(TaskEvent::Create {
                id: req.id.clone(),
                bundle: req.bundle.clone(),
                pid,
                stdio,
            })
            .await;
        self.report_exit(container);
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    pub async fn task_start(&self, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let container = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            return self.start_exec(container, req.exec_id).await;
        }
        let pid = container.pid();
        let started = Arc::clone(&container);
        blocking(move || started.start()).await??;
        self.watch_deadline(container);
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

    /// Starts an exec and reports its TaskExecStarted, then its TaskExit.
    async fn start_exec(&self, container: Arc<I>, exec_id: String) -> TtrpcResult<api::StartResponse> {
        let (starter, started_id) = (Arc::clone(&container), exec_id.clone());
        let pid = blocking(move || starter.start_exec(&started_id)).await??;
        self.events
            .send(TaskEvent::ExecStarted {
                id: container.id().to_owned(),
                exec_id: exec_id.clone(),
                pid,
            })
            .await;
        let events = Arc::clone(&self.events);
        tokio::spawn(async move {
            let Ok(exit) = container.wait(&exec_id).await else {
                return;
            };
            events
                .send(TaskEvent::Exit {
                    id: container.id().to_owned(),
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

    pub async fn task_state(&self, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        let status = match process.status {
            Status::Created => TaskStatus::CREATED,
            Status::Running => TaskStatus::RUNNING,
            Status::Paused => TaskStatus::PAUSED,
            Status::Stopped => TaskStatus::STOPPED,
        };
        Ok(api::StateResponse {
            id: container.id().to_owned(),
            exec_id: req.exec_id.clone(),
            bundle: container.bundle().display().to_string(),
            pid: process.pid,
            status: EnumOrUnknown::new(status),
            stdin: process.stdio.stdin,
            stdout: process.stdio.stdout,
            stderr: process.stdio.stderr,
            exit_status: process.exit.map(|exit| exit.status).unwrap_or_default(),
            exited_at: exited_at(process.exit),
            ..Default::default()
        })
    }

    pub async fn task_wait(&self, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let container = self.container(&req.id)?;
        let exit = container.wait(&req.exec_id).await?;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: exited_at(Some(exit)),
            ..Default::default()
        })
    }

    pub async fn task_kill(&self, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        let _serving = req
            .exec_id
            .is_empty()
            .then(|| KillInFlight::start(self.kills_of(&req.id)));
        blocking(move || container.kill(&req.exec_id, req.signal, req.all)).await??;
        Ok(api::Empty::new())
    }

    /// The count of container `id`'s Kills being served.
    fn kills_of(&self, id: &str) -> watch::Sender<usize> {
        lock(&self.kills_in_flight)
            .entry(id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    pub async fn task_delete(&self, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
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
        // Removing a running sandbox would take its members with it; once
        // it has stopped, its members are gone too and go with it (a pod
        // can always be removed).
        let members = self.members_of(&req.id);
        if !members.is_empty() {
            if container.process("")?.status != Status::Stopped {
                return Err(ContainerError::from(PodError::HasMembers {
                    id: req.id.clone(),
                    members,
                })
                .into());
            }
            for member in members {
                tracing::info!(id = %member, sandbox = %req.id, "deleting a member of a stopped sandbox");
                self.delete_container(&member).await?;
            }
        }
        let (pid, status, at) = self.delete_container(&req.id).await?;
        Ok(api::DeleteResponse {
            pid,
            exit_status: status,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    /// Deletes container `id` and reports its TaskDelete; its pid, exit
    /// status and exit time.
    async fn delete_container(&self, id: &str) -> TtrpcResult<(u32, u32, std::time::SystemTime)> {
        let container = self.container(id)?;
        let pid = container.pid();
        let exit = blocking(move || container.delete()).await??;
        let last = {
            let mut containers = lock(&self.containers);
            containers.remove(id);
            containers.is_empty()
        };
        lock(&self.kills_in_flight).remove(id);
        // The namespace's runsc root goes with its last container (a root
        // other shims still use is not empty, and stays).
        if last {
            let _ = std::fs::remove_dir(&self.runsc_root);
        }
        let (status, at) = exit
            .map(|exit| (exit.status, exit.at))
            .unwrap_or((137, std::time::SystemTime::now()));
        self.exit_reported(id).await;
        self.events
            .send(TaskEvent::Delete {
                id: id.to_owned(),
                pid,
                status,
                at,
            })
            .await;
        Ok((pid, status, at))
    }

    pub async fn task_pause(&self, id: &str, paused: bool) -> TtrpcResult<api::Empty> {
        let container = self.container(id)?;
        blocking(move || container.set_paused(paused)).await??;
        let event = match paused {
            true => TaskEvent::Paused { id: id.to_owned() },
            false => TaskEvent::Resumed { id: id.to_owned() },
        };
        self.events.send(event).await;
        Ok(api::Empty::new())
    }

    pub async fn task_stats(&self, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let container = self.container(&req.id)?;
        let stats = blocking(move || container.stats()).await?;
        Ok(api::StatsResponse {
            stats: MessageField::some(metrics_any(&stats)),
            ..Default::default()
        })
    }

    pub async fn task_pids(&self, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
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

    pub async fn task_update(&self, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        let shim_config = lock(&self.config).clone();
        let shim_config = match shim_config {
            Some(loaded) => loaded,
            None => config::load(None).map_err(|message| rpc_error(Code::FAILED_PRECONDITION, message))?,
        };
        let update = limits_within_ceiling(&req.resources.value, &shim_config.node, &shim_config.origin)
            .map_err(|message| rpc_error(Code::FAILED_PRECONDITION, message))?;
        blocking(move || container.update(&update)).await??;
        Ok(api::Empty::new())
    }

    pub async fn task_exec(&self, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
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

    pub async fn task_resize_pty(&self, req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        container.resize(&req.exec_id, req.width, req.height)?;
        Ok(api::Empty::new())
    }

    pub async fn task_close_io(&self, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        if req.stdin {
            container.close_stdin(&req.exec_id)?;
        }
        Ok(api::Empty::new())
    }

    pub async fn task_checkpoint(&self, req: api::CheckpointTaskRequest) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        let request = crate::container::checkpoint_request(&req.path, req.options.as_ref())
            .map_err(|message| rpc_error(Code::INVALID_ARGUMENT, message))?;
        tracing::info!(id = %req.id, path = %request.image_path.display(), exit = request.exit, "checkpoint");
        blocking(move || container.checkpoint(&request.image_path, request.exit)).await??;
        Ok(api::Empty::new())
    }

    pub async fn task_connect(&self, req: api::ConnectRequest) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.container(&req.id).map(|c| c.pid()).unwrap_or_default();
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    pub async fn task_shutdown(&self) -> TtrpcResult<api::Empty> {
        // Once its last container is gone the shim may exit.
        if lock(&self.containers).is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}

#[async_trait]
impl<I: Instance> Task for TaskService<I> {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        self.task_create(req).await
    }

    async fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        self.task_start(req).await
    }

    async fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        self.task_state(req).await
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        self.task_wait(req).await
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.task_kill(req).await
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        self.task_delete(req).await
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.task_pause(&req.id, true).await
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.task_pause(&req.id, false).await
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        self.task_stats(req).await
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        self.task_pids(req).await
    }

    async fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        self.task_update(req).await
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        self.task_exec(req).await
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        self.task_resize_pty(req).await
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        self.task_close_io(req).await
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        self.task_checkpoint(req).await
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        self.task_connect(req).await
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        self.task_shutdown().await
    }
}
