//! A container that joins its pod's sandbox (runsc multi-container, see
//! `pod.rs`). It has no host process of its own: its reported pid is the
//! sandbox's, its stdio is given to `runsc start`, and its exit comes from
//! `runsc wait <id>`, run in a thread once it has started (`runsc wait`
//! before start fails, see docs/runsc-facts.md).
//!
//! - Kill and Pids act on the member alone (`runsc kill` / `runsc ps <id>`).
//! - Pause, Resume and Update are refused: runsc pauses the whole sandbox,
//!   and the member's processes are charged to the sandbox's cgroup.
//! - Stats report the sandbox's cgroup, i.e. the whole pod.
//! - Delete kills the member if it runs and removes it from runsc.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use skillbox_sandbox::cgroup::CgroupFs;

use super::{
    cgroups_path, open_output, record, with_terminal, Container, ContainerError, Exit, State, Status,
    StdioPaths,
};
use crate::config::ShimConfig;
use crate::enforce::prepare_bundle;
use crate::pod::PodError;
use skillbox_sandbox::reaper;
use policy_compiler::effective::EffectiveNetwork;

/// How the member joined: its sandbox, and where its exit goes once known.
#[derive(Debug)]
pub(super) struct Member {
    sandbox: String,
    sandbox_pid: u32,
    /// Taken by the thread that waits for the exit, or by a Delete before
    /// start.
    exit: Mutex<Option<watch::Sender<Option<Exit>>>>,
}

impl Container {
    /// Creates container `id` from `bundle` inside the running sandbox of
    /// `sandbox` (the pod's sandbox container, in this shim). The spec is
    /// enforced like any other; runsc flags that differ from the sandbox's
    /// are refused, since runsc runs the pod with the sandbox's. Blocking.
    pub fn create_member(
        id: &str,
        bundle: &std::path::Path,
        stdio: StdioPaths,
        sandbox: &Container,
        config: &ShimConfig,
    ) -> Result<Container, ContainerError> {
        let state = sandbox.status().0;
        if state != Status::Running {
            return Err(PodError::SandboxNotRunning {
                id: id.to_owned(),
                sandbox: sandbox.id.clone(),
                state: format!("{state:?}").to_lowercase(),
            }
            .into());
        }
        let prepared = prepare_bundle(id, bundle, config)?;
        let network = prepared
            .policy
            .has_egress()
            .then(|| prepared.policy.network.clone());
        let sandbox_network = sandbox.egress_network();
        if network != sandbox_network {
            let describe = |network: &Option<EffectiveNetwork>| match network {
                None => "no network".to_owned(),
                Some(network) => format!("egress {}", serde_json::to_string(network).unwrap_or_default()),
            };
            return Err(PodError::NetworkDiffers {
                id: id.to_owned(),
                sandbox: sandbox.id.clone(),
                member: describe(&network),
                sandbox_network: describe(&sandbox_network),
            }
            .into());
        }
        if &prepared.runsc_flags != sandbox.runsc.flags() {
            return Err(PodError::FlagsDiffer {
                id: id.to_owned(),
                sandbox: sandbox.id.clone(),
                member: prepared.runsc_flags.to_args(),
                sandbox_flags: sandbox.runsc.flags().to_args(),
            }
            .into());
        }
        let runsc = sandbox.runsc.clone();
        let created_cgroups = cgroups_path(bundle)
            .map(|(fs, path)| fs.missing_ancestors(&path))
            .unwrap_or_default();
        CgroupFs::record_created(bundle, &created_cgroups);
        // Members get no terminal (their stdio goes to `runsc start`).
        let init_process = with_terminal(bundle, false)?;
        runsc.create_joining(bundle, id, &bundle.join("init.pid"))?;
        let (sender, exited) = watch::channel(None);
        Ok(Container {
            id: id.to_owned(),
            bundle: bundle.to_owned(),
            stdio,
            pid: sandbox.pid,
            runsc,
            cgroup: sandbox.cgroup.clone(),
            created_cgroups,
            state: Arc::new(Mutex::new(State {
                status: Status::Created,
                exit: None,
            })),
            exited,
            member: Some(Member {
                sandbox: sandbox.id.clone(),
                sandbox_pid: sandbox.pid,
                exit: Mutex::new(Some(sender)),
            }),
            console: None,
            stdin: None,
            init_process,
            execs: Mutex::new(HashMap::new()),
            next_exec: AtomicU64::new(0),
            logger: Mutex::new(None),
            // The sandbox's egress is the pod's; the sandbox container owns it.
            egress: Mutex::new(None),
            // The sandbox's monitor sees the whole pod; its events carry the
            // sandbox container's identity (a known limit).
            audit: Arc::new(Mutex::new(None)),
        })
    }

