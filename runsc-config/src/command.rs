//! runsc global options and subcommands, rendered to an argv.
//!
//! runsc parses every configuration flag (root, logging, network, platform,
//! overlay, …) *before* the subcommand name; only a few per-command flags go
//! after it. Getting that order wrong makes runsc reject the flag or, worse,
//! silently ignore it, so this module is the single place that knows it.
//! The output is `OsString` because paths need not be UTF-8.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::flags::RunscFlags;

/// Flags that apply to every runsc invocation for a given sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalOptions {
    /// `--root=DIR`: where runsc keeps container state. skillbox always sets
    /// it so its sandboxes never mix with other runsc users on the host.
    pub root: PathBuf,
    /// `--log=FILE`: runsc's own log (defaults to stderr when absent).
    pub log: Option<PathBuf>,
    /// `--log-format=json` so the log can be parsed rather than scraped.
    pub log_format_json: bool,
    /// `--debug-log=DIR/`: per-command debug logs inside this directory. A
    /// trailing `/` is added when missing, because runsc only treats the value
    /// as a directory when it ends in `/` (otherwise it opens it as a file).
    pub debug_log: Option<PathBuf>,
    /// `--debug`: raise runsc's log level to debug.
    pub debug: bool,
    /// `--panic-log=FILE`: where the Go runtime writes a Sentry panic. A
    /// crashed sandbox otherwise only shows as exit status 2, which a skill
    /// can return too; a non-empty panic log tells the two apart.
    pub panic_log: Option<PathBuf>,
    /// `--pod-init-config=FILE`: a runtime-monitoring trace session the
    /// sandbox starts with (skillbox's audit), so no event is missed from
    /// the first instruction.
    pub pod_init_config: Option<PathBuf>,
}

impl GlobalOptions {
    /// Options with only `--root` set.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        GlobalOptions {
            root: root.into(),
            log: None,
            log_format_json: false,
            debug_log: None,
            debug: false,
            panic_log: None,
            pod_init_config: None,
        }
    }
}

/// The runsc subcommands skillbox uses, with the per-command flags it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subcommand {
    /// `run --bundle=DIR [--detach] [--pid-file=FILE] <id>`: create + start.
    Run {
        bundle: PathBuf,
        id: String,
        detach: bool,
        pid_file: Option<PathBuf>,
    },
    /// `create --bundle=DIR [--pid-file=FILE] [--console-socket=SOCK] <id>`.
    Create {
        bundle: PathBuf,
        id: String,
        pid_file: Option<PathBuf>,
        console_socket: Option<PathBuf>,
    },
    /// `start <id>`.
    Start { id: String },
    /// `state <id>`: prints the OCI state JSON.
    State { id: String },
    /// `wait <id>`: blocks until the container's init exits.
    Wait { id: String },
    /// `kill [--all] <id> <signal>`; the signal is passed as a number so no
    /// name table is needed on either side.
    Kill { id: String, signal: i32, all: bool },
    /// `kill --pid=<pid> <id> <signal>`: one process, numbered as in the
    /// sandbox's root pid namespace.
    KillProcess { id: String, pid: u32, signal: i32 },
    /// `exec [--detach] --process=FILE --pid-file=FILE
    /// --internal-pid-file=FILE [--console-socket=SOCK] <id>`: the `runsc
    /// exec` that waits for the process and exits with its status writes
    /// its own host pid to `pid_file` once the process runs, and the
    /// process's sandbox pid to `internal_pid_file` before that. With
    /// `--detach` runsc forks that `runsc exec` as a child (making the
    /// terminal for `--console-socket`) and returns.
    Exec {
        id: String,
        process: PathBuf,
        pid_file: PathBuf,
        internal_pid_file: PathBuf,
        console_socket: Option<PathBuf>,
        detach: bool,
    },
    /// `delete [--force] <id>`.
    Delete { id: String, force: bool },
    /// `pause <id>`.
    Pause { id: String },
    /// `resume <id>`.
    Resume { id: String },
    /// `events [--stats] <id>`; `--stats` prints one sample and exits.
    Events { id: String, stats: bool },
    /// `ps [--format=json] <id>`.
    Ps { id: String, json: bool },
    /// `checkpoint --image-path=DIR [--leave-running] <id>`: saves the
    /// sandbox's state to DIR and (without `leave_running`) stops it.
    Checkpoint {
        id: String,
        image_path: PathBuf,
        leave_running: bool,
    },
    /// `list`.
    List,
}

