//! Reading the JSON Lines audit log: every file under a directory, each
//! execution's rotated files before its current one, oldest first; and
//! following it as it grows and rotates.
//!
//! Files are tracked by inode, not by name: a rotation renames
//! `<x>.jsonl` to `<x>.jsonl.1` without changing what was read of it, and
//! the new `<x>.jsonl` is a new file read from its start. Only complete
//! lines are read; a line still being written is left for the next pass.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Which events to show; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub skill: Option<String>,
    pub execution_id: Option<String>,
    /// Any of these `type`s (empty: every type).
    pub types: Vec<String>,
    pub verdict: Option<String>,
}

impl Filter {
    pub fn matches(&self, event: &Value) -> bool {
        let is =
            |value: &Value, wanted: &Option<String>| wanted.as_deref().is_none_or(|wanted| value == wanted);
        is(&event["skill"]["name"], &self.skill)
            && is(&event["execution_id"], &self.execution_id)
            && is(&event["verdict"], &self.verdict)
            && (self.types.is_empty() || self.types.iter().any(|wanted| event["type"] == wanted.as_str()))
    }
}

/// The rotation number of a log file name: `x.jsonl` → 0, `x.jsonl.3` → 3;
/// `None` for anything else.
fn rotation_of(name: &str) -> Option<u32> {
    if name.ends_with(".jsonl") {
        return Some(0);
    }
    let (base, n) = name.rsplit_once('.')?;
    (base.ends_with(".jsonl") && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// Every log file under `dir` (recursively), in reading order: per
/// execution, the oldest rotation first and the current file last.
pub fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<(PathBuf, u32)> = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                if let Some(n) = entry.file_name().to_str().and_then(rotation_of) {
                    found.push((path, n));
                }
            }
        }
    }
    let base = |path: &Path, n: u32| -> PathBuf {
        match n {
            0 => path.to_owned(),
            _ => path.with_extension(""),
        }
    };
    found.sort_by(|(a, an), (b, bn)| base(a, *an).cmp(&base(b, *bn)).then(bn.cmp(an)));
    Ok(found.into_iter().map(|(path, _)| path).collect())
}

/// What was read of each file, by inode; saved by exporters so that a
/// restart goes on where the last committed batch ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cursor {
    offsets: HashMap<(u64, u64), u64>,
}

/// One pass over the log.
#[derive(Debug, Default)]
pub struct Pass {
    pub events: Vec<Value>,
    /// Each event's raw line, as written (for content-derived ids).
    pub lines: Vec<Vec<u8>>,
    /// Complete lines that were not JSON objects, skipped.
    pub malformed: usize,
    /// The pass stopped at its limit: more may be ready now.
    pub more: bool,
}

impl Cursor {
    /// Reads every complete line not read before from the files under
    /// `dir`, returning the events `filter` matches.
    pub fn read_new(&mut self, dir: &Path, filter: &Filter) -> std::io::Result<Pass> {
        self.read_at_most(dir, filter, usize::MAX)
    }

