//! The network namespace containerd runs in: the CNI bridge and every pod
//! network live there, so nothing the tests do touches the host's network.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use skillbox_test_support::{must, require};

/// A named network namespace (`ip netns add`) with loopback up; deleted on
/// drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn create(name: &str) -> NetNs {
        require("ip", "iproute2");
        require("nsenter", "util-linux");
        // A namespace of the same name left by a killed run would make
        // `ip netns add` fail.
        let _ = Command::new("ip")
            .args(["netns", "delete", name])
            .stderr(Stdio::null())
            .status();
        must(&["ip", "netns", "add", name]);
        let netns = NetNs {
            name: name.to_owned(),
        };
        must(&["ip", "-n", name, "link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, for `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `argv` run inside the namespace (`nsenter --net=…`), to add to.
    pub fn command(&self, argv: &[&str]) -> Command {
        nsenter(&self.path(), argv)
    }
}

/// `argv` run inside the network namespace at `path` (`nsenter --net=…`),
/// from `/`, without stdin.
pub fn nsenter(path: &Path, argv: &[&str]) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", path.display()))
        .arg("--")
        .args(argv)
        .current_dir("/")
        .stdin(Stdio::null());
    command
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}
