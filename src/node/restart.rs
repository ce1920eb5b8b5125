//! Restarting the host's containerd so that it reads its config again
//! (containerd has no reload): through the host's systemd, entered from
//! the DaemonSet's container with nsenter, or by a command the
//! administrator gives for hosts that run containerd otherwise.

use std::process::{Command, Stdio};

use anyhow::Context;

/// How containerd is restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// `systemctl restart UNIT`, in the namespaces of the host's PID 1
    /// when `enter_host` (the installer runs in a container with hostPID).
    Systemd { unit: String, enter_host: bool },
    /// A shell command, run as it is.
    Command(String),
}

impl Restart {
    /// The program and arguments this restart runs.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Restart::Systemd { unit, enter_host } => {
                let mut argv = Vec::new();
                if *enter_host {
                    argv.extend(
                        [
                            "nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--",
                        ]
                        .map(String::from),
                    );
                }
                argv.extend(["systemctl", "restart", unit.as_str()].map(String::from));
                argv
            }
            Restart::Command(command) => vec!["/bin/sh".into(), "-c".into(), command.clone()],
        }
    }

    /// Runs it; the error carries the command and what it printed.
    pub fn run(&self) -> anyhow::Result<()> {
        let argv = self.argv();
        let shown = argv.join(" ");
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run `{shown}` to restart containerd"))?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            let said = said.trim();
            anyhow::bail!(
                "restarting containerd with `{shown}` failed ({}){}",
                output.status,
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_restart_enters_the_host_only_from_a_container() {
        let on_host = Restart::Systemd {
            unit: "containerd".into(),
            enter_host: false,
        };
        assert_eq!(on_host.argv(), ["systemctl", "restart", "containerd"]);
        let from_pod = Restart::Systemd {
            unit: "containerd.service".into(),
            enter_host: true,
        };
        assert_eq!(
            from_pod.argv().join(" "),
            "nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart containerd.service"
        );
    }

    #[test]
    fn a_failing_restart_says_its_command_and_stderr() {
        let err = Restart::Command("echo no unit here >&2; exit 5".into())
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("echo no unit here"), "{err}");
        assert!(err.contains("exit status: 5"), "{err}");
        assert!(err.ends_with(": no unit here"), "{err}");
    }
}
