//! `skillbox node install | uninstall | status`: arguments in, report out;
//! the work is in `crate::node`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{emit, pretty_json, Failure};
use crate::cli::{NodeCommand, NodeInstallArgs};
use crate::node::install::{self, Change, Inputs};
use crate::node::layout::{HostRoot, SHIM_NAME};
use crate::node::{status, uninstall};

pub fn node(command: NodeCommand) -> Result<ExitCode, Failure> {
    match command {
        NodeCommand::Install(args) => {
            let root = HostRoot::new(args.root.host_root.clone());
            let report = install::install(&root, &inputs(args)?)?;
            let mut out = String::new();
            for (path, change) in &report.changes {
                let word = match change {
                    Change::Unchanged => "unchanged",
                    Change::Created => "created",
                    Change::Updated => "updated",
                };
                out += &format!("{word:<9} {path}\n");
            }
            if report.changes.iter().all(|(_, c)| *c == Change::Unchanged) {
                out += "unchanged: skillbox is installed as asked\n";
            }
            out += "containerd was not reloaded: restart it for the `skillbox` handler to take effect\n";
            emit(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Uninstall(args) => {
            let done = uninstall::uninstall(&HostRoot::new(args.host_root))?;
            let out = if done.is_empty() {
                "skillbox is not installed; nothing to do\n".to_owned()
            } else {
                done.iter().map(|p| format!("restored {p}\n")).collect()
            };
            emit(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Status(args) => {
            let status = status::status(&HostRoot::new(args.root.host_root))?;
            emit(&if args.json {
                pretty_json(&status)
            } else {
                status::render(&status)
            })?;
            Ok(if status.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// The binaries to install: the command line's, else this program, the
/// shim beside it and runsc from PATH.
fn inputs(args: NodeInstallArgs) -> anyhow::Result<Inputs> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let shim = args.shim.unwrap_or_else(|| {
        me.parent()
            .map(|d| d.join(SHIM_NAME))
            .unwrap_or_else(|| PathBuf::from(SHIM_NAME))
    });
    let runsc = match args.runsc {
        Some(path) => path,
        None => std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("runsc"))
            .find(|p| p.is_file())
            .context("--runsc not given and no runsc on PATH")?,
    };
    Ok(Inputs {
        shim,
        cli: args.cli.unwrap_or(me),
        runsc,
        node_config: args.node_config,
    })
}
