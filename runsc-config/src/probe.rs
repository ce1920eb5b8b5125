//! Classifying the results of a host probe.
//!
//! Whether a network mode works depends on the runsc build *and* the host
//! kernel, so skillbox finds out by trying each mode once. The trial runs are
//! spawned elsewhere; this module only turns their outcome into a verdict
//! with a reason a human can act on, which keeps the interpretation testable.

use serde::{Deserialize, Serialize};

use crate::flags::{NetworkMode, Platform};
use crate::version::RunscVersion;

/// Text runsc prints when it believes it is in the host's root network
/// namespace. Matched without the leading "cannot run" because older
/// releases spelled it "cannot run in with network enabled …".
const ROOT_NETNS_MARKER: &str = "network enabled in root network namespace";

/// Longest reason copied from a trial's stderr.
const MAX_REASON_CHARS: usize = 200;

/// Whether one network mode can be used on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ModeSupport {
    Supported,
    Unsupported { reason: String },
}

impl ModeSupport {
    /// True for [`ModeSupport::Supported`].
    pub fn is_supported(&self) -> bool {
        matches!(self, ModeSupport::Supported)
    }
}

/// The probe verdict for each runsc network mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSupport {
    pub none: ModeSupport,
    pub sandbox: ModeSupport,
    pub host: ModeSupport,
}

impl NetworkSupport {
    /// The verdict for `mode`.
    pub fn get(&self, mode: NetworkMode) -> &ModeSupport {
        match mode {
            NetworkMode::None => &self.none,
            NetworkMode::Sandbox => &self.sandbox,
            NetworkMode::Host => &self.host,
        }
    }

    /// Supported modes in order of increasing exposure (none, sandbox, host).
    pub fn supported_modes(&self) -> Vec<NetworkMode> {
        NetworkMode::ALL
            .into_iter()
            .filter(|&m| self.get(m).is_supported())
            .collect()
    }

    /// The mode to use for a skill that is allowed egress: `Sandbox` when it
    /// works, because gVisor's netstack keeps the host kernel's network code
    /// out of the skill's reach; otherwise `Host`; otherwise none at all.
    pub fn best_for_egress(&self) -> Option<NetworkMode> {
        [NetworkMode::Sandbox, NetworkMode::Host]
            .into_iter()
            .find(|&m| self.get(m).is_supported())
    }
}

/// Whether one platform runs a sandbox on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSupport {
    pub platform: Platform,
    #[serde(flatten)]
    pub support: ModeSupport,
}

/// Everything the host probe learned, as printed by `--format json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCapabilities {
    pub version: RunscVersion,
    pub network: NetworkSupport,
    /// Each platform this runsc offers, tried once.
    pub platforms: Vec<PlatformSupport>,
}

impl HostCapabilities {
    /// The best platform that ran here: systrap, else kvm (only when its
    /// trial ran: `/dev/kvm` can exist and hang), else ptrace.
    pub fn best_platform(&self) -> Option<Platform> {
        [Platform::Systrap, Platform::Kvm, Platform::Ptrace]
            .into_iter()
            .find(|wanted| {
                self.platforms
                    .iter()
                    .any(|p| p.platform == *wanted && p.support.is_supported())
            })
    }
}

/// Turns one trial run of `runsc --platform=<platform> run` into a verdict;
/// `timed_out`: it was killed after `limit_secs`.
pub fn classify_platform_trial(
    platform: Platform,
    exit_success: bool,
    timed_out: Option<u64>,
    stderr: &str,
) -> ModeSupport {
    if let Some(limit_secs) = timed_out {
        return ModeSupport::Unsupported {
            reason: format!(
                "a sandbox on --platform={platform} did not finish /bin/true within {limit_secs} s (killed)"
            ),
        };
    }
    if exit_success {
        return ModeSupport::Supported;
    }
    match stderr.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(line) => ModeSupport::Unsupported {
            reason: line.chars().take(MAX_REASON_CHARS).collect(),
        },
        None => ModeSupport::Unsupported {
            reason: format!("runsc --platform={platform} failed without writing to stderr"),
        },
    }
}

