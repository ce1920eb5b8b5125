//! The host effects of this module, `ip`, `nft` and sysctls, behind a
//! trait so unit tests record them instead.

use std::path::PathBuf;

use super::{NetnsError, NetnsName};
use crate::command;

/// Runs programs and sets sysctls, in the caller's namespace or a named
/// one. The real implementation is [`SystemRunner`]; tests substitute a
/// recorder.
pub trait CommandRunner: Send + Sync {
    /// Runs `argv` (program first) with `stdin`, started inside `netns`
    /// (`None`: the caller's); returns stdout, or [`NetnsError::Run`].
    fn run(
        &self,
        netns: Option<&NetnsName>,
        argv: &[String],
        stdin: Option<&str>,
    ) -> Result<String, NetnsError>;
    /// Reads `/proc/sys/<key>` (`key` with slashes) as seen in `netns`.
    fn read_sysctl(&self, netns: Option<&NetnsName>, key: &str) -> Result<String, NetnsError>;
    /// Writes `value` to `/proc/sys/<key>` as seen in `netns`.
    fn write_sysctl(&self, netns: Option<&NetnsName>, key: &str, value: &str) -> Result<(), NetnsError>;
}

/// Does it on this host: programs and `/proc/sys` files are started and
/// opened from a thread inside the namespace (`/proc/sys/net` shows the
/// opening thread's namespace), no `ip netns exec` or `sysctl` process.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

fn sysctl_path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key)
}

impl SystemRunner {
    fn sysctl<T: Send>(
        netns: Option<&NetnsName>,
        key: &str,
        work: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> Result<T, NetnsError> {
        command::in_netns(netns.map(NetnsName::path).as_deref(), work)
            .and_then(|result| result)
            .map_err(|source| NetnsError::Sysctl {
                key: key.to_owned(),
                netns: netns.cloned(),
                source,
            })
    }
}

impl CommandRunner for SystemRunner {
    fn run(
        &self,
        netns: Option<&NetnsName>,
        argv: &[String],
        stdin: Option<&str>,
    ) -> Result<String, NetnsError> {
        let path = netns.map(NetnsName::path);
        Ok(command::run(argv, stdin.map(str::as_bytes), path.as_deref())?)
    }

    fn read_sysctl(&self, netns: Option<&NetnsName>, key: &str) -> Result<String, NetnsError> {
        Self::sysctl(netns, key, || std::fs::read_to_string(sysctl_path(key)))
    }

    fn write_sysctl(&self, netns: Option<&NetnsName>, key: &str, value: &str) -> Result<(), NetnsError> {
        Self::sysctl(netns, key, || std::fs::write(sysctl_path(key), value))
    }
}
