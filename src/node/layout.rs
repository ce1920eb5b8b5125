//! Where `skillbox node` puts things on a host whose `/` is mounted at a
//! root directory (the DaemonSet's view), and how a file is written there:
//! to a temporary file beside it, fsynced, then renamed over the target.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The shim's file name: containerd finds `io.containerd.skillbox.v1` as
/// `containerd-shim-skillbox-v1` on its PATH.
pub const SHIM_NAME: &str = "containerd-shim-skillbox-v1";
/// Host paths, as containerd and the shim see them.
pub const BIN_DIR: &str = "/usr/local/bin";
pub const NODE_CONFIG: &str = "/etc/skillbox/config.toml";
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const DROP_IN: &str = "/etc/containerd/conf.d/skillbox.toml";
pub const STATE: &str = "/var/lib/skillbox/install.json";
/// Byte-exact copies of what install replaced, named by their digest.
pub const BACKUP_DIR: &str = "/var/lib/skillbox/backup";

/// Whether containerd reads the host file at start (a change needs a
/// restart of containerd).
pub fn read_by_containerd(host_path: &str) -> bool {
    host_path == CONTAINERD_CONFIG || host_path == DROP_IN
}

/// The host's `/`, as mounted here.
#[derive(Debug, Clone)]
pub struct HostRoot(PathBuf);

impl HostRoot {
    pub fn new(root: PathBuf) -> Self {
        HostRoot(root)
    }

    /// `host_path` (absolute, as the host sees it) under the root.
    pub fn path(&self, host_path: &str) -> PathBuf {
        self.0.join(host_path.trim_start_matches('/'))
    }
}

/// Reads a file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("{}: cannot read", path.display())),
    }
}

/// The permission bits of an existing file.
pub fn mode_of(path: &Path) -> anyhow::Result<u32> {
    let meta = fs::metadata(path).with_context(|| format!("{}: cannot stat", path.display()))?;
    Ok(meta.permissions().mode() & 0o7777)
}

/// Writes `bytes` at `path` with `mode`, atomically: a reader sees the old
/// file or the new one, never a part. The parent directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{}: no parent directory", path.display()))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".skillbox-")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("{}: cannot write", temp.path().display()))?;
    temp.persist(path)
        .map_err(|err| err.error)
        .with_context(|| format!("{}: cannot rename into place", path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: cannot sync", dir.display()))
}

/// Creates the missing directories above `path`, returning those it created
/// (outermost first) so uninstall can remove them.
pub fn create_parents(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    missing.reverse();
    for d in &missing {
        fs::create_dir(d).with_context(|| format!("{}: cannot create directory", d.display()))?;
    }
    Ok(missing)
}
