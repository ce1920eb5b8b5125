//! A private containerd (Debian's 1.6.20) driving the shim, and the checks
//! the shim's containerd tests share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use skillbox_test_support::require;
pub use skillbox_test_support::sandbox::processes;

pub const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-skillbox-v1");
pub const RUNTIME: &str = "io.containerd.skillbox.v1";

/// The busybox base, with containerd's prerequisites checked first.
pub fn busybox_rootfs() -> &'static Path {
    for (program, package) in [("containerd", "containerd"), ("ctr", "containerd")] {
        require(program, package);
    }
    skillbox_test_support::busybox_rootfs()
}

/// A containerd with its own config, root, state and sockets in a temp dir,
/// started from a neutral directory, stopped on drop.
pub struct Containerd {
    dir: tempfile::TempDir,
    process: Child,
    /// The network namespace containerd (and so its shims) runs in.
    netns: Option<PathBuf>,
}

impl Containerd {
    pub fn start() -> Containerd {
        Containerd::start_with(None, "")
    }

    /// Like `start`, inside the network namespace at `netns` (`None`: the
    /// caller's), with `node_toml` appended to the node config.
    pub fn start_with(netns: Option<&Path>, node_toml: &str) -> Containerd {
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
        // through.
        std::fs::write(
            path.join("node.toml"),
            format!(
                "[ceiling]\nbind_mount_sources = [{:?}]\n{node_toml}",
                std::env::temp_dir().display().to_string()
            ),
        )
        .unwrap();
        let netns = netns.map(Path::to_owned);
        let process = launch(path, netns.as_deref());
        let containerd = Containerd { dir, process, netns };
        containerd.wait_for_socket();
        containerd
    }

