//! Task events the shim reports to containerd (TaskCreate, TaskStart,
//! TaskOOM, TaskExit, TaskDelete, TaskExecAdded, TaskExecStarted,
//! TaskPaused, TaskResumed). The task service sends
//! `TaskEvent`s to an `EventSink`; the real sink publishes them over
//! containerd's ttrpc socket, tests can collect them.

use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;

pub use crate::publisher::timestamp;
use crate::publisher::Publisher;
use crate::stdio::StdioPaths;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    Create {
        id: String,
        bundle: String,
        pid: u32,
        stdio: StdioPaths,
    },
    Start {
        id: String,
        pid: u32,
    },
    /// A process exited: the init process (`process` = the container id)
    /// or an exec (`process` = its exec id).
    Exit {
        id: String,
        process: String,
        pid: u32,
        status: u32,
        at: SystemTime,
    },
    Delete {
        id: String,
        pid: u32,
        status: u32,
        at: SystemTime,
    },
    Oom {
        id: String,
    },
    ExecAdded {
        id: String,
        exec_id: String,
    },
    ExecStarted {
        id: String,
        exec_id: String,
        pid: u32,
    },
    Paused {
        id: String,
    },
    Resumed {
        id: String,
    },
}

#[async_trait]
pub trait EventSink: Send + Sync {
    async fn send(&self, event: TaskEvent);
}

impl TaskEvent {
    /// containerd's topic and message for this event.
    fn into_message(self) -> (&'static str, Box<dyn MessageDyn>) {
        match self {
            TaskEvent::Create {
                id,
                bundle,
                pid,
                stdio,
            } => (
                topics::TASK_CREATE_EVENT_TOPIC,
                Box::new(TaskCreate {
                    container_id: id,
                    bundle,
                    pid,
                    io: MessageField::some(TaskIO {
                        stdin: stdio.stdin,
                        stdout: stdio.stdout,
                        stderr: stdio.stderr,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            ),
            TaskEvent::Start { id, pid } => (
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: id,
                    pid,
                    ..Default::default()
                }),
            ),
            TaskEvent::Exit {
                id,
                process,
                pid,
                status,
                at,
            } => (
                topics::TASK_EXIT_EVENT_TOPIC,
                Box::new(TaskExit {
                    id: process,
                    container_id: id,
                    pid,
                    exit_status: status,
                    exited_at: MessageField::some(timestamp(at)),
                    ..Default::default()
                }),
            ),
            TaskEvent::Delete { id, pid, status, at } => (
                topics::TASK_DELETE_EVENT_TOPIC,
                Box::new(TaskDelete {
                    id: id.clone(),
                    container_id: id,
                    pid,
                    exit_status: status,
                    exited_at: MessageField::some(timestamp(at)),
                    ..Default::default()
                }),
            ),
            TaskEvent::Oom { id } => (
                topics::TASK_OOM_EVENT_TOPIC,
                Box::new(TaskOOM {
                    container_id: id,
                    ..Default::default()
                }),
            ),
            TaskEvent::ExecAdded { id, exec_id } => (
                topics::TASK_EXEC_ADDED_EVENT_TOPIC,
                Box::new(TaskExecAdded {
                    container_id: id,
                    exec_id,
                    ..Default::default()
                }),
            ),
            TaskEvent::ExecStarted { id, exec_id, pid } => (
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id: id,
                    exec_id,
                    pid,
                    ..Default::default()
                }),
            ),
            TaskEvent::Paused { id } => (
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(TaskPaused {
                    container_id: id,
                    ..Default::default()
                }),
            ),
            TaskEvent::Resumed { id } => (
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(TaskResumed {
                    container_id: id,
                    ..Default::default()
                }),
            ),
        }
    }
}

/// Publishes to containerd in the shim's namespace, in order and across a
/// containerd restart (see `publisher.rs`).
pub struct ContainerdEvents {
    publisher: Publisher,
    namespace: String,
}

impl ContainerdEvents {
    /// Publishes to the ttrpc address `publisher` was made for; the crate's
    /// own queue is not used (it loses events across a restart).
    pub fn new(publisher: RemotePublisher, namespace: &str) -> ContainerdEvents {
        ContainerdEvents {
            publisher: Publisher::new(&publisher.address),
            namespace: namespace.to_owned(),
        }
    }

    /// Waits up to `timeout` for the queued events to reach containerd.
    pub async fn flush(&self, timeout: std::time::Duration) -> bool {
        self.publisher.flush(timeout).await
    }
}

#[async_trait]
impl EventSink for ContainerdEvents {
    async fn send(&self, event: TaskEvent) {
        let (topic, message) = event.into_message();
        self.publisher.publish(topic, &self.namespace, message);
    }
}
