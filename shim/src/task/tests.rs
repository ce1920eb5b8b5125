//! The task service against a fake container: state transitions, exec ids,
//! kill and delete ordering, pods, and the order of the events containerd
//! gets, without runsc. The fake keeps the same state machine as the real
//! container (`ProcessState`) and ends a process when it is killed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::ttrpc::{Code, Error as TtrpcError};
use serde_json::json;
use skillbox_sandbox::cgroup::{CgroupStats, LimitUpdate};
use skillbox_sandbox::spec::{CONTAINER_TYPE, SANDBOX_ID};

use super::*;
use crate::instance::ProcessView;
use crate::process::ProcessState;

/// A process of the fake: its state, stdio and pid.
#[derive(Debug, Clone)]
struct FakeProcess {
    state: ProcessState,
    stdio: StdioPaths,
    pid: u32,
}

/// A container that runs nothing: Start moves it to running, Kill ends the
/// process with 128 + signal (or, for a bundle holding a file `oom`, as
/// the memory limit would: 137 and the `oom` outcome).
#[derive(Debug)]
struct Fake {
    id: String,
    bundle: PathBuf,
    init: FakeProcess,
    sandbox: Option<String>,
    oom: bool,
    /// From a bundle file `deadline-ms`.
    deadline: Option<Duration>,
    /// How often the deadline ended it.
    expired: AtomicU32,
    /// From a bundle file `kill-outlasts-ms`: Kill ends the process at once
    /// but returns only after this long (as `runsc kill` can).
    kill_outlasts: Option<Duration>,
    execs: Mutex<HashMap<String, FakeProcess>>,
}

static NEXT_PID: AtomicU32 = AtomicU32::new(100);

fn fake_process(stdio: StdioPaths) -> FakeProcess {
    FakeProcess {
        state: ProcessState::new(),
        stdio,
        pid: NEXT_PID.fetch_add(1, Ordering::Relaxed),
    }
}

impl Fake {
    fn new(request: &CreateRequest<'_>, sandbox: Option<String>) -> Fake {
        Fake {
            id: request.id.to_owned(),
            bundle: request.spec.bundle().to_owned(),
            init: fake_process(request.stdio.clone()),
            sandbox,
            oom: request.spec.bundle().join("oom").exists(),
            deadline: std::fs::read_to_string(request.spec.bundle().join("deadline-ms"))
                .ok()
                .and_then(|ms| ms.trim().parse().ok())
                .map(Duration::from_millis),
            expired: AtomicU32::new(0),
            kill_outlasts: std::fs::read_to_string(request.spec.bundle().join("kill-outlasts-ms"))
                .ok()
                .and_then(|ms| ms.trim().parse().ok())
                .map(Duration::from_millis),
            execs: Mutex::new(HashMap::new()),
        }
    }

    fn find(&self, exec_id: &str) -> Result<FakeProcess, ContainerError> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        lock(&self.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ContainerError::NoExec {
                id: self.id.clone(),
                exec_id: exec_id.to_owned(),
            })
    }
}

#[async_trait]
impl Instance for Fake {
    fn create(request: &CreateRequest<'_>) -> Result<Self, ContainerError> {
        Ok(Fake::new(request, None))
    }

