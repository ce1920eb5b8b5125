//! Skill images, built at publish time: a skill package at `/skill` on top
//! of a base (a root filesystem directory, or an OCI image archive whose
//! layers are reused as they are), written as an OCI image layout in a tar
//! that `ctr images import` takes and registry tools can push.
//!
//! Deterministic: the same skill on the same base gives the same bytes, so
//! the same manifest digest (no clock, sorted entries, numeric owners, fixed
//! gzip, sorted JSON keys). It reads the skill folder and the base and
//! writes the output file, and does nothing else.
#![forbid(unsafe_code)]

pub mod archive;
pub mod blob;
pub mod config;
pub mod error;
pub mod layer;
pub mod layout;
pub mod reference;
pub mod rootfs_dir;
pub mod rootfs_image;
pub mod skill_layer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageManifestBuilder, MediaType, Os, PlatformBuilder, ANNOTATION_BASE_IMAGE_DIGEST,
};

pub use error::{ImageError, Result};
pub use reference::ImageName;
pub use rootfs_image::{build_rootfs_image, RootfsImage, RootfsImageRequest};

use crate::blob::Blob;
use crate::config::BaseConfig;
use crate::layout::LayoutBlob;

/// What a base is, from what is at its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A root filesystem directory: it becomes one layer.
    Dir(PathBuf),
    /// An OCI image layout in a tar: its layers are reused as they are.
    Archive(PathBuf),
}

impl Base {
    pub fn at(path: &Path) -> Result<Base> {
        let meta = std::fs::metadata(path).map_err(|source| ImageError::ReadBase {
            path: path.to_owned(),
            source,
        })?;
        if meta.is_dir() {
            Ok(Base::Dir(path.to_owned()))
        } else if meta.is_file() {
            Ok(Base::Archive(path.to_owned()))
        } else {
            Err(ImageError::BadBase {
                path: path.to_owned(),
                expected: "expected a root filesystem directory or an OCI image archive (.tar)".to_owned(),
            })
        }
    }
}

/// What `build` was asked.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    pub skill_dir: &'a Path,
    pub base: &'a Base,
    /// The tar to write (replaced if it exists).
    pub output: &'a Path,
    /// The image name; `None`: `localhost/skillbox/<skill>:<version>`.
    pub name: Option<&'a str>,
}

/// What `build` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub name: ImageName,
    /// `sha256:…` of the manifest: the image's identity in a registry.
    pub manifest_digest: String,
    pub config_digest: String,
    /// Layers, base ones first; the last holds the skill.
    pub layers: usize,
    /// The skill package's digest (`io.skillbox.skill.digest`).
    pub skill_digest: String,
}

/// What the new image takes from its base.
struct BaseParts {
    /// The base's layers, as blobs of the new image.
    blobs: Vec<LayoutBlob>,
    layers: Vec<Descriptor>,
    config: BaseConfig,
    /// The base image's manifest digest, when the base is an image.
    manifest_digest: Option<String>,
}

fn base_parts(base: &Base) -> Result<BaseParts> {
    match base {
        Base::Dir(dir) => {
            let layer = rootfs_dir::layer_of_dir(dir)?;
            let config = BaseConfig {
                os: Os::Linux,
                architecture: archive::host_arch(),
                env: Vec::new(),
                labels: HashMap::new(),
                diff_ids: vec![layer.diff_id.clone()],
                history: vec![config::history(
                    "skillbox image build: base root filesystem directory",
                )?],
            };
            let descriptor = layer.blob.descriptor();
            Ok(BaseParts {
                blobs: vec![LayoutBlob::Memory(layer.blob)],
                layers: vec![descriptor],
                config,
                manifest_digest: None,
            })
        }
        Base::Archive(path) => {
            let base = archive::read_archive(path)?;
            let mut config = BaseConfig::of_image(&base.config);
            if config.history.is_empty() {
                for _ in &base.layers {
                    config.history.push(config::history("base layer")?);
                }
            }
            let descriptors = base.layers.iter().map(|l| l.descriptor.clone()).collect();
            let blobs = base
                .layers
                .into_iter()
                .map(|layer| LayoutBlob::InArchive {
                    archive: base.archive.clone(),
                    offset: layer.offset,
                    descriptor: Box::new(layer.descriptor),
                })
                .collect();
            Ok(BaseParts {
                blobs,
                layers: descriptors,
                config,
                manifest_digest: Some(base.manifest_digest),
            })
        }
    }
}

/// Builds the image of the skill at `request.skill_dir` on `request.base`
/// into `request.output`.
pub fn build(request: &BuildRequest<'_>) -> Result<Built> {
    let package = policy_compiler::load(request.skill_dir).map_err(|source| ImageError::LoadSkill {
        dir: request.skill_dir.to_owned(),
        source,
    })?;
    let name = match request.name {
        Some(name) => ImageName::parse(name)?,
        None => ImageName::default_for(
            package.manifest.name.as_str(),
            package.manifest.version.as_deref(),
        )?,
    };
    let BaseParts {
        mut blobs,
        mut layers,
        config: base,
        manifest_digest: base_digest,
    } = base_parts(request.base)?;

    let skill = skill_layer::layer_of_skill(&package).map_err(|source| ImageError::Write {
        path: request.output.to_owned(),
        source,
    })?;
    let image_config = config::image_config(&package, &base, &skill.diff_id)?;
    let config_blob = Blob::json(MediaType::ImageConfig, &image_config);
    layers.push(skill.blob.descriptor());
    blobs.push(LayoutBlob::Memory(skill.blob));

    let config_digest = config_blob.digest.clone();
    let layer_count = layers.len();
    let manifest_digest = write_image(
        request.output,
        &name,
        config_blob,
        layers,
        blobs,
        base_digest,
        PlatformOf {
            os: base.os,
            architecture: base.architecture,
        },
    )?;
    Ok(Built {
        name,
        manifest_digest,
        config_digest,
        layers: layer_count,
        skill_digest: package.digest.clone(),
    })
}

/// The platform an image's index entry names.
pub(crate) struct PlatformOf {
    pub os: Os,
    pub architecture: oci_spec::image::Arch,
}

/// Writes the image whose config is `config` and whose layers are `layers`
/// (their bytes among `blobs`) as an OCI layout tar at `output`, named
/// `name`; `base_digest`, when the image extends another, is annotated on
/// the manifest. Returns the manifest's digest.
pub(crate) fn write_image(
    output: &Path,
    name: &ImageName,
    config: Blob,
    layers: Vec<Descriptor>,
    mut blobs: Vec<LayoutBlob>,
    base_digest: Option<String>,
    platform: PlatformOf,
) -> Result<String> {
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor())
        .layers(layers);
    if let Some(digest) = base_digest {
        manifest = manifest.annotations(HashMap::from([(ANNOTATION_BASE_IMAGE_DIGEST.to_owned(), digest)]));
    }
    let manifest = manifest.build().map_err(|source| ImageError::BuildSpec {
        what: "manifest",
        source,
    })?;
    let manifest_blob = Blob::json(MediaType::ImageManifest, &manifest);
    let platform = PlatformBuilder::default()
        .os(platform.os)
        .architecture(platform.architecture)
        .build()
        .map_err(|source| ImageError::BuildSpec {
            what: "platform",
            source,
        })?;
    let index = layout::index_json(&manifest_blob, name, platform)?;
    let digest = manifest_blob.digest.clone();
    blobs.push(LayoutBlob::Memory(config));
    blobs.push(LayoutBlob::Memory(manifest_blob));
    layout::write_layout(output, &index, blobs)?;
    Ok(digest)
}
