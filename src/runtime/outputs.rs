//! `skillbox run --output DIR`: the sandbox's `/workspace/out` is a tmpfs
//! of the size the policy declares for it, mounted by skillbox in the
//! execution's own directory (never a host directory of the caller's) and
//! bound into the sandbox. After the skill ends its contents are checked —
//! regular files and directories only — and copied to a fresh directory
//! beside DIR that is then renamed to DIR: DIR gets all of it or nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

pub use super::plain_tree::Copied;
use super::plain_tree::{self, set_mode, ListError};

/// Where the outputs are written in the sandbox.
pub const OUTPUT_DIR: &str = "/workspace/out";

/// Refuses a destination that exists and is not an empty directory, or
/// whose parent does not exist: checked before the skill runs.
pub fn check_destination(dir: &Path) -> anyhow::Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "--output {}: not empty; give a new or empty directory",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let parent = parent_of(dir);
            if !parent.is_dir() {
                bail!(
                    "--output {}: its parent {} is not a directory",
                    dir.display(),
                    parent.display()
                );
            }
            Ok(())
        }
        Err(err) => Err(err).with_context(|| format!("--output {}: not a directory", dir.display())),
    }
}

fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The host tmpfs behind `/workspace/out` (or, in a scan, behind a
/// writable directory); unmounted on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

/// Who may write a [`Scratch`].
#[derive(Debug, Clone, Copy)]
pub enum ScratchOwner {
    /// The skill's user alone (mode 0700).
    User { uid: u32, gid: u32 },
    /// Everyone, sticky, as the policy's writable directories are (1777).
    Shared,
}

impl Scratch {
    /// Mounts a tmpfs of `size` bytes at `path` (created), without devices,
    /// setuid or exec from the host's side.
    pub fn mount(path: &Path, size: u64, owner: ScratchOwner) -> anyhow::Result<Scratch> {
        fs::create_dir(path).with_context(|| format!("{}: cannot create", path.display()))?;
        let options = match owner {
            ScratchOwner::User { uid, gid } => format!("size={size},mode=0700,uid={uid},gid={gid}"),
            ScratchOwner::Shared => format!("size={size},mode=1777"),
        };
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(options.as_str()),
        )
        .with_context(|| format!("{}: cannot mount a scratch tmpfs", path.display()))?;
        Ok(Scratch {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes in use on the tmpfs.
    pub fn used_bytes(&self) -> anyhow::Result<u64> {
        let stats = nix::sys::statvfs::statvfs(&self.path)
            .with_context(|| format!("{}: cannot measure", self.path.display()))?;
        let blocks = stats.blocks().saturating_sub(stats.blocks_free());
        Ok(blocks * stats.fragment_size())
    }

    /// Checks everything the skill left, then copies it to `dest`.
    pub fn collect(&self, dest: &Path) -> anyhow::Result<Copied> {
        collect(&self.path, dest)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

/// Checks the tree at `from` (regular files and directories only), copies
/// it into a new directory beside `dest`, then renames that to `dest`.
pub fn collect(from: &Path, dest: &Path) -> anyhow::Result<Copied> {
    let entries = plain_tree::list(from).map_err(|err| match err {
        ListError::Read(err) => anyhow::Error::new(err).context(format!("{OUTPUT_DIR}: cannot read what the skill wrote")),
        ListError::NotPlain { relative, kind } => anyhow::anyhow!(
            "{OUTPUT_DIR}/{} is {kind}; outputs hold regular files and directories only, so nothing was written to {}",
            relative.display(),
            dest.display()
        ),
    })?;
    check_destination(dest)?;
    let partial = tempfile::Builder::new()
        .prefix(".skillbox-output-")
        .tempdir_in(parent_of(dest))
        .with_context(|| format!("--output {}: cannot create a directory beside it", dest.display()))?;
    let copied = plain_tree::copy(from, &entries, partial.path(), 0o644).context(OUTPUT_DIR)?;
    set_mode(partial.path(), 0o755)?;
    let partial = partial.keep();
    if let Err(err) = fs::rename(&partial, dest) {
        let _ = fs::remove_dir_all(&partial);
        return Err(err)
            .with_context(|| format!("--output {}: cannot move the outputs into place", dest.display()));
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_are_copied_whole() {
        let work = tempfile::tempdir().unwrap();
        let from = work.path().join("scratch");
        fs::create_dir_all(from.join("reports/2026")).unwrap();
        fs::write(from.join("reports/2026/a.json"), "{}").unwrap();
        fs::write(from.join("summary.txt"), "done\n").unwrap();
        let dest = work.path().join("out");
        let copied = collect(&from, &dest).unwrap();
        assert_eq!(copied, Copied { files: 2, bytes: 7 });
        assert_eq!(
            fs::read_to_string(dest.join("reports/2026/a.json")).unwrap(),
            "{}"
        );
        let leftovers: Vec<_> = fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "a partial directory was left: {leftovers:?}");
    }

    #[test]
    fn a_link_or_fifo_anywhere_writes_nothing() {
        let work = tempfile::tempdir().unwrap();
        let from = work.path().join("scratch");
        fs::create_dir_all(from.join("deep")).unwrap();
        fs::write(from.join("a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", from.join("deep/shadow")).unwrap();
        let dest = work.path().join("out");
        let err = collect(&from, &dest).unwrap_err().to_string();
        assert!(
            err.contains("/workspace/out/deep/shadow is a symbolic link"),
            "{err}"
        );
        assert!(!dest.exists());
        fs::remove_file(from.join("deep/shadow")).unwrap();
        nix::unistd::mkfifo(&from.join("deep/pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = collect(&from, &dest).unwrap_err().to_string();
        assert!(err.contains("deep/pipe is a FIFO"), "{err}");
        assert_eq!(
            fs::read_dir(work.path()).unwrap().count(),
            1,
            "something was written"
        );
    }

    #[test]
    fn the_destination_must_be_new_or_empty() {
        let work = tempfile::tempdir().unwrap();
        let full = work.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("x"), "").unwrap();
        assert!(check_destination(&full)
            .unwrap_err()
            .to_string()
            .contains("not empty"));
        let empty = work.path().join("empty");
        fs::create_dir(&empty).unwrap();
        check_destination(&empty).unwrap();
        check_destination(&work.path().join("new")).unwrap();
        let orphan = work.path().join("no/such/dir");
        assert!(check_destination(&orphan)
            .unwrap_err()
            .to_string()
            .contains("parent"));
        // An empty directory is replaced by the outputs.
        let from = work.path().join("scratch");
        fs::create_dir(&from).unwrap();
        fs::write(from.join("f"), "1").unwrap();
        collect(&from, &empty).unwrap();
        assert_eq!(fs::read_to_string(empty.join("f")).unwrap(), "1");
    }
}