    fn create_member(request: &CreateRequest<'_>, sandbox: &Self) -> Result<Self, ContainerError> {
        sandbox
            .init
            .state
            .require(Status::Running, &sandbox.id, "take a member")?;
        Ok(Fake::new(request, Some(sandbox.id.clone())))
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn bundle(&self) -> &Path {
        &self.bundle
    }

    fn pid(&self) -> u32 {
        self.init.pid
    }

    fn sandbox_id(&self) -> Option<&str> {
        self.sandbox.as_deref()
    }

    fn process(&self, exec_id: &str) -> Result<ProcessView, ContainerError> {
        let process = self.find(exec_id)?;
        let (status, exit) = process.state.status();
        Ok(ProcessView {
            status,
            exit,
            pid: process.pid,
            stdio: process.stdio,
        })
    }

    fn start(&self) -> Result<(), ContainerError> {
        self.init.state.require(Status::Created, &self.id, "start")?;
        self.init.state.advance(Status::Created, Status::Running);
        Ok(())
    }

    fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    fn expire(&self) -> Result<(), ContainerError> {
        self.expired.fetch_add(1, Ordering::SeqCst);
        self.init.state.record(Exit {
            outcome: Outcome::Timeout,
            ..Exit::with_status(124)
        });
        Ok(())
    }

    async fn wait(&self, exec_id: &str) -> Result<Exit, ContainerError> {
        Ok(self.find(exec_id)?.state.wait().await)
    }

    fn kill(&self, exec_id: &str, signal: u32, _all: bool) -> Result<(), ContainerError> {
        let process = self.find(exec_id)?;
        let exit = match (self.oom && exec_id.is_empty(), process.state.status().0) {
            (_, Status::Stopped) => return Ok(()),
            (true, _) => Exit {
                outcome: Outcome::Oom,
                ..Exit::with_status(137)
            },
            (false, _) => Exit {
                outcome: Outcome::Killed,
                ..Exit::with_status(128 + signal)
            },
        };
        process.state.record(exit);
        if let Some(outlasts) = self.kill_outlasts {
            std::thread::sleep(outlasts);
        }
        Ok(())
    }

    fn delete(&self) -> Result<Option<Exit>, ContainerError> {
        self.kill("", 9, true)?;
        Ok(self.init.state.status().1)
    }

    fn add_exec(
        &self,
        exec_id: &str,
        stdio: StdioPaths,
        _terminal: bool,
        _spec: &[u8],
    ) -> Result<(), ContainerError> {
        self.init.state.require(Status::Running, &self.id, "exec")?;
        let mut execs = lock(&self.execs);
        if execs.contains_key(exec_id) {
            return Err(ContainerError::ExecExists {
                id: self.id.clone(),
                exec_id: exec_id.to_owned(),
            });
        }
        execs.insert(exec_id.to_owned(), fake_process(stdio));
        Ok(())
    }

    fn start_exec(&self, exec_id: &str) -> Result<u32, ContainerError> {
        let process = self.find(exec_id)?;
        process
            .state
            .require(Status::Created, &format!("{}/{exec_id}", self.id), "start")?;
        process.state.advance(Status::Created, Status::Running);
        Ok(process.pid)
    }

    fn delete_exec(&self, exec_id: &str) -> Result<(u32, Option<Exit>), ContainerError> {
        let process = self.find(exec_id)?;
        if process.state.status().0 == Status::Running {
            return Err(ContainerError::State {
                id: format!("{}/{exec_id}", self.id),
                state: Status::Running,
                action: "delete",
            });
        }
        lock(&self.execs).remove(exec_id);
        Ok((process.pid, process.state.status().1))
    }

    fn set_paused(&self, paused: bool) -> Result<(), ContainerError> {
        let (from, to, action) = match paused {
            true => (Status::Running, Status::Paused, "pause"),
            false => (Status::Paused, Status::Running, "resume"),
        };
        self.init.state.require(from, &self.id, action)?;
        self.init.state.advance(from, to);
        Ok(())
    }

    fn stats(&self) -> CgroupStats {
        CgroupStats::default()
    }

    fn pids(&self) -> Result<Vec<u32>, ContainerError> {
        Ok(vec![1])
    }

    fn update(&self, _update: &LimitUpdate) -> Result<(), ContainerError> {
        Ok(())
    }

    fn checkpoint(&self, _image_path: &Path, _exit: bool) -> Result<(), ContainerError> {
        Ok(())
    }

    fn resize(&self, _exec_id: &str, _width: u32, _height: u32) -> Result<(), ContainerError> {
        Err(ContainerError::NoTerminal { id: self.id.clone() })
    }

    fn close_stdin(&self, exec_id: &str) -> Result<(), ContainerError> {
        self.find(exec_id).map(|_| ())
    }
}

/// Collects the events the service publishes.
#[derive(Default)]
struct Collected(Mutex<Vec<TaskEvent>>);

#[async_trait]
impl EventSink for Collected {
    async fn send(&self, event: TaskEvent) {
        lock(&self.0).push(event);
    }
}

/// A shim's task service over fakes, its events, and a directory for
/// bundles.
struct Harness {
    service: TaskService<Fake>,
    events: Arc<Collected>,
    exit: Arc<ExitSignal>,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let events = Arc::new(Collected::default());
        let exit = Arc::new(ExitSignal::default());
        let service = TaskService::new(
            &dir.path().join("runsc"),
            Arc::clone(&exit),
            events.clone() as Arc<dyn EventSink>,
        );
        Harness {
            service,
            events,
            exit,
            dir,
        }
    }

