//! One sandbox's host side, the same for `skillbox run` and the shim.
//!
//! [`Sandbox::prepare`] makes everything the sandbox needs, in this order,
//! recording each thing in the teardown record before making it: the audit
//! trail (and the gVisor monitor runsc reports to), the egress session
//! joined into the spec when the policy allows egress, the sandbox's own
//! cgroup with the spec's limits; then it writes the spec, once, for runsc.
//! The runtime then runs runsc (`run`, or `create` and `start`).
//!
//! When the init process has ended, [`Sandbox::end`] decides the outcome
//! (one rule for every runtime), stops the egress session (its last
//! events reach the log) and closes the audit trail with the outcome.
//! [`Sandbox::teardown`] (also on drop) removes the rest in one fixed
//! order: runsc's state, the cgroup, the egress session and audit trail if
//! `end` was never reached, the runtime's directory, the record.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use policy_compiler::effective::EffectiveNetwork;
use policy_compiler::node_config::{AuditSettings, DnsUpstream};
use policy_compiler::EffectivePolicy;
use skillbox_audit::execution::{AuditSetup, ExecutionAudit, ExecutionAuditError, SOCKET_DIR};
use skillbox_audit::SandboxIdentity;
use skillbox_egress::netns::{NetnsName, NETNS_DIR};
use skillbox_egress::session::{upstreams_for, EgressError, EgressSession, Inbound, SessionConfig};
use skillbox_egress::spec::join_session;

use crate::cgroup::{CgroupError, CgroupFs, CgroupStats, LimitUpdate, SandboxCgroup};
use crate::outcome::{Ending, Outcome};
use crate::record::{AuditRecord, ProcessScan, RecordError, RunscRecord, TeardownRecord};
use crate::runsc::Runsc;
use crate::spec::{BundleSpec, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("cannot start the sandbox's audit trail: {0}")]
    Audit(#[from] Box<ExecutionAuditError>),
    #[error("{path}: {field}: {value}: {expected}")]
    Spec {
        path: PathBuf,
        field: String,
        value: String,
        expected: String,
    },
    #[error("cannot set up the network egress of sandbox {id}: {source}")]
    Egress {
        id: String,
        #[source]
        source: Box<EgressError>,
    },
    #[error("{path}: cannot point the spec at the sandbox's network: {source}")]
    JoinEgress {
        path: PathBuf,
        #[source]
        source: skillbox_egress::spec::SpecError,
    },
    #[error("cannot create the sandbox's cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    WriteSpec(#[from] SpecError),
}

/// Where the egress session's DNS proxy sends allowed queries, and how long
/// learned addresses outlive their TTL.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    pub upstreams: Vec<SocketAddr>,
    pub ttl_grace: Duration,
}

impl EgressSettings {
    /// What a session under `network` needs: the resolvers `configured`
    /// (the node config's, or a runtime's own), else the nameservers of
    /// this node's /etc/resolv.conf; none needed when `network` allows no
    /// domain.
    pub fn resolve(
        configured: &[DnsUpstream],
        ttl_grace: Duration,
        network: &EffectiveNetwork,
    ) -> Result<EgressSettings, EgressError> {
        let addrs: Vec<SocketAddr> = configured.iter().map(|upstream| upstream.0).collect();
        Ok(EgressSettings {
            upstreams: upstreams_for(network, &addrs)?,
            ttl_grace,
        })
    }
}

/// What a runtime decides about a sandbox before it is prepared.
pub struct SandboxConfig<'a> {
    /// runsc's container id.
    pub id: &'a str,
    /// A short name unique on the node (the network namespace is
    /// `skillbox-<key>`, the monitor socket `<key>.sock`).
    pub key: &'a str,
    /// `shim` or `skillbox-run`, recorded in the audit `start` event.
    pub runtime: &'a str,
    pub identity: SandboxIdentity,
    pub policy: &'a EffectivePolicy,
    /// runsc with its root, flags and binary; the audit session is added.
    pub runsc: Runsc,
    pub audit: &'a AuditSettings,
    pub audit_log: &'a Path,
    /// Needed when the sandbox gets an egress session: its policy allows
    /// egress, or it is a pod's sandbox in the pod's network namespace (see
    /// [`pod_network`]).
    pub egress: Option<EgressSettings>,
    /// Run on a scan's observing network instead (`EgressSession::
    /// start_observing`): every name answered from a sinkhole, every
    /// connection recorded and judged against the policy, nothing let out.
    pub observe_network: bool,
    /// Where the sandbox's resolv.conf (naming the DNS proxy) is written.
    pub resolv_conf: PathBuf,
    /// Where the teardown record is kept.
    pub record: PathBuf,
    /// Filesystems the runtime mounted for the sandbox, detached at
    /// teardown.
    pub mounts: Vec<PathBuf>,
    /// A directory of the runtime's to remove with the sandbox.
    pub directory: Option<PathBuf>,
}

