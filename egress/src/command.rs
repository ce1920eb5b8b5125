//! Starting programs (`ip`, `nft`): the one place this crate does, and
//! doing a piece of work inside another network namespace.
//!
//! A thread's network namespace is its own: [`in_netns`] runs work on a
//! short-lived thread that entered the namespace first, so sockets it
//! opens, `/proc/sys/net` files it opens and processes it starts belong to
//! that namespace, without `ip netns exec` (which also unshares the mount
//! namespace and remounts `/sys`, another process and ~5 ms each time).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// A program that could not be run, or failed. Both carry the argv and
/// the namespace; a failure also its status, stdout and stderr.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run `{}`{}: {source}", .argv.join(" "), in_netns_text(.netns))]
    Start {
        argv: Vec<String>,
        netns: Option<PathBuf>,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}`{} failed ({status}): {}", .argv.join(" "), in_netns_text(.netns), stderr.trim())]
    Failed {
        argv: Vec<String>,
        netns: Option<PathBuf>,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
}

fn in_netns_text(netns: &Option<PathBuf>) -> String {
    match netns {
        Some(path) => format!(" in network namespace {}", path.display()),
        None => String::new(),
    }
}

impl RunError {
    /// Whether the program ran, failed, and wrote `needle` to stderr.
    pub fn stderr_contains(&self, needle: &str) -> bool {
        matches!(self, RunError::Failed { stderr, .. } if stderr.contains(needle))
    }
}

/// Moves the calling thread into the network namespace at `path` (a
/// thread's network namespace is its own; sockets it makes stay there).
pub fn enter(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)?;
    Ok(())
}

/// Runs `work` in the network namespace at `netns` (on a thread that
/// entered it), or on the calling thread when `netns` is `None`. Fails only
/// when the namespace cannot be entered.
pub fn in_netns<T: Send>(netns: Option<&Path>, work: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let Some(path) = netns else {
        return Ok(work());
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(path)?;
                Ok(work())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "the thread entering the namespace panicked",
                ))
            })
    })
}

/// Runs `argv` (program first) in `netns` (`None`: the caller's) with
/// `stdin`, to completion; returns its stdout.
///
/// A failed write to its stdin is an error only if the program then exits
/// successfully: otherwise its status and stderr tell more (it stopped
/// reading because it failed).
pub fn run(argv: &[String], stdin: Option<&[u8]>, netns: Option<&Path>) -> Result<String, RunError> {
    let start_error = |source| RunError::Start {
        argv: argv.to_vec(),
        netns: netns.map(Path::to_path_buf),
        source,
    };
    let (output, write_error) = in_netns(netns, || {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let write_error = match (stdin, child.stdin.take()) {
            (Some(input), Some(mut pipe)) => pipe.write_all(input).err(),
            _ => None,
        };
        Ok::<_, std::io::Error>((child.wait_with_output()?, write_error))
    })
    .and_then(|result| result)
    .map_err(start_error)?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(RunError::Failed {
            argv: argv.to_vec(),
            netns: netns.map(Path::to_path_buf),
            status: output.status,
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    match write_error {
        Some(error) => Err(start_error(error)),
        None => Ok(stdout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn stdout_is_returned_and_stdin_is_fed() {
        assert_eq!(run(&argv(&["cat"]), Some(b"hello"), None).unwrap(), "hello");
        assert_eq!(run(&argv(&["echo", "hi"]), None, None).unwrap(), "hi\n");
    }

    #[test]
    fn failures_carry_argv_status_and_stderr() {
        let error = run(&argv(&["sh", "-c", "echo oops >&2; exit 3"]), None, None).unwrap_err();
        assert!(error.stderr_contains("oops"));
        let text = error.to_string();
        assert_eq!(
            text,
            "`sh -c echo oops >&2; exit 3` failed (exit status: 3): oops"
        );
        let error = run(
            &argv(&["/nonexistent/nft", "-f", "-"]),
            None,
            Some(Path::new("/nonexistent/ns")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("cannot run `/nonexistent/nft -f -` in network namespace /nonexistent/ns:"),
            "{error}"
        );
    }

    #[test]
    fn a_program_that_ignores_its_input_and_succeeds_is_an_error() {
        // `true` exits without reading: the write fails (EPIPE) unless the
        // pipe buffer took it all, so write more than a pipe holds.
        let input = vec![b'x'; 1 << 20];
        let error = run(&argv(&["true"]), Some(&input), None).unwrap_err();
        assert!(matches!(error, RunError::Start { .. }), "{error}");
        // Failing without reading: the failure is what is reported.
        let error = run(&argv(&["false"]), Some(&input), None).unwrap_err();
        assert!(matches!(error, RunError::Failed { .. }), "{error}");
    }
}
