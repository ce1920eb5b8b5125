//! The private containerd process: which binary (Debian's 1.6.20, or the
//! 2.1 that `scripts/fetch-containerd.sh` unpacks), started inside the
//! harness's network namespace from a neutral directory, with the shim's
//! directory first on its PATH; stopped on drop.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
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
    let shim = profile_dir().join("containerd-shim-skillbox-v1");
    assert!(
        shim.is_file(),
        "{} is missing: build it first with `cargo build -p skillbox-shim` \
         (same profile and CARGO_TARGET_DIR; `cargo test --workspace` builds it)",
        shim.display()
    );
    shim
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
    process: Mutex<Child>,
    launch: Launch,
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
}

impl Launch {
    fn spawn(&self, log: std::fs::File) -> Child {
        // nsenter execs containerd: the child's pid is containerd's.
        nsenter(&self.netns, &[])
            .arg(&self.containerd)
            .arg("--config")
            .arg(&self.config)
            // containerd looks for shims in its cwd before PATH.
            .current_dir("/")
            .env("PATH", &self.path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd under nsenter")
    }
}

impl Containerd {
    /// Starts `binary` on `config` in `netns`, with `bin` (holding the
    /// skillbox shim) first on PATH, logging to `dir/containerd.log`.
    pub fn start(
        binary: &Binary,
        config: &Path,
        socket: &Path,
        bin: &Path,
        netns: &NetNs,
        dir: &Path,
    ) -> Containerd {
        let log = dir.join("containerd.log");
        let log_file = std::fs::File::create(&log).expect("creating containerd.log");
        let mut path = vec![bin.to_owned()];
        path.extend(binary.shim_dir.clone());
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let launch = Launch {
            containerd: binary.containerd.clone(),
            config: config.to_owned(),
            path: std::env::join_paths(path).expect("PATH entries without ':'"),
            netns: netns.path(),
        };
        let process = launch.spawn(log_file);
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
            process: Mutex::new(process),
            launch,
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
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("opening containerd.log to append");
        let _ = writeln!(log, "--- cri-tests: containerd restarted after SIGTERM ---");
        *process = self.launch.spawn(log);
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

impl Drop for Containerd {
    fn drop(&mut self) {
        let process = self.process.get_mut().unwrap_or_else(PoisonError::into_inner);
        let pid = nix::unistd::Pid::from_raw(process.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = process.wait();
    }
}
