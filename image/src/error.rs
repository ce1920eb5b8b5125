//! The one error type of the image builder. Every variant names the file,
//! the blob or the field at fault and what was expected.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("skill folder {dir}: does not load: {source}")]
    LoadSkill {
        dir: PathBuf,
        #[source]
        source: policy_compiler::Error,
    },
    #[error("--base {path}: {expected}")]
    BadBase { path: PathBuf, expected: String },
    #[error("{path}: cannot read the base: {source}")]
    ReadBase {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {file} in the base rootfs is a {kind}, which an image layer cannot hold")]
    UnsupportedFile {
        path: PathBuf,
        file: PathBuf,
        kind: &'static str,
    },
    #[error("base archive {archive}: not an OCI image layout: {expected}")]
    NotOciLayout { archive: PathBuf, expected: String },
    #[error("base archive {archive}: {file}: {field}: {message}")]
    BadBaseBlob {
        archive: PathBuf,
        /// The path inside the archive (`index.json`, `blobs/sha256/<hex>`).
        file: String,
        /// The JSON field at fault, or `content` for the bytes themselves.
        field: String,
        message: String,
    },
    #[error("base archive {archive}: no image for {wanted}; it has {found}")]
    NoMatchingPlatform {
        archive: PathBuf,
        wanted: String,
        found: String,
    },
    #[error("--name {name:?}: {expected}")]
    BadName { name: String, expected: String },
    #[error("{path}: cannot write the image: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the image's {what}: {source}")]
    BuildSpec {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

pub type Result<T> = std::result::Result<T, ImageError>;
