//! `skillbox gc`: removes what killed `skillbox run`s left behind (network
//! namespace, veth, nftables tables, cgroup, runsc state, audit socket,
//! execution directory), from the teardown records under the state
//! directory. Every `skillbox run` does the same first.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use skillbox_sandbox::gc::collect;

use super::emit;
use crate::cli::GcArgs;

pub fn gc(args: GcArgs) -> anyhow::Result<ExitCode> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("skillbox gc needs root: it removes sandboxes' namespaces, cgroups and runsc state");
    }
    let collected = collect(&args.state.state_dir);
    emit(&format!(
        "removed {} sandbox(es) of dead runs; {} run(s) still live\n",
        collected.removed.len(),
        collected.live
    ))?;
    if !collected.failures.is_empty() {
        bail!("could not remove everything: {}", collected.failures.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

/// What `skillbox run` does first: a collection whose failures are warnings.
pub fn collect_quietly(state_dir: &Path) {
    let collected = collect(state_dir);
    for failure in &collected.failures {
        eprintln!("skillbox: warning: a dead run's sandbox is not fully removed: {failure}");
    }
}