/// Turns one trial run of `runsc --network=<mode> …` into a verdict.
///
/// A successful exit means supported. The root-namespace refusal gets an
/// explanatory reason because its text is misleading: runsc decides it is in
/// the root network namespace by checking whether
/// `/proc/sys/net/core/rmem_default` exists, and on kernels from about 6.x
/// that file exists in every namespace, so runsc refuses even inside a fresh
/// one. Any other failure reports the last non-empty stderr line, which is
/// where runsc puts its final error, truncated to 200 characters.
pub fn classify_trial(mode: NetworkMode, exit_success: bool, stderr: &str) -> ModeSupport {
    if exit_success {
        return ModeSupport::Supported;
    }
    let reason = if stderr.contains(ROOT_NETNS_MARKER) {
        format!(
            "runsc refused --network={mode}: \"cannot run with network enabled in root \
             network namespace\"; this runsc detects the root namespace by the presence of \
             /proc/sys/net/core/rmem_default, which newer kernels (about 6.x) expose in every \
             network namespace"
        )
    } else {
        match stderr.lines().map(str::trim).rfind(|l| !l.is_empty()) {
            Some(line) => line.chars().take(MAX_REASON_CHARS).collect(),
            None => format!("runsc --network={mode} failed without writing to stderr"),
        }
    };
    ModeSupport::Unsupported { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsupported(reason: &str) -> ModeSupport {
        ModeSupport::Unsupported {
            reason: reason.into(),
        }
    }

    #[test]
    fn success_is_supported_regardless_of_stderr() {
        let v = classify_trial(NetworkMode::Sandbox, true, "W warning: something\n");
        assert_eq!(v, ModeSupport::Supported);
    }

    #[test]
    fn root_netns_refusal_on_new_kernels_is_explained() {
        let stderr = "running container: creating container: cannot create sandbox: \
            cannot read client sync file: waiting for sandbox to start: EOF\n\
            creating interfaces from net namespace \"/proc/123/ns/net\": \
            cannot run with network enabled in root network namespace\n";
        let ModeSupport::Unsupported { reason } = classify_trial(NetworkMode::Sandbox, false, stderr) else {
            panic!("must be unsupported");
        };
        assert!(reason.contains("--network=sandbox"), "{reason}");
        assert!(reason.contains("root network namespace"), "{reason}");
        assert!(reason.contains("/proc/sys/net/core/rmem_default"), "{reason}");
    }

    #[test]
    fn older_misspelled_root_netns_message_is_recognised() {
        let stderr = "cannot run in with network enabled in root network namespace\n";
        let v = classify_trial(NetworkMode::Sandbox, false, stderr);
        let ModeSupport::Unsupported { reason } = v else {
            panic!("must be unsupported");
        };
        assert!(reason.contains("rmem_default"), "{reason}");
    }

    #[test]
    fn other_failure_uses_last_non_empty_line() {
        let stderr = "first line\n  final error: permission denied  \n\n   \n";
        assert_eq!(
            classify_trial(NetworkMode::Host, false, stderr),
            unsupported("final error: permission denied")
        );
    }

    #[test]
    fn long_reason_is_truncated_on_char_boundary() {
        let stderr = "é".repeat(500);
        let ModeSupport::Unsupported { reason } = classify_trial(NetworkMode::None, false, &stderr) else {
            panic!("must be unsupported");
        };
        assert_eq!(reason.chars().count(), 200);
    }

    #[test]
    fn empty_stderr_still_gives_a_reason() {
        assert_eq!(
            classify_trial(NetworkMode::None, false, " \n"),
            unsupported("runsc --network=none failed without writing to stderr")
        );
    }

    fn support(none: bool, sandbox: bool, host: bool) -> NetworkSupport {
        let v = |ok: bool| {
            if ok {
                ModeSupport::Supported
            } else {
                unsupported("no")
            }
        };
        NetworkSupport {
            none: v(none),
            sandbox: v(sandbox),
            host: v(host),
        }
    }

    #[test]
    fn supported_modes_in_exposure_order() {
        assert_eq!(
            support(true, true, true).supported_modes(),
            [NetworkMode::None, NetworkMode::Sandbox, NetworkMode::Host]
        );
        assert_eq!(
            support(true, false, true).supported_modes(),
            [NetworkMode::None, NetworkMode::Host]
        );
        assert!(support(false, false, false).supported_modes().is_empty());
    }

    #[test]
    fn egress_prefers_sandbox_then_host() {
        assert_eq!(
            support(true, true, true).best_for_egress(),
            Some(NetworkMode::Sandbox)
        );
        assert_eq!(
            support(true, false, true).best_for_egress(),
            Some(NetworkMode::Host)
        );
        assert_eq!(support(true, false, false).best_for_egress(), None);
    }

    #[test]
    fn capabilities_json_shape() {
        let caps = HostCapabilities {
            version: RunscVersion::parse("runsc version 0.0~20221219.0\nspec: 1.0.2-dev").unwrap(),
            network: support(true, false, true),
            platforms: vec![PlatformSupport {
                platform: Platform::Ptrace,
                support: ModeSupport::Supported,
            }],
        };
        let json = serde_json::to_value(&caps).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": {"raw": "0.0~20221219.0", "release": 20221219, "spec": "1.0.2-dev"},
                "network": {
                    "none": {"status": "supported"},
                    "sandbox": {"status": "unsupported", "reason": "no"},
                    "host": {"status": "supported"}
                },
                "platforms": [{"platform": "ptrace", "status": "supported"}]
            })
        );
    }

    #[test]
    fn the_best_platform_is_systrap_then_a_kvm_that_ran_then_ptrace() {
        let caps = |results: &[(Platform, bool)]| HostCapabilities {
            version: RunscVersion::parse("runsc version 0.0~20240729.0").unwrap(),
            network: support(true, true, true),
            platforms: results
                .iter()
                .map(|(platform, ok)| PlatformSupport {
                    platform: *platform,
                    support: match ok {
                        true => ModeSupport::Supported,
                        false => classify_platform_trial(*platform, false, Some(20), ""),
                    },
                })
                .collect(),
        };
        let all = [
            (Platform::Systrap, true),
            (Platform::Ptrace, true),
            (Platform::Kvm, true),
        ];
        assert_eq!(caps(&all).best_platform(), Some(Platform::Systrap));
        let hung_kvm = [(Platform::Ptrace, true), (Platform::Kvm, false)];
        assert_eq!(caps(&hung_kvm).best_platform(), Some(Platform::Ptrace));
        let kvm = [(Platform::Ptrace, true), (Platform::Kvm, true)];
        assert_eq!(caps(&kvm).best_platform(), Some(Platform::Kvm));
        let ModeSupport::Unsupported { reason } = classify_platform_trial(Platform::Kvm, false, Some(20), "")
        else {
            panic!()
        };
        assert_eq!(
            reason,
            "a sandbox on --platform=kvm did not finish /bin/true within 20 s (killed)"
        );
    }
}
