//! `skillbox probe`: what the installed runsc can do on this host.

use std::process::ExitCode;

use anyhow::Context;
use runsc_config::RunscFlags;

use super::Failure;
use crate::cli::{Format, ProbeArgs};
use crate::runtime::execution::Workspace;
use crate::runtime::runsc::Runsc;

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
    let workspace = Workspace::create(&args.runtime.state_dir, "probe").with_context(|| {
        format!(
            "{}: cannot create a probe directory",
            args.runtime.state_dir.display()
        )
    })?;
    let runsc = Runsc::new(&args.runtime.runsc, workspace.runsc_root(), RunscFlags::default());
    let Some(rootfs) = &args.base_rootfs else {
        let version = runsc.version()?;
        match args.format {
            Format::Json => println!("{}", serde_json::json!({ "version": version })),
            Format::Text => println!(
                "runsc {} (spec {})",
                version.raw,
                version.spec.as_deref().unwrap_or("?")
            ),
        }
        return Ok(ExitCode::SUCCESS);
    };
    let bundle = workspace.bundle();
    std::fs::create_dir_all(&bundle).context("creating the probe bundle")?;
    let spec = trial_spec(&super::absolute(rootfs)?);
    std::fs::write(bundle.join("config.json"), spec.to_string()).context("writing the probe bundle")?;
    let capabilities = runsc.probe(&bundle)?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&capabilities).expect("capabilities serialize")
        ),
        Format::Text => {
            println!("runsc {}", capabilities.version.raw);
            for mode in runsc_config::NetworkMode::ALL {
                println!(
                    "  --network={:<8} {:?}",
                    mode.as_str(),
                    capabilities.network.get(mode)
                );
            }
            match capabilities.network.best_for_egress() {
                Some(mode) => println!("egress would use --network={}", mode.as_str()),
                None => println!("no network mode usable for egress on this host"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
