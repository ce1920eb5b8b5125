//! What `skillbox node install` changed on the host, so uninstall can put
//! it back byte for byte and status can tell drift: one entry per file,
//! with its digest as installed and, when install replaced a file, where a
//! byte-exact copy of the original is kept. Versioned JSON at
//! `/var/lib/skillbox/install.json`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::layout::{self, HostRoot, STATE};

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallState {
    /// The format of this file; `1`.
    pub version: u32,
    /// In the order install wrote them; uninstall goes backwards.
    pub files: Vec<InstalledFile>,
    /// Directories install created (host paths, outermost first).
    pub created_dirs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledFile {
    /// `shim`, `cli`, `runsc`, `node-config`, `drop-in`, `containerd-config`.
    pub role: String,
    /// Host path.
    pub path: String,
    /// sha256 of the bytes install wrote, hex.
    pub sha256: String,
    /// The program's version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_version: Option<String>,
    /// What was there before install; `None`: nothing.
    pub original: Option<Original>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Original {
    /// sha256 of the original bytes, hex; the copy is `<backup dir>/<sha256>`.
    pub sha256: String,
    pub mode: u32,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl InstallState {
    pub fn empty() -> Self {
        InstallState {
            version: STATE_VERSION,
            files: Vec::new(),
            created_dirs: Vec::new(),
        }
    }

    pub fn file(&self, path: &str) -> Option<&InstalledFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// The recorded state, `None` when nothing is installed.
    pub fn load(root: &HostRoot) -> anyhow::Result<Option<InstallState>> {
        let path = root.path(STATE);
        let Some(bytes) = layout::read_optional(&path)? else {
            return Ok(None);
        };
        let state: InstallState = serde_json::from_slice(&bytes)
            .map_err(|err| anyhow::anyhow!("{}: not an install state: {err}", path.display()))?;
        anyhow::ensure!(
            state.version == STATE_VERSION,
            "{}: field `version`: {} is not a state format this skillbox reads ({STATE_VERSION})",
            path.display(),
            state.version
        );
        Ok(Some(state))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("install state serializes");
        bytes.push(b'\n');
        bytes
    }
}
