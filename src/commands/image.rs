//! `skillbox image build`: skill folder + base → OCI image layout tar.

use std::process::ExitCode;

use skillbox_image::{Base, BuildRequest};

use super::{emit, pretty_json, Failure};
use crate::cli::ImageBuildArgs;

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