    /// A bundle whose spec has `annotations`.
    fn bundle(&self, name: &str, annotations: serde_json::Value) -> PathBuf {
        let bundle = self.dir.path().join(name);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            json!({ "annotations": annotations }).to_string(),
        )
        .unwrap();
        bundle
    }

    async fn create(&self, id: &str, bundle: &Path) -> TtrpcResult<api::CreateTaskResponse> {
        self.service
            .task_create(api::CreateTaskRequest {
                id: id.to_owned(),
                bundle: bundle.display().to_string(),
                ..Default::default()
            })
            .await
    }

    async fn start(&self, id: &str, exec_id: &str) -> TtrpcResult<api::StartResponse> {
        self.service
            .task_start(api::StartRequest {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                ..Default::default()
            })
            .await
    }

    async fn kill(&self, id: &str, exec_id: &str, signal: u32) -> TtrpcResult<api::Empty> {
        self.service
            .task_kill(api::KillRequest {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                signal,
                ..Default::default()
            })
            .await
    }

    async fn delete(&self, id: &str, exec_id: &str) -> TtrpcResult<api::DeleteResponse> {
        self.service
            .task_delete(api::DeleteRequest {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                ..Default::default()
            })
            .await
    }

    async fn state(&self, id: &str, exec_id: &str) -> TtrpcResult<api::StateResponse> {
        self.service
            .task_state(api::StateRequest {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                ..Default::default()
            })
            .await
    }

    async fn exec(&self, id: &str, exec_id: &str) -> TtrpcResult<api::Empty> {
        self.service
            .task_exec(api::ExecProcessRequest {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                ..Default::default()
            })
            .await
    }

    /// The events so far, as short names (`exit <id> <process> <status>`),
    /// once `count` have arrived (exit events come from spawned tasks).
    async fn events(&self, count: usize) -> Vec<String> {
        for _ in 0..200 {
            if lock(&self.events.0).len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lock(&self.events.0).iter().map(short).collect()
    }
}

fn short(event: &TaskEvent) -> String {
    match event {
        TaskEvent::Create { id, .. } => format!("create {id}"),
        TaskEvent::Start { id, .. } => format!("start {id}"),
        TaskEvent::Exit {
            id, process, status, ..
        } => format!("exit {id} {process} {status}"),
        TaskEvent::Delete { id, status, .. } => format!("delete {id} {status}"),
        TaskEvent::Oom { id } => format!("oom {id}"),
        TaskEvent::ExecAdded { id, exec_id } => format!("exec-added {id} {exec_id}"),
        TaskEvent::ExecStarted { id, exec_id, .. } => format!("exec-started {id} {exec_id}"),
        TaskEvent::Paused { id } => format!("paused {id}"),
        TaskEvent::Resumed { id } => format!("resumed {id}"),
    }
}

fn code(result: TtrpcResult<impl std::fmt::Debug>) -> (Code, String) {
    match result {
        Err(TtrpcError::RpcStatus(status)) => (status.code.enum_value_or_default(), status.message),
        other => panic!("expected an rpc status, got {other:?}"),
    }
}

#[tokio::test]
async fn a_task_is_created_started_killed_and_deleted_with_its_events_in_order() {
    let shim = Harness::new();
    let bundle = shim.bundle("plain", json!({}));
    let pid = shim.create("c1", &bundle).await.unwrap().pid;
    assert_eq!(
        shim.state("c1", "").await.unwrap().status,
        TaskStatus::CREATED.into()
    );
    assert_eq!(shim.start("c1", "").await.unwrap().pid, pid);
    assert_eq!(
        shim.state("c1", "").await.unwrap().status,
        TaskStatus::RUNNING.into()
    );
    shim.kill("c1", "", 15).await.unwrap();
    let waited = shim
        .service
        .task_wait(api::WaitRequest {
            id: "c1".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(waited.exit_status, 143);
    let state = shim.state("c1", "").await.unwrap();
    assert_eq!(
        (state.status, state.exit_status),
        (TaskStatus::STOPPED.into(), 143)
    );
    assert_eq!(shim.delete("c1", "").await.unwrap().exit_status, 143);
    assert_eq!(
        shim.events(4).await,
        ["create c1", "start c1", "exit c1 c1 143", "delete c1 143"]
    );
    // Gone: every call now says so, and the shim may exit.
    assert_eq!(code(shim.state("c1", "").await).0, Code::NOT_FOUND);
    shim.service.task_shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), shim.exit.wait())
        .await
        .unwrap();
}

