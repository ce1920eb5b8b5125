//! What containerd's runc shim runs as its runc for the benchmark's
//! `runc-runsc` handler: runsc with its own flags, each container in a
//! sandbox of its own, a failed `kill` of an exited one in runc's words
//! ([`skillbox_cri_tests::runsc_as_runc`]). Exits 1 with
//! a message on stderr (which the runc shim passes on) when the bundle's
//! spec cannot be read or written.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use skillbox_cri_tests::runsc_as_runc::{create_bundle, runc_kill_error, runsc_args, subcommand, ungroup};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(bundle) = create_bundle(&args) {
        if let Err(err) = ungroup_bundle(&bundle.join("config.json")) {
            eprintln!("runsc-as-runc: {err}");
            return ExitCode::FAILURE;
        }
    }
    if subcommand(&args) == Some("kill") {
        return kill(&args);
    }
    let err = Command::new("runsc").args(runsc_args(&args)).exec();
    eprintln!("runsc-as-runc: running runsc: {err}");
    ExitCode::FAILURE
}

fn ungroup_bundle(config: &std::path::Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(config).map_err(|err| format!("reading {}: {err}", config.display()))?;
    let mut spec: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| format!("parsing {}: {err}", config.display()))?;
    if ungroup(&mut spec) {
        let text = serde_json::to_string(&spec).map_err(|err| format!("serializing the spec: {err}"))?;
        std::fs::write(config, text).map_err(|err| format!("writing {}: {err}", config.display()))?;
    }
    Ok(())
}

/// `runsc kill`, its output passed on, plus runc's words when the sandbox
/// has exited already.
fn kill(args: &[String]) -> ExitCode {
    let output = match Command::new("runsc").args(runsc_args(args)).output() {
        Ok(output) => output,
        Err(err) => {
            eprintln!("runsc-as-runc: running runsc: {err}");
            return ExitCode::FAILURE;
        }
    };
    let _ = std::io::stdout().write_all(&output.stdout);
    let _ = std::io::stderr().write_all(&output.stderr);
    if output.status.success() {
        return ExitCode::SUCCESS;
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if let Some(words) = runc_kill_error(&text) {
        eprintln!("{words}");
    }
    ExitCode::from(output.status.code().unwrap_or(1).clamp(1, 255) as u8)
}