    fn wait_for_socket(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops containerd with `signal` (its shims and tasks live on) and
    /// starts it again on the same config, root and state.
    pub fn restart(&mut self, signal: nix::sys::signal::Signal) {
        self.restart_after(signal, Duration::ZERO);
    }

    /// `restart`, with containerd down for `down`.
    pub fn restart_after(&mut self, signal: nix::sys::signal::Signal, down: Duration) {
        self.stop(signal);
        std::thread::sleep(down);
        self.start_again();
    }

    /// Stops containerd with `signal` and waits for it to exit; its shims
    /// and tasks live on. `start_again` brings it back.
    pub fn stop(&mut self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.process.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        self.process.wait().unwrap();
    }

    /// Starts containerd again on the same config, root and state.
    pub fn start_again(&mut self) {
        // A SIGKILLed containerd leaves its sockets behind; wait for new ones.
        for socket in ["containerd.sock", "containerd.sock.ttrpc"] {
            let _ = std::fs::remove_file(self.dir.path().join(socket));
        }
        self.process = launch(self.dir.path(), self.netns.as_deref());
        self.wait_for_socket();
    }

    /// containerd's own pid.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The bundle directory containerd makes for task `id` in `namespace`.
    pub fn bundle_dir(&self, namespace: &str, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(namespace)
            .join(id)
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

    /// `ctr run [extra…] --runtime io.containerd.skillbox.v1 --config <config> <id>`,
    /// with `--runtime-config-path <node_config()>` unless `extra` has one.
    pub fn run_bundle(&self, namespace: &str, config: &Path, id: &str, extra: &[&str]) -> Output {
        let args = self.run_bundle_args(config, id, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr(namespace, &args)
    }

    /// The arguments `run_bundle` gives ctr, as owned strings.
    pub fn run_bundle_args(&self, config: &Path, id: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["run".to_owned()];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        if !extra.contains(&"--runtime-config-path") {
            args.push("--runtime-config-path".to_owned());
            args.push(self.node_config().display().to_string());
        }
        for arg in ["--runtime", RUNTIME, "--config"] {
            args.push(arg.to_owned());
        }
        args.push(config.display().to_string());
        args.push(id.to_owned());
        args
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
        self.ctr_command(namespace, args)
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    }

    /// `ctr` on this containerd in `namespace`, stdin left to the caller.
    pub fn ctr_command(&self, namespace: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .args(args)
            .current_dir("/");
        command
    }

    /// `ctr` run inside a pseudoterminal of `rows`×`cols` (util-linux
    /// `script`), as `ctr … -t` needs one; output is the terminal's.
    pub fn ctr_in_terminal(&self, namespace: &str, args: &[&str], (rows, cols): (u16, u16)) -> Output {
        require("script", "util-linux");
        let quoted: Vec<String> = args
            .iter()
            .map(|arg| format!("'{}'", arg.replace('\'', "'\\''")))
            .collect();
        let line = format!(
            "stty rows {rows} cols {cols}; exec timeout 60 ctr --address '{}' --namespace '{namespace}' {}",
            self.socket().display(),
            quoted.join(" ")
        );
        Command::new("script")
            .args(["--quiet", "--return", "--command", &line, "/dev/null"])
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .expect("running script")
    }
}

/// Starts containerd on the config in `dir`, logging to `dir/containerd.log`
/// (appended, so that a restart keeps the first run's log).
fn launch(dir: &Path, netns: Option<&Path>) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .unwrap();
    // nsenter execs containerd: the child's pid is containerd's.
    let mut command = match netns {
        None => Command::new("containerd"),
        Some(netns) => {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net={}", netns.display()))
                .args(["--", "containerd"]);
            command
        }
    };
    command
        .arg("--config")
        .arg(dir.join("config.toml"))
        // containerd looks for shims in its cwd before PATH.
        .current_dir("/")
        .env(
            "PATH",
            format!(
                "{}:{}",
                dir.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting containerd")
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
    skillbox_test_support::compile_skill(dir, name, policy)
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

    /// The events seen so far, one a line, while watching goes on.
    pub fn log_so_far(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

/// The pid of the shim serving `id` in `namespace`, if one runs.
pub fn shim_pid(namespace: &str, id: &str) -> Option<i32> {
    processes()
        .into_iter()
        .find(|(_, args)| {
            args.first()
                .is_some_and(|arg0| arg0.ends_with("containerd-shim-skillbox-v1"))
                && args.windows(2).any(|w| w[0] == "-namespace" && w[1] == namespace)
                && args.windows(2).any(|w| w[0] == "-id" && w[1] == id)
        })
        .map(|(pid, _)| pid)
}

/// Whether `arg` names `path` or something under it (`--root=<path>` too),
/// so that `/run/x/ns-a` does not match `/run/x/ns-ab`.
fn names_path(arg: &str, path: &str) -> bool {
    arg.match_indices(path).any(|(at, _)| {
        let rest = &arg[at + path.len()..];
        rest.is_empty() || rest.starts_with('/')
    })
}

/// The processes of the task `id` in `namespace`: its shim, and any process
/// whose arguments name the namespace's runsc root or the task's bundle
/// (runsc's sandbox, gofer and commands).
pub fn task_processes(containerd: &Containerd, namespace: &str, id: &str) -> Vec<(i32, Vec<String>)> {
    let runsc_root = format!("/run/skillbox/shim/{namespace}");
    let bundle = containerd.bundle_dir(namespace, id).display().to_string();
    let shim = shim_pid(namespace, id);
    processes()
        .into_iter()
        .filter(|(pid, args)| {
            Some(*pid) == shim
                || args
                    .iter()
                    .any(|arg| names_path(arg, &runsc_root) || names_path(arg, &bundle))
        })
        .collect()
}

/// Everything `assert_nothing_left` checks, and also, for up to 5 s: no
/// container in `runsc list` under the namespace's root, no process of the
/// task (`task_processes`), no mount naming the task's bundle or id, no
/// network namespace named after the id, no bundle directory in containerd's
/// state, and no task listed.
pub fn assert_no_leftovers(containerd: &Containerd, namespace: &str, id: &str, cgroup: &str) {
    assert_nothing_left(containerd, namespace, id, cgroup);
    let runsc_root = Path::new("/run/skillbox/shim").join(namespace);
    let bundle = containerd.bundle_dir(namespace, id);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = Vec::new();
        if runsc_root.exists() {
            let list = Command::new("runsc")
                .arg("--root")
                .arg(&runsc_root)
                .args(["list", "--quiet"])
                .output()
                .unwrap();
            left.push(format!(
                "runsc root {} (runsc list: {:?})",
                runsc_root.display(),
                text(&list.stdout)
            ));
        }
        let processes = task_processes(containerd, namespace, id);
        if !processes.is_empty() {
            left.push(format!("processes {processes:?}"));
        }
        let bundle_text = bundle.display().to_string();
        let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|line| {
                line.split_whitespace()
                    .any(|field| names_path(field, &bundle_text) || field.ends_with(&format!("/{id}")))
            })
            .map(str::to_owned)
            .collect();
        if !mounts.is_empty() {
            left.push(format!("mounts {mounts:?}"));
        }
        let netns: Vec<String> = std::fs::read_dir("/run/netns")
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
                    .filter(|name| name.contains(id))
                    .collect()
            })
            .unwrap_or_default();
        if !netns.is_empty() {
            left.push(format!("network namespaces {netns:?}"));
        }
        if bundle.exists() {
            left.push(format!("bundle {}", bundle.display()));
        }
        // ctr's default cgroupsPath is /<namespace>/<id>: runsc creates the
        // parent and removes only the leaf. Each test has its own namespace.
        let parents: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .filter_map(Result::ok)
            .map(|hierarchy| hierarchy.path().join(namespace))
            .filter(|path| path.exists())
            .collect();
        if !parents.is_empty() {
            left.push(format!("namespace cgroups {parents:?}"));
        }
        if !task_status(containerd, namespace, id).is_empty() {
            left.push(format!("task {id} still listed"));
        }
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind by {namespace}/{id}: {}",
            left.join("; ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
