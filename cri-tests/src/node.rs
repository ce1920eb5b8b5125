//! One "node" per test binary: a network namespace, a private containerd
//! with its CRI plugin inside it, the pause and busybox images imported, and
//! a CRI client. Tests share it while any of them holds it ([`Node::shared`])
//! and each runs its own pods; the last to let go tears it down, after
//! removing any pod still there (shims and runsc outlive containerd).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use skillbox_test_support::{require, require_sandbox_prerequisites};

use crate::client::Cri;
use crate::config::{
    self, Layout, RuncRunsc, CNI_BIN_DIR, RUNC_HANDLER, RUNC_RUNSC_HANDLER, SKILLBOX_HANDLER,
};
use crate::containerd::{self, Binary, Containerd};
use crate::images::{self, BUSYBOX_IMAGE, PAUSE_IMAGE};
use crate::netns::NetNs;
use crate::reap::{self, Abandoned};

/// The runtime handler a pod runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// containerd's runc shim: the control that proves the harness.
    Runc,
    /// `containerd-shim-skillbox-v1`, one gVisor sandbox per pod.
    Skillbox,
    /// containerd's runc shim running runsc, one gVisor sandbox per
    /// container: the benchmark's baseline, on a node started with
    /// [`NodeOptions::runc_runsc`] only.
    RuncRunsc,
}

impl Handler {
    /// The handler's name, as a RuntimeClass gives it.
    pub fn name(self) -> &'static str {
        match self {
            Handler::Runc => RUNC_HANDLER,
            Handler::Skillbox => SKILLBOX_HANDLER,
            Handler::RuncRunsc => RUNC_RUNSC_HANDLER,
        }
    }
}

/// What a node adds to the tests' setup.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// The program containerd's runc shim runs as its runc for the
    /// `runc-runsc` handler ([`crate::runsc_as_runc`]); no such handler
    /// when `None`.
    pub runc_runsc: Option<PathBuf>,
    /// A node as before `skillbox node install`: a host root
    /// (`<dir>/host`, its `etc` a copy of this machine's `/etc`) whose
    /// containerd knows `runc` only, reads
    /// `<host>/etc/containerd/config.toml` as its `/etc/containerd/config.toml`
    /// (a mount namespace of its own), finds shims in
    /// `<host>/usr/local/bin` first, listens on `<host>/run/containerd/containerd.sock`,
    /// and is restarted whenever it exits, as systemd does.
    pub bare_host: bool,
}

/// The label every pod of this harness carries, valued with the node's tag.
pub const HARNESS_LABEL: &str = "io.skillbox.cri-tests/node";

/// A private containerd with its CRI plugin, in its own network namespace.
#[derive(Debug)]
pub struct Node {
    pub cri: Cri,
    containerd: Containerd,
    netns: NetNs,
    /// The CNI network's name: host-local keeps its leases under
    /// `/var/lib/cni/networks/<name>` whatever the config says.
    network: String,
    tag: String,
    /// `containerd --version`.
    pub version: String,
    /// Pods whose teardown failed: the node clears them itself at the end.
    abandoned: Mutex<Vec<Abandoned>>,
    options: NodeOptions,
    dir: tempfile::TempDir,
}

/// A bare host's root, in the node's directory.
const HOST_DIR: &str = "host";
/// The skillbox node config, in the node's directory.
const NODE_CONFIG_FILE: &str = "node.toml";

/// Makes a bare host's root under `dir`: `etc` copied from this machine's
/// `/etc` (what containerd, runc and the CNI plugins read stays as it is),
/// and the directories a node has.
fn bare_host(dir: &Path) -> PathBuf {
    let root = dir.join(HOST_DIR);
    std::fs::create_dir(&root).expect("creating the host root");
    let copied = std::process::Command::new("cp")
        .args(["-a", "/etc"])
        .arg(root.join("etc"))
        .status()
        .expect("running cp -a /etc");
    assert!(copied.success(), "cp -a /etc {}: {copied}", root.display());
    for sub in ["etc/containerd", "usr/local/bin", "run/containerd", "var/lib"] {
        std::fs::create_dir_all(root.join(sub)).expect("creating a host directory");
    }
    root
}

/// The `runc-runsc` handler's runsc root, in the node's directory.
const RUNC_RUNSC_ROOT: &str = "runsc-runc";

static SHARED: Mutex<Weak<Node>> = Mutex::new(Weak::new());
/// How many nodes this test binary started.
static NODES_STARTED: AtomicU32 = AtomicU32::new(0);
/// How long the CRI plugin may take to answer again after a restart of
/// containerd.
pub const RESTART_LIMIT: Duration = Duration::from_secs(60);

impl Node {
    /// The node of this test binary, started on first use.
    pub fn shared() -> Arc<Node> {
        let mut shared = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(node) = shared.upgrade() {
            return node;
        }
        let node = Arc::new(Node::start());
        *shared = Arc::downgrade(&node);
        node
    }

