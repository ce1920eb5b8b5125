//! A private containerd (Debian's 1.6.20) driving the shim, and the checks
//! the shim's containerd tests share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-skillbox-v1");
pub const RUNTIME: &str = "io.containerd.skillbox.v1";

/// The busybox base, with containerd's prerequisites checked first.
pub fn busybox_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        for (program, package) in [("containerd", "containerd"), ("ctr", "containerd")] {
            super::require(program, package);
        }
        super::busybox_rootfs()
    })
}

/// A containerd with its own config, root, state and sockets in a temp dir,
/// started from a neutral directory, stopped on drop.
pub struct Containerd {
    dir: tempfile::TempDir,
    process: Child,
}

impl Containerd {
    pub fn start() -> Containerd {
        busybox_rootfs();
        let dir = tempfile::Builder::new()
            .prefix("skillbox-ctrd.")
            .tempdir()
            .unwrap();
        let path = dir.path();
        let bin = path.join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(SHIM, bin.join("containerd-shim-skillbox-v1")).unwrap();
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{0}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n",
            path.display()
        );
        std::fs::write(path.join("config.toml"), config).unwrap();
        // Compiled test bundles live in temp dirs: let their /skill mounts
        // through, besides the built-in sources.
        let mut sources: Vec<String> = policy_compiler::node_config::BUILTIN_BIND_MOUNT_SOURCES
            .iter()
            .map(|source| format!("{source:?}"))
            .collect();
        sources.push(format!("{:?}", std::env::temp_dir().display().to_string()));
        std::fs::write(
            path.join("node.toml"),
            format!("[ceiling]\nbind_mount_sources = [{}]\n", sources.join(", ")),
        )
        .unwrap();
        let log = std::fs::File::create(path.join("containerd.log")).unwrap();
        let process = Command::new("containerd")
            .arg("--config")
            .arg(path.join("config.toml"))
            // containerd looks for shims in its cwd before PATH.
            .current_dir("/")
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let containerd = Containerd { dir, process };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !containerd.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The node config `run_bundle` passes unless told another: built-in
    /// values, plus the temp dir in `ceiling.bind_mount_sources`.
    pub fn node_config(&self) -> PathBuf {
        self.dir.path().join("node.toml")
    }

    /// The bundle directory containerd gives container `id` (while its task exists).
    pub fn bundle_dir(&self, namespace: &str, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(namespace)
            .join(id)
    }

    /// `ctr run [extra…] --runtime io.containerd.skillbox.v1 --config <config> <id>`,
    /// with `--runtime-config-path <node_config()>` unless `extra` has one.
    pub fn run_bundle(&self, namespace: &str, config: &Path, id: &str, extra: &[&str]) -> Output {
        let config = config.to_str().unwrap();
        let node_config = self.node_config();
        let node_config = node_config.to_str().unwrap();
        let default_config = ["--runtime-config-path", node_config];
        let default_config = if extra.contains(&"--runtime-config-path") {
            &default_config[..0]
        } else {
            &default_config[..]
        };
        let args: Vec<&str> = std::iter::once("run")
            .chain(extra.iter().copied())
            .chain(default_config.iter().copied())
            .chain(["--runtime", RUNTIME, "--config", config, id])
            .collect();
        self.ctr(namespace, &args)
    }

    /// `ctr run [extra…] --runtime io.containerd.skillbox.v1 --rootfs <rootfs> <id> <command…>`:
    /// a plain container, no skillbox policy, no node config.
    pub fn run_rootfs(
        &self,
        namespace: &str,
        rootfs: &Path,
        id: &str,
        extra: &[&str],
        command: &[&str],
    ) -> Output {
        let rootfs = rootfs.to_str().unwrap();
        let args: Vec<&str> = std::iter::once("run")
            .chain(extra.iter().copied())
            .chain(["--runtime", RUNTIME, "--rootfs", rootfs, id])
            .chain(command.iter().copied())
            .collect();
        self.ctr(namespace, &args)
    }

    pub fn ctr(&self, namespace: &str, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.process.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = self.process.wait();
    }
}

/// Compiles a busybox skill whose entrypoint is `sh -c script` into a bundle.
pub fn compile_skill(dir: &Path, name: &str, script: &str) -> PathBuf {
    let escaped = script.replace('\'', "''");
    compile_skill_md(dir, name, &format!("  entrypoint: [sh, -c, '{escaped}']\n"))
}

