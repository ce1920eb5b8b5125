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
//!   `<name>.1` (older ones shift to `.2` … `.keep`) and a new file is
//!   started. Readers ([`crate::reader`]) read the rotated files first,
//!   oldest first.
//! - **The first file is never dropped**: it holds `start` and the
//!   execution's first events, so a skill that floods its own trail cannot
//!   make them go. Once `.keep` holds the first file, rotation drops the
//!   second oldest (`.keep-1`; with `keep` 1, the full current file)
//!   instead, and the new file begins with an `events_dropped` event
//!   (source `rotation`) counting the lines lost. With `keep` 0 there is
//!   no rotated file to keep: the full file is replaced.
//! - Files are created mode 0600: events name what a skill did.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;

use crate::event::{render_line, AuditEvent, SandboxIdentity};

/// The `events_dropped` source of lines rotation removed.
pub const ROTATION_SOURCE: &str = "rotation";

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

/// The events the file at `path` holds or stands for: one per line, and
/// for an `events_dropped` line of rotation its count instead, so that
/// what an earlier rotation lost is carried forward, never forgotten.
fn events_in(path: &Path) -> std::io::Result<u64> {
    let text = std::fs::read(path)?;
    let events = text
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| rotation_loss(line).unwrap_or(1))
        .sum();
    Ok(events)
}

/// The count of an `events_dropped` line whose source is rotation.
fn rotation_loss(line: &[u8]) -> Option<u64> {
    let marker = br#""type":"events_dropped""#;
    line.windows(marker.len())
        .any(|window| window == marker)
        .then_some(())?;
    let event: serde_json::Value = serde_json::from_slice(line).ok()?;
    (event["type"] == "events_dropped" && event["source"] == ROTATION_SOURCE)
        .then(|| event["count"].as_u64())
        .flatten()
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
        self.append(&mut current, &line)
    }

    /// Writes one rendered `line` to the current file.
    fn append(&self, current: &mut Current, line: &[u8]) -> Result<(), WriteError> {
        current.file.write_all(line).map_err(|source| WriteError::Write {
            path: self.path.clone(),
            source,
        })?;
        current.bytes += line.len() as u64;
        Ok(())
    }

    /// Shifts `<path>.n` to `.n+1` and `<path>` to `.1`, and opens a fresh
    /// `<path>`. Once `.keep` (the first file) exists, the file dropped to
    /// make room is the one after it, and the fresh file starts by saying
    /// how many lines went.
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
        let mut dropped = None;
        // The slots that shift: `.1` … `.last`, where `.last + 1` is free.
        let last = if rotated_path(&self.path, keep).exists() {
            // `.keep` is the first file and stays; the one after it (the
            // current file when there is no other) makes room.
            let victim = match keep {
                1 => self.path.clone(),
                _ => rotated_path(&self.path, keep - 1),
            };
            dropped = Some(events_in(&victim).map_err(error)?);
            std::fs::remove_file(&victim).map_err(error)?;
            keep.saturating_sub(2)
        } else {
            keep - 1
        };
        for n in (1..=last).rev() {
            match std::fs::rename(rotated_path(&self.path, n), rotated_path(&self.path, n + 1)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(error(err)),
                _ => {}
            }
        }
        let current_dropped = keep == 1 && dropped.is_some();
        if !current_dropped {
            std::fs::rename(&self.path, rotated_path(&self.path, 1)).map_err(error)?;
        }
        let mut current = open_append(&self.path)?;
        if let Some(count) = dropped {
            let lost = AuditEvent::EventsDropped {
                count,
                source: ROTATION_SOURCE.to_owned(),
            };
            let line =
                render_line(&self.identity, &lost, OffsetDateTime::now_utc()).map_err(WriteError::Encode)?;
            self.append(&mut current, &line)?;
        }
        Ok(current)
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

    fn exit(status: i32) -> AuditEvent {
        AuditEvent::Exit {
            status,
            wall_ms: None,
            outcome: None,
        }
    }

    /// The lines of the log at `path`, oldest file first.
    fn all_lines(path: &Path, keep: u32) -> Vec<Value> {
        (1..=keep)
            .rev()
            .flat_map(|n| lines(&rotated_path(path, n)))
            .chain(lines(path))
            .collect()
    }

    #[test]
    fn a_full_file_is_rotated_and_the_first_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec-1.jsonl");
        let one_line = render_line(&identity(), &exit(0), OffsetDateTime::UNIX_EPOCH)
            .unwrap()
            .len() as u64;
        // Room for an `events_dropped` line and an event.
        let rotation = Rotation {
            max_bytes: one_line * 3,
            keep: 2,
        };
        let writer = JsonLinesWriter::with_rotation(&path, identity(), rotation).unwrap();
        for status in 0..10 {
            writer
                .write_at(&exit(status), OffsetDateTime::UNIX_EPOCH)
                .unwrap();
        }
        // 3 per file: {0,1,2} {3,4,5} {6,7,8}: the third rotation (at 9)
        // drops .1 = {3,4,5}, not the first file.
        let statuses = |path: &Path| -> Vec<i64> {
            lines(path)
                .iter()
                .map(|v| v["status"].as_i64().unwrap_or(-1))
                .collect()
        };
        assert_eq!(statuses(&rotated_path(&path, 2)), [0, 1, 2]);
        assert_eq!(statuses(&rotated_path(&path, 1)), [6, 7, 8]);
        let current = lines(&path);
        assert_eq!(current[0]["type"], "events_dropped");
        assert_eq!(
            (current[0]["count"].as_u64(), current[0]["source"].as_str()),
            (Some(3), Some("rotation"))
        );
        assert_eq!(current[1]["status"], 9);
        assert!(!rotated_path(&path, 3).exists());
    }

    #[test]
    fn a_flood_keeps_the_start_and_counts_every_event_it_pushed_out() {
        for keep in [1, 2, 4] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("exec-1.jsonl");
            let rotation = Rotation {
                max_bytes: 4096,
                keep,
            };
            let writer = JsonLinesWriter::with_rotation(&path, identity(), rotation).unwrap();
            let start = AuditEvent::Start {
                runtime: "skillbox-run".to_owned(),
                audit_level: "security".to_owned(),
            };
            writer.write(&start).unwrap();
            let flood = 20_000;
            for n in 0..flood {
                let call = AuditEvent::Syscall {
                    task: Default::default(),
                    name: "getpid".to_owned(),
                    sysno: 39,
                    result: Some(n),
                };
                writer.write(&call).unwrap();
            }
            writer.write(&exit(0)).unwrap();
            let all = all_lines(&path, keep);
            assert_eq!(all[0]["type"], "start", "keep {keep}");
            assert_eq!(all[1]["result"], 0, "keep {keep}: the first events stay too");
            assert_eq!(all.last().unwrap()["type"], "exit", "keep {keep}");
            let kept = all.iter().filter(|e| e["type"] == "syscall").count() as u64;
            let lost: u64 = all
                .iter()
                .filter(|e| e["type"] == "events_dropped" && e["source"] == "rotation")
                .map(|e| e["count"].as_u64().unwrap())
                .sum();
            assert!(lost > 0, "keep {keep}");
            assert_eq!(
                kept + lost,
                flood as u64,
                "keep {keep}: every syscall is kept or counted"
            );
        }
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let err = JsonLinesWriter::open(Path::new("/proc/nonexistent/x.jsonl"), identity()).unwrap_err();
        assert!(err.to_string().contains("/proc/nonexistent"), "{err}");
    }
}