    /// Starts a node of its own (tests that must not share one).
    pub fn start() -> Node {
        Node::start_with(&NodeOptions::default())
    }

    /// Starts a node of its own with `options`.
    pub fn start_with(options: &NodeOptions) -> Node {
        require_sandbox_prerequisites();
        require("runc", "runc");
        for plugin in ["bridge", "host-local", "loopback"] {
            assert!(
                Path::new(CNI_BIN_DIR).join(plugin).is_file(),
                "prerequisite missing: {CNI_BIN_DIR}/{plugin} (install Debian's containernetworking-plugins)"
            );
        }
        let started = Instant::now();
        let binary = Binary::selected();
        let shim = containerd::skillbox_shim();
        let dir = tempfile::Builder::new()
            .prefix("skillbox-cri.")
            .tempdir()
            .expect("a temp dir");
        let path = dir.path();
        // A binary's first node is tagged with its pid, later ones (tests
        // with a node of their own) with a count too.
        let tag = match NODES_STARTED.fetch_add(1, Ordering::Relaxed) {
            0 => format!("{}", std::process::id()),
            n => format!("{}-{n}", std::process::id()),
        };
        let network = format!("skillbox-cri-{tag}");

        let host_root = options.bare_host.then(|| bare_host(path));
        let bin = match &host_root {
            Some(root) => root.join("usr/local/bin"),
            None => {
                let bin = path.join("bin");
                std::fs::create_dir(&bin).expect("creating bin/");
                std::os::unix::fs::symlink(&shim, bin.join("containerd-shim-skillbox-v1"))
                    .expect("linking the shim");
                bin
            }
        };
        let node_config = path.join(NODE_CONFIG_FILE);
        std::fs::write(&node_config, config::node_config(path)).expect("writing node.toml");
        let runc_runsc_root = path.join(RUNC_RUNSC_ROOT);
        if options.runc_runsc.is_some() {
            std::fs::create_dir(&runc_runsc_root).expect("creating the runc-runsc root");
        }
        let layout = Layout {
            dir: path,
            sandbox_image: PAUSE_IMAGE,
            node_config: &node_config,
            runc_runsc: options.runc_runsc.as_deref().map(|binary| RuncRunsc {
                binary,
                root: &runc_runsc_root,
            }),
            host_root: host_root.as_deref(),
        };
        std::fs::create_dir(layout.cni_conf_dir()).expect("creating cni/");
        let subnet = format!("10.88.{}.0/24", std::process::id() % 250);
        std::fs::write(
            layout.cni_conf_dir().join("10-skillbox-cri.conflist"),
            config::cni_conflist(&network, "sbcri0", &subnet),
        )
        .expect("writing the CNI config");
        let config_path = match &host_root {
            Some(root) => root.join("etc/containerd/config.toml"),
            None => path.join("config.toml"),
        };
        std::fs::write(&config_path, config::containerd_config(&layout)).expect("writing config.toml");

        let images_dir = path.join("images");
        std::fs::create_dir(&images_dir).expect("creating images/");
        let images = images::build_all(&images_dir);

        let netns = NetNs::create(&network);
        let containerd = Containerd::start(
            &binary,
            &config_path,
            &layout.socket(),
            &bin,
            &netns,
            path,
            host_root.as_deref(),
        );
        for image in &images {
            let output = containerd
                .ctr(&["images", "import"])
                .arg(&image.tar)
                .output()
                .expect("running ctr images import");
            assert!(
                output.status.success(),
                "ctr images import {}: {}",
                image.tar.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let cri = Cri::connect(&layout.socket());
        let version = binary.version();
        let node = Node {
            cri,
            containerd,
            netns,
            network,
            tag,
            version,
            abandoned: Mutex::new(Vec::new()),
            options: options.clone(),
            dir,
        };
        let answer = node
            .cri
            .version()
            .unwrap_or_else(|err| panic!("{err}\n{}", node.log()));
        for image in [PAUSE_IMAGE, BUSYBOX_IMAGE] {
            let status = node.cri.image_status(image).unwrap_or_else(|err| panic!("{err}"));
            assert!(status.is_some(), "ImageStatus: {image} missing after import");
        }
        eprintln!(
            "cri-tests: {} ({} {}, CRI {}) ready in {:.2?} in netns {}",
            node.version,
            answer.runtime_name,
            answer.runtime_version,
            answer.runtime_api_version,
            started.elapsed(),
            node.netns.name()
        );
        node
    }

    /// The host root of a [`NodeOptions::bare_host`] node.
    pub fn host_root(&self) -> Option<PathBuf> {
        self.options.bare_host.then(|| self.dir().join(HOST_DIR))
    }

    /// The skillbox node config the harness gives the shim (the file named
    /// by the `skillbox` handler's `ConfigPath`, or given to `node install`).
    pub fn node_config(&self) -> PathBuf {
        self.dir().join(NODE_CONFIG_FILE)
    }

    /// Where the `runc-runsc` handler's runsc keeps its state: the runc
    /// shim passes `--root <this>/k8s.io`.
    pub fn runc_runsc_root(&self) -> PathBuf {
        self.dir().join(RUNC_RUNSC_ROOT)
    }

    /// The tag in [`HARNESS_LABEL`] of this node's pods.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The harness's directory (kubelet-like pod directories, logs, config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The audit log the shim writes for container `id`
    /// (`[audit] log_dir`/k8s.io/<id>.jsonl).
    pub fn audit_log(&self, id: &str) -> PathBuf {
        self.dir().join("audit/k8s.io").join(format!("{id}.jsonl"))
    }

    /// Where kubelet keeps pod `uid`'s files: `/var/lib/kubelet/pods/<uid>`
    /// on a node, `<harness dir>/kubelet/pods/<uid>` here.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.dir().join("kubelet/pods").join(uid)
    }

    /// Where kubelet points a pod's `log_directory`: `/var/log/pods/…` on a
    /// node, under the harness directory here.
    pub fn pod_log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.dir()
            .join("log/pods")
            .join(format!("{namespace}_{name}_{uid}"))
    }

    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// SIGTERMs this node's containerd under its running pods and starts it
    /// again on the same config, root and state in the same network
    /// namespace ([`Containerd::restart`]), reconnects the CRI client and
    /// waits for the CRI plugin to answer Version. Returns how long that
    /// took, from the SIGTERM. Every pod of the node lives through it or
    /// not: tests that restart containerd need a node of their own
    /// ([`Node::start`]).
    pub fn restart_containerd(&self) -> Duration {
        let started = Instant::now();
        self.containerd.restart();
        self.cri.reconnect();
        loop {
            match self.cri.version() {
                Ok(_) => return started.elapsed(),
                Err(err) if started.elapsed() > RESTART_LIMIT => panic!(
                    "the CRI plugin did not answer {RESTART_LIMIT:?} after containerd's restart: {err}\n{}",
                    self.log_tail(40)
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// containerd's log so far, for failure messages.
    pub fn log(&self) -> String {
        self.containerd.log()
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The socket containerd gives the shim of pod sandbox `sandbox_id`:
    /// `/run/containerd/s/<sha256 of "<containerd address>/k8s.io/<id>">`,
    /// a fixed place whatever the config says.
    pub fn shim_socket(&self, sandbox_id: &str) -> PathBuf {
        use sha2::Digest;
        let key = format!("{}/k8s.io/{sandbox_id}", self.containerd.socket().display());
        PathBuf::from("/run/containerd/s").join(hex::encode(sha2::Sha256::digest(key.as_bytes())))
    }

    /// Records a pod whose teardown failed: the node does not call
    /// containerd for it again, and clears its traces itself when it stops.
    pub fn abandon(&self, pod: Abandoned) {
        self.abandoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pod);
    }

    /// Stops and removes every pod of this node still there, but abandoned
    /// ones.
    fn remove_all_pods(&self) {
        let Ok(pods) = self.cri.list_pod_sandboxes(&[(HARNESS_LABEL, &self.tag)]) else {
            return;
        };
        let abandoned: Vec<String> = self
            .abandoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|pod| pod.sandbox_id.clone())
            .collect();
        for pod in pods.into_iter().filter(|pod| !abandoned.contains(&pod.id)) {
            if let Ok(containers) = self.cri.list_containers(&pod.id) {
                for container in containers {
                    let _ = self.cri.stop_container(&container.id, 0);
                    let _ = self.cri.remove_container(&container.id);
                }
            }
            let _ = self.cri.stop_pod_sandbox(&pod.id);
            let _ = self.cri.remove_pod_sandbox(&pod.id);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.remove_all_pods();
        let killed = reap::kill_processes_naming(self.dir(), self.containerd.pid());
        let abandoned = std::mem::take(&mut *self.abandoned.lock().unwrap_or_else(PoisonError::into_inner));
        if !killed.is_empty() || !abandoned.is_empty() {
            eprintln!(
                "cri-tests: clearing after the runtimes: killed {killed:?}, abandoned pods {:?}",
                abandoned.iter().map(|pod| &pod.sandbox_id).collect::<Vec<_>>()
            );
        }
        for pod in &abandoned {
            reap::clear(pod);
        }
        reap::unmount_under(self.dir());
        let _ = std::fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(&self.network));
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            // kubelet's QoS parents, if nothing else uses them.
            let _ = std::fs::remove_dir(hierarchy.path().join("kubepods/besteffort"));
            let _ = std::fs::remove_dir(hierarchy.path().join("kubepods/burstable"));
            let _ = std::fs::remove_dir(hierarchy.path().join("kubepods"));
        }
    }
}
