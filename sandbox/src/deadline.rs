//! The policy's wall-clock limit for runtimes that do not wait in a loop of
//! their own (the shim): a thread that runs an action at the deadline unless
//! the sandbox ended first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// An armed deadline; dropping it disarms it.
#[derive(Debug)]
pub struct Deadline {
    /// Dropped to disarm: the thread then wakes and returns.
    _disarm: mpsc::Sender<()>,
    fired: Arc<AtomicBool>,
}

impl Deadline {
    /// Runs `at_deadline` once `limit` has passed, unless disarmed before.
    pub fn arm(limit: Duration, at_deadline: impl FnOnce() + Send + 'static) -> Deadline {
        let (disarm, disarmed) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(limit) {
                flag.store(true, Ordering::SeqCst);
                at_deadline();
            }
        });
        Deadline {
            _disarm: disarm,
            fired,
        }
    }

    /// A flag that turns true when the deadline fires, for the code that
    /// reports the sandbox's end.
    pub fn fired_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.fired)
    }

    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_action_runs_at_the_deadline() {
        let (sender, ran) = mpsc::channel();
        let started = Instant::now();
        let deadline = Deadline::arm(Duration::from_millis(50), move || sender.send(()).unwrap());
        ran.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(deadline.fired());
    }

    #[test]
    fn a_disarmed_deadline_never_fires() {
        let (sender, ran) = mpsc::channel();
        let deadline = Deadline::arm(Duration::from_millis(50), move || sender.send(()).unwrap());
        let flag = deadline.fired_flag();
        drop(deadline);
        assert!(ran.recv_timeout(Duration::from_millis(200)).is_err());
        assert!(!flag.load(Ordering::SeqCst));
    }
}
