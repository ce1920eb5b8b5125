//! `skillbox pool serve` under test: its own socket and state directory,
//! started and stopped by the test, and the check that stopping it left
//! nothing behind.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::sandbox::processes_mentioning;
use super::{require_sandbox_prerequisites, Cli};

/// How long a pool may take to boot what a test waits for, or to stop.
const LIMIT: Duration = Duration::from_secs(60);

pub struct TestPool {
    skillbox: Cli,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestPool {
    /// `skillbox pool serve` with `options` (e.g. `--warm DIR`), serving
    /// once its socket is there.
    pub fn start<S: AsRef<OsStr>>(skillbox: Cli, options: &[S]) -> TestPool {
        TestPool::start_with(skillbox, skillbox.command(), options)
    }

    /// [`start`](Self::start) with `command` running `skillbox` (e.g. in
    /// another network namespace).
    pub fn start_with<S: AsRef<OsStr>>(skillbox: Cli, command: Command, options: &[S]) -> TestPool {
        require_sandbox_prerequisites();
        let dir = tempfile::Builder::new()
            .prefix("skillbox-pool.")
            .tempdir()
            .unwrap();
        let mut pool = TestPool {
            skillbox,
            dir,
            child: None,
        };
        pool.spawn(command, options);
        pool
    }

    /// Starts `skillbox pool serve` on this pool's socket and state
    /// directory and waits for its socket.
    fn spawn<S: AsRef<OsStr>>(&mut self, mut command: Command, options: &[S]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("pool.log"))
            .unwrap();
        let child = command
            .args(["pool", "serve", "--socket"])
            .arg(self.socket())
            .args(options)
            .env("SKILLBOX_STATE_DIR", self.state_dir())
            .env_remove("SKILLBOX_BASE_ROOTFS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skillbox pool serve");
        self.child = Some(child);
        self.wait_for("its socket", |pool| {
            std::os::unix::net::UnixStream::connect(pool.socket()).is_ok()
        });
    }

    /// SIGKILL: the pool gets no chance to remove anything.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("a running pool");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts a new pool on the same socket and state directory.
    pub fn restart<S: AsRef<OsStr>>(&mut self, options: &[S]) {
        assert!(self.child.is_none(), "restart a killed or stopped pool");
        let command = self.skillbox.command();
        self.spawn(command, options);
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("pool.sock")
    }

    /// The pool process's open files, counted in `/proc`.
    pub fn open_files(&self) -> usize {
        let pid = self.child.as_ref().expect("a running pool").id();
        std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pool.log")).unwrap_or_default()
    }

    /// `skillbox pool status`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let output = self
            .skillbox
            .command()
            .args(["pool", "status", "--socket"])
            .arg(self.socket())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "skillbox pool status failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Waits until `ready` sandboxes are ready and none is booting.
    pub fn wait_ready(&self, ready: u64) {
        self.wait_for(&format!("{ready} ready sandboxes"), |pool| {
            let status = pool.status();
            status["ready"].as_u64() >= Some(ready) && status["booting"] == 0
        });
    }

    fn wait_for(&self, what: &str, done: impl Fn(&TestPool) -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "the pool did not reach {what} within {} s\n{}",
                LIMIT.as_secs(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then asserts that the pool exited 0 and left nothing: no
    /// socket, nothing in its state directory, no process of its
    /// sandboxes. Returns its log.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().expect("stopped once");
        terminate(&child);
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the pool did not stop\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.log();
        assert!(status.success(), "the pool exited {status}\n{log}");
        assert!(!self.socket().exists(), "the pool left its socket\n{log}");
        let left: Vec<_> = std::fs::read_dir(self.state_dir())
            .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "the pool left {left:?}\n{log}");
        let state = self.state_dir().to_string_lossy().into_owned();
        let processes = processes_mentioning(&state, None);
        assert!(
            processes.is_empty(),
            "the pool left processes {processes:?}\n{log}"
        );
        log
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        // A test that failed before `stop`: stop it all the same.
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = child.wait();
        }
    }
}

fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}
