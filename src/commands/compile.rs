//! `skillbox compile`: skill folder → OCI bundle.

use std::process::ExitCode;

use policy_compiler::CompileOptions;

use super::{
    absolute, base_rootfs_dir, default_runsc_binary, emit, invoking_env, load_node, load_skill,
    print_warnings, resolve_platform, Failure,
};
use crate::cli::CompileArgs;

pub fn compile(args: CompileArgs) -> Result<ExitCode, Failure> {
    let package = load_skill(&args.skill_dir)?;
    let mut node = load_node(&args.node)?;
    let runsc = default_runsc_binary(&node.config);
    resolve_platform(&mut node, &runsc);
    let base_rootfs = base_rootfs_dir(&args.base_rootfs)?;
    let output = absolute(&args.output)?;
    let env = invoking_env();
    // A compiled bundle names no cgroup: whoever runs it gives each sandbox
    // its own (the shim `/skillbox/<namespace>.<id>`, CRI its pod's), never
    // one derived from a name the skill chose.
    let compiled = policy_compiler::compile(
        &package,
        &output,
        &CompileOptions {
            node: &node.config,
            node_config_name: &node.name,
            base_rootfs: &base_rootfs,
            extra_args: &args.args,
            env: &env,
            cgroups_path: None,
        },
    )?;
    if args.absolute_paths {
        policy_compiler::bundle::pin_config(&output)?;
    }
    print_warnings(&compiled.warnings);
    emit(&format!("{}\n", output.display()))?;
    Ok(ExitCode::SUCCESS)
}