impl Subcommand {
    /// The subcommand word runsc expects.
    pub fn name(&self) -> &'static str {
        match self {
            Subcommand::Run { .. } => "run",
            Subcommand::Create { .. } => "create",
            Subcommand::Start { .. } => "start",
            Subcommand::State { .. } => "state",
            Subcommand::Wait { .. } => "wait",
            Subcommand::Kill { .. } | Subcommand::KillProcess { .. } => "kill",
            Subcommand::Exec { .. } => "exec",
            Subcommand::Delete { .. } => "delete",
            Subcommand::Pause { .. } => "pause",
            Subcommand::Resume { .. } => "resume",
            Subcommand::Events { .. } => "events",
            Subcommand::Ps { .. } => "ps",
            Subcommand::Checkpoint { .. } => "checkpoint",
            Subcommand::List => "list",
        }
    }

    /// The container id this subcommand targets; `None` for `list`.
    pub fn id(&self) -> Option<&str> {
        match self {
            Subcommand::Run { id, .. }
            | Subcommand::Create { id, .. }
            | Subcommand::Start { id }
            | Subcommand::State { id }
            | Subcommand::Wait { id }
            | Subcommand::Kill { id, .. }
            | Subcommand::KillProcess { id, .. }
            | Subcommand::Exec { id, .. }
            | Subcommand::Delete { id, .. }
            | Subcommand::Pause { id }
            | Subcommand::Resume { id }
            | Subcommand::Events { id, .. }
            | Subcommand::Ps { id, .. }
            | Subcommand::Checkpoint { id, .. } => Some(id),
            Subcommand::List => None,
        }
    }

    /// Appends the subcommand word, its own flags and its positionals.
    fn push_args(&self, out: &mut Vec<OsString>) {
        out.push(self.name().into());
        match self {
            Subcommand::Run {
                bundle,
                detach,
                pid_file,
                ..
            } => {
                out.push(flag_path("--bundle=", bundle));
                if *detach {
                    out.push("--detach".into());
                }
                if let Some(p) = pid_file {
                    out.push(flag_path("--pid-file=", p));
                }
            }
            Subcommand::Create {
                bundle,
                pid_file,
                console_socket,
                ..
            } => {
                out.push(flag_path("--bundle=", bundle));
                if let Some(p) = pid_file {
                    out.push(flag_path("--pid-file=", p));
                }
                if let Some(s) = console_socket {
                    out.push(flag_path("--console-socket=", s));
                }
            }
            Subcommand::Checkpoint {
                image_path,
                leave_running,
                ..
            } => {
                out.push(flag_path("--image-path=", image_path));
                if *leave_running {
                    out.push("--leave-running".into());
                }
            }
            Subcommand::Kill { all: true, .. } => out.push("--all".into()),
            Subcommand::KillProcess { pid, .. } => out.push(format!("--pid={pid}").into()),
            Subcommand::Exec {
                process,
                pid_file,
                internal_pid_file,
                console_socket,
                detach,
                ..
            } => {
                if *detach {
                    out.push("--detach".into());
                }
                out.push(flag_path("--process=", process));
                out.push(flag_path("--pid-file=", pid_file));
                out.push(flag_path("--internal-pid-file=", internal_pid_file));
                if let Some(s) = console_socket {
                    out.push(flag_path("--console-socket=", s));
                }
            }
            Subcommand::Delete { force: true, .. } => out.push("--force".into()),
            Subcommand::Events { stats: true, .. } => out.push("--stats".into()),
            Subcommand::Ps { json: true, .. } => out.push("--format=json".into()),
            _ => {}
        }
        if let Some(id) = self.id() {
            out.push(id.into());
        }
        if let Subcommand::Kill { signal, .. } | Subcommand::KillProcess { signal, .. } = self {
            out.push(signal.to_string().into());
        }
    }
}

/// `prefix` immediately followed by `path`, without a UTF-8 round trip.
fn flag_path(prefix: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(prefix);
    arg.push(path);
    arg
}

/// Like [`flag_path`] but guarantees a trailing `/`, which runsc needs to
/// treat the value as a directory.
fn flag_dir(prefix: &str, dir: &Path) -> OsString {
    let mut arg = flag_path(prefix, dir);
    if !dir.as_os_str().as_encoded_bytes().ends_with(b"/") {
        arg.push(OsStr::new("/"));
    }
    arg
}

/// The full argument vector for one runsc invocation, without the program
/// name: global options, then the policy flags, then the subcommand.
pub fn argv(global: &GlobalOptions, flags: &RunscFlags, sub: &Subcommand) -> Vec<OsString> {
    let mut out = vec![flag_path("--root=", &global.root)];
    if let Some(log) = &global.log {
        out.push(flag_path("--log=", log));
    }
    if global.log_format_json {
        out.push("--log-format=json".into());
    }
    if let Some(dir) = &global.debug_log {
        out.push(flag_dir("--debug-log=", dir));
    }
    if global.debug {
        out.push("--debug".into());
    }
    if let Some(panic_log) = &global.panic_log {
        out.push(flag_path("--panic-log=", panic_log));
    }
    if let Some(config) = &global.pod_init_config {
        out.push(flag_path("--pod-init-config=", config));
    }
    out.extend(flags.to_args().into_iter().map(OsString::from));
    sub.push_args(&mut out);
    out
}

// Golden argv tests live in `command/tests.rs` to keep this file short.
#[cfg(test)]
mod tests;
