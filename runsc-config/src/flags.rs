//! The runsc configuration flags that a skill's policy implies.
//!
//! These are the only per-sandbox knobs skillbox varies; everything else about
//! the sandbox lives in the OCI bundle. Keeping them in one small struct lets
//! the policy compiler produce them, the launcher render them, and the audit
//! record serialize them, all with the same spelling runsc uses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Value of runsc's `--network` flag.
///
/// The default is [`NetworkMode::None`] because a skill gets network access
/// only when its policy asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// No network stack at all: only loopback inside the sandbox.
    #[default]
    None,
    /// gVisor's own user-space network stack (netstack); the host kernel's
    /// TCP/IP code is not reachable from the skill.
    Sandbox,
    /// Socket calls are passed through to the host kernel, inside the
    /// container's network namespace. Weaker isolation than `Sandbox`.
    Host,
}

impl NetworkMode {
    /// Every mode, in order of increasing exposure.
    pub const ALL: [NetworkMode; 3] = [NetworkMode::None, NetworkMode::Sandbox, NetworkMode::Host];

    /// The spelling runsc accepts after `--network=`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Sandbox => "sandbox",
            NetworkMode::Host => "host",
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NetworkMode {
    type Err = Error;

    /// Accepts exactly the spellings runsc accepts (lowercase).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetworkMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| Error::UnknownNetworkMode { value: s.to_owned() })
    }
}

/// Value of runsc's `--platform` flag: how the Sentry intercepts syscalls.
///
/// The default is [`Platform::Ptrace`] because it works everywhere, including
/// nested virtualisation without `/dev/kvm`, and is what the host-task
/// overhead in [`crate::overhead`] was measured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// `PTRACE_SYSEMU`-based interception; slow but universally available.
    #[default]
    Ptrace,
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// seccomp-trap based interception (newer runsc releases only).
    Systrap,
}

impl Platform {
    /// Every platform skillbox knows how to request.
    pub const ALL: [Platform; 3] = [Platform::Ptrace, Platform::Kvm, Platform::Systrap];

    /// The spelling runsc accepts after `--platform=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ptrace => "ptrace",
            Platform::Kvm => "kvm",
            Platform::Systrap => "systrap",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = Error;

    /// Accepts exactly the spellings runsc accepts (lowercase).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::UnknownPlatform { value: s.to_owned() })
    }
}

/// The node config's `[runsc] platform`: a platform, or `auto` (the
/// default), which each runtime resolves for the runsc it runs
/// ([`crate::RunscVersion::default_platform`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlatformChoice {
    #[default]
    Auto,
    Ptrace,
    Kvm,
    Systrap,
}

impl PlatformChoice {
    /// The configured platform, if one is.
    pub fn fixed(self) -> Option<Platform> {
        match self {
            PlatformChoice::Auto => None,
            PlatformChoice::Ptrace => Some(Platform::Ptrace),
            PlatformChoice::Kvm => Some(Platform::Kvm),
            PlatformChoice::Systrap => Some(Platform::Systrap),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.fixed().map_or("auto", Platform::as_str)
    }
}

/// The per-sandbox runsc flags derived from a skill's policy.
///
/// Missing fields deserialize to their defaults (no network, ptrace, no
/// overlay), i.e. the most restrictive choice; unknown fields are rejected so
/// a typo cannot silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct RunscFlags {
    /// `--network=<mode>`.
    pub network: NetworkMode,
    /// `--platform=<platform>`.
    pub platform: Platform,
    /// `--overlay`: keep all filesystem writes in sandbox memory so the
    /// bundle's rootfs on the host is never modified.
    pub overlay: bool,
}

impl RunscFlags {
    /// Renders the flags in a fixed order so the argv is reproducible and
    /// golden-testable: `--network=…`, `--platform=…`, then `--overlay` only
    /// when requested (runsc has no negative form worth spelling out).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--network={}", self.network.as_str()),
            format!("--platform={}", self.platform.as_str()),
        ];
        if self.overlay {
            args.push("--overlay".to_owned());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_args_are_most_restrictive() {
        assert_eq!(
            RunscFlags::default().to_args(),
            ["--network=none", "--platform=ptrace"]
        );
    }

    #[test]
    fn args_in_fixed_order_with_overlay_last() {
        let flags = RunscFlags {
            network: NetworkMode::Sandbox,
            platform: Platform::Systrap,
            overlay: true,
        };
        assert_eq!(
            flags.to_args(),
            ["--network=sandbox", "--platform=systrap", "--overlay"]
        );
        let flags = RunscFlags {
            network: NetworkMode::Host,
            platform: Platform::Kvm,
            overlay: false,
        };
        assert_eq!(flags.to_args(), ["--network=host", "--platform=kvm"]);
    }

    #[test]
    fn from_str_round_trips_as_str() {
        for m in NetworkMode::ALL {
            assert_eq!(m.as_str().parse::<NetworkMode>(), Ok(m));
            assert_eq!(m.to_string(), m.as_str());
        }
        for p in Platform::ALL {
            assert_eq!(p.as_str().parse::<Platform>(), Ok(p));
            assert_eq!(p.to_string(), p.as_str());
        }
    }

    #[test]
    fn from_str_rejects_unknown_and_other_case() {
        assert_eq!(
            "bridge".parse::<NetworkMode>(),
            Err(Error::UnknownNetworkMode {
                value: "bridge".into()
            })
        );
        assert_eq!(
            "None".parse::<NetworkMode>(),
            Err(Error::UnknownNetworkMode { value: "None".into() })
        );
        assert_eq!(
            "gvisor".parse::<Platform>(),
            Err(Error::UnknownPlatform {
                value: "gvisor".into()
            })
        );
    }

    #[test]
    fn serde_uses_runsc_spelling() {
        let flags = RunscFlags {
            network: NetworkMode::Sandbox,
            platform: Platform::Kvm,
            overlay: true,
        };
        let json = serde_json::to_string(&flags).unwrap();
        assert_eq!(json, r#"{"network":"sandbox","platform":"kvm","overlay":true}"#);
        assert_eq!(serde_json::from_str::<RunscFlags>(&json).unwrap(), flags);
    }

    #[test]
    fn serde_defaults_missing_and_rejects_unknown_fields() {
        let flags: RunscFlags = serde_json::from_str(r#"{"overlay":true}"#).unwrap();
        assert_eq!(
            flags,
            RunscFlags {
                overlay: true,
                ..RunscFlags::default()
            }
        );
        assert!(serde_json::from_str::<RunscFlags>(r#"{"netwrok":"host"}"#).is_err());
        assert!(serde_json::from_str::<RunscFlags>(r#"{"network":"Host"}"#).is_err());
    }
}
