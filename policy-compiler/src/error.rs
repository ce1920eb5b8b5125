//! The one error type of the policy compiler. Every variant names the file
//! or the YAML/TOML field at fault and what was expected.

use std::path::PathBuf;

/// A broken registry package rule, with the offending file.
#[derive(Debug, thiserror::Error)]
pub enum PackageViolation {
    #[error("the package has more than {limit} files")]
    TooManyFiles { limit: usize },
    #[error("the package has more than {limit} directories")]
    TooManyDirectories { limit: usize },
    #[error("the package has more than {limit} entries (files, directories, symlinks and others)")]
    TooManyEntries { limit: usize },
    #[error("the package nests more than {limit} levels deep")]
    TooDeep { limit: usize },
    #[error("{size} bytes is over the {limit}-byte limit per file")]
    FileTooLarge { size: u64, limit: u64 },
    #[error("the package totals more than {limit} bytes")]
    PackageTooLarge { limit: u64 },
    #[error("symlink to {target:?} leaves the skill folder")]
    SymlinkEscapes { target: PathBuf },
    #[error(
        "the file has {links} hard links: a package's files may have no other name (copy it instead of linking it)"
    )]
    HardLinked { links: u64 },
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
    #[error(transparent)]
    CeilingExceeded(Box<CeilingExceeded>),
    #[error(transparent)]
    DomainNotAllowed(Box<DomainNotAllowed>),
    #[error(transparent)]
    EnvNotPassable(Box<EnvNotPassable>),
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

/// A skill asking for more than the node ceiling (in `reject` mode).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: asks for {asked}, above the node ceiling {ceiling} ({ceiling_field} in {config})")]
pub struct CeilingExceeded {
    pub file: PathBuf,
    pub field: String,
    pub asked: String,
    pub ceiling: String,
    pub ceiling_field: String,
    pub config: String,
}

/// A skill allowing a domain outside the node's allowed suffixes.
#[derive(Debug, thiserror::Error)]
#[error(
    "{file}: {field}: {domain} is outside the domains this node allows ({allowed}; ceiling.allowed_domain_suffixes in {config})"
)]
pub struct DomainNotAllowed {
    pub file: PathBuf,
    pub field: String,
    pub domain: String,
    pub allowed: String,
    pub config: String,
}

/// A skill asking for a variable the node refuses to pass (in `reject` mode).
#[derive(Debug, thiserror::Error)]
#[error(
    "{file}: {field}: this node does not pass {name} to skills: it matches {pattern} in ceiling.env_pass_deny, names that look like secrets; to pass it, add it to ceiling.env_pass_allow in {config}"
)]
pub struct EnvNotPassable {
    pub file: PathBuf,
    pub field: String,
    pub name: String,
    pub pattern: String,
    pub config: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
