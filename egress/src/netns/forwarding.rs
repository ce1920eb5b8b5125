//! IPv4 forwarding on the outer namespace's uplink: a node-wide setting,
//! turned on once for all sandboxes and restored by its guard.

use super::{CommandRunner, NetnsError, NetnsName};

/// `/proc/sys` key of IPv4 forwarding on `interface`.
pub(super) fn forwarding_key(interface: &str) -> String {
    format!("net/ipv4/conf/{interface}/forwarding")
}

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
        let key = forwarding_key(interface);
        let current = runner.read_sysctl(namespace.as_ref(), &key)?;
        let restore = current.trim() == "0";
        if restore {
            runner.write_sysctl(namespace.as_ref(), &key, "1")?;
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
            let key = forwarding_key(&self.interface);
            if let Err(error) = self.runner.write_sysctl(self.namespace.as_ref(), &key, "0") {
                tracing::warn!(%error, "restoring IPv4 forwarding");
            }
        }
    }
}
