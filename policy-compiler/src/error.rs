//! The one error type of the policy compiler. Every variant names the file
//! or the YAML/TOML field at fault and what was expected.

use std::path::PathBuf;

/// A broken registry package rule, with the offending file.
#[derive(Debug, thiserror::Error)]
pub enum PackageViolation {
    #[error("the package has more than {limit} files")]
    TooManyFiles { limit: usize },
    #[error("{size} bytes is over the {limit}-byte limit per file")]
    FileTooLarge { size: u64, limit: u64 },
    #[error("the package totals more than {limit} bytes")]
    PackageTooLarge { limit: u64 },
    #[error("symlink to {target:?} leaves the skill folder")]
    SymlinkEscapes { target: PathBuf },
    #[error("not a regular file, directory or symlink")]
    UnsupportedFileType,
    #[error("path is not valid UTF-8")]
    NonUtf8Path,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read: {source}")]
    ReadSkill {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}: not a skill folder: SKILL.md is missing")]
    MissingSkillMd { dir: PathBuf },
    #[error("{file}: {violation}")]
    Package {
        file: PathBuf,
        #[source]
        violation: PackageViolation,
    },
    #[error("{file}: {reason}")]
    Frontmatter { file: PathBuf, reason: String },
    #[error("{file}: {field}: {message}")]
    InvalidField {
        file: PathBuf,
        /// YAML or TOML path such as `security_policy.network.allow[2].cidr`.
        field: String,
        message: String,
    },
    #[error("{field}: asks for {asked}, above the node ceiling {ceiling} ({ceiling_field} in {config})")]
    CeilingExceeded {
        field: String,
        asked: String,
        ceiling: String,
        ceiling_field: String,
        config: String,
    },
    #[error("{config}: cannot read node config: {source}")]
    ReadNodeConfig {
        config: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no command to run: set security_policy.entrypoint in SKILL.md or pass a command after --")]
    NoEntrypoint,
    #[error("{path}: cannot write bundle: {source}")]
    WriteBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the OCI runtime spec: {source}")]
    BuildSpec {
        #[source]
        source: oci_spec::OciSpecError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
