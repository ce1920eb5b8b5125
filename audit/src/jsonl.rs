//! The JSON Lines exporter, skillbox's built-in audit log: one file per
//! execution under a node-wide directory (`<dir>/<execution key>.jsonl`),
//! one event per line in its [`Envelope`](crate::event::Envelope).
//!
//! - **Nothing is buffered in the process**: each event is one `write` on
//!   a file opened with `O_APPEND`, so a line is complete on disk when
//!   `write` returns, lines from the threads of one process never
//!   interleave, and a shim that exits (or is killed) loses nothing it had
//!   recorded.
//! - **Rotation by size**: once the file holds `max_bytes`, it is renamed to
//!   `<name>.1` (older ones shift to `.2` … `.keep`, the oldest dropped) and
//!   a new file is started. Readers ([`crate::reader`]) read the rotated
//!   files first, oldest first.
//! - Files are created mode 0600: events name what a skill did.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;

use crate::event::{render_line, SandboxIdentity};

/// When a file is rotated, and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Default for Rotation {
    /// 64 MiB per file, 4 rotated files kept.
    fn default() -> Self {
        Rotation {
            max_bytes: 64 << 20,
            keep: 4,
        }
    }
}

impl From<&policy_compiler::node_config::AuditSettings> for Rotation {
    fn from(settings: &policy_compiler::node_config::AuditSettings) -> Self {
        Rotation {
            max_bytes: settings.max_file_size.bytes(),
            keep: settings.keep_files,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot open the audit log {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to the audit log {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot rotate the audit log {path}: {source}")]
    Rotate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode an audit event: {0}")]
    Encode(#[source] serde_json::Error),
}

struct Current {
    file: File,
    bytes: u64,
}

/// Appends one execution's events to its JSON Lines file.
pub struct JsonLinesWriter {
    path: PathBuf,
    identity: SandboxIdentity,
    rotation: Rotation,
    current: Mutex<Current>,
}

impl std::fmt::Debug for JsonLinesWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLinesWriter")
            .field("path", &self.path)
            .field("rotation", &self.rotation)
            .finish()
    }
}

fn open_append(path: &Path) -> Result<Current, WriteError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| WriteError::Open {
            path: path.to_owned(),
            source,
        })?;
    let bytes = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    Ok(Current { file, bytes })
}

/// `<path>.<n>`: the n-th most recent rotated file.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl JsonLinesWriter {
    /// Opens (creating, mode 0600, and its directory) `path` for appending,
    /// with the default rotation.
    pub fn open(path: &Path, identity: SandboxIdentity) -> Result<Self, WriteError> {
        Self::with_rotation(path, identity, Rotation::default())
    }

    pub fn with_rotation(
        path: &Path,
        identity: SandboxIdentity,
        rotation: Rotation,
    ) -> Result<Self, WriteError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| WriteError::Open {
                path: dir.to_owned(),
                source,
            })?;
        }
        Ok(JsonLinesWriter {
            path: path.to_owned(),
            identity,
            rotation,
            current: Mutex::new(open_append(path)?),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn identity(&self) -> &SandboxIdentity {
        &self.identity
    }

    /// Appends `event`, stamped now.
    pub fn write<E: Serialize>(&self, event: &E) -> Result<(), WriteError> {
        self.write_at(event, OffsetDateTime::now_utc())
    }

    /// Appends `event` stamped with `at`.
    pub fn write_at<E: Serialize>(&self, event: &E, at: OffsetDateTime) -> Result<(), WriteError> {
        let line = render_line(&self.identity, event, at).map_err(WriteError::Encode)?;
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.bytes > 0 && current.bytes + line.len() as u64 > self.rotation.max_bytes {
            *current = self.rotate()?;
        }
        current
            .file
            .write_all(&line)
            .map_err(|source| WriteError::Write {
                path: self.path.clone(),
                source,
            })?;
        current.bytes += line.len() as u64;
        Ok(())
    }

    /// Shifts `<path>.n` to `.n+1` (dropping the last), `<path>` to `.1`,
    /// and opens a fresh `<path>`.
    fn rotate(&self) -> Result<Current, WriteError> {
        let error = |source| WriteError::Rotate {
            path: self.path.clone(),
            source,
        };
        let keep = self.rotation.keep;
        if keep == 0 {
            std::fs::remove_file(&self.path).map_err(error)?;
            return open_append(&self.path);
        }
        let _ = std::fs::remove_file(rotated_path(&self.path, keep));
        for n in (1..keep).rev() {
            match std::fs::rename(rotated_path(&self.path, n), rotated_path(&self.path, n + 1)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(error(err)),
                _ => {}
            }
        }
        std::fs::rename(&self.path, rotated_path(&self.path, 1)).map_err(error)?;
        open_append(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde_json::Value;

    use super::*;
    use crate::event::{AuditEvent, SkillIdentity};

    fn identity() -> SandboxIdentity {
        SandboxIdentity {
            execution_id: "exec-1".to_owned(),
            skill: SkillIdentity {
                name: "weather".to_owned(),
                version: None,
                digest: None,
            },
            container_id: "c1".to_owned(),
        }
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn events_are_on_disk_when_write_returns_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node/exec-1.jsonl");
        let writer = JsonLinesWriter::open(&path, identity()).unwrap();
        writer.write(&AuditEvent::Oom).unwrap();
        // Still open: nothing waits in a buffer.
        let written = lines(&path);
        assert_eq!(written.len(), 1);
        assert_eq!(written[0]["type"], "oom");
        assert_eq!(written[0]["execution_id"], "exec-1");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_full_file_is_rotated_and_only_keep_rotations_remain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-1.jsonl");
        let exit = |status| AuditEvent::Exit {
            status,
            wall_ms: None,
            outcome: None,
        };
        let one_line = render_line(&identity(), &exit(0), OffsetDateTime::UNIX_EPOCH)
            .unwrap()
            .len() as u64;
        let rotation = Rotation {
            max_bytes: one_line * 2,
            keep: 2,
        };
        let writer = JsonLinesWriter::with_rotation(&path, identity(), rotation).unwrap();
        for status in 0..7 {
            writer
                .write_at(&exit(status), OffsetDateTime::UNIX_EPOCH)
                .unwrap();
        }
        // 7 events, 2 per file: .2 = {2,3}, .1 = {4,5}, current = {6}; {0,1} dropped.
        let statuses = |path: &Path| -> Vec<i64> {
            lines(path)
                .iter()
                .map(|v| v["status"].as_i64().unwrap())
                .collect()
        };
        assert_eq!(statuses(&rotated_path(&path, 2)), [2, 3]);
        assert_eq!(statuses(&rotated_path(&path, 1)), [4, 5]);
        assert_eq!(statuses(&path), [6]);
        assert!(!rotated_path(&path, 3).exists());
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let err = JsonLinesWriter::open(Path::new("/proc/nonexistent/x.jsonl"), identity()).unwrap_err();
        assert!(err.to_string().contains("/proc/nonexistent"), "{err}");
    }
}