/// containerd deletes a task when its TaskExit arrives and closes the
/// connection: a Kill still being served then never gets its answer
/// (StopContainer fails with `ttrpc: closed`). The TaskExit waits for it.
#[tokio::test]
async fn a_task_exit_waits_for_the_kill_being_served() {
    let shim = Harness::new();
    let bundle = shim.bundle("slow-kill", json!({}));
    std::fs::write(bundle.join("kill-outlasts-ms"), "300").unwrap();
    shim.create("c1", &bundle).await.unwrap();
    shim.start("c1", "").await.unwrap();
    let killing = {
        let service = shim.service.clone();
        tokio::spawn(async move {
            let request = api::KillRequest {
                id: "c1".to_owned(),
                signal: 9,
                ..Default::default()
            };
            service.task_kill(request).await.unwrap();
            lock(&KILL_ANSWERED).replace(std::time::Instant::now());
        })
    };
    let exit_seen = loop {
        if shim.events(3).await.len() >= 3 {
            break std::time::Instant::now();
        }
    };
    killing.await.unwrap();
    let answered = lock(&KILL_ANSWERED).expect("the kill was answered");
    assert!(
        answered <= exit_seen,
        "TaskExit went out before the Kill was answered"
    );
    assert_eq!(shim.events(3).await, ["create c1", "start c1", "exit c1 c1 137"]);
}

static KILL_ANSWERED: Mutex<Option<std::time::Instant>> = Mutex::new(None);

#[tokio::test]
async fn illegal_transitions_and_duplicate_ids_are_refused() {
    let shim = Harness::new();
    let bundle = shim.bundle("plain", json!({}));
    shim.create("c1", &bundle).await.unwrap();
    let (duplicate, message) = code(shim.create("c1", &bundle).await);
    assert_eq!(duplicate, Code::ALREADY_EXISTS, "{message}");
    // An exec before the container runs, a pause of a created container.
    assert_eq!(code(shim.exec("c1", "e1").await).0, Code::FAILED_PRECONDITION);
    let (paused, message) = code(shim.service.task_pause("c1", true).await);
    assert_eq!(paused, Code::FAILED_PRECONDITION);
    assert_eq!(message, "container c1 is Created; cannot pause");
    shim.start("c1", "").await.unwrap();
    assert_eq!(code(shim.start("c1", "").await).0, Code::FAILED_PRECONDITION);
    shim.service.task_pause("c1", true).await.unwrap();
    shim.service.task_pause("c1", false).await.unwrap();
    assert_eq!(
        code(shim.service.task_pause("c1", false).await).0,
        Code::FAILED_PRECONDITION
    );
    // A running container is never left behind by Shutdown.
    shim.service.task_shutdown().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(50), shim.exit.wait())
        .await
        .is_err());
}

#[tokio::test]
async fn execs_have_their_own_ids_state_and_exit_but_no_delete_event() {
    let shim = Harness::new();
    let bundle = shim.bundle("plain", json!({}));
    shim.create("c1", &bundle).await.unwrap();
    shim.start("c1", "").await.unwrap();
    shim.exec("c1", "e1").await.unwrap();
    assert_eq!(code(shim.exec("c1", "e1").await).0, Code::ALREADY_EXISTS);
    assert_eq!(code(shim.state("c1", "e2").await).0, Code::NOT_FOUND);
    assert_eq!(
        shim.state("c1", "e1").await.unwrap().status,
        TaskStatus::CREATED.into()
    );
    let pid = shim.start("c1", "e1").await.unwrap().pid;
    let running = shim.state("c1", "e1").await.unwrap();
    assert_eq!((running.status, running.pid), (TaskStatus::RUNNING.into(), pid));
    // A running exec cannot be deleted; once killed it can, and the
    // container keeps running.
    assert_eq!(code(shim.delete("c1", "e1").await).0, Code::FAILED_PRECONDITION);
    shim.kill("c1", "e1", 9).await.unwrap();
    // The exec's TaskExit names it, not the container.
    assert_eq!(shim.events(5).await[4], "exit c1 e1 137");
    assert_eq!(shim.delete("c1", "e1").await.unwrap().exit_status, 137);
    assert_eq!(
        shim.state("c1", "").await.unwrap().status,
        TaskStatus::RUNNING.into()
    );
    // The exec id is free again.
    shim.exec("c1", "e1").await.unwrap();
    assert_eq!(
        shim.events(6).await,
        [
            "create c1",
            "start c1",
            "exec-added c1 e1",
            "exec-started c1 e1",
            "exit c1 e1 137",
            "exec-added c1 e1"
        ]
    );
}

