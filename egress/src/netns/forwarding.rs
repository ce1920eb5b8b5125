//! IPv4 forwarding on the outer namespace's uplink: a node-wide setting,
//! turned on once for all sandboxes and restored by its guard.

use super::{exec_in, CommandRunner, NetnsError, NetnsName};

/// Turns on `net.ipv4.conf.<interface>.forwarding` in a namespace if it was
/// off, and turns it off again when dropped (only if it was off before).
///
/// IPv4 decides whether to forward by the *input* interface, so a sandbox
/// network needs forwarding on its outer veth (which
/// [`SandboxNetwork`](super::SandboxNetwork) sets, per interface) and, for
/// the replies, on the uplink: that one is shared by every sandbox, so it
/// belongs to whoever runs the node (the shim at start-up, a test
/// harness), never to one sandbox. `net.ipv4.ip_forward` is left alone.
pub struct Forwarding {
    runner: Box<dyn CommandRunner>,
    namespace: Option<NetnsName>,
    interface: String,
    restore: bool,
}

impl Forwarding {
    pub fn enable(
        runner: Box<dyn CommandRunner>,
        namespace: Option<NetnsName>,
        interface: &str,
    ) -> Result<Self, NetnsError> {
        let key = format!("net.ipv4.conf.{interface}.forwarding");
        let current = runner.run(&exec_in(namespace.as_ref(), &["sysctl", "-n", &key]), None)?;
        let restore = current.trim() == "0";
        if restore {
            let set = format!("{key}=1");
            runner.run(&exec_in(namespace.as_ref(), &["sysctl", "-q", "-w", &set]), None)?;
        }
        Ok(Forwarding {
            runner,
            namespace,
            interface: interface.to_owned(),
            restore,
        })
    }

    /// Whether the guard turned forwarding on (and will turn it off).
    pub fn changed(&self) -> bool {
        self.restore
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        if self.restore {
            let set = format!("net.ipv4.conf.{}.forwarding=0", self.interface);
            let argv = exec_in(self.namespace.as_ref(), &["sysctl", "-q", "-w", &set]);
            if let Err(error) = self.runner.run(&argv, None) {
                tracing::warn!(%error, "restoring IPv4 forwarding");
            }
        }
    }
}
