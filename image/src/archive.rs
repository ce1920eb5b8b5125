//! A base given as an OCI image layout in a tar (what `skillbox image
//! build` writes, `ctr images export` and `skopeo copy oci-archive:`
//! write): its index is read, the image for this host's platform chosen,
//! its manifest and config checked against their digests, and its layers
//! located in the archive to be copied into the new image as they are.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, Descriptor, DigestAlgorithm, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os,
};

use crate::blob::sha256;
use crate::error::{ImageError, Result};

/// JSON documents (index, manifests, configs) larger than this are refused
/// unread.
pub const MAX_JSON_BYTES: u64 = 4 * 1024 * 1024;
/// How deep image indexes may nest.
const MAX_INDEX_DEPTH: usize = 2;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The platform images are built for: Linux on this host's architecture.
pub fn host_arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => Arch::from(other),
    }
}

/// A layer of the base, still in the archive.
#[derive(Debug, Clone)]
pub struct ArchiveLayer {
    /// Its descriptor, media type as the new manifest names it.
    pub descriptor: Descriptor,
    /// Where its bytes start in the archive.
    pub offset: u64,
}

/// The chosen image of a base archive.
#[derive(Debug, Clone)]
pub struct ArchiveBase {
    pub archive: PathBuf,
    pub manifest_digest: String,
    pub config: ImageConfiguration,
    pub layers: Vec<ArchiveLayer>,
}

/// Where each file of the archive is: offset of its bytes, and size.
struct Members {
    archive: PathBuf,
    file: File,
    at: HashMap<String, (u64, u64)>,
}

impl Members {
    fn index(archive: &Path) -> Result<Members> {
        let read_err = |source| ImageError::ReadBase {
            path: archive.to_owned(),
            source,
        };
        let mut at = HashMap::new();
        let mut tar = tar::Archive::new(File::open(archive).map_err(read_err)?);
        for entry in tar.entries().map_err(read_err)? {
            let entry = entry.map_err(|source| ImageError::NotOciLayout {
                archive: archive.to_owned(),
                expected: format!("a tar archive ({source})"),
            })?;
            if entry.header().entry_type().is_file() {
                let name = entry.path().map_err(read_err)?.display().to_string();
                let name = name.trim_start_matches("./").to_owned();
                at.insert(name, (entry.raw_file_position(), entry.size()));
            }
        }
        Ok(Members {
            archive: archive.to_owned(),
            file: File::open(archive).map_err(read_err)?,
            at,
        })
    }

    fn bad(&self, file: &str, field: &str, message: impl Into<String>) -> ImageError {
        ImageError::BadBaseBlob {
            archive: self.archive.clone(),
            file: file.to_owned(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(&(offset, size)) = self.at.get(name) else {
            return Ok(None);
        };
        if size > MAX_JSON_BYTES {
            return Err(self.bad(
                name,
                "content",
                format!("{size} bytes; expected at most {MAX_JSON_BYTES}"),
            ));
        }
        let mut bytes = vec![0; size as usize];
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut bytes))
            .map_err(|source| ImageError::ReadBase {
                path: self.archive.clone(),
                source,
            })?;
        Ok(Some(bytes))
    }

    /// The blob `descriptor` names, checked against its digest and size.
    fn blob(&mut self, descriptor: &Descriptor) -> Result<(String, Vec<u8>)> {
        let name = blob_name(descriptor);
        let bytes = self
            .read(&name)?
            .ok_or_else(|| self.bad(&name, "content", "missing from the archive"))?;
        if bytes.len() as u64 != descriptor.size() || sha256(&bytes) != descriptor.digest().to_string() {
            return Err(self.bad(
                &name,
                "content",
                "does not match its descriptor's digest and size",
            ));
        }
        Ok((name, bytes))
    }
}

fn blob_name(descriptor: &Descriptor) -> String {
    let digest = descriptor.digest();
    format!("blobs/{}/{}", digest.algorithm(), digest.digest())
}

fn platform_name(os: &Os, arch: &Arch) -> String {
    format!("{os}/{arch}")
}

fn is_manifest(media_type: &MediaType) -> bool {
    *media_type == MediaType::ImageManifest || media_type.to_string() == DOCKER_MANIFEST
}

fn is_index(media_type: &MediaType) -> bool {
    *media_type == MediaType::ImageIndex || media_type.to_string() == DOCKER_MANIFEST_LIST
}

/// The media type a base layer keeps in the new manifest.
fn layer_media_type(media_type: &MediaType) -> Option<MediaType> {
    match media_type {
        MediaType::ImageLayer | MediaType::ImageLayerGzip | MediaType::ImageLayerZstd => {
            Some(media_type.clone())
        }
        other if other.to_string() == DOCKER_LAYER_GZIP => Some(MediaType::ImageLayerGzip),
        _ => None,
    }
}

