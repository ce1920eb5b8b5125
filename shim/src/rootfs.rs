//! Image root filesystems: the snapshot mounts containerd passes in Create
//! (`req.rootfs`, what `ctr run <image>` and Kubernetes use) are mounted at
//! `<bundle>/rootfs`, where the spec's `root.path` ("rootfs") points.
//!
//! - Each mount is made as containerd describes it: the snapshot is the
//!   container's own writable layer, as under runc. runsc's gofer creates
//!   the mount points of the spec's bind mounts in it (CRI's `/dev/shm`,
//!   `/etc/resolv.conf`, kubelet's volumes: images such as `pause` have
//!   none), then mounts the root read-only for the sandbox, since the
//!   enforcement always sets `root.readonly`. The skill never writes to it.
//! - A failed mount unmounts what was mounted before it.
//! - [`unmount`] removes everything mounted under `<bundle>/rootfs`
//!   (deepest first) and is safe to call when nothing is mounted: Create's
//!   failure paths, Delete and the `delete` subcommand after a killed shim
//!   all call it.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{target}: cannot create the mount point: {source}")]
    MountPoint {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: cannot mount {kind} {source_path} (options {options:?}): {reason}")]
    Mount {
        target: PathBuf,
        kind: String,
        source_path: String,
        options: Vec<String>,
        reason: String,
    },
    #[error("{target}: cannot unmount: {reason}")]
    Unmount { target: PathBuf, reason: String },
}

/// Where the image root goes in a bundle.
pub fn target(bundle: &Path) -> PathBuf {
    bundle.join("rootfs")
}

/// Mounts `mounts` (in order) at `<bundle>/rootfs`. On failure nothing is
/// left mounted. Blocking.
pub fn mount(bundle: &Path, mounts: &[Mount]) -> Result<(), RootfsError> {
    if mounts.is_empty() {
        return Ok(());
    }
    let target = target(bundle);
    std::fs::create_dir_all(&target).map_err(|source| RootfsError::MountPoint {
        target: target.clone(),
        source,
    })?;
    for mount in mounts {
        let options = mount.options.clone();
        let kind = (!mount.type_.is_empty()).then_some(mount.type_.as_str());
        let source = (!mount.source.is_empty()).then_some(mount.source.as_str());
        if let Err(err) = containerd_shim::mount::mount_rootfs(kind, source, &options, &target) {
            let failed = RootfsError::Mount {
                target: target.clone(),
                kind: mount.type_.clone(),
                source_path: mount.source.clone(),
                options,
                reason: err.to_string(),
            };
            if let Err(undo) = unmount(bundle) {
                tracing::warn!(%undo, "cannot undo the image root's mounts");
            }
            return Err(failed);
        }
        tracing::info!(target = %target.display(), kind = %mount.type_, "image root mounted");
    }
    Ok(())
}

/// Whether anything is mounted at or under `target` (per
/// `/proc/self/mountinfo`).
pub fn is_mounted(target: &Path) -> bool {
    let target = target.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .any(|point| point == target || point.starts_with(&format!("{target}/")))
}

/// Unmounts everything at or under `<bundle>/rootfs`. A busy mount (a
/// process still holds it) is detached lazily rather than left. Blocking.
pub fn unmount(bundle: &Path) -> Result<(), RootfsError> {
    let target = target(bundle);
    if !is_mounted(&target) {
        return Ok(());
    }
    let path = target.display().to_string();
    let first = containerd_shim::mount::umount_recursive(Some(&path), 0);
    if first.is_ok() && !is_mounted(&target) {
        return Ok(());
    }
    tracing::warn!(target = %path, ?first, "unmounting the image root lazily");
    let lazy = containerd_shim::mount::umount_recursive(Some(&path), nix::libc::MNT_DETACH);
    if is_mounted(&target) {
        return Err(RootfsError::Unmount {
            target,
            reason: match lazy {
                Err(err) => err.to_string(),
                Ok(()) => "still mounted after a lazy unmount".to_owned(),
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_mounts_are_made_as_given_and_fully_unmounted() {
        assert!(nix::unistd::Uid::effective().is_root(), "this test runs as root");
        let source = tempfile::tempdir().unwrap();
        std::fs::write(source.path().join("file"), "x").unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let bind = Mount {
            type_: "bind".to_owned(),
            source: source.path().display().to_string(),
            options: vec!["rbind".to_owned(), "rw".to_owned()],
            ..Default::default()
        };
        mount(bundle.path(), &[bind]).unwrap();
        let root = target(bundle.path());
        assert!(is_mounted(&root));
        assert_eq!(std::fs::read_to_string(root.join("file")).unwrap(), "x");
        // The container's own layer: runsc's gofer makes mount points in it.
        std::fs::write(root.join("new"), "y").unwrap();
        assert_eq!(std::fs::read_to_string(source.path().join("new")).unwrap(), "y");
        unmount(bundle.path()).unwrap();
        assert!(!is_mounted(&root));
        // Idempotent.
        unmount(bundle.path()).unwrap();
    }

    #[test]
    fn a_failed_mount_leaves_nothing_mounted() {
        let source = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let good = Mount {
            type_: "bind".to_owned(),
            source: source.path().display().to_string(),
            options: vec!["rbind".to_owned()],
            ..Default::default()
        };
        let bad = Mount {
            type_: "no-such-fs".to_owned(),
            source: "none".to_owned(),
            ..Default::default()
        };
        let err = mount(bundle.path(), &[good, bad]).unwrap_err();
        assert!(err.to_string().contains("no-such-fs"), "{err}");
        assert!(!is_mounted(&target(bundle.path())));
    }
}
