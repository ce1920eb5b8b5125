//! Trees of regular files and directories, as `--input` and `--output`
//! move them across the sandbox's edge: listed first, with anything else
//! (a symbolic link, FIFO, socket or device) refused before a byte is
//! copied, then copied with fixed modes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use walkdir::WalkDir;

/// One file or directory, relative to the tree's root (the root itself is
/// the empty path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub relative: PathBuf,
    pub is_dir: bool,
}

/// Why a tree cannot be listed.
#[derive(Debug)]
pub enum ListError {
    Read(walkdir::Error),
    /// Something that is neither a regular file nor a directory.
    NotPlain {
        relative: PathBuf,
        kind: &'static str,
    },
}

/// What was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
}

/// Every entry under `root`, the root first, parents before children,
/// siblings by name; links are not followed.
pub fn list(root: &Path) -> Result<Vec<Entry>, ListError> {
    let mut entries = Vec::new();
    for entry in WalkDir::new(root).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(ListError::Read)?;
        let relative = entry
            .path()
            .strip_prefix(root)
            .expect("walkdir stays under its root")
            .to_owned();
        let kind = entry.file_type();
        if !kind.is_dir() && !kind.is_file() {
            return Err(ListError::NotPlain {
                relative,
                kind: describe(kind),
            });
        }
        entries.push(Entry {
            relative,
            is_dir: kind.is_dir(),
        });
    }
    Ok(entries)
}

/// Copies the listed entries from `from` to `to` (created, unless it is
/// already a directory), files with `file_mode`.
pub fn copy(from: &Path, entries: &[Entry], to: &Path, file_mode: u32) -> anyhow::Result<Copied> {
    let mut copied = Copied { files: 0, bytes: 0 };
    for entry in entries {
        // `join("")` would add a trailing slash: the root is `to` itself.
        let (source, target) = if entry.relative.as_os_str().is_empty() {
            (from.to_owned(), to.to_owned())
        } else {
            (from.join(&entry.relative), to.join(&entry.relative))
        };
        if entry.is_dir {
            if !target.is_dir() {
                fs::create_dir(&target).with_context(|| format!("{}: cannot create", target.display()))?;
            }
        } else {
            copied.bytes +=
                fs::copy(&source, &target).with_context(|| format!("cannot copy {}", source.display()))?;
            set_mode(&target, file_mode)?;
            copied.files += 1;
        }
    }
    Ok(copied)
}

pub fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("{}: cannot set its mode", path.display()))
}

/// What a non-regular file is, for messages.
fn describe(kind: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}
