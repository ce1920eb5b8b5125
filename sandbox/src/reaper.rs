//! Child reaping for the shim, which is a child subreaper: runsc's sandbox
//! and gofer are re-parented to it when `runsc create` exits.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Blocks until `pid` exits and returns its status as a shell would report
/// it (128 + signal when killed).
pub fn wait_exit(pid: i32) -> u32 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code as u32,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as u32,
            Ok(_) | Err(Errno::EINTR) => continue,
            // Someone else reaped it: its status is lost.
            Err(_) => return 255,
        }
    }
}

/// Reaps exited orphans (runsc helpers) for up to `budget`. Left as zombies
/// they make `runsc delete` wait for them and time out. Stops as soon as no
/// child is left.
pub fn reap_orphans(budget: Duration) {
    let deadline = Instant::now() + budget;
    while Instant::now() < deadline {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}
