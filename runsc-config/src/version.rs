//! Parsing `runsc --version` output.
//!
//! Distribution builds and upstream releases spell the version differently
//! (`0.0~20221219.0` on Debian, `release-20240729.0` upstream), but both embed
//! the release date. That date is the only reliable way to tell which flags a
//! given binary understands, so it is what we extract.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::flags::Platform;

/// First release (yyyymmdd) for which [`RunscVersion::supports_overlay2`]
/// answers yes.
const OVERLAY2_MIN_RELEASE: u32 = 20230417;

/// First release (yyyymmdd) taken to have the systrap platform: the
/// release in which it became runsc's default. (It existed earlier as an
/// experimental platform; a runsc between the two is run on ptrace, which
/// every release has.) Debian bookworm's 20221219 offers ptrace and kvm;
/// trixie's 20240729 offers systrap (its default), ptrace and kvm.
const SYSTRAP_MIN_RELEASE: u32 = 20230605;

/// Longest excerpt of unrecognised output kept in [`Error::ParseVersion`].
const MAX_ERROR_OUTPUT: usize = 200;

/// What `runsc --version` reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunscVersion {
    /// The version token as printed, e.g. `release-20240729.0`.
    pub raw: String,
    /// Release date as yyyymmdd, when the token contains one.
    pub release: Option<u32>,
    /// OCI runtime-spec version from the `spec:` line, when present.
    pub spec: Option<String>,
}

impl RunscVersion {
    /// Parses the stdout of `runsc --version` (or `runsc version`).
    ///
    /// The first non-blank line must be `runsc version <token>`; a token
    /// without a recognisable date is accepted with `release: None`, so a
    /// custom build still works, just without date-gated features.
    pub fn parse(stdout: &str) -> Result<RunscVersion, Error> {
        let mut lines = stdout.lines().map(str::trim).filter(|l| !l.is_empty());
        let raw = lines
            .next()
            .and_then(|first| first.strip_prefix("runsc version"))
            .filter(|rest| rest.starts_with(char::is_whitespace))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| Error::ParseVersion {
                output: stdout.trim().chars().take(MAX_ERROR_OUTPUT).collect(),
            })?;
        let spec = lines
            .filter_map(|l| l.strip_prefix("spec:"))
            .map(str::trim)
            .find(|s| !s.is_empty())
            .map(str::to_owned);
        Ok(RunscVersion {
            raw: raw.to_owned(),
            release: release_date(raw),
            spec,
        })
    }

    /// Whether this runsc is assumed to accept `--overlay2`.
    ///
    /// This is a conservative heuristic on the release date, not a feature
    /// probe: the flag's accepted values changed over 2023, and some older
    /// builds (e.g. Debian's 20221219) already list an earlier form of it.
    /// Unknown dates answer `false` so callers fall back to `--overlay`.
    pub fn supports_overlay2(&self) -> bool {
        self.release.is_some_and(|r| r >= OVERLAY2_MIN_RELEASE)
    }
}

impl RunscVersion {
    /// Whether this runsc has the systrap platform (by release date; a
    /// build without one is assumed not to).
    pub fn has_systrap(&self) -> bool {
        self.release.is_some_and(|r| r >= SYSTRAP_MIN_RELEASE)
    }

    /// The platforms this runsc offers, best first.
    pub fn platforms(&self) -> Vec<Platform> {
        let mut platforms = Vec::new();
        if self.has_systrap() {
            platforms.push(Platform::Systrap);
        }
        platforms.extend([Platform::Ptrace, Platform::Kvm]);
        platforms
    }

    /// The platform `auto` means for this runsc: systrap where it has it,
    /// else ptrace. Never kvm: whether `/dev/kvm` really works shows only in
    /// a trial run (`skillbox probe`), and it has hung sandboxes on hosts
    /// where the device exists, so it is used only when configured.
    pub fn default_platform(&self) -> Platform {
        match self.has_systrap() {
            true => Platform::Systrap,
            false => Platform::Ptrace,
        }
    }
}

