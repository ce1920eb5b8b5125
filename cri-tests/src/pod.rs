//! A pod as kubelet runs it: its directory (hosts file, termination-log
//! files, emptyDir volumes), RunPodSandbox with kubelet's config, then
//! CreateContainer/StartContainer with kubelet's mounts, and on the way out
//! StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox. A
//! [`Pod`] is a guard: dropped without [`Pod::teardown`] (a failed test), it
//! still stops and removes everything it started.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_cri::v1::*;

use crate::check::OrFail;
use crate::client::{CallError, Cri};
use crate::images::BUSYBOX_IMAGE;
use crate::leftovers::PodTraces;
use crate::logs::{self, LogLine};
use crate::node::{Handler, Node, HARNESS_LABEL};
use crate::reap::Abandoned;

/// The Kubernetes namespace of every test pod.
pub const POD_NAMESPACE: &str = "skillbox-cri";
/// The emptyDir every container gets, and where it is mounted.
pub const EMPTY_DIR: &str = "scratch";
pub const EMPTY_DIR_MOUNT: &str = "/scratch";
/// The cluster DNS server kubelet would put in the pod's resolv.conf (never
/// contacted: pods have no route out).
pub const CLUSTER_DNS: &str = "10.96.0.10";

const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// The grace period (seconds) teardown gives StopContainer: short, since a
/// server running as pid 1 without a TERM handler waits it out.
const TEARDOWN_GRACE: i64 = 2;

/// A container as the test wants it; [`Pod::create`] adds what kubelet adds.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub readonly_rootfs: bool,
    /// `resources.limits.memory` in bytes (0: none).
    pub memory_limit: i64,
    pub annotations: HashMap<String, String>,
}

impl ContainerSpec {
    /// A busybox container running `sh -c script`.
    pub fn sh(name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.to_owned(),
            image: BUSYBOX_IMAGE.to_owned(),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            readonly_rootfs: false,
            memory_limit: 0,
            annotations: HashMap::new(),
        }
    }

    /// A busybox container running `argv` as it is (no shell).
    pub fn exec(name: &str, argv: &[&str]) -> ContainerSpec {
        ContainerSpec {
            command: argv.iter().map(|arg| (*arg).to_owned()).collect(),
            ..ContainerSpec::sh(name, "")
        }
    }

    pub fn readonly_rootfs(mut self) -> ContainerSpec {
        self.readonly_rootfs = true;
        self
    }

    pub fn memory_limit(mut self, bytes: i64) -> ContainerSpec {
        self.memory_limit = bytes;
        self
    }
}

/// How a container ended, and when the harness saw it.
#[derive(Debug, Clone)]
pub struct Exit {
    pub code: i32,
    pub reason: String,
    pub message: String,
    /// ContainerStatus's `finished_at`, nanoseconds since the epoch.
    pub finished_at: i64,
    /// When ContainerStatus first said EXITED, nanoseconds since the epoch.
    pub seen_at: i128,
}

/// A running pod sandbox and the containers the test made in it.
#[derive(Debug)]
pub struct Pod {
    pub node: Arc<Node>,
    pub handler: Handler,
    pub name: String,
    pub uid: String,
    /// The sandbox id (empty until RunPodSandbox answered).
    pub id: String,
    pub ip: String,
    /// How long RunPodSandbox took.
    pub run_time: Duration,
    /// The pod's CNI network namespace, as containerd reported it.
    pub netns: Option<String>,
    config: PodSandboxConfig,
    /// Container ids by name.
    containers: Vec<(String, String)>,
    done: bool,
}

fn unique_uid() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

/// How often StopPodSandbox is tried before its error counts.
const STOP_POD_ATTEMPTS: usize = 3;

