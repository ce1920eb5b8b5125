//! Writes an OCI image layout as one tar: `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>`, in that order, blobs sorted by digest, every entry
//! owned 0:0 with mtime 0. The tar is written next to the output and renamed
//! into place, so a failed build leaves no partial image.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageIndexBuilder, MediaType, OciLayoutBuilder, Platform, ANNOTATION_REF_NAME,
};
use tar::{EntryType, Header};

use crate::blob::{canonical_json, Blob, HashingReader};
use crate::error::{ImageError, Result};
use crate::reference::ImageName;

/// The annotation `ctr images import` names the image after.
pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";

/// A blob of the new image: built in memory, or a base layer still in the
/// base archive.
#[derive(Debug, Clone)]
pub enum LayoutBlob {
    Memory(Blob),
    InArchive {
        archive: PathBuf,
        offset: u64,
        /// Boxed: a descriptor is several times a blob's size in place.
        descriptor: Box<Descriptor>,
    },
}

impl LayoutBlob {
    fn digest(&self) -> String {
        match self {
            LayoutBlob::Memory(blob) => blob.digest.clone(),
            LayoutBlob::InArchive { descriptor, .. } => descriptor.digest().to_string(),
        }
    }
}

/// `index.json`: the one manifest, named for containerd and for registry
/// tools (`ref.name` holds the tag), with its platform.
pub fn index_json(manifest: &Blob, name: &ImageName, platform: Platform) -> Result<Vec<u8>> {
    let mut descriptor = manifest.descriptor();
    descriptor.set_annotations(Some(
        [
            (CONTAINERD_IMAGE_NAME.to_owned(), name.as_str().to_owned()),
            (ANNOTATION_REF_NAME.to_owned(), name.tag().to_owned()),
        ]
        .into(),
    ));
    descriptor.set_platform(Some(platform));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor])
        .build()
        .map_err(|source| ImageError::BuildSpec {
            what: "index",
            source,
        })?;
    Ok(canonical_json(&index))
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header
}

fn append(tar: &mut tar::Builder<File>, path: &str, bytes: &[u8]) -> io::Result<()> {
    tar.append_data(
        &mut header(EntryType::Regular, 0o644, bytes.len() as u64),
        path,
        bytes,
    )
}

/// Copies a base layer from its archive, checking it against its digest.
fn append_from_archive(
    tar: &mut tar::Builder<File>,
    path: &str,
    archive: &Path,
    offset: u64,
    descriptor: &Descriptor,
) -> Result<()> {
    let read_err = |source| ImageError::ReadBase {
        path: archive.to_owned(),
        source,
    };
    let mut file = File::open(archive).map_err(read_err)?;
    file.seek(SeekFrom::Start(offset)).map_err(read_err)?;
    let mut reader = HashingReader::new(file.take(descriptor.size()));
    tar.append_data(
        &mut header(EntryType::Regular, 0o644, descriptor.size()),
        path,
        &mut reader,
    )
    .map_err(read_err)?;
    if reader.digest() != descriptor.digest().to_string() {
        return Err(ImageError::BadBaseBlob {
            archive: archive.to_owned(),
            file: path.to_owned(),
            field: "content".to_owned(),
            message: "does not match its digest".to_owned(),
        });
    }
    Ok(())
}

/// Writes the layout tar at `output`: `index` and every blob.
pub fn write_layout(output: &Path, index: &[u8], blobs: Vec<LayoutBlob>) -> Result<()> {
    let write_err = |source| ImageError::Write {
        path: output.to_owned(),
        source,
    };
    let dir = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let partial = tempfile::Builder::new()
        .prefix(".skillbox-image.")
        .tempfile_in(dir)
        .map_err(write_err)?;
    let mut tar = tar::Builder::new(partial.reopen().map_err(write_err)?);
    let layout = OciLayoutBuilder::default()
        .image_layout_version(OCI_LAYOUT_VERSION)
        .build()
        .map_err(|source| ImageError::BuildSpec {
            what: "oci-layout",
            source,
        })?;
    append(&mut tar, "oci-layout", &canonical_json(&layout)).map_err(write_err)?;
    append(&mut tar, "index.json", index).map_err(write_err)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        tar.append_data(&mut header(EntryType::Directory, 0o755, 0), dir, io::empty())
            .map_err(write_err)?;
    }
    let blobs: BTreeMap<String, LayoutBlob> = blobs.into_iter().map(|b| (b.digest(), b)).collect();
    for (digest, blob) in &blobs {
        let path = format!("blobs/{}", digest.replacen(':', "/", 1));
        match blob {
            LayoutBlob::Memory(blob) => append(&mut tar, &path, &blob.bytes).map_err(write_err)?,
            LayoutBlob::InArchive {
                archive,
                offset,
                descriptor,
            } => append_from_archive(&mut tar, &path, archive, *offset, descriptor)?,
        }
    }
    tar.into_inner()
        .and_then(|file| file.sync_all())
        .map_err(write_err)?;
    fs::set_permissions(partial.path(), fs::Permissions::from_mode(0o644)).map_err(write_err)?;
    partial.persist(output).map_err(|err| write_err(err.error))?;
    Ok(())
}
