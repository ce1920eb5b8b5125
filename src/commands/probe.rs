//! `skillbox probe`: what the installed runsc can do on this host.

use std::process::ExitCode;

use anyhow::Context;
use runsc_config::{HostCapabilities, ModeSupport, NetworkMode, RunscFlags};
use skillbox_sandbox::runsc::Runsc;

use super::{emit, load_node, pretty_json, resolve_platform, runsc_binary, Failure};
use crate::cli::{Format, ProbeArgs};
use crate::runtime::execution::Workspace;

/// A bundle running `/bin/true` as nobody with no capabilities.
fn trial_spec(rootfs: &std::path::Path) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": rootfs, "readonly": true },
        "process": {
            "args": ["/bin/true"], "cwd": "/", "user": { "uid": 65534, "gid": 65534 },
            "env": ["PATH=/bin"], "noNewPrivileges": true
        },
        "mounts": [{ "destination": "/proc", "type": "proc", "source": "proc" }],
        "linux": { "namespaces": [
            { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "network" }
        ] }
    })
}

pub fn probe(args: ProbeArgs) -> Result<ExitCode, Failure> {
    let state_dir = &args.runtime.state.state_dir;
    let workspace = Workspace::create(state_dir, "probe")
        .with_context(|| format!("{}: cannot create a probe directory", state_dir.display()))?;
    let mut node = load_node(&args.node)?;
    let runsc = runsc_binary(&args.runtime, &node.config);
    resolve_platform(&mut node, &runsc);
    let flags = RunscFlags {
        platform: node.config.runsc.platform(),
        ..RunscFlags::default()
    };
    let runsc = Runsc::new(
        runsc_binary(&args.runtime, &node.config),
        workspace.runsc_root(),
        flags,
    );
    let Some(rootfs) = &args.base_rootfs else {
        let version = runsc.version()?;
        emit(&match args.format {
            Format::Json => pretty_json(&serde_json::json!({ "version": version })),
            Format::Text => format!(
                "runsc {} (spec {})\n",
                version.raw,
                version.spec.as_deref().unwrap_or("?")
            ),
        })?;
        return Ok(ExitCode::SUCCESS);
    };
    let bundle = workspace.bundle();
    std::fs::create_dir_all(&bundle).context("creating the probe bundle")?;
    let spec = trial_spec(&super::absolute(rootfs)?);
    std::fs::write(bundle.join("config.json"), spec.to_string()).context("writing the probe bundle")?;
    let capabilities = runsc.probe(&bundle)?;
    emit(&match args.format {
        Format::Json => pretty_json(&capabilities),
        Format::Text => render_text(&capabilities),
    })?;
    Ok(ExitCode::SUCCESS)
}

fn render_text(capabilities: &HostCapabilities) -> String {
    let mut out = format!("runsc {}\n", capabilities.version.raw);
    for mode in NetworkMode::ALL {
        let support = match capabilities.network.get(mode) {
            ModeSupport::Supported => "supported".to_owned(),
            ModeSupport::Unsupported { reason } => format!("unsupported: {reason}"),
        };
        out += &format!("  --network={:<8} {support}\n", mode.as_str());
    }
    out += &match capabilities.network.best_for_egress() {
        Some(mode) => format!("egress would use --network={}\n", mode.as_str()),
        None => "no network mode usable for egress on this host\n".to_owned(),
    };
    for platform in &capabilities.platforms {
        let support = match &platform.support {
            ModeSupport::Supported => "supported".to_owned(),
            ModeSupport::Unsupported { reason } => format!("unsupported: {reason}"),
        };
        out += &format!("  --platform={:<7} {support}\n", platform.platform.as_str());
    }
    out += &match capabilities.best_platform() {
        Some(best) => format!(
            "best platform: {best}; [runsc] platform = \"auto\" uses {} with this runsc\n",
            capabilities.version.default_platform()
        ),
        None => "no platform ran a sandbox on this host\n".to_owned(),
    };
    out
}