/// How a sandbox ended, as every runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ended {
    pub outcome: Outcome,
    /// The status to report (see [`Ending::reported_status`]).
    pub status: i32,
    pub stats: CgroupStats,
}

/// A prepared sandbox and everything it holds on the host.
pub struct Sandbox {
    id: String,
    runsc: Runsc,
    timeout: Duration,
    network: Option<EffectiveNetwork>,
    /// The resolv.conf naming the egress session's DNS proxy.
    resolv_conf: Option<PathBuf>,
    record: Mutex<TeardownRecord>,
    record_path: PathBuf,
    audit: Mutex<Option<ExecutionAudit>>,
    egress: Mutex<Option<EgressSession>>,
    cgroup: Option<SandboxCgroup>,
    /// `end` ran: the init process is gone, so teardown kills nothing.
    ended: AtomicBool,
    torn_down: AtomicBool,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .field("record", &self.record_path)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pod network namespace a pod's sandbox container names (a CRI pod's,
/// under /var/run/netns): such a sandbox always gets an egress session, in
/// which it is reachable and its egress is judged, deny by default.
pub fn pod_network(spec: &BundleSpec) -> Option<NetnsName> {
    if !spec.is_pod_sandbox() {
        return None;
    }
    outer_namespace(spec).ok().flatten()
}

/// The outer side of the sandbox's egress: the namespace the spec names
/// (a CRI pod's, under /var/run/netns), or `None` when it asks for a new
/// one (the runtime's own namespace is then the outer side).
pub fn outer_namespace(spec: &BundleSpec) -> Result<Option<NetnsName>, SandboxError> {
    let refuse = |field: String, value: &str, expected: String| SandboxError::Spec {
        path: spec.path(),
        field,
        value: value.to_owned(),
        expected,
    };
    let Some((index, given)) = spec.network_namespace() else {
        return Err(refuse(
            "linux.namespaces".to_owned(),
            "no network namespace",
            "a network namespace entry (new, or the pod's)".to_owned(),
        ));
    };
    let Some(given) = given else {
        return Ok(None);
    };
    let named = Path::new(given)
        .parent()
        .filter(|dir| *dir == Path::new(NETNS_DIR) || *dir == Path::new("/run/netns"))
        .and(Path::new(given).file_name())
        .and_then(|name| NetnsName::new(&name.to_string_lossy()).ok());
    named.map(Some).ok_or_else(|| {
        refuse(
            format!("linux.namespaces[{index}].path"),
            given,
            format!("egress needs the pod's network namespace named under {NETNS_DIR} (as CNI and `ip netns` make them), or none"),
        )
    })
}

impl Sandbox {
    /// Makes everything the sandbox needs and writes `spec` for runsc (see
    /// the module doc). On failure, whatever was made is removed again.
    pub fn prepare(config: SandboxConfig<'_>, spec: &mut BundleSpec) -> Result<Sandbox, SandboxError> {
        let mut record = TeardownRecord::new(config.id, RunscRecord::of(&config.runsc, spec.bundle()));
        record.directory = config.directory.clone();
        record.mounts = config.mounts.clone();
        record.audit = Some(AuditRecord {
            socket_dir: PathBuf::from(SOCKET_DIR),
            key: config.key.to_owned(),
        });
        record.save(&config.record)?;
        // From here on, dropping `sandbox` tears down what was made.
        let mut sandbox = Sandbox {
            id: config.id.to_owned(),
            runsc: config.runsc.clone(),
            timeout: config.policy.resources.timeout.as_duration(),
            network: None,
            resolv_conf: None,
            record: Mutex::new(record),
            record_path: config.record.clone(),
            audit: Mutex::new(None),
            egress: Mutex::new(None),
            cgroup: None,
            ended: AtomicBool::new(false),
            torn_down: AtomicBool::new(false),
        };
        let audit = ExecutionAudit::start(&AuditSetup {
            log: config.audit_log,
            rotation: config.audit.into(),
            event_budget: config.audit.event_budget,
            identity: config.identity.clone(),
            level: config.policy.audit,
            runtime: config.runtime,
            socket_dir: Path::new(SOCKET_DIR),
            key: config.key,
            container_id: config.id,
        })
        .map_err(Box::new)?;
        if let Some(session) = audit.pod_init_config() {
            sandbox.runsc = sandbox.runsc.clone().with_pod_init_config(session);
        }
        let events = Arc::clone(audit.writer());
        *lock(&sandbox.audit) = Some(audit);
        if config.observe_network || config.policy.has_egress() || pod_network(spec).is_some() {
            sandbox.start_egress(&config, spec, events)?;
        }
        if let Some(relative) = spec.cgroups_path() {
            // Recorded before anything of it is made.
            let cgroup = SandboxCgroup::plan(CgroupFs::detect()?, &relative)?;
            lock(&sandbox.record).cgroups = cgroup.created().to_vec();
            sandbox.save_record()?;
            cgroup.make(&LimitUpdate::of_spec(spec.value()))?;
            sandbox.cgroup = Some(cgroup);
        }
        spec.write()?;
        Ok(sandbox)
    }

