//! An image of a root filesystem directory alone: one layer, and a config
//! with the environment, labels and history line it is given; no skill,
//! no user (root), no entrypoint. The node image the Helm chart runs is
//! built this way (`skillbox image build-node`). Deterministic like skill
//! images: the same directory and inputs give the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder, MediaType, Os, RootFs};

use crate::blob::Blob;
use crate::error::{ImageError, Result};
use crate::layout::LayoutBlob;
use crate::reference::ImageName;
use crate::{archive, config, rootfs_dir, write_image, PlatformOf};

/// What `build_rootfs_image` was asked.
#[derive(Debug, Clone)]
pub struct RootfsImageRequest<'a> {
    /// The directory that becomes the image's `/`.
    pub rootfs: &'a Path,
    /// The tar to write (replaced if it exists).
    pub output: &'a Path,
    /// `HOST/PATH:TAG`.
    pub name: &'a str,
    /// The config's `Env` (`NAME=value`).
    pub env: &'a [String],
    pub labels: &'a BTreeMap<String, String>,
    /// The history entry's `created_by`.
    pub created_by: &'a str,
}

/// What `build_rootfs_image` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsImage {
    pub name: ImageName,
    pub manifest_digest: String,
    pub config_digest: String,
}

fn build_error(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> ImageError {
    move |source| ImageError::BuildSpec { what, source }
}

/// Builds the one-layer image of `request.rootfs` into `request.output`.
pub fn build_rootfs_image(request: &RootfsImageRequest<'_>) -> Result<RootfsImage> {
    let name = ImageName::parse(request.name)?;
    let layer = rootfs_dir::layer_of_dir(request.rootfs)?;
    let labels: HashMap<String, String> = request.labels.clone().into_iter().collect();
    let image_config = ConfigBuilder::default()
        .env(request.env.to_vec())
        .labels(labels)
        .build()
        .map_err(build_error("config"))?;
    let mut rootfs = RootFs::default();
    rootfs.set_diff_ids(vec![layer.diff_id.clone()]);
    let architecture = archive::host_arch();
    let configuration = ImageConfigurationBuilder::default()
        .architecture(architecture.clone())
        .os(Os::Linux)
        .config(image_config)
        .rootfs(rootfs)
        .history(vec![config::history(request.created_by)?])
        .build()
        .map_err(build_error("config"))?;
    let config_blob = Blob::json(MediaType::ImageConfig, &configuration);
    let config_digest = config_blob.digest.clone();
    let manifest_digest = write_image(
        request.output,
        &name,
        config_blob,
        vec![layer.blob.descriptor()],
        vec![LayoutBlob::Memory(layer.blob)],
        None,
        PlatformOf {
            os: Os::Linux,
            architecture,
        },
    )?;
    Ok(RootfsImage {
        name,
        manifest_digest,
        config_digest,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn entries(tar_path: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut archive = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                (entry.path().unwrap().display().to_string(), bytes)
            })
            .collect()
    }

    #[test]
    fn a_directory_becomes_a_one_layer_image_with_its_config_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("opt/bin")).unwrap();
        std::fs::write(root.join("opt/bin/tool"), "#!/bin/sh\n").unwrap();
        let labels = BTreeMap::from([("org.opencontainers.image.title".to_owned(), "t".to_owned())]);
        let env = ["PATH=/opt/bin".to_owned()];
        let build = |output: &Path| {
            build_rootfs_image(&RootfsImageRequest {
                rootfs: &root,
                output,
                name: "localhost/test/tool:1",
                env: &env,
                labels: &labels,
                created_by: "test: a directory",
            })
            .unwrap()
        };
        let first = build(&dir.path().join("a.tar"));
        let second = build(&dir.path().join("b.tar"));
        assert_eq!(first, second);
        assert!(
            std::fs::read(dir.path().join("a.tar")).unwrap()
                == std::fs::read(dir.path().join("b.tar")).unwrap()
        );

        let files = entries(&dir.path().join("a.tar"));
        let blob = |digest: &str| &files[&format!("blobs/{}", digest.replacen(':', "/", 1))];
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"],
            "localhost/test/tool:1"
        );
        let manifest: serde_json::Value = serde_json::from_slice(blob(&first.manifest_digest)).unwrap();
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
        let config: serde_json::Value = serde_json::from_slice(blob(&first.config_digest)).unwrap();
        assert_eq!(config["config"]["Env"], serde_json::json!(["PATH=/opt/bin"]));
        assert_eq!(config["config"]["Labels"]["org.opencontainers.image.title"], "t");
        assert!(config["config"].get("User").is_none(), "root: {config}");
        assert_eq!(config["history"][0]["created_by"], "test: a directory");
    }
}
