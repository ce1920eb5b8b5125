//! What the `security` level keeps of the events it subscribes to. gVisor
//! points cannot filter on arguments, so every open arrives; a program
//! reads hundreds of files (libraries, locales) that say nothing about its
//! intent.
//!
//! The decision never trusts a path's spelling to say what was opened: a
//! skill chooses the spelling (`//etc/passwd`, `/skill/../etc/passwd`, a
//! relative name from a chosen working directory, a symlink it made).
//! `security` therefore drops only what it can prove is noise: a read
//! (neither writing flags nor `creat`) of a path that is absolute, spelled
//! plainly (no empty, `.` or `..` component) and under one of
//! [`ROUTINE_READ_PREFIXES`], the read-only system directories of the base
//! root filesystem, which a skill cannot write to or link from. Every other
//! open is kept: writes, relative paths, anything under `/tmp`, `/proc`,
//! `/etc`, the skill's own folder, or any path spelled unusually. `all`
//! keeps everything.

use crate::{AuditEvent, AuditLevel};

/// Reads of plainly spelled paths under these are routine at `security`:
/// shared libraries, interpreters' standard libraries, locale and time-zone
/// data, executables. All are part of the read-only base root filesystem.
pub const ROUTINE_READ_PREFIXES: &[&str] = &[
    "/bin/",
    "/sbin/",
    "/lib/",
    "/lib32/",
    "/lib64/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/lib/",
    "/usr/lib32/",
    "/usr/lib64/",
    "/usr/libexec/",
    "/usr/local/lib/",
    "/usr/share/locale/",
    "/usr/share/zoneinfo/",
    "/usr/share/i18n/",
];

/// Device reads that every program makes.
const ROUTINE_DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"];

/// Whether `path` is absolute and spelled without empty, `.` or `..`
/// components (so its prefix says where it is, up to symlinks).
fn plainly_spelled(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    !rest.is_empty() && rest.split('/').all(|part| !matches!(part, "" | "." | ".."))
}

/// Whether a read of `path` is routine (see the module doc).
pub fn routine_read(path: &str) -> bool {
    plainly_spelled(path)
        && (ROUTINE_DEVICES.contains(&path)
            || ROUTINE_READ_PREFIXES
                .iter()
                .any(|prefix| path.starts_with(prefix)))
}

pub fn keep(level: AuditLevel, event: &AuditEvent) -> bool {
    match (level, event) {
        (AuditLevel::None, _) => false,
        (AuditLevel::Security, AuditEvent::FileOpen { path, write, .. }) => *write || !routine_read(path),
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
    fn security_keeps_writes_and_every_read_that_is_not_routine() {
        assert!(keep(AuditLevel::Security, &open("/tmp/x", true)));
        assert!(keep(AuditLevel::Security, &open("/lib/x", true)));
        assert!(keep(AuditLevel::Security, &open("/etc/shadow", false)));
        assert!(keep(AuditLevel::Security, &open("/tmp/notes", false)));
        assert!(keep(AuditLevel::Security, &open("/skill/data.txt", false)));
        assert!(!keep(AuditLevel::Security, &open("/lib/libc.so.6", false)));
        assert!(!keep(
            AuditLevel::Security,
            &open("/usr/lib/python3.11/os.py", false)
        ));
        assert!(!keep(AuditLevel::Security, &open("/dev/null", false)));
        assert!(keep(AuditLevel::All, &open("/lib/libc.so.6", false)));
        assert!(!keep(AuditLevel::None, &AuditEvent::Oom));
    }

    #[test]
    fn no_spelling_of_a_sensitive_path_passes_as_routine() {
        for path in [
            "//etc/passwd",
            "/./etc/passwd",
            "/skill/../etc/passwd",
            "/lib/../etc/passwd",
            "/lib//../../etc/shadow",
            "/usr/lib/./../../etc/passwd",
            "passwd",
            "environ",
            "./environ",
            "../etc/passwd",
            "/dev/fd/3",
            "/dev/null/../../etc/passwd",
            "",
            "/",
        ] {
            assert!(
                keep(AuditLevel::Security, &open(path, false)),
                "{path:?} was dropped"
            );
        }
    }
}