    fn start_egress(
        &mut self,
        config: &SandboxConfig<'_>,
        spec: &mut BundleSpec,
        events: Arc<skillbox_audit::jsonl::JsonLinesWriter>,
    ) -> Result<(), SandboxError> {
        let egress_error = |source: EgressError| SandboxError::Egress {
            id: config.id.to_owned(),
            source: Box::new(source),
        };
        let settings = match (&config.egress, config.observe_network) {
            (Some(settings), _) => settings.clone(),
            // Observing, nothing is ever asked upstream.
            (None, true) => EgressSettings {
                upstreams: Vec::new(),
                ttl_grace: Duration::ZERO,
            },
            (None, false) => return Err(egress_error(EgressError::NoUpstream)),
        };
        let outer = outer_namespace(spec)?;
        // A pod is reached at its IP (Services, probes) and through
        // localhost in its namespace (port-forward); a sandbox in the
        // runtime's own namespace is never reachable.
        let inbound = match outer {
            Some(_) => Inbound::AddressesAndLocalhost,
            None => Inbound::Closed,
        };
        let name =
            NetnsName::new(&format!("skillbox-{}", config.key)).map_err(|err| egress_error(err.into()))?;
        let session_config = SessionConfig {
            outer,
            upstreams: settings.upstreams,
            ttl_grace: settings.ttl_grace,
            events,
        };
        let session = match config.observe_network {
            true => EgressSession::start_observing(config.key, name, &config.policy.network, &session_config),
            false => EgressSession::start_with_inbound(
                config.key,
                name,
                &config.policy.network,
                &session_config,
                inbound,
            ),
        }
        .map_err(egress_error)?;
        lock(&self.record).egress = Some(session.record());
        let recorded = self.save_record();
        let joined = join_session(spec.value_mut(), &session, &config.resolv_conf);
        tracing::info!(
            id = %config.id,
            namespace = %session.namespace_path().display(),
            table = session.table_name(),
            "egress enforced"
        );
        *lock(&self.egress) = Some(session);
        self.network = Some(config.policy.network.clone());
        self.resolv_conf = Some(config.resolv_conf.clone());
        recorded?;
        joined.map_err(|source| SandboxError::JoinEgress {
            path: spec.path(),
            source,
        })
    }