/// Module-level alias for [`RunscVersion::parse`].
pub fn parse(stdout: &str) -> Result<RunscVersion, Error> {
    RunscVersion::parse(stdout)
}

/// The first run of exactly eight digits that reads as a plausible
/// yyyymmdd date. Requiring date shape avoids mistaking a build number or
/// commit-like suffix for a release.
fn release_date(token: &str) -> Option<u32> {
    token
        .split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() == 8)
        .filter_map(|run| run.parse::<u32>().ok())
        .find(|&n| {
            let (year, month, day) = (n / 10_000, n / 100 % 100, n % 100);
            (2018..=2099).contains(&year) && (1..=12).contains(&month) && (1..=31).contains(&day)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_format() {
        let v = RunscVersion::parse("runsc version 0.0~20221219.0\nspec: 1.0.2-dev\n").unwrap();
        assert_eq!(
            v,
            RunscVersion {
                raw: "0.0~20221219.0".into(),
                release: Some(20221219),
                spec: Some("1.0.2-dev".into()),
            }
        );
        assert!(!v.supports_overlay2());
    }

    #[test]
    fn upstream_format() {
        let v = parse("runsc version release-20240729.0\nspec: 1.1.0\n").unwrap();
        assert_eq!(v.raw, "release-20240729.0");
        assert_eq!(v.release, Some(20240729));
        assert_eq!(v.spec.as_deref(), Some("1.1.0"));
        assert!(v.supports_overlay2());
    }

    #[test]
    fn overlay2_threshold_is_inclusive() {
        let at = parse("runsc version release-20230417.0").unwrap();
        assert!(at.supports_overlay2());
        let before = parse("runsc version release-20230416.0").unwrap();
        assert!(!before.supports_overlay2());
    }

    #[test]
    fn tolerates_blank_lines_and_missing_spec() {
        let v = parse("\n  runsc version release-20240729.0  \r\n").unwrap();
        assert_eq!(v.raw, "release-20240729.0");
        assert_eq!(v.spec, None);
    }

    #[test]
    fn undated_token_parses_without_release() {
        let v = parse("runsc version VERSION_MISSING\nspec: 1.1.0").unwrap();
        assert_eq!(v.release, None);
        assert!(!v.supports_overlay2());
        let v = parse("runsc version 12345678-dev").unwrap();
        assert_eq!(v.release, None, "not a plausible date");
    }

    #[test]
    fn rejects_other_programs_and_empty_token() {
        for bad in [
            "",
            "runc version 1.1.7",
            "runsc version",
            "runsc version   \n",
            "runsc versionX 1",
        ] {
            match parse(bad) {
                Err(Error::ParseVersion { output }) => assert_eq!(output, bad.trim()),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn error_output_is_truncated() {
        let long = "x".repeat(1000);
        let Err(Error::ParseVersion { output }) = parse(&long) else {
            panic!("expected error");
        };
        assert_eq!(output.chars().count(), MAX_ERROR_OUTPUT);
    }

    #[test]
    fn systrap_is_the_default_from_its_release_on() {
        let old = parse("runsc version 0.0~20221219.0\n").unwrap();
        assert!(!old.has_systrap());
        assert_eq!(old.default_platform(), Platform::Ptrace);
        assert_eq!(old.platforms(), [Platform::Ptrace, Platform::Kvm]);
        let new = parse("runsc version 0.0~20240729.0\n").unwrap();
        assert_eq!(new.default_platform(), Platform::Systrap);
        assert_eq!(
            new.platforms(),
            [Platform::Systrap, Platform::Ptrace, Platform::Kvm]
        );
        let custom = parse("runsc version mybuild\n").unwrap();
        assert_eq!(custom.default_platform(), Platform::Ptrace);
    }
}
