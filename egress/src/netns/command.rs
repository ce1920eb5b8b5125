//! Running `ip`, `sysctl` and `nft`: the one place this module starts
//! programs, behind a trait so unit tests record argv instead.

use super::NetnsError;

/// Runs a program to completion. The real implementation is
/// [`SystemRunner`]; tests substitute a recorder.
pub trait CommandRunner: Send + Sync {
    /// Runs `argv` (program first) with `stdin`; returns stdout, or
    /// [`NetnsError::Command`] when the program exits unsuccessfully.
    fn run(&self, argv: &[String], stdin: Option<&str>) -> Result<String, NetnsError>;
}

/// Runs commands on this host.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, argv: &[String], stdin: Option<&str>) -> Result<String, NetnsError> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let spawn_error = |source| NetnsError::Spawn {
            argv: argv.to_vec(),
            source,
        };
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(spawn_error)?;
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        Err(NetnsError::Command {
            argv: argv.to_vec(),
            status: output.status.to_string(),
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