    fn save_record(&self) -> Result<(), RecordError> {
        lock(&self.record).save(&self.record_path)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// runsc for this sandbox: its root, flags and audit session.
    pub fn runsc(&self) -> &Runsc {
        &self.runsc
    }

    /// The policy's wall-clock limit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Starts the audit trail of a container joining this sandbox (a pod
    /// member), fed by this sandbox's monitor; `None` once the sandbox's
    /// own trail has closed.
    pub fn join_audit(
        &self,
        setup: &skillbox_audit::execution::AuditSetup<'_>,
    ) -> Result<Option<skillbox_audit::execution::MemberAudit>, SandboxError> {
        match lock(&self.audit).as_ref() {
            Some(audit) => Ok(Some(audit.join(setup).map_err(Box::new)?)),
            None => Ok(None),
        }
    }

    /// The resolv.conf naming the egress session's DNS proxy, which every
    /// container of the sandbox mounts (`None`: no session).
    pub fn resolv_conf(&self) -> Option<&Path> {
        self.resolv_conf.as_deref()
    }

    /// The network policy the egress session enforces (`None`: no network).
    pub fn network(&self) -> Option<&EffectiveNetwork> {
        self.network.as_ref()
    }

    /// How many of the sandbox's packets left the node's namespace, for a
    /// sandbox on an observing network (`None` otherwise, or once its
    /// session is gone).
    pub fn packets_left(&self) -> Option<Result<u64, EgressError>> {
        lock(&self.egress).as_ref().map(EgressSession::packets_left)
    }

    /// The sandbox cgroup's `cgroupsPath`, if skillbox made one.
    pub fn cgroups_path(&self) -> Option<String> {
        self.cgroup.as_ref().map(SandboxCgroup::cgroups_path)
    }

    /// What the sandbox's cgroup has recorded (zeros without one).
    pub fn stats(&self) -> CgroupStats {
        self.cgroup.as_ref().map(SandboxCgroup::stats).unwrap_or_default()
    }

    /// Changes the sandbox cgroup's limits; `false` when it has none.
    pub fn update(&self, update: &LimitUpdate) -> Result<bool, CgroupError> {
        match &self.cgroup {
            Some(cgroup) => cgroup.update(update).map(|()| true),
            None => Ok(false),
        }
    }

    /// Records how the init process ended: decides the outcome, stops the
    /// egress session and closes the audit trail (once; later calls only
    /// decide). The cgroup still holds the OOM count here.
    pub fn end(&self, ending: Ending, wall: Option<Duration>) -> Ended {
        let stats = self.stats();
        let ending = Ending {
            oom_kills: stats.oom_kills,
            ..ending
        };
        let ended = Ended {
            outcome: ending.outcome(),
            status: ending.reported_status(),
            stats,
        };
        self.ended.store(true, Ordering::SeqCst);
        drop(lock(&self.egress).take());
        if let Some(audit) = lock(&self.audit).take() {
            audit.finish(skillbox_audit::execution::Ending {
                status: ended.status,
                wall,
                outcome: ended.outcome,
                timeout_limit: self.timeout,
            });
        }
        tracing::info!(id = %self.id, outcome = ended.outcome.as_str(), status = ended.status, "sandbox ended");
        ended
    }

    /// Removes everything the sandbox holds, in the fixed order of the
    /// module doc (once; later calls do nothing). Returns what could not
    /// be removed (the record then stays, for `skillbox gc` or the shim's
    /// `delete`).
    pub fn teardown(&self) -> Vec<String> {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return Vec::new();
        }
        let mut failures = Vec::new();
        // A sandbox whose init process ended needs no kill (one runsc call
        // less); delete removes its state either way.
        if !self.ended.load(Ordering::SeqCst) {
            let _ = self
                .runsc
                .kill_with(&self.id, nix::sys::signal::SIGKILL as i32, true);
        }
        let deleted = self.runsc.delete_force(&self.id);
        if let Err(err) = &deleted {
            tracing::debug!(id = %self.id, %err, "runsc delete failed");
        }
        if let Some(cgroup) = &self.cgroup {
            if let Err(err) = cgroup.remove() {
                failures.push(err.to_string());
            }
        }
        drop(lock(&self.egress).take());
        drop(lock(&self.audit).take());
        // The record removes what is left (processes runsc could not take,
        // the directory) and then itself; what failed above stays in it.
        let mut record = lock(&self.record);
        if failures.is_empty() {
            record.cgroups.clear();
        }
        record.egress = None;
        // When runsc deleted the sandbox, no process of it is left to look
        // for (a scan of /proc saved on every run).
        let scan = match deleted {
            Ok(_) => ProcessScan::Skip,
            Err(_) => ProcessScan::Kill,
        };
        failures.extend(record.remove_with(&self.record_path, scan));
        for failure in &failures {
            tracing::warn!(id = %self.id, %failure, "sandbox teardown incomplete");
        }
        failures
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A name for container `id` of containerd namespace `namespace` unique on
/// the node (containerd ids are unique per namespace only) and short enough
/// for a network namespace and a socket path.
pub fn node_key(namespace: &str, id: &str) -> String {
    use std::hash::{Hash, Hasher};
    let full = format!("{namespace}.{id}");
    if full.len() <= 48 {
        return full;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    full.hash(&mut hasher);
    let head: String = id.chars().take(24).collect();
    format!("{head}.{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn node_keys_are_unique_per_namespace_and_short() {
        assert_eq!(node_key("default", "web"), "default.web");
        assert_ne!(node_key("a", "web"), node_key("b", "web"));
        let long = "x".repeat(76);
        let key = node_key("k8s.io", &long);
        assert!(key.len() <= 48 && key.starts_with("xxxx"), "{key}");
        assert_ne!(key, node_key("other", &long));
        assert!(NetnsName::new(&format!("skillbox-{key}")).is_ok());
    }

    #[test]
    fn the_outer_namespace_is_the_pods_or_the_runtimes() {
        let spec = |ns: Value| {
            BundleSpec::new(
                Path::new("/b"),
                json!({"linux": {"namespaces": [{"type": "pid"}, ns]}}),
            )
        };
        assert_eq!(outer_namespace(&spec(json!({"type": "network"}))).unwrap(), None);
        assert_eq!(
            outer_namespace(&spec(json!({"type": "network", "path": "/var/run/netns/cni-1"}))).unwrap(),
            Some(NetnsName::new("cni-1").unwrap())
        );
        let err = outer_namespace(&spec(json!({"type": "network", "path": "/proc/42/ns/net"})))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/b/config.json: linux.namespaces[1].path: /proc/42/ns/net: egress needs"),
            "{err}"
        );
    }
}
