//! A base root filesystem directory as one layer: every entry below it, in
//! byte order of names, depth first; modes and numeric owners as on disk,
//! times dropped; hard links kept as links to the first name in that order.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::error::{ImageError, Result};
use crate::layer::{Layer, LayerWriter, Owner};

/// The device number's halves, as glibc's `major()`/`minor()` split them.
fn major_minor(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

struct Walk<'a> {
    root: &'a Path,
    layer: LayerWriter,
    /// (device, inode) of files with more than one name → the first name.
    linked: HashMap<(u64, u64), PathBuf>,
}

impl Walk<'_> {
    fn read_err(&self, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
        let path = path.to_owned();
        move |source| ImageError::ReadBase { path, source }
    }

    fn write_err(&self) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
        move |source| ImageError::ReadBase {
            path: self.root.to_owned(),
            source,
        }
    }

    fn dir(&mut self, dir: &Path) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(self.read_err(dir))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(self.read_err(dir))?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            self.entry(&path)?;
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path) -> Result<()> {
        let relative = path
            .strip_prefix(self.root)
            .expect("walked below the root")
            .to_owned();
        let meta = fs::symlink_metadata(path).map_err(self.read_err(path))?;
        let owner = Owner {
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
        };
        let mode = meta.mode();
        let kind = meta.file_type();
        let unsupported = |kind: &'static str| ImageError::UnsupportedFile {
            path: self.root.to_owned(),
            file: relative.clone(),
            kind,
        };
        if kind.is_dir() {
            self.layer.dir(&relative, mode, owner).map_err(self.write_err())?;
            return self.dir(path);
        }
        if kind.is_symlink() {
            let target = fs::read_link(path).map_err(self.read_err(path))?;
            return self
                .layer
                .symlink(&relative, &target, owner)
                .map_err(self.write_err());
        }
        if kind.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.linked.get(&key).cloned() {
                    return self
                        .layer
                        .hard_link(&relative, &first, mode, owner)
                        .map_err(self.write_err());
                }
                self.linked.insert(key, relative.clone());
            }
            let file = fs::File::open(path).map_err(self.read_err(path))?;
            return self
                .layer
                .file(&relative, mode, owner, meta.len(), file)
                .map_err(self.write_err());
        }
        let special = if kind.is_char_device() {
            EntryType::Char
        } else if kind.is_block_device() {
            EntryType::Block
        } else if kind.is_fifo() {
            EntryType::Fifo
        } else {
            return Err(unsupported("socket"));
        };
        self.layer
            .special(&relative, special, mode, owner, major_minor(meta.rdev()))
            .map_err(self.write_err())
    }
}

/// The directory at `root` as one layer (the directory itself is the
/// layer's root and has no entry).
pub fn layer_of_dir(root: &Path) -> Result<Layer> {
    let mut walk = Walk {
        root,
        layer: LayerWriter::new(),
        linked: HashMap::new(),
    };
    walk.dir(root)?;
    walk.layer.finish().map_err(|source| ImageError::ReadBase {
        path: root.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn entries(layer: &Layer) -> Vec<(String, EntryType, u32, Option<String>)> {
        let gz = flate2::read::GzDecoder::new(&layer.blob.bytes[..]);
        let mut archive = tar::Archive::new(gz);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let link = entry.link_name().unwrap().map(|l| l.display().to_string());
                (
                    entry.path().unwrap().display().to_string(),
                    entry.header().entry_type(),
                    entry.header().mode().unwrap(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn a_directory_becomes_sorted_entries_with_modes_links_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("tmp")).unwrap();
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::create_dir(root.join("bin")).unwrap();
        fs::set_permissions(root.join("bin"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("bin/busybox"), "#!").unwrap();
        fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::hard_link(root.join("bin/busybox"), root.join("bin/ash")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();

        let layer = layer_of_dir(root).unwrap();
        assert_eq!(
            entries(&layer),
            [
                ("bin".to_owned(), EntryType::Directory, 0o755, None),
                ("bin/ash".to_owned(), EntryType::Regular, 0o755, None),
                (
                    "bin/busybox".to_owned(),
                    EntryType::Link,
                    0o755,
                    Some("bin/ash".to_owned())
                ),
                (
                    "bin/sh".to_owned(),
                    EntryType::Symlink,
                    0o777,
                    Some("busybox".to_owned())
                ),
                ("tmp".to_owned(), EntryType::Directory, 0o1777, None),
            ]
        );
        assert_eq!(layer, layer_of_dir(root).unwrap(), "deterministic");
    }

    #[test]
    fn a_socket_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("ctl.sock")).unwrap();
        let err = layer_of_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ctl.sock in the base rootfs is a socket"), "{err}");
    }

    #[test]
    fn device_numbers_split_as_glibc_does() {
        // glibc's makedev().
        let makedev = |major: u64, minor: u64| {
            ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
        };
        assert_eq!(major_minor(makedev(1, 3)), (1, 3));
        assert_eq!(major_minor(makedev(259, 0x12345)), (259, 0x12345));
        assert_eq!(major_minor(makedev(0x1234, 7)), (0x1234, 7));
    }
}