/// Every image manifest below `index`, nested indexes opened.
fn manifests_of(
    members: &mut Members,
    index: &ImageIndex,
    file: &str,
    depth: usize,
    found: &mut Vec<Descriptor>,
) -> Result<()> {
    for (i, descriptor) in index.manifests().iter().enumerate() {
        if is_manifest(descriptor.media_type()) {
            if !found.iter().any(|seen| seen.digest() == descriptor.digest()) {
                found.push(descriptor.clone());
            }
        } else if is_index(descriptor.media_type()) && depth < MAX_INDEX_DEPTH {
            let (name, bytes) = members.blob(descriptor)?;
            let nested = ImageIndex::from_reader(&bytes[..])
                .map_err(|err| members.bad(&name, "manifests", format!("not an image index: {err}")))?;
            manifests_of(members, &nested, &name, depth + 1, found)?;
        } else {
            return Err(members.bad(
                file,
                &format!("manifests[{i}].mediaType"),
                format!("{}; expected an image manifest or index", descriptor.media_type()),
            ));
        }
    }
    Ok(())
}

/// Reads the base image for linux on this host's architecture from the OCI
/// layout in the tar at `archive`.
pub fn read_archive(archive: &Path) -> Result<ArchiveBase> {
    let mut members = Members::index(archive)?;
    let not_layout = |expected: &str| ImageError::NotOciLayout {
        archive: archive.to_owned(),
        expected: expected.to_owned(),
    };
    if members.read("oci-layout")?.is_none() {
        let hint = if members.at.contains_key("manifest.json") {
            " (this looks like a `docker save` archive; export the image as an OCI layout instead)"
        } else {
            ""
        };
        return Err(not_layout(&format!(
            "no `oci-layout` file at its top level; expected `oci-layout`, `index.json` and `blobs/`{hint}"
        )));
    }
    let index_bytes = members
        .read("index.json")?
        .ok_or_else(|| not_layout("no `index.json` at its top level"))?;
    let index = ImageIndex::from_reader(&index_bytes[..])
        .map_err(|err| members.bad("index.json", "manifests", format!("not an image index: {err}")))?;
    let mut manifests = Vec::new();
    manifests_of(&mut members, &index, "index.json", 0, &mut manifests)?;

    let wanted = (Os::Linux, host_arch());
    let for_host: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            d.platform()
                .as_ref()
                .is_some_and(|p| (p.os(), p.architecture()) == (&wanted.0, &wanted.1))
        })
        .collect();
    let chosen = match (for_host.as_slice(), manifests.as_slice()) {
        ([one], _) => (*one).clone(),
        // A single image without a platform: its config says which it is.
        ([], [only]) if only.platform().is_none() => only.clone(),
        _ => {
            let found: Vec<String> = manifests
                .iter()
                .map(|d| match d.platform() {
                    Some(p) => platform_name(p.os(), p.architecture()),
                    None => format!("{} (no platform)", d.digest()),
                })
                .collect();
            return Err(ImageError::NoMatchingPlatform {
                archive: archive.to_owned(),
                wanted: format!("exactly one {}", platform_name(&wanted.0, &wanted.1)),
                found: if found.is_empty() {
                    "no image".to_owned()
                } else {
                    found.join(", ")
                },
            });
        }
    };

    let (manifest_name, manifest_bytes) = members.blob(&chosen)?;
    let manifest = ImageManifest::from_reader(&manifest_bytes[..])
        .map_err(|err| members.bad(&manifest_name, "layers", format!("not an image manifest: {err}")))?;
    let (config_name, config_bytes) = members.blob(manifest.config())?;
    let config = ImageConfiguration::from_reader(&config_bytes[..])
        .map_err(|err| members.bad(&config_name, "rootfs", format!("not an image config: {err}")))?;
    if (config.os(), config.architecture()) != (&wanted.0, &wanted.1) {
        return Err(ImageError::NoMatchingPlatform {
            archive: archive.to_owned(),
            wanted: platform_name(&wanted.0, &wanted.1),
            found: format!(
                "{} (os and architecture of {config_name})",
                platform_name(config.os(), config.architecture())
            ),
        });
    }
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(members.bad(
            &config_name,
            "rootfs.diff_ids",
            format!(
                "{} diff ids for the manifest's {} layers",
                config.rootfs().diff_ids().len(),
                manifest.layers().len()
            ),
        ));
    }

    let mut layers = Vec::new();
    for (i, layer) in manifest.layers().iter().enumerate() {
        let field = format!("layers[{i}]");
        let media_type = layer_media_type(layer.media_type()).ok_or_else(|| {
            members.bad(
                &manifest_name,
                &format!("{field}.mediaType"),
                format!(
                    "{}; expected an OCI tar, tar+gzip or tar+zstd layer",
                    layer.media_type()
                ),
            )
        })?;
        if *layer.digest().algorithm() != DigestAlgorithm::Sha256 {
            return Err(members.bad(
                &manifest_name,
                &format!("{field}.digest"),
                format!("{}; expected a sha256 digest", layer.digest()),
            ));
        }
        let name = blob_name(layer);
        let &(offset, size) = members.at.get(&name).ok_or_else(|| {
            members.bad(
                &manifest_name,
                &field,
                format!("{name} is missing from the archive"),
            )
        })?;
        if size != layer.size() {
            return Err(members.bad(
                &manifest_name,
                &format!("{field}.size"),
                format!("{} but {name} holds {size} bytes", layer.size()),
            ));
        }
        let mut descriptor = Descriptor::new(media_type, size, layer.digest().clone());
        descriptor.set_annotations(layer.annotations().clone());
        layers.push(ArchiveLayer { descriptor, offset });
    }
    Ok(ArchiveBase {
        archive: archive.to_owned(),
        manifest_digest: chosen.digest().to_string(),
        config,
        layers,
    })
}
