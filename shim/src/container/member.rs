//! A container that joins its pod's sandbox (runsc multi-container, see
//! `pod.rs`). It has no host process of its own: its reported pid is the
//! sandbox's, its stdio is given to `runsc start`, and its exit comes from
//! `runsc wait <id>`, run in a thread once it has started (`runsc wait`
//! before start fails, see docs/runsc-facts.md).
//!
//! - Kill and Pids act on the member alone (`runsc kill` / `runsc ps <id>`).
//! - Pause and Resume are refused: runsc pauses the whole sandbox.
//! - Its limits are added to the pod's one cgroup (see `PodLimits`), where
//!   gVisor charges every container of the pod; Update changes its share.
//! - Stats report the sandbox's cgroup, i.e. the whole pod.
//! - Delete kills the member if it runs and removes it from runsc.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use policy_compiler::effective::EffectiveNetwork;
use skillbox_sandbox::cgroup::{CgroupFs, LimitUpdate};
use skillbox_sandbox::reaper;
use skillbox_sandbox::record::{ProcessScan, RunscRecord, TeardownRecord, RECORD_FILE};
use skillbox_sandbox::sandbox::node_key;
use skillbox_sandbox::spec::BundleSpec;
use skillbox_sandbox::Ending;

use super::{open_output, Container, ContainerError, EndCauses, Exit, ProcessState, Status, StdioPaths};
use skillbox_audit::execution::{AuditSetup, MemberAudit, SOCKET_DIR};

use super::identity;
use crate::config::ShimConfig;
use crate::container::RUNSC_LOG;
use crate::enforce::enforce;
use crate::pod::PodError;

/// How the member joined.
#[derive(Debug)]
pub(super) struct Member {
    sandbox: String,
    /// The member's own audit trail, closed at delete.
    audit: Mutex<Option<MemberAudit>>,
    /// The member's teardown record (its runsc container, the parent
    /// cgroups runsc creates for it).
    record: PathBuf,
}

