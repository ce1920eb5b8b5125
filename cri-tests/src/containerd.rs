//! The private containerd process: which binary (Debian's 1.6.20, or the
//! 2.1 that `scripts/fetch-containerd.sh` unpacks), started inside the
//! harness's network namespace from a neutral directory, with the shim's
//! directory first on its PATH; stopped on drop.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use skillbox_test_support::{require, target_dir};

use crate::netns::{nsenter, NetNs};

/// How long containerd may take to exit on SIGTERM.
pub const STOP_LIMIT: Duration = Duration::from_secs(30);

/// Selects the containerd under test: unset or `1.6` is Debian's
/// (`containerd` on PATH), `2.1` the one `scripts/fetch-containerd.sh`
/// unpacked, anything else a path to a containerd binary.
pub const CONTAINERD_ENV: &str = "SKILLBOX_CRI_CONTAINERD";

/// A containerd binary and the directory of its own shims, if it brings
/// them (`containerd-shim-runc-v2` must match it).
#[derive(Debug, Clone)]
pub struct Binary {
    pub containerd: PathBuf,
    pub shim_dir: Option<PathBuf>,
}

impl Binary {
    /// The binary [`CONTAINERD_ENV`] selects.
    pub fn selected() -> Binary {
        match std::env::var(CONTAINERD_ENV).ok().as_deref() {
            None | Some("") | Some("1.6") => {
                require("containerd", "containerd");
                require("containerd-shim-runc-v2", "containerd");
                Binary {
                    containerd: PathBuf::from("containerd"),
                    shim_dir: None,
                }
            }
            Some("2.1") => {
                let root = target_dir().join("skillbox-cache/containerd-2.1");
                let bin = root.join("usr/bin");
                assert!(
                    bin.join("containerd").is_file(),
                    "containerd 2.1 is missing from {}: run `bash scripts/fetch-containerd.sh` first",
                    root.display()
                );
                Binary {
                    containerd: bin.join("containerd"),
                    shim_dir: Some(bin),
                }
            }
            Some(path) => {
                let containerd = PathBuf::from(path);
                let shim_dir = containerd.parent().map(Path::to_owned);
                Binary { containerd, shim_dir }
            }
        }
    }

    /// `containerd --version`'s line.
    pub fn version(&self) -> String {
        let output = Command::new(&self.containerd)
            .arg("--version")
            .output()
            .unwrap_or_else(|err| panic!("running {} --version: {err}", self.containerd.display()));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

/// The containerd shim binary of this workspace, beside the running binary
/// (`<target>/<profile>/containerd-shim-skillbox-v1`; a test binary runs
/// from `<target>/<profile>/deps/`, the benchmark from `<target>/<profile>/`).
pub fn skillbox_shim() -> PathBuf {
    workspace_binary("containerd-shim-skillbox-v1", "skillbox-shim")
}

/// The `skillbox` CLI of this workspace, beside the running binary.
pub fn skillbox_cli() -> PathBuf {
    workspace_binary("skillbox", "skillbox")
}

fn workspace_binary(name: &str, package: &str) -> PathBuf {
    let binary = profile_dir().join(name);
    assert!(
        binary.is_file(),
        "{} is missing: build it first with `cargo build -p {package}` \
         (same profile and CARGO_TARGET_DIR; `cargo test --workspace` builds it)",
        binary.display()
    );
    binary
}

/// `<target>/<profile>` of the running binary.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running binary's path");
    let dir = exe.parent().expect("a binary in a directory");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().expect("deps/ in <target>/<profile>").to_owned()
    } else {
        dir.to_owned()
    }
}

/// A running containerd; SIGTERMed and waited for on drop. Pods must be
/// removed before: shims and runsc outlive containerd.
#[derive(Debug)]
pub struct Containerd {
    process: Arc<Mutex<Child>>,
    launch: Arc<Launch>,
    /// Set when containerd runs as a service does: started again whenever
    /// it exits, until the flag says the harness is stopping it.
    supervisor: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    log: PathBuf,
    socket: PathBuf,
    /// The `ctr` that comes with this containerd.
    ctr: PathBuf,
}

/// How containerd is started, kept for [`Containerd::restart`].
#[derive(Debug)]
struct Launch {
    containerd: PathBuf,
    config: PathBuf,
    /// PATH: the skillbox shim's directory, the binary's own shims, then
    /// the harness's PATH.
    path: OsString,
    netns: PathBuf,
    /// A bare host's root: containerd runs in a mount namespace of its own
    /// where `<root>/etc` is `/etc`, and reads `/etc/containerd/config.toml`.
    host_root: Option<PathBuf>,
    log: PathBuf,
}

