//! The `--pod-init-config` file that makes runsc report to a monitor: a
//! `trace_session` with points and one `remote` sink (format of runsc
//! 20221219's `runsc/boot/seccheck.go` and `pkg/sentry/seccheck/config.go`).
//!
//! Points per level (every point name below is one `runsc trace metadata`
//! lists on this runsc; `tests/monitor.rs` checks it):
//! - `none`: no session, no file, no monitor.
//! - `security`: `container/start` (with its `env` optional field, of which
//!   only names are kept), `sentry/clone`, `sentry/execve`,
//!   `sentry/task_exit`; the typed syscall points of [`SECURITY_TYPED`] at
//!   *exit* (so the result is known); and the system calls of
//!   [`SECURITY_RAW`], which have no typed point in this runsc, as raw
//!   `syscall/sysno/N/enter` points. Raw points are taken at *enter*
//!   because runsc 20221219 fills a raw exit message's context from the
//!   enter point's fields (a gVisor bug): subscribed at exit alone they
//!   arrive without pid, tid or process. So raw events have no result.
//!   Opens are subscribed in full and thinned on our side ([`super::filter`]).
//! - `all`: every typed syscall point at exit, and every other syscall
//!   number 0..=[`LAST_SYSNO`] as a raw enter point, plus the sentry points.
//!
//! Every point asks for the context fields [`CONTEXT_FIELDS`]: thread id,
//! thread group id, container id, process name.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::sysno;
use crate::{AuditLevel, Error};

/// The highest syscall number this runsc offers a raw point for.
pub const LAST_SYSNO: u64 = 441;

pub const CONTEXT_FIELDS: &[&str] = &["thread_id", "group_id", "container_id", "process_name"];

/// The session name (runsc's default session is also called `Default`).
pub const SESSION_NAME: &str = "Default";

/// How often the sentry retries a send the socket refused (buffer full)
/// before dropping the point and counting it; gVisor backs off from 25 µs,
/// doubling, so 8 retries stall the calling task at most ≈ 6 ms.
pub const SINK_RETRIES: u32 = 8;

/// Syscalls with a typed point in runsc 20221219 (`syscall/<name>/…`).
pub const TYPED_SYSCALLS: &[&str] = &[
    "accept",
    "accept4",
    "bind",
    "chdir",
    "chroot",
    "clone",
    "close",
    "connect",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "fchdir",
    "fcntl",
    "fork",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "open",
    "openat",
    "pipe",
    "pipe2",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readv",
    "setgid",
    "setresgid",
    "setresuid",
    "setsid",
    "setuid",
    "signalfd",
    "signalfd4",
    "socket",
    "socketpair",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "vfork",
    "write",
    "writev",
];

/// Typed syscall points of the `security` level (at exit).
pub const SECURITY_TYPED: &[&str] = &[
    "open",
    "openat",
    "creat",
    "execve",
    "execveat",
    "connect",
    "bind",
    "accept",
    "accept4",
    "socket",
    "socketpair",
    "setuid",
    "setgid",
    "setresuid",
    "setresgid",
    "setsid",
    "chroot",
    "prlimit64",
];

/// Syscalls of the `security` level without a typed point (raw, at enter):
/// tracing, mounts, permissions and ownership, making, removing and renaming,
/// identity and capabilities, namespaces, kernel modules and other
/// privileged operations, links and device nodes, cross-process memory.
pub const SECURITY_RAW: &[&str] = &[
    "listen",
    "ptrace",
    "mount",
    "umount2",
    "pivot_root",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "mknod",
    "mknodat",
    "truncate",
    "setreuid",
    "setregid",
    "setfsuid",
    "setfsgid",
    "setgroups",
    "capset",
    "setns",
    "unshare",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "perf_event_open",
    "process_vm_readv",
    "process_vm_writev",
    "keyctl",
    "add_key",
    "request_key",
    "memfd_create",
    "seccomp",
    "personality",
    "reboot",
    "sethostname",
    "setdomainname",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "iopl",
    "ioperm",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    "quotactl",
    "kill",
    "tkill",
    "tgkill",
];

/// The file runsc reads with `--pod-init-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodInitConfig {
    pub trace_session: TraceSession,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceSession {
    pub name: String,
    pub points: Vec<Point>,
    pub sinks: Vec<Sink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub optional_fields: Vec<String>,
    pub context_fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sink {
    pub name: String,
    pub config: RemoteConfig,
}

/// The `remote` sink's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteConfig {
    /// The monitor's SOCK_SEQPACKET socket; runsc connects to it.
    pub endpoint: PathBuf,
    pub retries: u32,
}