/// Compiles a skill (cgroup `/skillbox-test-<name>`) once containerd's
/// prerequisites are checked.
pub fn compile_skill_md(dir: &Path, name: &str, policy: &str) -> PathBuf {
    busybox_rootfs();
    super::compile_skill(dir, name, policy)
}

/// A private copy of the busybox base in `dir`, for containers that are
/// given a root directory (`ctr run --rootfs`): should a test's write to
/// `/` get through, it lands in the copy, never in the shared base.
pub fn private_rootfs(dir: &Path) -> PathBuf {
    let copy = dir.join("rootfs");
    let status = Command::new("cp")
        .arg("-a")
        .arg(busybox_rootfs())
        .arg(&copy)
        .status()
        .expect("running cp");
    assert!(status.success(), "copying the busybox rootfs failed");
    copy
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Nothing of container `id` in `namespace` remains: no container, no runsc
/// state, no shim or runsc process, no cgroup.
pub fn assert_nothing_left(containerd: &Containerd, namespace: &str, id: &str, cgroup: &str) {
    let listed = text(
        &containerd
            .ctr(namespace, &["containers", "list", "--quiet"])
            .stdout,
    );
    assert!(
        !listed.lines().any(|line| line == id),
        "container {id} still listed"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let runsc_root = Path::new("/run/skillbox/shim").join(namespace);
        // Each test uses its own namespace, so its runsc root must be gone.
        let state: Vec<_> = match std::fs::read_dir(&runsc_root) {
            Ok(entries) => std::iter::once(runsc_root.clone())
                .chain(entries.filter_map(Result::ok).map(|e| e.path()))
                .collect(),
            Err(_) => Vec::new(),
        };
        let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .filter_map(Result::ok)
            .map(|hierarchy| hierarchy.path().join(cgroup.trim_start_matches('/')))
            .filter(|path| path.exists())
            .collect();
        let processes = Command::new("pgrep")
            .args(["-f", &format!("-namespace {namespace} .*-id {id}")])
            .output()
            .unwrap();
        let shims = text(&processes.stdout);
        if state.is_empty() && cgroups.is_empty() && shims.trim().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: runsc state {state:?}, cgroups {cgroups:?}, shim processes {shims:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ctr events` running in the background, collecting into a file.
pub struct EventWatch {
    process: Child,
    log: PathBuf,
}

impl EventWatch {
    pub fn start(containerd: &Containerd, dir: &Path) -> EventWatch {
        let log = dir.join("events.txt");
        let process = Command::new("ctr")
            .arg("--address")
            .arg(containerd.socket())
            .arg("events")
            .current_dir("/")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Give the subscription time to reach containerd.
        std::thread::sleep(Duration::from_millis(300));
        EventWatch { process, log }
    }

    /// Stops watching; returns the task topics seen in `namespace`, in
    /// order, and the whole log.
    pub fn topics(mut self, namespace: &str) -> (Vec<String>, String) {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.process.kill();
        let _ = self.process.wait();
        let log = std::fs::read_to_string(&self.log).unwrap();
        let topics = log
            .lines()
            .filter(|line| line.contains(&format!(" {namespace} /tasks/")))
            .filter_map(|line| line.split_whitespace().find(|word| word.starts_with("/tasks/")))
            .map(str::to_owned)
            .collect();
        (topics, log)
    }
}

/// The status column of `ctr task ls` for `id`.
pub fn task_status(containerd: &Containerd, namespace: &str, id: &str) -> String {
    let out = text(&containerd.ctr(namespace, &["tasks", "list"]).stdout);
    out.lines()
        .find(|line| line.split_whitespace().next() == Some(id))
        .and_then(|line| line.split_whitespace().nth(2))
        .unwrap_or("")
        .to_owned()
}

/// SIGKILLs task `id`, waits until containerd sees it stopped, and deletes
/// the task and the container.
pub fn kill_and_remove(containerd: &Containerd, namespace: &str, id: &str) {
    let kill = containerd.ctr(namespace, &["tasks", "kill", "--signal", "SIGKILL", id]);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while task_status(containerd, namespace, id) != "STOPPED" {
        assert!(Instant::now() < deadline, "task {id} never stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    for args in [["tasks", "delete", id], ["containers", "delete", id]] {
        let out = containerd.ctr(namespace, &args);
        assert!(out.status.success(), "ctr {args:?}: {}", text(&out.stderr));
    }
}
