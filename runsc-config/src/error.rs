//! The one error type of this crate.
//!
//! Every variant carries the offending input and its message names what was
//! accepted instead, so an operator reading a log line can fix the input
//! without opening the source.

use thiserror::Error;

/// Everything that can go wrong while interpreting runsc-related text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// `runsc --version` printed something we do not recognise.
    ///
    /// `output` is the (trimmed, at most 200 characters) text that was given,
    /// kept so the caller can show what the binary actually said.
    #[error(
        "unrecognised `runsc --version` output {output:?}: expected a first line \
         `runsc version <version>`, e.g. `runsc version release-20240729.0` or \
         `runsc version 0.0~20221219.0`"
    )]
    ParseVersion { output: String },

    /// A network mode name that runsc's `--network` flag does not take.
    #[error("unknown network mode {value:?}: expected one of none, sandbox, host")]
    UnknownNetworkMode { value: String },

    /// A platform name that skillbox does not pass to runsc's `--platform` flag.
    #[error("unknown platform {value:?}: expected one of ptrace, kvm, systrap")]
    UnknownPlatform { value: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_list_accepted_values() {
        let e = Error::UnknownNetworkMode {
            value: "bridge".into(),
        };
        assert_eq!(
            e.to_string(),
            "unknown network mode \"bridge\": expected one of none, sandbox, host"
        );
        let e = Error::UnknownPlatform { value: "xen".into() };
        assert_eq!(
            e.to_string(),
            "unknown platform \"xen\": expected one of ptrace, kvm, systrap"
        );
        let e = Error::ParseVersion {
            output: "docker 24".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("\"docker 24\""), "{msg}");
        assert!(msg.contains("runsc version <version>"), "{msg}");
    }
}
