//! Making the host's containerd take what install wrote, or forget what
//! uninstall removed: it is restarted only when a file it reads changed or
//! when it does not yet see the handler, then its CRI is asked until it
//! answers again with the `skillbox` handler known (or gone). Running pods
//! of every runtime live on: their shims outlive containerd's restart.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::cri::{Cri, CriView};
use super::restart::Restart;

/// The runtime handler install registers; a RuntimeClass names it.
pub const HANDLER: &str = "skillbox";

/// The host's containerd, as the installer reaches it.
pub struct HostContainerd {
    pub cri: Cri,
    pub restart: Restart,
    /// How long containerd may take to answer again after a restart.
    pub limit: Duration,
}

/// What was done to containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It already was as wanted: not restarted.
    Unchanged,
    /// Restarted; answering as wanted after this long.
    Restarted(Duration),
}

impl HostContainerd {
    /// What containerd's CRI says now; an error when it does not answer.
    pub fn view(&self) -> anyhow::Result<CriView> {
        self.cri.view().with_context(|| {
            format!(
                "containerd's CRI does not answer on {} (is containerd running there? \
                 --cri-socket names its socket; --no-reload writes the files without it)",
                self.cri.socket().display()
            )
        })
    }

    /// After install: restarts containerd when install changed a config it
    /// reads or when it does not see the handler, then waits until its CRI
    /// knows the handler.
    pub fn activate(&self, config_changed: bool, before: &CriView) -> anyhow::Result<(Outcome, CriView)> {
        let sees = |view: &CriView| view.runtime_ready && view.handlers.contains(HANDLER);
        if !config_changed && sees(before) {
            return Ok((Outcome::Unchanged, before.clone()));
        }
        self.restart_until(
            &format!("answer again with the `{HANDLER}` runtime handler"),
            sees,
        )
    }

    /// After uninstall: restarts containerd when uninstall changed a config
    /// it reads, then waits until it has forgotten the handler. A handler
    /// registered by something else than this install is left alone.
    pub fn deactivate(&self, config_changed: bool, before: &CriView) -> anyhow::Result<(Outcome, CriView)> {
        if !config_changed {
            return Ok((Outcome::Unchanged, before.clone()));
        }
        self.restart_until(
            &format!("answer again without the `{HANDLER}` runtime handler"),
            |view| view.runtime_ready && !view.handlers.contains(HANDLER),
        )
    }

    /// Restarts containerd and asks its CRI until `done`. Until the old
    /// containerd has stopped it may still answer: `done` tells them apart.
    fn restart_until(
        &self,
        what: &str,
        done: impl Fn(&CriView) -> bool,
    ) -> anyhow::Result<(Outcome, CriView)> {
        let start = Instant::now();
        self.restart.run()?;
        let view = self.cri.wait_until(self.limit, what, done)?;
        Ok((Outcome::Restarted(start.elapsed()), view))
    }
}
