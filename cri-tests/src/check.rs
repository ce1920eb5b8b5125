//! Failing a scenario with what it needs to be understood: the error (the
//! shim puts runsc's own errors in it) and the end of containerd's log.

use std::fmt::Display;

use crate::node::Node;

/// How many lines of containerd's log a failure shows.
const LOG_LINES: usize = 25;

/// `Result::expect` for scenarios: panics with the error and the end of
/// the node's containerd log.
pub trait OrFail<T> {
    fn or_fail(self, node: &Node) -> T;
}

impl<T, E: Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, node: &Node) -> T {
        match self {
            Ok(value) => value,
            Err(err) => {
                panic!(
                    "{err}\n--- containerd log (last {LOG_LINES} lines) ---\n{}",
                    node.log_tail(LOG_LINES)
                )
            }
        }
    }
}