#[tokio::test]
async fn an_oom_kill_is_reported_before_the_exit() {
    let shim = Harness::new();
    let bundle = shim.bundle("hog", json!({}));
    std::fs::write(bundle.join("oom"), "").unwrap();
    shim.create("hog", &bundle).await.unwrap();
    shim.start("hog", "").await.unwrap();
    shim.kill("hog", "", 9).await.unwrap();
    assert_eq!(
        shim.events(4).await,
        ["create hog", "start hog", "oom hog", "exit hog hog 137"]
    );
}

#[tokio::test]
async fn a_pod_sandbox_outlives_its_members_and_is_deleted_last() {
    let shim = Harness::new();
    let pod = shim.bundle("pod", json!({ CONTAINER_TYPE: "sandbox" }));
    let app = shim.bundle("app", json!({ CONTAINER_TYPE: "container", SANDBOX_ID: "pod" }));
    // A member of a sandbox this shim does not run is refused, naming it.
    let (missing, message) = code(shim.create("app", &app).await);
    assert_eq!(missing, Code::FAILED_PRECONDITION);
    assert!(message.contains("names sandbox pod"), "{message}");
    shim.create("pod", &pod).await.unwrap();
    shim.start("pod", "").await.unwrap();
    shim.create("app", &app).await.unwrap();
    shim.start("app", "").await.unwrap();
    // The sandbox cannot go while a member is in it.
    let (refused, message) = code(shim.delete("pod", "").await);
    assert_eq!(refused, Code::FAILED_PRECONDITION);
    assert!(message.contains("[\"app\"]"), "{message}");
    // A member cannot be the sandbox of another.
    let nested = shim.bundle(
        "nested",
        json!({ CONTAINER_TYPE: "container", SANDBOX_ID: "app" }),
    );
    assert!(code(shim.create("nested", &nested).await)
        .1
        .contains("itself a member"));
    shim.kill("app", "", 9).await.unwrap();
    shim.delete("app", "").await.unwrap();
    shim.delete("pod", "").await.unwrap();
    let events = shim.events(8).await;
    let position = |event: &str| events.iter().position(|seen| seen == event).unwrap();
    assert!(
        position("delete app 137") < position("delete pod 137"),
        "{events:?}"
    );
}

#[tokio::test]
async fn the_deadline_ends_a_running_task_with_124_and_never_fires_after_its_exit() {
    let shim = Harness::new();
    let slow = shim.bundle("slow", json!({}));
    std::fs::write(slow.join("deadline-ms"), "50").unwrap();
    shim.create("slow", &slow).await.unwrap();
    // The deadline counts from Start: a created task waits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        shim.state("slow", "").await.unwrap().status,
        TaskStatus::CREATED.into()
    );
    shim.start("slow", "").await.unwrap();
    assert_eq!(
        shim.events(3).await,
        ["create slow", "start slow", "exit slow slow 124"]
    );
    // A task that exits before its deadline keeps its own status.
    let quick = shim.bundle("quick", json!({}));
    std::fs::write(quick.join("deadline-ms"), "50").unwrap();
    shim.create("quick", &quick).await.unwrap();
    shim.start("quick", "").await.unwrap();
    shim.kill("quick", "", 15).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let state = shim.state("quick", "").await.unwrap();
    assert_eq!(state.exit_status, 143);
    let quick = shim.service.container("quick").unwrap();
    assert_eq!(quick.expired.load(Ordering::SeqCst), 0);
    assert_eq!(
        shim.service
            .container("slow")
            .unwrap()
            .expired
            .load(Ordering::SeqCst),
        1
    );
}