impl Launch {
    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening containerd.log");
        // nsenter and unshare exec containerd: the child's pid is containerd's.
        let mut command = nsenter(&self.netns, &[]);
        match &self.host_root {
            None => {
                command.arg(&self.containerd).arg("--config").arg(&self.config);
            }
            Some(root) => {
                command
                    .args(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg("mount --bind \"$0/etc\" /etc && exec \"$1\" --config /etc/containerd/config.toml")
                    .arg(root)
                    .arg(&self.containerd);
            }
        }
        let child = command
            // containerd looks for shims in its cwd before PATH.
            .current_dir("/")
            .env("PATH", &self.path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd under nsenter");
        if let Some(root) = &self.host_root {
            std::fs::write(root.join(PID_FILE), format!("{}\n", child.id()))
                .expect("writing containerd's pid file");
        }
        child
    }
}

/// Where a bare host's supervised containerd has its pid, under the root.
pub const PID_FILE: &str = "run/containerd/containerd.pid";

impl Containerd {
    /// Starts `binary` on `config` in `netns`, with `bin` (holding the
    /// skillbox shim) first on PATH, logging to `dir/containerd.log`. With
    /// `host_root`, containerd runs as on a bare host: `<host_root>/etc` is
    /// its `/etc` (`config` must be `<host_root>/etc/containerd/config.toml`),
    /// and it is supervised: whenever it exits it is started again, as a
    /// service manager does, with its pid in `<host_root>/`[`PID_FILE`].
    pub fn start(
        binary: &Binary,
        config: &Path,
        socket: &Path,
        bin: &Path,
        netns: &NetNs,
        dir: &Path,
        host_root: Option<&Path>,
    ) -> Containerd {
        let log = dir.join("containerd.log");
        let mut path = vec![bin.to_owned()];
        path.extend(binary.shim_dir.clone());
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let launch = Arc::new(Launch {
            containerd: binary.containerd.clone(),
            config: config.to_owned(),
            path: std::env::join_paths(path).expect("PATH entries without ':'"),
            netns: netns.path(),
            host_root: host_root.map(Path::to_owned),
            log: log.clone(),
        });
        let process = Arc::new(Mutex::new(launch.spawn()));
        let supervisor = host_root.map(|_| supervise(&process, &launch));
        let ctr = binary
            .shim_dir
            .as_ref()
            .map(|dir| dir.join("ctr"))
            .filter(|ctr| ctr.is_file())
            .unwrap_or_else(|| {
                require("ctr", "containerd");
                PathBuf::from("ctr")
            });
        let containerd = Containerd {
            process,
            launch,
            supervisor,
            log,
            socket: socket.to_owned(),
            ctr,
        };
        containerd.wait_for_socket();
        containerd
    }

    fn process(&self) -> MutexGuard<'_, Child> {
        self.process.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// SIGTERMs containerd and waits up to [`STOP_LIMIT`] for it to exit
    /// (its shims and their tasks live on), then starts it again on the
    /// same config, root and state in the same network namespace, appending
    /// to its log, and waits for its socket.
    pub fn restart(&self) {
        let mut process = self.process();
        let stopped = Instant::now();
        let pid = nix::unistd::Pid::from_raw(process.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).expect("SIGTERM to containerd");
        loop {
            match process.try_wait().expect("waiting for containerd") {
                Some(_) => break,
                None if stopped.elapsed() > STOP_LIMIT => panic!(
                    "containerd (pid {pid}) still running {STOP_LIMIT:?} after SIGTERM: {}",
                    self.log()
                ),
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // A new socket, not the old one's leftover, says it is back.
        let mut ttrpc = self.socket.clone().into_os_string();
        ttrpc.push(".ttrpc");
        for socket in [self.socket.as_os_str(), &ttrpc] {
            let _ = std::fs::remove_file(socket);
        }
        note_in_log(&self.log, "containerd restarted after SIGTERM");
        *process = self.launch.spawn();
        drop(process);
        self.wait_for_socket();
    }

    fn wait_for_socket(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not open {} within 30 s: {}",
                self.socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// containerd's pid.
    pub fn pid(&self) -> u32 {
        self.process().id()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `ctr` on this containerd in the CRI's `k8s.io` namespace.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.ctr);
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null());
        command
    }
}

/// Starts containerd again whenever it exits, until the returned flag is set.
fn supervise(
    process: &Arc<Mutex<Child>>,
    launch: &Arc<Launch>,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stopping = Arc::new(AtomicBool::new(false));
    let (process, launch, flag) = (Arc::clone(process), Arc::clone(launch), Arc::clone(&stopping));
    let thread = std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(20));
        let mut child = process.lock().unwrap_or_else(PoisonError::into_inner);
        if flag.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            note_in_log(
                &launch.log,
                &format!("containerd exited ({status}); the supervisor starts it again"),
            );
            *child = launch.spawn();
        }
    });
    (stopping, thread)
}

fn note_in_log(log: &Path, note: &str) {
    if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(log) {
        let _ = writeln!(log, "--- cri-tests: {note} ---");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some((stopping, thread)) = self.supervisor.take() {
            stopping.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        let mut process = self.process.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = nix::unistd::Pid::from_raw(process.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = process.wait();
    }
}