/// StopPodSandbox, tried again on an error as kubelet does on its next
/// sync: when a pod's sandbox dies on its own (a pod-wide OOM kill), the
/// call can race containerd's handling of that exit and meet a shim that is
/// shutting down (`ttrpc: closed`).
fn stop_pod_sandbox(cri: &Cri, sandbox: &str) -> Result<(), CallError> {
    let mut attempt = 1;
    loop {
        match cri.stop_pod_sandbox(sandbox) {
            Err(err) if attempt < STOP_POD_ATTEMPTS => {
                eprintln!("cri-tests: StopPodSandbox {sandbox} (attempt {attempt}): {err}; trying again");
                std::thread::sleep(Duration::from_millis(500));
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// kubelet's cgroup parent of a BestEffort pod (cgroupfs driver).
pub fn cgroup_parent(uid: &str) -> String {
    format!("/kubepods/besteffort/pod{uid}")
}

fn pod_namespace_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

impl Pod {
    /// [`Pod::run`] on the test binary's shared node, failing the test with
    /// containerd's log; prints how long RunPodSandbox took
    /// (`cri-timing:`).
    pub fn run_on_shared_node(handler: Handler, name: &str) -> Pod {
        let node = Node::shared();
        let pod = Pod::run(&node, handler, name).or_fail(&node);
        eprintln!(
            "cri-timing: {} RunPodSandbox {:.3?} (pod {name}, ip {})",
            handler.name(),
            pod.run_time,
            pod.ip
        );
        pod
    }

    /// [`Pod::teardown`], failing the test with containerd's log.
    pub fn finish(self) {
        let node = self.node.clone();
        self.teardown().or_fail(&node);
    }

    /// RunPodSandbox of pod `name` under `handler`, then PodSandboxStatus for
    /// its IP, then the pod's hosts file (kubelet writes it once the IP is
    /// known).
    pub fn run(node: &Arc<Node>, handler: Handler, name: &str) -> Result<Pod, CallError> {
        let uid = unique_uid();
        let pod_dir = node.pod_dir(&uid);
        let log_dir = node.pod_log_dir(POD_NAMESPACE, name, &uid);
        for dir in [&pod_dir, &log_dir] {
            std::fs::create_dir_all(dir).expect("creating a pod directory");
        }
        let labels = HashMap::from([
            ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
            ("io.kubernetes.pod.namespace".to_owned(), POD_NAMESPACE.to_owned()),
            (POD_UID_LABEL.to_owned(), uid.clone()),
            (HARNESS_LABEL.to_owned(), node.tag().to_owned()),
        ]);
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.clone(),
                namespace: POD_NAMESPACE.to_owned(),
                attempt: 0,
            }),
            hostname: name.to_owned(),
            log_directory: log_dir.display().to_string(),
            dns_config: Some(DnsConfig {
                servers: vec![CLUSTER_DNS.to_owned()],
                searches: vec![
                    format!("{POD_NAMESPACE}.svc.cluster.local"),
                    "svc.cluster.local".to_owned(),
                    "cluster.local".to_owned(),
                ],
                options: vec!["ndots:5".to_owned()],
            }),
            port_mappings: Vec::new(),
            labels,
            annotations: HashMap::from([
                ("kubernetes.io/config.source".to_owned(), "api".to_owned()),
                (
                    "kubernetes.io/config.seen".to_owned(),
                    "2026-12-06T00:00:00Z".to_owned(),
                ),
            ]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent(&uid),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(pod_namespace_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut pod = Pod {
            node: Arc::clone(node),
            handler,
            name: name.to_owned(),
            uid,
            id: String::new(),
            ip: String::new(),
            run_time: Duration::ZERO,
            netns: None,
            config,
            containers: Vec::new(),
            done: false,
        };
        let started = Instant::now();
        pod.id = node.cri.run_pod_sandbox(pod.config.clone(), handler.name())?;
        pod.run_time = started.elapsed();
        pod.netns = pod.netns_path();
        let status = node.cri.pod_sandbox_status(&pod.id)?;
        pod.ip = status
            .status
            .and_then(|status| status.network)
            .map(|network| network.ip)
            .unwrap_or_default();
        std::fs::write(
            pod_dir.join("etc-hosts"),
            format!(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
                pod.ip, pod.name
            ),
        )
        .expect("writing etc-hosts");
        Ok(pod)
    }

    /// The pod's directory, kubelet-like.
    pub fn dir(&self) -> PathBuf {
        self.node.pod_dir(&self.uid)
    }

    /// The host directory behind the pod's emptyDir.
    pub fn empty_dir(&self) -> PathBuf {
        self.dir().join("volumes/kubernetes.io~empty-dir").join(EMPTY_DIR)
    }

    /// The host file behind container `name`'s /dev/termination-log.
    pub fn termination_log(&self, name: &str) -> PathBuf {
        self.dir().join("containers").join(name).join("0")
    }

    /// The pod's network namespace as containerd reports it (verbose
    /// PodSandboxStatus: the sandbox's runtime spec).
    pub fn netns_path(&self) -> Option<String> {
        let status = self.node.cri.pod_sandbox_status(&self.id).ok()?;
        let info: serde_json::Value = serde_json::from_str(status.info.get("info")?).ok()?;
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()?
            .iter()
            .find(|namespace| namespace["type"] == "network")?["path"]
            .as_str()
            .map(str::to_owned)
    }

    /// CreateContainer of `spec` with kubelet's additions: the emptyDir,
    /// /etc/hosts and /dev/termination-log mounts, the log path, labels,
    /// and the pod's namespaces and resources.
    pub fn create(&mut self, spec: &ContainerSpec) -> Result<String, CallError> {
        let empty_dir = self.empty_dir();
        let termination_log = self.termination_log(&spec.name);
        std::fs::create_dir_all(&empty_dir).expect("creating the emptyDir");
        std::fs::create_dir_all(termination_log.parent().expect("a parent")).expect("creating containers/");
        std::fs::write(&termination_log, "").expect("creating the termination log");
        let mounts = vec![
            Mount {
                container_path: EMPTY_DIR_MOUNT.to_owned(),
                host_path: empty_dir.display().to_string(),
                ..Default::default()
            },
            Mount {
                container_path: "/etc/hosts".to_owned(),
                host_path: self.dir().join("etc-hosts").display().to_string(),
                ..Default::default()
            },
            Mount {
                container_path: "/dev/termination-log".to_owned(),
                host_path: termination_log.display().to_string(),
                ..Default::default()
            },
        ];
        let mut labels = self.config.labels.clone();
        labels.remove(HARNESS_LABEL);
        labels.insert("io.kubernetes.container.name".to_owned(), spec.name.clone());
        let mut annotations = spec.annotations.clone();
        annotations.insert("io.kubernetes.container.restartCount".to_owned(), "0".to_owned());
        annotations.insert(
            "io.kubernetes.container.terminationMessagePath".to_owned(),
            "/dev/termination-log".to_owned(),
        );
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: spec.name.clone(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: spec.image.clone(),
                ..Default::default()
            }),
            command: spec.command.clone(),
            envs: vec![KeyValue {
                key: "KUBERNETES_SERVICE_HOST".to_owned(),
                value: "10.96.0.1".to_owned(),
            }],
            mounts,
            labels,
            annotations,
            log_path: format!("{}/0.log", spec.name),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_shares: 2,
                    memory_limit_in_bytes: spec.memory_limit,
                    oom_score_adj: 1000,
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(pod_namespace_options()),
                    readonly_rootfs: spec.readonly_rootfs,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let id = self
            .node
            .cri
            .create_container(&self.id, config, self.config.clone())?;
        self.containers.push((spec.name.clone(), id.clone()));
        Ok(id)
    }

    /// CreateContainer then StartContainer.
    pub fn start(&mut self, spec: &ContainerSpec) -> Result<String, CallError> {
        let id = self.create(spec)?;
        self.node.cri.start_container(&id)?;
        Ok(id)
    }

    /// The ids of the containers made so far.
    pub fn container_ids(&self) -> Vec<String> {
        self.containers.iter().map(|(_, id)| id.clone()).collect()
    }

    /// Polls ContainerStatus every 10 ms until container `id` has exited,
    /// for at most `limit`.
    pub fn wait_exit(&self, id: &str, limit: Duration) -> Result<Exit, String> {
        let status = self.wait_state(id, ContainerState::ContainerExited, limit, "exited")?;
        Ok(Exit {
            code: status.exit_code,
            reason: status.reason,
            message: status.message,
            finished_at: status.finished_at,
            seen_at: now_nanos(),
        })
    }

    /// Asserts that the pod sandbox is READY and container `id` RUNNING now
    /// (`when` says at which point of the test, for the messages).
    pub fn assert_ready_and_running(&self, id: &str, when: &str) {
        let node = &self.node;
        let sandbox = node
            .cri
            .pod_sandbox_status(&self.id)
            .or_fail(node)
            .status
            .unwrap_or_default();
        assert_eq!(
            PodSandboxState::try_from(sandbox.state),
            Ok(PodSandboxState::SandboxReady),
            "PodSandboxStatus {when}: {sandbox:?}"
        );
        let status = node.cri.container_status(id).or_fail(node);
        assert_eq!(
            ContainerState::try_from(status.state),
            Ok(ContainerState::ContainerRunning),
            "ContainerStatus {when}: {status:?}"
        );
    }

    /// Polls ContainerStatus every 10 ms until container `id` is running,
    /// for at most `limit`; an exit before that fails at once.
    pub fn wait_running(&self, id: &str, limit: Duration) -> Result<(), String> {
        self.wait_state(id, ContainerState::ContainerRunning, limit, "running")
            .map(|_| ())
    }

    /// Polls ContainerStatus every 10 ms until container `id` is in
    /// `wanted` (`described` in the error), for at most `limit`; an exited
    /// container never reaches another state.
    fn wait_state(
        &self,
        id: &str,
        wanted: ContainerState,
        limit: Duration,
        described: &str,
    ) -> Result<ContainerStatus, String> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self
                .node
                .cri
                .container_status(id)
                .map_err(|err| err.to_string())?;
            if status.state == wanted as i32 {
                return Ok(status);
            }
            if status.state == ContainerState::ContainerExited as i32 || Instant::now() > deadline {
                return Err(format!(
                    "container {id} not {described} after {limit:?}: ContainerStatus state {:?}, exit code {}, reason {:?}, message {:?}",
                    ContainerState::try_from(status.state),
                    status.exit_code,
                    status.reason,
                    status.message
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What identifies this pod's traces on the host, for
    /// [`crate::leftovers`] once it is torn down.
    pub fn traces(&self) -> PodTraces {
        PodTraces {
            uid: self.uid.clone(),
            sandbox_id: self.id.clone(),
            container_ids: self.container_ids(),
            netns_path: self.netns.clone(),
            shim_socket: self.node.shim_socket(&self.id),
        }
    }

    /// The CRI log of container `name` (`<log_directory>/<name>/0.log`).
    pub fn logs(&self, name: &str) -> Vec<LogLine> {
        let path = PathBuf::from(&self.config.log_directory).join(name).join("0.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        logs::parse(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    /// The text of container `name`'s stdout and stderr lines.
    pub fn log_text(&self, name: &str) -> Vec<String> {
        self.logs(name).into_iter().map(|line| line.text).collect()
    }

    /// Waits up to `limit` for a log line of container `name` equal to `text`.
    pub fn wait_log(&self, name: &str, text: &str, limit: Duration) -> Result<LogLine, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.logs(name).into_iter().find(|line| line.text == text) {
                return Ok(line);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no log line {text:?} from {name} within {limit:?}; log: {:?}",
                    self.log_text(name)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops and removes every container, then the pod sandbox, the way
    /// kubelet tears a pod down; then removes the pod's cgroup parent and
    /// directory as kubelet does. Errors are collected, not stopped at.
    pub fn teardown(mut self) -> Result<(), String> {
        self.done = true;
        let errors = self.remove_everything();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn remove_everything(&mut self) -> Vec<String> {
        let cri = &self.node.cri;
        let mut errors = Vec::new();
        let mut sandboxes: Vec<String> = cri
            .list_pod_sandboxes(&[(POD_UID_LABEL, &self.uid)])
            .map(|pods| pods.into_iter().map(|pod| pod.id).collect())
            .unwrap_or_else(|err| {
                errors.push(err.to_string());
                Vec::new()
            });
        if !self.id.is_empty() && !sandboxes.contains(&self.id) {
            sandboxes.push(self.id.clone());
        }
        for sandbox in &sandboxes {
            let mut ids = self.container_ids();
            if let Ok(listed) = cri.list_containers(sandbox) {
                ids.extend(listed.into_iter().map(|container| container.id));
            }
            ids.sort();
            ids.dedup();
            for id in ids {
                if let Err(err) = cri.stop_container(&id, TEARDOWN_GRACE) {
                    errors.push(format!("{id}: {err}"));
                }
                if let Err(err) = cri.remove_container(&id) {
                    errors.push(format!("{id}: {err}"));
                }
            }
            for result in [stop_pod_sandbox(cri, sandbox), cri.remove_pod_sandbox(sandbox)] {
                if let Err(err) = result {
                    errors.push(format!("pod {sandbox}: {err}"));
                }
            }
        }
        if !errors.is_empty() {
            for sandbox in sandboxes {
                self.node.abandon(Abandoned {
                    sandbox_id: sandbox.clone(),
                    uid: self.uid.clone(),
                    netns_path: self.netns.clone(),
                    shim_socket: self.node.shim_socket(&sandbox),
                });
            }
        }
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(
                hierarchy
                    .path()
                    .join(cgroup_parent(&self.uid).trim_start_matches('/')),
            );
        }
        let _ = std::fs::remove_dir_all(self.dir());
        errors
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if !self.done {
            for error in self.remove_everything() {
                eprintln!("cri-tests: cleaning up pod {} ({}): {error}", self.name, self.uid);
            }
        }
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as i128)
        .unwrap_or(0)
}
