//! `skillbox image build`: skill folder + base → OCI image layout tar.
//! `skillbox image build-node`: a prepared root filesystem → the node image
//! the Helm chart runs.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use skillbox_image::{Base, BuildRequest, RootfsImageRequest};

use super::{emit, pretty_json, Failure};
use crate::cli::{ImageBuildArgs, ImageBuildNodeArgs};

pub fn build(args: ImageBuildArgs) -> Result<ExitCode, Failure> {
    let base = Base::at(&args.base)?;
    let built = skillbox_image::build(&BuildRequest {
        skill_dir: &args.skill_dir,
        base: &base,
        output: &args.output,
        name: args.name.as_deref(),
    })?;
    emit(&pretty_json(&serde_json::json!({
        "output": args.output.display().to_string(),
        "name": built.name.as_str(),
        "manifest_digest": built.manifest_digest,
        "config_digest": built.config_digest,
        "layers": built.layers,
        "skill_digest": built.skill_digest,
    })))?;
    Ok(ExitCode::SUCCESS)
}

/// The executables the chart runs from the node image: its commands name
/// the first three, and the installer restarts containerd with nsenter.
const NODE_IMAGE_EXECUTABLES: [&str; 4] = [
    "opt/skillbox/bin/skillbox",
    "opt/skillbox/bin/containerd-shim-skillbox-v1",
    "opt/skillbox/bin/runsc",
    "usr/bin/nsenter",
];

/// The node image's PATH: skillbox's binaries first.
const NODE_IMAGE_PATH: &str =
    "PATH=/opt/skillbox/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Refuses a root filesystem that lacks one of the executables.
fn check_node_rootfs(rootfs: &Path) -> anyhow::Result<()> {
    for file in NODE_IMAGE_EXECUTABLES {
        let path = rootfs.join(file);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {}
            Ok(_) => bail!("--rootfs {}: /{file} is not an executable file", rootfs.display()),
            Err(err) => bail!(
                "--rootfs {}: /{file}: {err}; a node image needs /{} (scripts/build-node-image.sh prepares the directory)",
                rootfs.display(),
                NODE_IMAGE_EXECUTABLES.join(", /")
            ),
        }
    }
    Ok(())
}

pub fn build_node(args: ImageBuildNodeArgs) -> Result<ExitCode, Failure> {
    check_node_rootfs(&args.rootfs)?;
    let version = env!("CARGO_PKG_VERSION");
    let name = args
        .name
        .unwrap_or_else(|| format!("localhost/skillbox/node:{version}"));
    let labels = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_owned(),
            "skillbox-node".to_owned(),
        ),
        ("org.opencontainers.image.version".to_owned(), version.to_owned()),
        (
            "org.opencontainers.image.description".to_owned(),
            "skillbox's node installer, metrics server and audit exporter (charts/skillbox)".to_owned(),
        ),
    ]);
    let built = skillbox_image::build_rootfs_image(&RootfsImageRequest {
        rootfs: &args.rootfs,
        output: &args.output,
        name: &name,
        env: &[NODE_IMAGE_PATH.to_owned()],
        labels: &labels,
        created_by: &format!("skillbox image build-node {version}: the node root filesystem"),
    })?;
    emit(&pretty_json(&serde_json::json!({
        "output": args.output.display().to_string(),
        "name": built.name.as_str(),
        "manifest_digest": built.manifest_digest,
        "config_digest": built.config_digest,
    })))?;
    Ok(ExitCode::SUCCESS)
}
