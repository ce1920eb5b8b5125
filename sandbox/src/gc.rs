//! `skillbox gc`: removes what killed runtimes left, from their teardown
//! records. Each sandbox of `skillbox run` lives in its own directory under
//! the state directory (`<state dir>/<execution id>.<random>/`) with its
//! record; a record whose owner process is gone names a sandbox nobody will
//! tear down, so the collector does.

use std::path::{Path, PathBuf};

use crate::record::{TeardownRecord, RECORD_FILE};

/// What one collection found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Records of dead owners whose sandboxes were removed.
    pub removed: Vec<PathBuf>,
    /// Records of owners still running, left alone.
    pub live: usize,
    /// What could not be removed (the record then stays for the next run).
    pub failures: Vec<String>,
}

/// Removes the sandboxes of dead owners recorded under `state_dir`. A
/// missing state directory holds nothing to collect.
pub fn collect(state_dir: &Path) -> Collected {
    let mut collected = Collected::default();
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return collected;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path().join(RECORD_FILE);
        if !path.exists() {
            continue;
        }
        let record = match TeardownRecord::load(&path) {
            Ok(record) => record,
            Err(err) => {
                collected.failures.push(err.to_string());
                continue;
            }
        };
        if record.owner.is_alive() {
            collected.live += 1;
            continue;
        }
        tracing::info!(id = %record.id, owner = record.owner.pid, "removing a dead runtime's sandbox");
        let failures = record.remove(&path);
        if failures.is_empty() {
            collected.removed.push(path);
        }
        collected.failures.extend(failures);
    }
    collected
}

#[cfg(test)]
mod tests {
    use runsc_config::RunscFlags;

    use super::*;
    use crate::record::{Owner, RunscRecord};

    fn record_in(dir: &Path, owner: Owner) -> PathBuf {
        std::fs::create_dir_all(dir.join("bundle")).unwrap();
        let mut record = TeardownRecord::new(
            "gc-test",
            RunscRecord {
                binary: "runsc".into(),
                root: dir.join("runsc"),
                flags: RunscFlags::default(),
                bundle: dir.join("bundle"),
            },
        );
        record.owner = owner;
        record.directory = Some(dir.to_owned());
        let path = dir.join(RECORD_FILE);
        record.save(&path).unwrap();
        path
    }

    #[test]
    fn dead_owners_sandboxes_are_removed_and_live_ones_kept() {
        let state = tempfile::tempdir().unwrap();
        let live = record_in(&state.path().join("live.1"), Owner::current());
        let dead_owner = Owner {
            start_time: Owner::current().start_time + 1,
            ..Owner::current()
        };
        let dead = state.path().join("dead.1");
        record_in(&dead, dead_owner);
        std::fs::create_dir_all(state.path().join("no-record")).unwrap();
        let collected = collect(state.path());
        assert_eq!(collected.live, 1);
        assert_eq!(collected.removed, [dead.join(RECORD_FILE)]);
        assert_eq!(collected.failures, Vec::<String>::new());
        assert!(!dead.exists() && live.exists());
        assert_eq!(collect(&state.path().join("absent")), Collected::default());
    }
}
