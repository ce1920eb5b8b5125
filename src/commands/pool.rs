//! `skillbox pool serve` and `skillbox pool status`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};

use super::{absolute, emit, load_node, resolve_platform, runsc_binary, Failure};
use crate::cli::{PoolCommand, PoolServeArgs, PoolStatusArgs};
use crate::pool::client;
use crate::pool::service::{self, PoolSettings, WarmKey};

/// How long `skillbox pool status` waits for the pool's answer.
const STATUS_LIMIT: Duration = Duration::from_secs(10);

pub fn pool(command: PoolCommand) -> Result<ExitCode, Failure> {
    match command {
        PoolCommand::Serve(args) => serve(args),
        PoolCommand::Status(args) => status(args),
    }
}

fn serve(args: PoolServeArgs) -> Result<ExitCode, Failure> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(anyhow!("skillbox pool serve needs root: it starts runsc and creates cgroups").into());
    }
    // What a pool killed before it could stop left behind.
    super::gc::collect_quietly(&args.runtime.state.state_dir);
    let mut node = load_node(&args.node)?;
    let runsc = runsc_binary(&args.runtime, &node.config);
    resolve_platform(&mut node, &runsc);
    let warm = match (&args.warm[..], &args.base_rootfs) {
        ([], _) => Vec::new(),
        (_, None) => {
            return Err(
                anyhow!("--warm needs --base-rootfs (the root filesystem of the skills kept warm)").into(),
            )
        }
        (dirs, Some(rootfs)) => dirs
            .iter()
            .map(|dir| WarmKey::new(dir, rootfs, false, false).context("--warm"))
            .collect::<anyhow::Result<_>>()?,
    };
    service::serve(PoolSettings {
        socket: args.socket,
        capacity: usize::from(args.capacity),
        per_skill: usize::from(args.per_skill),
        node_config: args.node.node_config.as_deref().map(absolute).transpose()?,
        node,
        runsc,
        state_dir: absolute(&args.runtime.state.state_dir)?,
        warm,
    })?;
    Ok(ExitCode::SUCCESS)
}

fn status(args: PoolStatusArgs) -> Result<ExitCode, Failure> {
    let status = client::status(&args.socket, STATUS_LIMIT)?;
    emit(&(serde_json::to_string_pretty(&status).expect("the status serializes") + "\n"))?;
    Ok(ExitCode::SUCCESS)
}