    /// As `read_new`, stopping after `limit` matching events (the cursor
    /// then ends just after the last one returned).
    pub fn read_at_most(&mut self, dir: &Path, filter: &Filter, limit: usize) -> std::io::Result<Pass> {
        let mut pass = Pass::default();
        for path in log_files(dir)? {
            // Followers pass over every file several times a second: a
            // file with nothing new costs one stat, not an open.
            let unchanged = std::fs::metadata(&path).map_or(true, |meta| {
                meta.len() <= self.offsets.get(&(meta.dev(), meta.ino())).copied().unwrap_or(0)
            });
            if unchanged {
                continue;
            }
            // A file may be rotated away or removed between listing and
            // opening; what counts is the file opened.
            let Ok(mut file) = std::fs::File::open(&path) else {
                continue;
            };
            let meta = file.metadata()?;
            let key = (meta.dev(), meta.ino());
            let mut offset = self.offsets.get(&key).copied().unwrap_or(0);
            if meta.len() <= offset {
                continue;
            }
            file.seek(SeekFrom::Start(offset))?;
            let mut bytes = Vec::new();
            file.take(meta.len() - offset).read_to_end(&mut bytes)?;
            let mut rest = &bytes[..];
            while let Some(end) = rest.iter().position(|b| *b == b'\n') {
                if pass.events.len() >= limit {
                    pass.more = true;
                    break;
                }
                let line = &rest[..end];
                rest = &rest[end + 1..];
                offset += end as u64 + 1;
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Value>(line) {
                    Ok(event) if event.is_object() => {
                        if filter.matches(&event) {
                            pass.events.push(event);
                            pass.lines.push(line.to_vec());
                        }
                    }
                    _ => pass.malformed += 1,
                }
            }
            self.offsets.insert(key, offset);
            if pass.more {
                break;
            }
        }
        Ok(pass)
    }

