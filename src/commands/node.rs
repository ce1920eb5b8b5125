//! `skillbox node install | uninstall | status`: arguments in, report out;
//! the work is in `crate::node`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{emit, pretty_json, Failure};
use crate::cli::{ContainerdArgs, NodeCommand, NodeInstallArgs, NodeUninstallArgs};
use crate::node::activate::{HostContainerd, Outcome, HANDLER};
use crate::node::containerd_config::ConfigVersion;
use crate::node::cri::Cri;
use crate::node::install::{self, Change, Inputs};
use crate::node::kube_api::{self, READY_LABEL, READY_VALUE};
use crate::node::layout::{self, HostRoot, SHIM_NAME};
use crate::node::restart::Restart;
use crate::node::{status, uninstall};

pub fn node(command: NodeCommand) -> Result<ExitCode, Failure> {
    match command {
        NodeCommand::Install(args) => node_install(args),
        NodeCommand::Uninstall(args) => node_uninstall(args),
        NodeCommand::Status(args) => {
            let status = status::status(&HostRoot::new(args.root.host_root), &args.cri_socket)?;
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
        NodeCommand::WaitDaemonset(args) => {
            let rollout =
                kube_api::wait_daemon_set(&args.namespace, &args.name, Duration::from_secs(args.timeout))?;
            emit(&format!(
                "DaemonSet {}/{}: {} of {} pods ready\n",
                args.namespace, args.name, rollout.ready, rollout.desired
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn node_install(args: NodeInstallArgs) -> Result<ExitCode, Failure> {
    let root = HostRoot::new(args.root.host_root.clone());
    let containerd = host_containerd(&root, &args.containerd)?;
    let before = containerd.as_ref().map(HostContainerd::view).transpose()?;
    let version_without_config = match &before {
        Some(view) if view.is_containerd_2() => ConfigVersion::V3,
        _ => ConfigVersion::V2,
    };
    let report = install::install(&root, &inputs(&args, version_without_config)?)?;
    let mut out = String::new();
    for (path, change) in &report.changes {
        let word = match change {
            Change::Unchanged => "unchanged",
            Change::Created => "created",
            Change::Updated => "updated",
        };
        out += &format!("{word:<9} {path}\n");
    }
    if !report.changed() {
        out += "unchanged: skillbox is installed as asked\n";
    }
    emit(&out)?;
    match (&containerd, &before) {
        (Some(containerd), Some(before)) => {
            let (outcome, view) = containerd.activate(report.containerd_config_changed(), before)?;
            emit(&format!(
                "{}; {} {} sees the `{HANDLER}` runtime handler\n",
                describe(&outcome),
                view.runtime_name,
                view.runtime_version
            ))?;
        }
        _ => emit("containerd was not asked nor restarted (--no-reload): restart it for the `skillbox` handler to take effect\n")?,
    }
    if let Some(node) = &args.node.node_name {
        kube_api::set_ready_label(node, true)?;
        emit(&format!("labelled node {node} {READY_LABEL}={READY_VALUE}\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn node_uninstall(args: NodeUninstallArgs) -> Result<ExitCode, Failure> {
    let root = HostRoot::new(args.root.host_root.clone());
    // First, so that no new skill pod is scheduled here.
    if let Some(node) = &args.node.node_name {
        kube_api::set_ready_label(node, false)?;
        emit(&format!("removed label {READY_LABEL} from node {node}\n"))?;
    }
    let containerd = host_containerd(&root, &args.containerd)?;
    let before = containerd.as_ref().map(HostContainerd::view).transpose()?;
    if let Some(containerd) = &containerd {
        let running = containerd.cri.running_pods(HANDLER)?;
        if !running.is_empty() && !args.force {
            let names: Vec<String> = running
                .iter()
                .map(|pod| format!("{}/{}", pod.namespace, pod.name))
                .collect();
            return Err(anyhow::anyhow!(
                "{} pod(s) still run under the `{HANDLER}` handler on this node ({}); delete them first, \
                 or uninstall with --force (they keep running, but containerd can no longer start new ones)",
                running.len(),
                names.join(", ")
            )
            .into());
        }
    }
    let done = uninstall::uninstall(&root)?;
    emit(&if done.is_empty() {
        "skillbox is not installed; nothing to do\n".to_owned()
    } else {
        done.iter().map(|p| format!("restored {p}\n")).collect()
    })?;
    match (&containerd, &before) {
        (Some(containerd), Some(before)) => {
            let config_changed = done.iter().any(|path| layout::read_by_containerd(path));
            let (outcome, view) = containerd.deactivate(config_changed, before)?;
            emit(&format!(
                "{}; {} {} {} the `{HANDLER}` runtime handler\n",
                describe(&outcome),
                view.runtime_name,
                view.runtime_version,
                if view.handlers.contains(HANDLER) {
                    "still sees (registered by something else than skillbox's install)"
                } else {
                    "no longer sees"
                }
            ))?;
        }
        _ => emit("containerd was not asked nor restarted (--no-reload)\n")?,
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Unchanged => "containerd not restarted".to_owned(),
        Outcome::Restarted(took) => format!(
            "containerd restarted, answering again after {:.1} s",
            took.as_secs_f64()
        ),
    }
}

/// The host's containerd, unless --no-reload.
fn host_containerd(root: &HostRoot, args: &ContainerdArgs) -> anyhow::Result<Option<HostContainerd>> {
    if args.no_reload {
        return Ok(None);
    }
    let restart = match &args.restart_command {
        Some(command) => Restart::Command(command.clone()),
        None => Restart::Systemd {
            unit: args.containerd_unit.clone(),
            enter_host: root.path("/") != Path::new("/"),
        },
    };
    Ok(Some(HostContainerd {
        cri: Cri::new(&root.path(&args.cri_socket.to_string_lossy()))?,
        restart,
        limit: Duration::from_secs(args.reload_timeout),
    }))
}

/// The binaries to install: the command line's, else this program, the
/// shim beside it and runsc from PATH.
fn inputs(args: &NodeInstallArgs, version_without_config: ConfigVersion) -> anyhow::Result<Inputs> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let shim = args.shim.clone().unwrap_or_else(|| {
        me.parent()
            .map(|d| d.join(SHIM_NAME))
            .unwrap_or_else(|| PathBuf::from(SHIM_NAME))
    });
    let runsc = match &args.runsc {
        Some(path) => path.clone(),
        None => std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("runsc"))
            .find(|p| p.is_file())
            .context("--runsc not given and no runsc on PATH")?,
    };
    Ok(Inputs {
        shim,
        cli: args.cli.clone().unwrap_or(me),
        runsc,
        node_config: args.node_config.clone(),
        version_without_config,
    })
}
