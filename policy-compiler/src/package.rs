//! Loads a skill folder under the registry's package rules and computes the
//! content digest that identifies it.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use walkdir::WalkDir;

use crate::error::{Error, PackageViolation, Result};
use crate::frontmatter;
use crate::manifest::Frontmatter;

pub const MAX_FILES: usize = 100;
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
pub const MAX_TOTAL_BYTES: u64 = 100 * 1024 * 1024;
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
#[derive(Debug)]
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
    let mut files = 0usize;
    let mut total = 0u64;
    for item in WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let item = item.map_err(|err| Error::ReadSkill {
            path: err.path().unwrap_or(dir).to_owned(),
            source: err.into(),
        })?;
        let path = item.path();
        let relative = path
            .strip_prefix(dir)
            .expect("walkdir yields paths under its root");
        let relative_str = relative
            .to_str()
            .ok_or_else(|| violation(path, PackageViolation::NonUtf8Path))?
            .to_owned();
        let kind = read_entry(path, relative, item.file_type())?;
        if !matches!(kind, EntryKind::Dir) {
            files += 1;
            if files > MAX_FILES {
                return Err(violation(
                    dir,
                    PackageViolation::TooManyFiles { limit: MAX_FILES },
                ));
            }
        }
        if let EntryKind::File { contents, .. } = &kind {
            total += contents.len() as u64;
            if total > MAX_TOTAL_BYTES {
                return Err(violation(
                    path,
                    PackageViolation::PackageTooLarge {
                        limit: MAX_TOTAL_BYTES,
                    },
                ));
            }
        }
        entries.push(PackageEntry {
            relative: relative_str,
            kind,
        });
    }

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
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn symlink_containment() {
        assert!(stays_inside(Path::new("scripts/a"), Path::new("b")));
        assert!(stays_inside(Path::new("scripts/a"), Path::new("../assets/x")));
        assert!(!stays_inside(
            Path::new("scripts/a"),
            Path::new("../../etc/passwd")
        ));
        assert!(!stays_inside(Path::new("a"), Path::new("/etc/passwd")));
        assert!(!stays_inside(Path::new("a"), Path::new("..")));
    }

    fn write(path: &Path, contents: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    const SKILL_MD_TEXT: &str = "---\nname: t\ndescription: d\n---\n";

    #[test]
    fn a_hard_linked_host_file_is_refused() {
        let work = tempfile::tempdir().unwrap();
        let secret = work.path().join("host/secret.key");
        write(&secret, "root-only key");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o400)).unwrap();
        let skill = work.path().join("skill");
        write(&skill.join(SKILL_MD), SKILL_MD_TEXT);
        fs::create_dir(skill.join("assets")).unwrap();
        fs::hard_link(&secret, skill.join("assets/key")).unwrap();
        let err = load(&skill).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}/assets/key: the file has 2 hard links: a package's files may have no other name (copy it instead of linking it)",
                skill.display()
            )
        );
        // The same file copied instead of linked is accepted.
        fs::remove_file(skill.join("assets/key")).unwrap();
        fs::copy(&secret, skill.join("assets/key")).unwrap();
        assert!(load(&skill).is_ok());
    }

    #[test]
    fn digest_ignores_nothing_that_matters() {
        let file = |relative: &str, contents: &[u8]| PackageEntry {
            relative: relative.to_owned(),
            kind: EntryKind::File {
                executable: false,
                contents: contents.to_vec(),
            },
        };
        let a = digest(&[file("a", b"bc")]);
        assert_eq!(a, digest(&[file("a", b"bc")]));
        assert_ne!(a, digest(&[file("ab", b"c")]));
        assert_ne!(a, digest(&[file("a", b"bd")]));
    }
}