    /// Loads a cursor saved by [`Cursor::save`]; a missing file is a fresh
    /// cursor (read everything).
    pub fn load(path: &Path) -> Result<Cursor, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Cursor::default()),
            Err(err) => return Err(format!("{}: cannot read the cursor: {err}", path.display())),
        };
        let saved: HashMap<String, u64> = serde_json::from_str(&text).map_err(|err| {
            format!(
                "{}: not a cursor (expected {{\"dev:inode\": offset}}): {err}",
                path.display()
            )
        })?;
        let mut offsets = HashMap::new();
        for (key, offset) in saved {
            let parsed = key
                .split_once(':')
                .and_then(|(dev, ino)| Some((dev.parse().ok()?, ino.parse().ok()?)));
            let key = parsed.ok_or_else(|| format!("{}: {key:?} is not \"dev:inode\"", path.display()))?;
            offsets.insert(key, offset);
        }
        Ok(Cursor { offsets })
    }

    /// Saves the cursor atomically (written aside, then renamed).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let saved: HashMap<String, u64> = self
            .offsets
            .iter()
            .map(|((dev, ino), offset)| (format!("{dev}:{ino}"), *offset))
            .collect();
        let aside = path.with_extension("tmp");
        std::fs::write(
            &aside,
            serde_json::to_vec(&saved).expect("a map of numbers serializes"),
        )?;
        std::fs::rename(&aside, path)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::OffsetDateTime;

    use super::*;
    use crate::event::{AuditEvent, SandboxIdentity, SkillIdentity};
    use crate::jsonl::{JsonLinesWriter, Rotation};

    fn identity(execution: &str, skill: &str) -> SandboxIdentity {
        SandboxIdentity {
            execution_id: execution.to_owned(),
            skill: SkillIdentity {
                name: skill.to_owned(),
                version: None,
                digest: None,
            },
            container_id: execution.to_owned(),
        }
    }

    fn statuses(events: &[Value]) -> Vec<i64> {
        events
            .iter()
            .map(|event| event["status"].as_i64().unwrap())
            .collect()
    }

    #[test]
    fn filters_match_every_given_field() {
        let event = json!({"skill": {"name": "weather"}, "execution_id": "e1", "type": "connection", "verdict": "denied"});
        assert!(Filter::default().matches(&event));
        let filter = Filter {
            skill: Some("weather".into()),
            execution_id: Some("e1".into()),
            types: vec!["dns_query".into(), "connection".into()],
            verdict: Some("denied".into()),
        };
        assert!(filter.matches(&event));
        for wrong in [
            Filter {
                skill: Some("other".into()),
                ..Filter::default()
            },
            Filter {
                execution_id: Some("e2".into()),
                ..Filter::default()
            },
            Filter {
                types: vec!["exec".into()],
                ..Filter::default()
            },
            Filter {
                verdict: Some("allowed".into()),
                ..Filter::default()
            },
        ] {
            assert!(!wrong.matches(&event), "{wrong:?}");
        }
    }

    #[test]
    fn rotated_files_are_read_oldest_first_and_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns/e1.jsonl");
        let exit = |status| AuditEvent::Exit {
            status,
            wall_ms: None,
            outcome: None,
        };
        let line =
            crate::event::render_line(&identity("e1", "s"), &exit(0), OffsetDateTime::UNIX_EPOCH).unwrap();
        let rotation = Rotation {
            max_bytes: line.len() as u64 * 2,
            keep: 5,
        };
        let writer = JsonLinesWriter::with_rotation(&path, identity("e1", "s"), rotation).unwrap();
        let mut cursor = Cursor::default();
        for status in 0..3 {
            writer
                .write_at(&exit(status), OffsetDateTime::UNIX_EPOCH)
                .unwrap();
        }
        assert_eq!(
            statuses(&cursor.read_new(dir.path(), &Filter::default()).unwrap().events),
            [0, 1, 2]
        );
        // Two more rotations while following: only the new events, in order.
        for status in 3..7 {
            writer
                .write_at(&exit(status), OffsetDateTime::UNIX_EPOCH)
                .unwrap();
        }
        assert_eq!(
            statuses(&cursor.read_new(dir.path(), &Filter::default()).unwrap().events),
            [3, 4, 5, 6]
        );
        assert!(cursor
            .read_new(dir.path(), &Filter::default())
            .unwrap()
            .events
            .is_empty());
        // A fresh reader sees the whole history in order.
        let all = Cursor::default()
            .read_new(dir.path(), &Filter::default())
            .unwrap();
        assert_eq!(statuses(&all.events), [0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_partial_line_waits_and_garbage_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e1.jsonl");
        std::fs::write(&path, "{\"type\":\"oom\"}\nnot json\n{\"type\":").unwrap();
        let mut cursor = Cursor::default();
        let pass = cursor.read_new(dir.path(), &Filter::default()).unwrap();
        assert_eq!(pass.events.len(), 1);
        assert_eq!(pass.malformed, 1);
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, b"\"exit\",\"status\":3}\n").unwrap();
        let pass = cursor.read_new(dir.path(), &Filter::default()).unwrap();
        assert_eq!(statuses(&pass.events), [3]);
    }

    #[test]
    fn a_limited_pass_resumes_where_it_stopped_also_after_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e1.jsonl");
        let writer = JsonLinesWriter::open(&path, identity("e1", "s")).unwrap();
        for status in 0..5 {
            writer
                .write(&AuditEvent::Exit {
                    status,
                    wall_ms: None,
                    outcome: None,
                })
                .unwrap();
        }
        let mut cursor = Cursor::default();
        let first = cursor.read_at_most(dir.path(), &Filter::default(), 2).unwrap();
        assert_eq!(statuses(&first.events), [0, 1]);
        assert!(first.more);
        assert_eq!(first.lines.len(), 2);
        let saved = dir.path().join("cursor.json");
        cursor.save(&saved).unwrap();
        let mut restored = Cursor::load(&saved).unwrap();
        assert_eq!(restored, cursor);
        let rest = restored.read_at_most(dir.path(), &Filter::default(), 10).unwrap();
        assert_eq!(statuses(&rest.events), [2, 3, 4]);
        assert!(!rest.more);
        assert_eq!(
            Cursor::load(&dir.path().join("none.json")).unwrap(),
            Cursor::default()
        );
        std::fs::write(&saved, "[1]").unwrap();
        assert!(Cursor::load(&saved).unwrap_err().contains("not a cursor"));
    }

    #[test]
    fn only_log_files_are_listed_in_reading_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.jsonl",
            "a.jsonl.2",
            "a.jsonl",
            "a.jsonl.1",
            "notes.txt",
            "a.jsonl.x",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names: Vec<String> = log_files(dir.path())
            .unwrap()
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.jsonl.2", "a.jsonl.1", "a.jsonl", "b.jsonl"]);
    }
}
