//! The skill's metadata exactly as written in `SKILL.md` frontmatter.
//!
//! Top-level keys other than the ones below are kept in `extra` and ignored,
//! as the registry does. Everything under `security_policy` is strict:
//! unknown keys are errors, so a typo can never silently weaken a policy.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::network::NetworkRule;
use crate::quantity::{ByteSize, Cpus, Timeout};
use crate::scratch_path::ScratchPath;

/// The frontmatter of `SKILL.md`.
#[derive(Debug, Clone, Deserialize)]
pub struct Frontmatter {
    pub name: SkillName,
    pub description: Description,
    #[serde(default)]
    pub version: Option<String>,
    /// The coarse permission list static scanners read; used only when
    /// `security_policy` is absent.
    #[serde(default)]
    pub permissions: Option<Vec<Permission>>,
    #[serde(default)]
    pub security_policy: Option<SecurityPolicy>,
    /// Every other top-level key, kept untouched.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_yaml_ng::Value>,
}

/// A registry skill name: 1–64 of `a-z0-9-`, no leading, trailing or double hyphen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SkillName(String);

/// A non-empty description.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Description(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Bash,
    Read,
    Write,
    Network,
    Env,
}

/// The `security_policy` field. See README.md for the full format.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "security_policy")]
pub struct SecurityPolicy {
    /// Format version; only `1` exists.
    pub version: PolicyVersion,
    /// The command run in `/skill`, e.g. `["python3", "scripts/main.py"]`.
    #[serde(default)]
    pub entrypoint: Option<Entrypoint>,
    #[serde(default)]
    pub network: NetworkSpec,
    #[serde(default)]
    pub filesystem: FilesystemSpec,
    #[serde(default)]
    pub resources: ResourcesSpec,
    #[serde(default)]
    pub env: EnvSpec,
    #[serde(default)]
    pub audit: AuditSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct PolicyVersion;

/// A non-empty argv whose elements are non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "Vec<String>")]
pub struct Entrypoint(#[schemars(length(min = 1))] pub Vec<String>);

/// Egress rules. Nothing is reachable unless allowed; deny wins over allow.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub allow: Vec<NetworkRule>,
    #[serde(default)]
    pub deny: Vec<NetworkRule>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSpec {
    /// Size-capped writable scratch directories; everything else is read-only.
    #[serde(default)]
    pub writable: Vec<WritableSpec>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WritableSpec {
    pub path: ScratchPath,
    /// Defaults to the node's scratch size.
    #[serde(default)]
    pub size: Option<ByteSize>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    #[serde(default)]
    pub cpus: Option<Cpus>,
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Processes and threads the skill may have at once.
    #[serde(default)]
    pub pids: Option<PidCount>,
    /// Wall-clock limit for one execution.
    #[serde(default)]
    pub timeout: Option<Timeout>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// Names of variables passed from the invoking environment.
    #[serde(default)]
    pub pass: Vec<EnvName>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSpec {
    #[serde(default)]
    pub syscalls: AuditLevel,
}

/// How much of an execution's system calls the audit trail records, from
/// least to most. The node's `[audit] min_syscalls` (default `security`)
/// is the least a skill gets: a lower level is raised to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditLevel {
    None,
    #[default]
    Security,
    All,
}

impl AuditLevel {
    /// The level as the policy spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditLevel::None => "none",
            AuditLevel::Security => "security",
            AuditLevel::All => "all",
        }
    }
}

/// A positive process count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct PidCount(u32);

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, not one skillbox sets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

/// Variables skillbox sets itself and a skill may not import.
pub const RESERVED_ENV: &[&str] = &["PATH", "HOME"];

impl SkillName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SkillName {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let charset_ok = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if name.is_empty()
            || name.len() > 64
            || !charset_ok
            || name.starts_with('-')
            || name.ends_with('-')
            || name.contains("--")
        {
            return Err(format!(
                "invalid skill name {name:?}: expected 1-64 characters of a-z, 0-9 and single inner hyphens"
            ));
        }
        Ok(SkillName(name.to_owned()))
    }
}

impl fmt::Display for SkillName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SkillName {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<SkillName> for String {
    fn from(name: SkillName) -> String {
        name.0
    }
}

impl TryFrom<String> for Description {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text.trim().is_empty() {
            return Err("description is empty: describe what the skill does".to_owned());
        }
        Ok(Description(text))
    }
}

impl TryFrom<i64> for PolicyVersion {
    type Error = String;
    fn try_from(version: i64) -> Result<Self, Self::Error> {
        match version {
            1 => Ok(PolicyVersion),
            other => Err(format!("unsupported policy version {other}: expected 1")),
        }
    }
}

impl TryFrom<Vec<String>> for Entrypoint {
    type Error = String;
    fn try_from(argv: Vec<String>) -> Result<Self, Self::Error> {
        if argv.is_empty() {
            return Err("entrypoint is empty: expected a command and its arguments".to_owned());
        }
        if argv[0].is_empty() {
            return Err("entrypoint command is an empty string".to_owned());
        }
        Ok(Entrypoint(argv))
    }
}

impl PidCount {
    pub const fn new(count: u32) -> Self {
        PidCount(count)
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for PidCount {
    type Error = String;
    fn try_from(count: i64) -> Result<Self, Self::Error> {
        match u32::try_from(count) {
            Ok(n) if n > 0 => Ok(PidCount(n)),
            _ => Err(format!(
                "invalid pids {count}: expected a positive number of processes"
            )),
        }
    }
}

impl From<PidCount> for u32 {
    fn from(count: PidCount) -> u32 {
        count.0
    }
}

impl fmt::Display for PidCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl EnvName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        let mut bytes = name.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "invalid environment variable name {name:?}: expected letters, digits and underscores, not starting with a digit"
            ));
        }
        if RESERVED_ENV.contains(&name.as_str()) {
            return Err(format!(
                "environment variable {name} is set by skillbox and cannot be passed"
            ));
        }
        Ok(EnvName(name))
    }
}

impl From<EnvName> for String {
    fn from(name: EnvName) -> String {
        name.0
    }
}

impl JsonSchema for PolicyVersion {
    fn schema_name() -> Cow<'static, str> {
        "PolicyVersion".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "const": 1 })
    }
}

impl JsonSchema for PidCount {
    fn schema_name() -> Cow<'static, str> {
        "PidCount".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": 1 })
    }
}

impl JsonSchema for EnvName {
    fn schema_name() -> Cow<'static, str> {
        "EnvName".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skill_names() {
        for good in ["a", "weather-report", "x1-2", &"a".repeat(64)] {
            assert!(good.parse::<SkillName>().is_ok(), "{good} rejected");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "a_b", &"a".repeat(65)] {
            assert!(bad.parse::<SkillName>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn env_names() {
        assert!(EnvName::try_from("API_KEY".to_owned()).is_ok());
        assert!(EnvName::try_from("1X".to_owned()).is_err());
        assert!(EnvName::try_from("PATH".to_owned()).is_err());
    }
}
