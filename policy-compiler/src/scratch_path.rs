//! Writable scratch directories inside the sandbox.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// Where the skill's code is mounted read-only inside the sandbox.
pub const SKILL_MOUNT: &str = "/skill";

/// Kernel interfaces that must never be shadowed by a writable mount.
const RESERVED: &[&str] = &["/proc", "/sys", "/dev"];

/// An absolute, normalised path in the sandbox where a writable tmpfs may be
/// mounted: never `/`, never under `/proc`, `/sys`, `/dev`, never the skill's
/// code directory or anything around it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScratchPath(String);

/// Whether `path` is `dir` or under it, by whole path components.
pub fn is_at_or_under(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

impl ScratchPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ScratchPath {
    type Err = String;
    fn from_str(path: &str) -> Result<Self, Self::Err> {
        if !path.starts_with('/') {
            return Err(format!(
                "invalid writable path {path:?}: expected an absolute path"
            ));
        }
        if path == "/" {
            return Err("invalid writable path \"/\": the root filesystem stays read-only".to_owned());
        }
        let normalised = path
            .split('/')
            .skip(1)
            .all(|part| !part.is_empty() && part != "." && part != "..");
        if !normalised {
            return Err(format!(
                "invalid writable path {path:?}: expected a normalised path without empty, '.' or '..' components or a trailing slash"
            ));
        }
        if let Some(reserved) = RESERVED.iter().find(|dir| is_at_or_under(path, dir)) {
            return Err(format!(
                "invalid writable path {path:?}: {reserved} is reserved for the kernel"
            ));
        }
        if is_at_or_under(path, SKILL_MOUNT) {
            return Err(format!(
                "invalid writable path {path:?}: the skill's code at {SKILL_MOUNT} is always read-only"
            ));
        }
        Ok(ScratchPath(path.to_owned()))
    }
}

impl fmt::Display for ScratchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ScratchPath {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<ScratchPath> for String {
    fn from(path: ScratchPath) -> String {
        path.0
    }
}

impl JsonSchema for ScratchPath {
    fn schema_name() -> Cow<'static, str> {
        "ScratchPath".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^/",
            "description": "Absolute normalised path; not /, not under /proc, /sys, /dev or /skill."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_absolute_paths() {
        assert_eq!("/tmp".parse::<ScratchPath>().unwrap().as_str(), "/tmp");
        assert!("/var/cache/app".parse::<ScratchPath>().is_ok());
        assert!("/skills".parse::<ScratchPath>().is_ok());
        assert!("/devices".parse::<ScratchPath>().is_ok());
    }

    #[test]
    fn rejects_unsafe_paths() {
        for bad in [
            "tmp",
            "/",
            "/tmp/",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/proc",
            "/sys/fs",
            "/dev/shm",
            "/skill",
            "/skill/out",
        ] {
            assert!(bad.parse::<ScratchPath>().is_err(), "{bad} accepted");
        }
    }
}