impl Container {
    /// Creates container `id` from `bundle` inside the running sandbox of
    /// `sandbox` (the pod's sandbox container, in this shim). The spec is
    /// enforced like any other; runsc flags that differ from the sandbox's
    /// are refused, since runsc runs the pod with the sandbox's. Blocking.
    pub fn create_member(
        id: &str,
        mut spec: BundleSpec,
        stdio: StdioPaths,
        sandbox: &Container,
        config: &ShimConfig,
        namespace: &str,
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
        let bundle = &spec.bundle().to_owned();
        let prepared = enforce(id, &node_key(namespace, id), &mut spec, config)?;
        // A pod has one network, its sandbox container's: a member must
        // declare the same (no egress at all matches a deny-all pod).
        let rules = |network: Option<&EffectiveNetwork>| match network {
            Some(network) => (network.allow.clone(), network.deny.clone()),
            None => (Vec::new(), Vec::new()),
        };
        let sandbox_network = sandbox.egress_network();
        if rules(Some(&prepared.policy.network)) != rules(sandbox_network.as_ref()) {
            let describe = |network: Option<&EffectiveNetwork>| match network {
                Some(network) if !network.allow.is_empty() => {
                    format!("egress {}", serde_json::to_string(network).unwrap_or_default())
                }
                _ => "no egress".to_owned(),
            };
            return Err(PodError::NetworkDiffers {
                id: id.to_owned(),
                sandbox: sandbox.id.clone(),
                member: describe(Some(&prepared.policy.network)),
                sandbox_network: describe(sandbox_network.as_ref()),
            }
            .into());
        }
        // The pod's network mode is its sandbox's; every other flag must match.
        let mut member_flags = prepared.runsc_flags.clone();
        member_flags.network = sandbox.runsc.flags().network;
        if &member_flags != sandbox.runsc.flags() {
            return Err(PodError::FlagsDiffer {
                id: id.to_owned(),
                sandbox: sandbox.id.clone(),
                member: prepared.runsc_flags.to_args(),
                sandbox_flags: sandbox.runsc.flags().to_args(),
            }
            .into());
        }
        // Every container of a pod with an egress session resolves names
        // through its DNS proxy, not through CRI's resolv.conf.
        if let Some(resolv_conf) = sandbox.sandbox.resolv_conf() {
            let path = spec.path();
            skillbox_egress::spec::mount_resolv_conf(spec.value_mut(), resolv_conf)
                .map_err(|source| skillbox_sandbox::SandboxError::JoinEgress { path, source })?;
        }
        let runsc = sandbox.runsc.clone().with_log(bundle.join(RUNSC_LOG));
        // runsc makes the member's cgroup parents: recorded before it does.
        let mut teardown = TeardownRecord::new(id, RunscRecord::of(&runsc, bundle));
        if let (Some(path), Ok(fs)) = (spec.cgroups_path(), CgroupFs::detect()) {
            teardown.runsc_cgroups = fs.missing_ancestors(&path);
        }
        let record_path = bundle.join(RECORD_FILE);
        teardown
            .save(&record_path)
            .map_err(|err| ContainerError::from(skillbox_sandbox::SandboxError::from(err)))?;
        // The pod's cgroup grows by the member's limits before it runs.
        let pod_limits = sandbox.pod_limits.clone().ok_or_else(|| PodError::NoSandbox {
            id: id.to_owned(),
            sandbox: sandbox.id.clone(),
        })?;
        let total = pod_limits.set(id, &LimitUpdate::of_spec(spec.value()));
        if let Err(err) = sandbox.sandbox.update(&total) {
            pod_limits.remove(id);
            return Err(ContainerError::from(err));
        }
        // Members get no terminal (their stdio goes to `runsc start`).
        spec.set_terminal(false);
        let init_process = spec.process();
        spec.write()?;
        runsc.create_joining(bundle, id, &bundle.join("init.pid"))?;
        // The member's own audit trail, fed by the pod's monitor from
        // before it starts; its events name its own skill.
        let audit_log = config
            .node
            .audit
            .log_dir
            .join(namespace)
            .join(format!("{id}.jsonl"));
        let audit = sandbox
            .sandbox
            .join_audit(&AuditSetup {
                log: &audit_log,
                rotation: (&config.node.audit).into(),
                event_budget: config.node.audit.event_budget,
                identity: identity(&prepared.skill, namespace, id),
                level: prepared.policy.audit,
                runtime: "shim",
                socket_dir: std::path::Path::new(SOCKET_DIR),
                key: &node_key(namespace, id),
                container_id: id,
            })
            .map_err(ContainerError::from)?;
        Ok(Container {
            id: id.to_owned(),
            bundle: bundle.to_owned(),
            stdio,
            pid: sandbox.pid,
            runsc,
            // The pod's sandbox, egress and audit trail are the sandbox
            // container's; its monitor sees the whole pod, and its events
            // carry the sandbox container's identity (a known limit).
            sandbox: Arc::clone(&sandbox.sandbox),
            state: ProcessState::new(),
            timeout: Some(prepared.policy.resources.timeout.as_duration()),
            termination_log: spec.termination_log(),
            causes: Arc::new(EndCauses::default()),
            pod_limits: Some(pod_limits),
            member: Some(Member {
                sandbox: sandbox.id.clone(),
                audit: Mutex::new(audit),
                record: record_path,
            }),
            console: None,
            stdin: None,
            init_process,
            execs: Mutex::new(HashMap::new()),
            next_exec: AtomicU64::new(0),
            logger: Mutex::new(None),
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
    pub(super) fn start_member(&self) -> Result<(), ContainerError> {
        let streams = [
            // A FIFO opened read-write: a member's stdin never ends (CloseIO
            // is a no-op for it; see the README's limitations).
            open_output(&self.stdio.stdin)?,
            open_output(&self.stdio.stdout)?,
            open_output(&self.stdio.stderr)?,
        ];
        self.runsc.start_with_stdio(&self.id, streams)?;
        // The member's gofer was a child of `runsc start`, which has exited:
        // it is the shim's now, and is reaped the moment it ends (`runsc
        // delete` waits until it is gone, zombies included).
        match self.runsc.gofer_pid(&self.id) {
            Some(gofer) => {
                std::thread::spawn(move || reaper::wait_exit(gofer));
            }
            None => tracing::warn!(id = %self.id, "no gofer pid in runsc's state"),
        }
        let (runsc, id, state) = (self.runsc.clone(), self.id.clone(), self.state.clone());
        let (sandbox, causes) = (Arc::clone(&self.sandbox), Arc::clone(&self.causes));
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
            // The same rule as every sandbox's; a host OOM kill takes the
            // whole sandbox, members included.
            let ending = Ending {
                status: status as i32,
                oom_kills: sandbox.stats().oom_kills,
                timed_out: causes.timed_out.load(Ordering::SeqCst),
                killed: causes.killed.load(Ordering::SeqCst),
                ..Ending::default()
            };
            state.record(Exit {
                status: ending.reported_status() as u32,
                at: SystemTime::now(),
                outcome: ending.outcome(),
            });
        });
        Ok(())
    }

    /// Records the end of a member that never started (no thread waits for
    /// it): killed, 137.
    pub(super) fn end_unstarted_member(&self) {
        self.causes.killed.store(true, Ordering::SeqCst);
        self.state.record(Exit {
            outcome: skillbox_sandbox::Outcome::Killed,
            ..Exit::with_status(137)
        });
    }

    /// Removes a member: killed first if it runs, then `runsc delete`.
    /// The sandbox and its other containers go on. Blocking.
    pub(super) fn delete_member(&self, member: &Member) -> Result<Option<Exit>, ContainerError> {
        match self.status().0 {
            Status::Stopped => {}
            Status::Created => self.end_unstarted_member(),
            Status::Running | Status::Paused => {
                self.causes.killed.store(true, Ordering::SeqCst);
                let _ = self.runsc.kill(&self.id, nix::sys::signal::SIGKILL as i32);
                let deadline = Instant::now() + Duration::from_secs(10);
                while self.status().0 != Status::Stopped && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let audit = member.audit.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(audit), Some(exit)) = (audit, self.status().1) {
            audit.finish(skillbox_audit::execution::Ending {
                status: exit.status as i32,
                wall: None,
                outcome: exit.outcome,
                timeout_limit: self.timeout.unwrap_or_default(),
            });
        }
        if let Some(pod) = &self.pod_limits {
            if let Err(err) = self.sandbox.update(&pod.remove(&self.id)) {
                tracing::warn!(id = %self.id, %err, "cannot shrink the pod's cgroup");
            }
        }
        // runsc's state of the member, what runsc left of it, its cgroup
        // parents once empty; the record goes last.
        // A member that ended is deleted straight away (no kill, no search
        // for its processes): containerd's CRI plugin deletes the task
        // before it reports the exit, so this is on the exit's path.
        let scan = match self.status().0 == Status::Stopped && self.runsc.delete_force(&self.id).is_ok() {
            true => ProcessScan::Skip,
            false => ProcessScan::Kill,
        };
        match TeardownRecord::load(&member.record) {
            Ok(teardown) => {
                for failure in teardown.remove_with(&member.record, scan) {
                    tracing::warn!(id = %self.id, %failure, "member not fully removed");
                }
            }
            Err(err) => tracing::warn!(id = %self.id, %err, "no teardown record for the member"),
        }
        Ok(self.status().1)
    }
}
