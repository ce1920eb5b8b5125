//! Loads a skill folder under the registry's package rules and computes the
//! content digest that identifies it.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, PackageViolation, Result};
use crate::frontmatter;
use crate::manifest::Frontmatter;

pub const MAX_FILES: usize = 100;
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
pub const MAX_TOTAL_BYTES: u64 = 100 * 1024 * 1024;
/// Directories below the skill folder. Empty ones cost nothing to publish
/// but a block each in every bundle, and time to walk.
pub const MAX_DIRS: usize = 100;
/// Path components below the skill folder (`SKILL.md` is at depth 1).
pub const MAX_DEPTH: usize = 16;
/// Names read from directories, of any kind. Counted as each directory is
/// listed, so a directory of a million names is refused after reading
/// `MAX_ENTRIES + 1` of them.
pub const MAX_ENTRIES: usize = MAX_FILES + MAX_DIRS;
pub const SKILL_MD: &str = "SKILL.md";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File {
        executable: bool,
        contents: Vec<u8>,
    },
    /// A relative link whose target stays inside the skill folder.
    Symlink {
        target: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageEntry {
    /// Path relative to the skill folder, `/`-separated.
    pub relative: String,
    pub kind: EntryKind,
}

/// A loaded skill: its parsed metadata, its files and their digest.
#[derive(Debug, Clone)]
pub struct SkillPackage {
    pub dir: PathBuf,
    pub manifest: Frontmatter,
    /// Every entry below the folder, sorted by path.
    pub entries: Vec<PackageEntry>,
    /// `sha256:<hex>` over paths, kinds and contents, independent of mtimes.
    pub digest: String,
}

fn violation(file: &Path, violation: PackageViolation) -> Error {
    Error::Package {
        file: file.to_owned(),
        violation,
    }
}

/// Whether a relative symlink target, resolved from the link's directory,
/// stays inside the package root.
fn stays_inside(link_relative: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = link_relative.components().count() as isize - 1;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

fn read_entry(path: &Path, relative: &Path, file_type: fs::FileType) -> Result<EntryKind> {
    let read_err = |source| Error::ReadSkill {
        path: path.to_owned(),
        source,
    };
    if file_type.is_dir() {
        return Ok(EntryKind::Dir);
    }
    if file_type.is_symlink() {
        let target = fs::read_link(path).map_err(read_err)?;
        if !stays_inside(relative, &target) {
            return Err(violation(path, PackageViolation::SymlinkEscapes { target }));
        }
        return Ok(EntryKind::Symlink { target });
    }
    if !file_type.is_file() {
        return Err(violation(path, PackageViolation::UnsupportedFileType));
    }
    let file = fs::File::open(path).map_err(read_err)?;
    let metadata = file.metadata().map_err(read_err)?;
    // A second name for the same inode may be a host file linked in (a
    // root-only key, say) that the bundle would copy and the skill could read.
    if metadata.nlink() > 1 {
        return Err(violation(
            path,
            PackageViolation::HardLinked {
                links: metadata.nlink(),
            },
        ));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(violation(
            path,
            PackageViolation::FileTooLarge {
                size: metadata.len(),
                limit: MAX_FILE_BYTES,
            },
        ));
    }
    let mut contents = Vec::with_capacity(metadata.len() as usize);
    // Read at most one byte past the limit so a file growing meanwhile is caught too.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(read_err)?;
    if contents.len() as u64 > MAX_FILE_BYTES {
        return Err(violation(
            path,
            PackageViolation::FileTooLarge {
                size: contents.len() as u64,
                limit: MAX_FILE_BYTES,
            },
        ));
    }
    use std::os::unix::fs::PermissionsExt;
    let executable = metadata.permissions().mode() & 0o111 != 0;
    Ok(EntryKind::File { executable, contents })
}

/// What a walk has read so far; each count fails on the first entry past its limit.
#[derive(Default)]
struct Budget {
    entries: usize,
    files: usize,
    dirs: usize,
    bytes: u64,
}

impl Budget {
    /// Counts the entry at `path` against the file and directory limits,
    /// before anything of it is read.
    fn count(&mut self, path: &Path, file_type: fs::FileType) -> Result<()> {
        let exceeded = if file_type.is_dir() {
            self.dirs += 1;
            (self.dirs > MAX_DIRS).then_some(PackageViolation::TooManyDirectories { limit: MAX_DIRS })
        } else {
            self.files += 1;
            (self.files > MAX_FILES).then_some(PackageViolation::TooManyFiles { limit: MAX_FILES })
        };
        exceeded.map_or(Ok(()), |exceeded| Err(violation(path, exceeded)))
    }

    /// Counts a file's contents against the package size.
    fn add_bytes(&mut self, path: &Path, kind: &EntryKind) -> Result<()> {
        if let EntryKind::File { contents, .. } = kind {
            self.bytes += contents.len() as u64;
            if self.bytes > MAX_TOTAL_BYTES {
                return Err(violation(
                    path,
                    PackageViolation::PackageTooLarge {
                        limit: MAX_TOTAL_BYTES,
                    },
                ));
            }
        }
        Ok(())
    }
}

/// The entries of `dir`, sorted by name, counted against the entry limit
/// as they are read.
fn list(dir: &Path, budget: &mut Budget) -> Result<Vec<fs::DirEntry>> {
    let read_err = |source| Error::ReadSkill {
        path: dir.to_owned(),
        source,
    };
    let mut children = Vec::new();
    for child in fs::read_dir(dir).map_err(read_err)? {
        budget.entries += 1;
        if budget.entries > MAX_ENTRIES {
            return Err(violation(
                dir,
                PackageViolation::TooManyEntries { limit: MAX_ENTRIES },
            ));
        }
        children.push(child.map_err(read_err)?);
    }
    children.sort_by_key(fs::DirEntry::file_name);
    Ok(children)
}

/// Appends the entries below `dir` (at `depth` below `root`) to `out`,
/// depth first, each directory's children sorted by name, stopping at the
/// first broken rule.
fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    budget: &mut Budget,
    out: &mut Vec<PackageEntry>,
) -> Result<()> {
    for child in list(dir, budget)? {
        let path = child.path();
        if depth > MAX_DEPTH {
            return Err(violation(&path, PackageViolation::TooDeep { limit: MAX_DEPTH }));
        }
        let relative = path.strip_prefix(root).expect("listed paths are under the root");
        let relative_str = relative
            .to_str()
            .ok_or_else(|| violation(&path, PackageViolation::NonUtf8Path))?
            .to_owned();
        let file_type = child.file_type().map_err(|source| Error::ReadSkill {
            path: path.clone(),
            source,
        })?;
        budget.count(&path, file_type)?;
        let kind = read_entry(&path, relative, file_type)?;
        budget.add_bytes(&path, &kind)?;
        let is_dir = matches!(kind, EntryKind::Dir);
        out.push(PackageEntry {
            relative: relative_str,
            kind,
        });
        if is_dir {
            walk(root, &path, depth + 1, budget, out)?;
        }
    }
    Ok(())
}

fn digest(entries: &[PackageEntry]) -> String {
    let mut hasher = Sha256::new();
    for entry in entries {
        let (tag, body): (&[u8], &[u8]) = match &entry.kind {
            EntryKind::Dir => (b"dir", b""),
            EntryKind::File {
                executable: true,
                contents,
            } => (b"exe", contents),
            EntryKind::File { contents, .. } => (b"file", contents),
            EntryKind::Symlink { target } => (b"link", target.as_os_str().as_encoded_bytes()),
        };
        // Length-prefix every field so no two packages hash the same stream.
        for field in [entry.relative.as_bytes(), tag, body] {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Loads the skill folder at `dir`.
pub fn load(dir: &Path) -> Result<SkillPackage> {
    let skill_md = dir.join(SKILL_MD);
    match fs::symlink_metadata(&skill_md) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(violation(&skill_md, PackageViolation::UnsupportedFileType));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingSkillMd { dir: dir.to_owned() });
        }
        Err(source) => {
            return Err(Error::ReadSkill {
                path: skill_md,
                source,
            })
        }
    }

    let mut entries = Vec::new();
    walk(dir, dir, 1, &mut Budget::default(), &mut entries)?;

    let skill_md_text = entries
        .iter()
        .find_map(|entry| match &entry.kind {
            EntryKind::File { contents, .. } if entry.relative == SKILL_MD => Some(contents),
            _ => None,
        })
        .expect("SKILL.md was checked to be a regular file");
    let text = std::str::from_utf8(skill_md_text).map_err(|_| Error::Frontmatter {
        file: skill_md.clone(),
        reason: "not valid UTF-8 text".to_owned(),
    })?;
    let manifest = frontmatter::parse(&skill_md, text)?;
    let digest = digest(&entries);
    Ok(SkillPackage {
        dir: dir.to_owned(),
        manifest,
        entries,
        digest,
    })
}

#[cfg(test)]
#[path = "package_tests.rs"]
mod tests;
