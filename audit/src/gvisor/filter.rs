//! What the `security` level keeps of the events it subscribes to. gVisor
//! points cannot filter on arguments, so every open arrives; a program
//! reads hundreds of files (libraries, locales) that say nothing about its
//! intent. `security` keeps an open when it may write (any of
//! [`super::decode::WRITE_FLAGS`], or `creat`) or when its path is under
//! [`SENSITIVE_PREFIXES`]; relative paths (openat on a directory fd) are
//! kept only when writing. `all` keeps everything.

use crate::{AuditEvent, AuditLevel};

/// Reads under these (absolute) prefixes are kept at `security`.
pub const SENSITIVE_PREFIXES: &[&str] = &[
    "/etc/",
    "/root/",
    "/home/",
    "/proc/",
    "/sys/",
    "/run/secrets/",
    "/var/run/secrets/",
];

pub fn keep(level: AuditLevel, event: &AuditEvent) -> bool {
    match (level, event) {
        (AuditLevel::None, _) => false,
        (AuditLevel::Security, AuditEvent::FileOpen { path, write, .. }) => {
            *write || SENSITIVE_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Task;

    fn open(path: &str, write: bool) -> AuditEvent {
        AuditEvent::FileOpen {
            task: Task::default(),
            path: path.to_owned(),
            flags: 0,
            mode: None,
            write,
            result: Some(3),
        }
    }

    #[test]
    fn security_keeps_writes_and_sensitive_reads() {
        assert!(keep(AuditLevel::Security, &open("/tmp/x", true)));
        assert!(keep(AuditLevel::Security, &open("/etc/shadow", false)));
        assert!(!keep(AuditLevel::Security, &open("/lib/libc.so.6", false)));
        assert!(!keep(AuditLevel::Security, &open("etc/passwd", false)));
        assert!(keep(AuditLevel::All, &open("/lib/libc.so.6", false)));
        assert!(!keep(AuditLevel::None, &AuditEvent::Oom));
    }
}
