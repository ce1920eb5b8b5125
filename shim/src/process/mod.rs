//! The process layer: what the init process, an exec and a pod member have
//! in common, written once.
//!
//! - [`ProcessState`]: where a process is in its life (an explicit state
//!   machine whose illegal transitions are `ContainerError::State`) and its
//!   exit, which waiters get once it is recorded;
//! - [`io`]: a process's stdio or terminal, opened for runsc and attached
//!   once runsc has started it;
//! - [`template`]: one launch for every process runsc starts with a pid
//!   file (init: `runsc create`; exec: `runsc exec`), and one reaper.
//!
//! A pod member has no host process of its own (its stdio goes to `runsc
//! start`, its exit comes from `runsc wait`), so it uses the state alone.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::error::ContainerError;
pub use crate::lifecycle::{Exit, Status};

pub mod io;
pub mod template;

#[derive(Debug)]
struct Inner {
    status: Status,
    exit: Option<Exit>,
}

/// A process's status and exit, shared by the process, the thread that
/// reaps it and the callers that wait for it.
#[derive(Debug, Clone)]
pub struct ProcessState {
    inner: Arc<Mutex<Inner>>,
    sender: Arc<watch::Sender<Option<Exit>>>,
    exited: watch::Receiver<Option<Exit>>,
}

impl Default for ProcessState {
    fn default() -> Self {
        ProcessState::new()
    }
}

impl ProcessState {
    /// A process that is created and not started.
    pub fn new() -> ProcessState {
        let (sender, exited) = watch::channel(None);
        ProcessState {
            inner: Arc::new(Mutex::new(Inner {
                status: Status::Created,
                exit: None,
            })),
            sender: Arc::new(sender),
            exited,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> (Status, Option<Exit>) {
        let inner = self.lock();
        (inner.status, inner.exit)
    }

    /// Refuses `action` on process `id` unless it is `expected`.
    pub fn require(&self, expected: Status, id: &str, action: &'static str) -> Result<(), ContainerError> {
        match self.status().0 {
            current if current == expected => Ok(()),
            current => Err(ContainerError::State {
                id: id.to_owned(),
                state: current,
                action,
            }),
        }
    }

    /// Moves from `from` to `to`; a process that moved on meanwhile (it
    /// exited) keeps its state.
    pub fn advance(&self, from: Status, to: Status) {
        let mut inner = self.lock();
        if inner.status == from {
            inner.status = to;
        }
    }

    /// Records the exit (the first one wins) and wakes the waiters.
    pub fn record(&self, exit: Exit) {
        let mut inner = self.lock();
        if inner.exit.is_some() {
            return;
        }
        inner.status = Status::Stopped;
        inner.exit = Some(exit);
        let _ = self.sender.send(Some(exit));
    }

    /// Waits until the exit is recorded.
    pub async fn wait(&self) -> Exit {
        let mut exited = self.exited.clone();
        let exit = exited
            .wait_for(Option::is_some)
            .await
            .map(|exit| *exit)
            .ok()
            .flatten();
        // The sender lives as long as this state, so this is set.
        exit.unwrap_or(Exit::with_status(255))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_moves_created_running_stopped_and_refuses_the_rest() {
        let state = ProcessState::new();
        assert_eq!(state.status(), (Status::Created, None));
        assert!(state.require(Status::Created, "c", "start").is_ok());
        state.advance(Status::Created, Status::Running);
        let refused = state
            .require(Status::Created, "c", "start")
            .unwrap_err()
            .to_string();
        assert_eq!(refused, "container c is Running; cannot start");
        state.record(Exit::with_status(3));
        // An exit recorded before a late transition is not undone.
        state.advance(Status::Running, Status::Paused);
        assert_eq!(state.status().0, Status::Stopped);
        state.record(Exit::with_status(137));
        assert_eq!(state.status().1.map(|exit| exit.status), Some(3));
    }

    #[tokio::test]
    async fn waiters_get_the_recorded_exit() {
        let state = ProcessState::new();
        let waiter = {
            let state = state.clone();
            tokio::spawn(async move { state.wait().await })
        };
        state.record(Exit::with_status(7));
        assert_eq!(waiter.await.unwrap().status, 7);
        assert_eq!(state.wait().await.status, 7);
    }
}
