//! What the shim binary answers before it talks to containerd: `-v` /
//! `-version` (a version line, as other shims print) and `-info` (a
//! `RuntimeInfo` protobuf on stdout). containerd-shim 0.11 needs
//! `TTRPC_ADDRESS` before it parses flags, so these are handled first.

use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use crate::service::RUNTIME_ID;

pub const BINARY_NAME: &str = "containerd-shim-skillbox-v1";

/// A request the binary answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Introspection {
    Version,
    Info,
}

/// Recognises `-v`, `-version`, `--version` and `-info` anywhere in `args`.
pub fn parse<S: AsRef<str>>(args: &[S]) -> Option<Introspection> {
    args.iter().find_map(|arg| match arg.as_ref() {
        "-v" | "-version" | "--version" => Some(Introspection::Version),
        "-info" | "--info" => Some(Introspection::Info),
        _ => None,
    })
}

pub fn version_text() -> String {
    format!(
        "{BINARY_NAME}:\n  Version: {}\n  Runtime: {RUNTIME_ID}\n  Task API: containerd.task.v2\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The `RuntimeInfo` protobuf containerd asks for with `-info`.
pub fn info_bytes() -> Vec<u8> {
    let info = RuntimeInfo {
        name: BINARY_NAME.to_owned(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    info.write_to_bytes().expect("a RuntimeInfo encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_recognised_anywhere() {
        assert_eq!(parse(&["-v"]), Some(Introspection::Version));
        assert_eq!(
            parse(&["-namespace", "x", "-version"]),
            Some(Introspection::Version)
        );
        assert_eq!(parse(&["-info"]), Some(Introspection::Info));
        assert_eq!(parse(&["-namespace", "x", "-id", "y", "start"]), None);
    }

    #[test]
    fn info_round_trips() {
        let info = RuntimeInfo::parse_from_bytes(&info_bytes()).unwrap();
        assert_eq!(info.name, BINARY_NAME);
        assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
    }
}
