//! One image layer, written deterministically: GNU tar entries in the order
//! they are given, every mtime 0, numeric owners only (no user or group
//! names), gzip at a fixed level with no name and no timestamp in its
//! header. The same entries always give the same bytes, so the same digest.

use std::io::{self, Read};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use oci_spec::image::MediaType;
use tar::{EntryType, Header};

use crate::blob::{Blob, HashingWriter};

/// The compression level of every layer this crate writes. Changing it
/// changes every image digest.
pub const GZIP_LEVEL: u32 = 6;

/// Numeric owner of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
}

pub const ROOT: Owner = Owner { uid: 0, gid: 0 };

/// A finished layer: the compressed blob and the digest of its tar (the
/// diff id the image config lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
}

pub struct LayerWriter {
    tar: tar::Builder<HashingWriter<GzEncoder<Vec<u8>>>>,
}

fn header(kind: EntryType, mode: u32, owner: Owner, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode & 0o7777);
    header.set_uid(owner.uid);
    header.set_gid(owner.gid);
    header.set_mtime(0);
    header.set_size(size);
    header
}

impl Default for LayerWriter {
    fn default() -> Self {
        LayerWriter::new()
    }
}

impl LayerWriter {
    pub fn new() -> LayerWriter {
        let gzip = GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), Compression::new(GZIP_LEVEL));
        LayerWriter {
            tar: tar::Builder::new(HashingWriter::new(gzip)),
        }
    }

    pub fn dir(&mut self, path: &Path, mode: u32, owner: Owner) -> io::Result<()> {
        let mut header = header(EntryType::Directory, mode, owner, 0);
        self.tar.append_data(&mut header, path, io::empty())
    }

    pub fn file(
        &mut self,
        path: &Path,
        mode: u32,
        owner: Owner,
        size: u64,
        contents: impl Read,
    ) -> io::Result<()> {
        let mut header = header(EntryType::Regular, mode, owner, size);
        self.tar.append_data(&mut header, path, contents)
    }

    pub fn symlink(&mut self, path: &Path, target: &Path, owner: Owner) -> io::Result<()> {
        let mut header = header(EntryType::Symlink, 0o777, owner, 0);
        self.tar.append_link(&mut header, path, target)
    }

    /// A second name for a file already in this layer at `target`.
    pub fn hard_link(&mut self, path: &Path, target: &Path, mode: u32, owner: Owner) -> io::Result<()> {
        let mut header = header(EntryType::Link, mode, owner, 0);
        self.tar.append_link(&mut header, path, target)
    }

    /// A character or block device or a fifo (`kind` says which).
    pub fn special(
        &mut self,
        path: &Path,
        kind: EntryType,
        mode: u32,
        owner: Owner,
        (major, minor): (u32, u32),
    ) -> io::Result<()> {
        let mut header = header(kind, mode, owner, 0);
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
        self.tar.append_data(&mut header, path, io::empty())
    }

    /// Ends the tar and the gzip stream.
    pub fn finish(self) -> io::Result<Layer> {
        let (gzip, diff_id) = self.tar.into_inner()?.finish();
        let bytes = gzip.finish()?;
        Ok(Layer {
            blob: Blob::new(MediaType::ImageLayerGzip, bytes),
            diff_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Layer {
        let mut layer = LayerWriter::new();
        layer.dir(Path::new("etc"), 0o755, ROOT).unwrap();
        layer
            .file(Path::new("etc/motd"), 0o644, ROOT, 3, &b"hi\n"[..])
            .unwrap();
        layer
            .symlink(Path::new("etc/link"), Path::new("motd"), ROOT)
            .unwrap();
        layer.finish().unwrap()
    }

    #[test]
    fn the_same_entries_give_the_same_bytes() {
        assert_eq!(sample(), sample());
    }

    #[test]
    fn the_gzip_header_has_no_time_and_no_name() {
        let layer = sample();
        let bytes = &layer.blob.bytes;
        assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8], "a gzip member, deflate");
        assert_eq!(bytes[3], 0, "FLG: no name, no comment, no extra field");
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "MTIME 0");
    }

    #[test]
    fn entries_have_numeric_owners_and_no_times() {
        let layer = sample();
        let tar = flate2::read::GzDecoder::new(&layer.blob.bytes[..]);
        let mut archive = tar::Archive::new(tar);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.mtime().unwrap(), 0);
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.username_bytes().unwrap_or_default(), b"");
            assert_eq!(header.groupname_bytes().unwrap_or_default(), b"");
            seen.push(entry.path().unwrap().display().to_string());
        }
        assert_eq!(seen, ["etc", "etc/motd", "etc/link"]);
    }
}