    /// The id of the sandbox container this container joined, if any.
    pub fn sandbox_id(&self) -> Option<&str> {
        self.member.as_ref().map(|member| member.sandbox.as_str())
    }

    /// Refuses `action` on a member: it would act on the whole sandbox.
    pub(super) fn refuse_for_member(&self, action: &'static str) -> Result<(), ContainerError> {
        match &self.member {
            Some(member) => Err(PodError::WholeSandbox {
                id: self.id.clone(),
                sandbox: member.sandbox.clone(),
                action,
            }
            .into()),
            None => Ok(()),
        }
    }

    /// `runsc start` with the member's stdio, then a thread that waits for
    /// its exit. Blocking.
    pub(super) fn start_member(&self, member: &Member) -> Result<(), ContainerError> {
        let streams = [
            // A FIFO opened read-write: a member's stdin never ends (CloseIO
            // is a no-op for it; see the README's limitations).
            open_output(&self.stdio.stdin)?,
            open_output(&self.stdio.stdout)?,
            open_output(&self.stdio.stderr)?,
        ];
        self.runsc.start_with_stdio(&self.id, streams)?;
        let Some(sender) = member.exit.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        let (runsc, id, state, cgroup) = (
            self.runsc.clone(),
            self.id.clone(),
            Arc::clone(&self.state),
            self.cgroup.clone(),
        );
        std::thread::spawn(move || {
            let status = match runsc.wait(&id) {
                Ok(status) => status,
                // The sandbox is gone (deleted, crashed): the member died
                // with it and runsc no longer knows its status.
                Err(err) => {
                    tracing::warn!(%id, %err, "runsc wait failed; reporting the member killed");
                    137
                }
            };
            // A host OOM kill takes the whole sandbox, members included.
            let oom = status == 137
                && cgroup
                    .map(|(fs, path)| fs.stats(&path).oom_kills > 0)
                    .unwrap_or(false);
            let exit = Exit {
                status,
                at: SystemTime::now(),
                oom,
            };
            record(&state, &sender, exit);
        });
        Ok(())
    }

    /// Removes a member: killed first if it runs, then `runsc delete`.
    /// The sandbox and its other containers go on. Blocking.
    pub(super) fn delete_member(&self, member: &Member) -> Result<Option<Exit>, ContainerError> {
        match self.status().0 {
            Status::Stopped => {}
            Status::Created => {
                // Never started: no thread waits for it.
                if let Some(sender) = member.exit.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let exit = Exit {
                        status: 137,
                        at: SystemTime::now(),
                        oom: false,
                    };
                    record(&self.state, &sender, exit);
                }
            }
            Status::Running | Status::Paused => {
                let _ = self.runsc.kill(&self.id, nix::sys::signal::SIGKILL as i32);
                let deadline = Instant::now() + Duration::from_secs(10);
                while self.status().0 != Status::Stopped && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        // The member's gofer was a child of `runsc start`; never reap the
        // sandbox, whose status the sandbox container's thread waits for.
        reaper::reap_orphans_except(member.sandbox_pid as i32, Duration::from_secs(2));
        if let Err(err) = self.runsc.delete_force(&self.id) {
            tracing::warn!(%err, id = %self.id, "runsc delete failed");
        }
        if let Some((fs, _)) = &self.cgroup {
            fs.remove_if_empty(&self.created_cgroups);
        }
        Ok(self.status().1)
    }
}