/// The session for `level` reporting to `endpoint`; `None` for `none`.
pub fn pod_init_config(level: AuditLevel, endpoint: &Path) -> Option<PodInitConfig> {
    let names = point_names(level);
    if names.is_empty() {
        return None;
    }
    let points = names
        .into_iter()
        .map(|name| Point {
            optional_fields: match name.as_str() {
                "container/start" => vec!["env".to_owned()],
                _ => Vec::new(),
            },
            context_fields: CONTEXT_FIELDS.iter().map(|&f| f.to_owned()).collect(),
            name,
        })
        .collect();
    Some(PodInitConfig {
        trace_session: TraceSession {
            name: SESSION_NAME.to_owned(),
            points,
            sinks: vec![Sink {
                name: "remote".to_owned(),
                config: RemoteConfig {
                    endpoint: endpoint.to_owned(),
                    retries: SINK_RETRIES,
                },
            }],
        },
    })
}

/// Writes `config` as JSON to `path` (the caller passes
/// `--pod-init-config=<path>` to runsc).
pub fn write_pod_init_config(config: &PodInitConfig, path: &Path) -> Result<(), Error> {
    let text = serde_json::to_vec_pretty(config).expect("a pod init config always serializes");
    std::fs::write(path, text).map_err(|source| Error::WritePodInitConfig {
        path: path.to_owned(),
        source,
    })
}

/// The point names of `level`, in a stable order.
pub fn point_names(level: AuditLevel) -> Vec<String> {
    let (typed, raw): (Vec<&str>, Vec<u64>) = match level {
        AuditLevel::None => return Vec::new(),
        AuditLevel::Security => (
            SECURITY_TYPED.to_vec(),
            SECURITY_RAW
                .iter()
                .filter_map(|name| sysno::number(name))
                .collect(),
        ),
        AuditLevel::All => {
            let typed_numbers: Vec<u64> = TYPED_SYSCALLS
                .iter()
                .filter_map(|name| sysno::number(name))
                .collect();
            (
                TYPED_SYSCALLS.to_vec(),
                (0..=LAST_SYSNO).filter(|n| !typed_numbers.contains(n)).collect(),
            )
        }
    };
    let mut names: Vec<String> = [
        "container/start",
        "sentry/clone",
        "sentry/execve",
        "sentry/task_exit",
    ]
    .iter()
    .map(|&name| name.to_owned())
    .collect();
    names.extend(typed.iter().map(|name| format!("syscall/{name}/exit")));
    names.extend(raw.iter().map(|number| format!("syscall/sysno/{number}/enter")));
    names
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn none_has_no_session() {
        assert_eq!(pod_init_config(AuditLevel::None, Path::new("/m.sock")), None);
    }

    #[test]
    fn every_named_syscall_has_a_number() {
        for name in TYPED_SYSCALLS.iter().chain(SECURITY_RAW) {
            assert!(sysno::number(name).is_some(), "{name}");
        }
        for name in SECURITY_TYPED {
            assert!(TYPED_SYSCALLS.contains(name), "{name}");
        }
    }

    #[test]
    fn security_session_json() {
        let config = pod_init_config(AuditLevel::Security, Path::new("/run/m.sock")).unwrap();
        let value = serde_json::to_value(&config).unwrap();
        let session = &value["trace_session"];
        assert_eq!(session["name"], "Default");
        assert_eq!(
            session["sinks"],
            json!([{"name": "remote", "config": {"endpoint": "/run/m.sock", "retries": 8}}])
        );
        assert_eq!(
            session["points"][0],
            json!({"name": "container/start", "optional_fields": ["env"],
                   "context_fields": ["thread_id", "group_id", "container_id", "process_name"]})
        );
        let names = point_names(AuditLevel::Security);
        for expected in [
            "sentry/execve",
            "syscall/openat/exit",
            "syscall/connect/exit",
            "syscall/sysno/50/enter",
            "syscall/sysno/101/enter",
            "syscall/sysno/165/enter",
            "syscall/sysno/83/enter",
            "syscall/sysno/258/enter",
        ] {
            assert!(names.contains(&expected.to_owned()), "{expected}");
        }
        assert_eq!(names.len(), 4 + SECURITY_TYPED.len() + SECURITY_RAW.len());
    }

    #[test]
    fn all_covers_every_syscall_number_once() {
        let names = point_names(AuditLevel::All);
        let raw = names.iter().filter(|n| n.starts_with("syscall/sysno/")).count();
        let typed = names
            .iter()
            .filter(|n| n.starts_with("syscall/") && !n.starts_with("syscall/sysno/"))
            .count();
        assert_eq!(typed, TYPED_SYSCALLS.len());
        assert_eq!(raw + typed, LAST_SYSNO as usize + 1);
        assert!(
            !names.contains(&"syscall/sysno/257/enter".to_owned()),
            "openat is typed"
        );
    }
}
