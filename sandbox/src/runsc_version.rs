//! Which runsc a runtime runs: its version decides its platforms and flags
//! (`runsc_config`). Asking (`runsc --version`) starts a Go binary, tens of
//! milliseconds on every sandbox start, so the answer is kept in a small
//! file per binary in a cache directory, keyed by the binary's resolved
//! path, size and modification time: a replaced runsc is asked again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use policy_compiler::node_config::RunscSettings;
use runsc_config::{RunscFlags, RunscVersion};
use serde::{Deserialize, Serialize};

use crate::runsc::{Runsc, RunscError};

/// Where runtimes keep the versions they asked.
pub const CACHE_DIR: &str = "/run/skillbox/cache";

/// Resolves `settings`' `platform = "auto"` for the runsc `binary` (a fixed
/// choice stays as it is). When runsc cannot say, the error says why and
/// the platform stays ptrace.
pub fn resolve_platform(settings: &mut RunscSettings, binary: &Path) -> Result<(), RunscError> {
    if settings.platform.fixed().is_none() {
        let version = cached_version(binary, Path::new(CACHE_DIR))?;
        settings.resolve_platform(&version);
    }
    Ok(())
}

/// What the cache remembers of one binary.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Remembered {
    path: PathBuf,
    size: u64,
    modified_ns: i128,
    version: RunscVersion,
}

/// The version of `binary` (a path, or a name looked up on `PATH`), from
/// `cache_dir` when the binary is unchanged, else asked and remembered. A
/// cache that cannot be read or written only costs the asking.
pub fn cached_version(binary: &Path, cache_dir: &Path) -> Result<RunscVersion, RunscError> {
    let resolved = which::which(binary).unwrap_or_else(|_| binary.to_owned());
    let identity = std::fs::metadata(&resolved).ok().map(|meta| {
        (
            meta.size(),
            i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        )
    });
    let file = cache_dir.join(cache_file_name(&resolved));
    if let Some((size, modified_ns)) = identity {
        let remembered = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Remembered>(&bytes).ok());
        if let Some(remembered) =
            remembered.filter(|r| r.path == resolved && r.size == size && r.modified_ns == modified_ns)
        {
            return Ok(remembered.version);
        }
    }
    let version = Runsc::new(resolved.clone(), cache_dir.to_owned(), RunscFlags::default()).version()?;
    if let Some((size, modified_ns)) = identity {
        let remembered = Remembered {
            path: resolved,
            size,
            modified_ns,
            version: version.clone(),
        };
        if let Err(err) = remember(cache_dir, &file, &remembered) {
            tracing::debug!(%err, file = %file.display(), "cannot cache the runsc version");
        }
    }
    Ok(version)
}

/// `runsc-version.<path with every other character as '_'>.json`.
fn cache_file_name(binary: &Path) -> String {
    let flat: String = binary
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("runsc-version.{flat}.json")
}

/// Written beside and renamed into place: a reader never sees half a file.
fn remember(cache_dir: &Path, file: &Path, remembered: &Remembered) -> std::io::Result<()> {
    std::fs::create_dir_all(cache_dir)?;
    let mut staged = tempfile::NamedTempFile::new_in(cache_dir)?;
    serde_json::to_writer(&mut staged, remembered)?;
    staged.persist(file).map_err(|err| err.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A stand-in runsc that counts how often it is asked.
    fn fake_runsc(dir: &Path, version: &str) -> PathBuf {
        let path = dir.join("runsc");
        let script = format!(
            "#!/bin/sh\necho asked >> {}\necho 'runsc version {version}'\necho 'spec: 1.1.0'\n",
            dir.join("asked").display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// `ask` again while the stand-in is "text file busy": another test's
    /// fork can hold its write descriptor for a moment after it was written.
    fn retrying_busy<T>(ask: impl Fn() -> Result<T, RunscError>) -> Result<T, RunscError> {
        for _ in 0..50 {
            match ask() {
                Err(RunscError::Spawn { source, .. })
                    if source.kind() == std::io::ErrorKind::ExecutableFileBusy =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
        ask()
    }

    fn times_asked(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("asked"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    #[test]
    fn an_unchanged_binary_is_asked_once_and_a_replaced_one_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let runsc = fake_runsc(dir.path(), "0.0~20221219.0");
        let ask = |runsc: &Path| retrying_busy(|| cached_version(runsc, &cache));
        assert_eq!(ask(&runsc).unwrap().release, Some(20221219));
        assert_eq!(ask(&runsc).unwrap().release, Some(20221219));
        assert_eq!(times_asked(dir.path()), 1);
        // Replaced (a longer file: its size changes whatever the clock says).
        std::fs::remove_file(&runsc).unwrap();
        let runsc = fake_runsc(dir.path(), "release-20240729.0-with-a-longer-name");
        assert_eq!(ask(&runsc).unwrap().release, Some(20240729));
        assert_eq!(times_asked(dir.path()), 2);
    }

    #[test]
    fn a_runsc_that_never_answers_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let runsc = dir.path().join("runsc");
        std::fs::write(&runsc, "#!/bin/sh\nsleep 60\n").unwrap();
        std::fs::set_permissions(&runsc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = std::time::Instant::now();
        let runsc = Runsc::new(runsc.clone(), dir.path().to_owned(), RunscFlags::default());
        let asked = retrying_busy(|| runsc.version_within(std::time::Duration::from_millis(300)));
        let err = asked.unwrap_err().to_string();
        assert!(
            err.ends_with("--version` did not finish within 300ms; killed"),
            "{err}"
        );
        // The shell's `sleep` held the pipes: it went with its group.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
