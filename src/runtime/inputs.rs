//! `skillbox run --input PATH`: each file or directory is copied into the
//! execution's own directory and that copy is mounted read-only at
//! `/workspace/in/<its name>`. The sandbox never sees the caller's paths,
//! and only regular files and directories cross: a symbolic link, device,
//! FIFO or socket anywhere in an input is refused before anything runs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::plain_tree::{self, set_mode, ListError};

/// Where the inputs appear in the sandbox.
pub const INPUT_DIR: &str = "/workspace/in";

/// Copies every input into `staging` (created here), files 0444 and
/// directories 0555, so the skill's user can read but not change them even
/// if the mount were writable.
pub fn stage(inputs: &[PathBuf], staging: &Path) -> anyhow::Result<()> {
    fs::create_dir(staging).with_context(|| format!("{}: cannot create", staging.display()))?;
    stage_into(inputs, staging)
}

/// [`stage`] into `staging`, which exists and is empty (a pre-booted
/// sandbox has had it bound since its boot).
pub fn stage_into(inputs: &[PathBuf], staging: &Path) -> anyhow::Result<()> {
    let mut names = std::collections::BTreeSet::new();
    for input in inputs {
        let name = input
            .file_name()
            .with_context(|| format!("--input {}: names no file or directory", input.display()))?;
        if !names.insert(name.to_owned()) {
            bail!(
                "--input {}: another input is also named {:?} in {INPUT_DIR}; rename one",
                input.display(),
                name
            );
        }
        copy_tree(input, &staging.join(name))?;
    }
    set_mode(staging, 0o555)
}

fn copy_tree(input: &Path, target: &Path) -> anyhow::Result<()> {
    let entries = plain_tree::list(input).map_err(|err| match err {
        ListError::Read(err) => {
            anyhow::Error::new(err).context(format!("--input {}: cannot read", input.display()))
        }
        ListError::NotPlain { relative, kind } => anyhow::anyhow!(
            "--input {}: {} is {kind}; inputs hold regular files and directories only",
            input.display(),
            input.join(relative).display()
        ),
    })?;
    plain_tree::copy(input, &entries, target, 0o444)
        .with_context(|| format!("--input {}", input.display()))?;
    // Innermost first: a directory made read-only takes no more entries.
    for dir in entries.iter().rev().filter(|entry| entry.is_dir) {
        set_mode(&target.join(&dir.relative), 0o555)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_and_directories_are_copied_read_only() {
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("data");
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::write(data.join("sub/a.txt"), "a").unwrap();
        let single = work.path().join("one.csv");
        fs::write(&single, "1,2").unwrap();
        let staging = work.path().join("in");
        stage(&[data, single], &staging).unwrap();
        assert_eq!(fs::read_to_string(staging.join("data/sub/a.txt")).unwrap(), "a");
        assert_eq!(fs::read_to_string(staging.join("one.csv")).unwrap(), "1,2");
        let mode = |p: &str| fs::metadata(staging.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            (mode("data/sub"), mode("data/sub/a.txt"), mode(".")),
            (0o555, 0o444, 0o555)
        );
    }

    #[test]
    fn links_and_fifos_and_clashing_names_are_refused() {
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("data");
        fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", data.join("link")).unwrap();
        let err = stage(std::slice::from_ref(&data), &work.path().join("in1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("link is a symbolic link"), "{err}");

        fs::remove_file(data.join("link")).unwrap();
        nix::unistd::mkfifo(&data.join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = stage(std::slice::from_ref(&data), &work.path().join("in2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pipe is a FIFO"), "{err}");

        let other = work.path().join("x/data");
        fs::create_dir_all(&other).unwrap();
        fs::remove_file(data.join("pipe")).unwrap();
        let err = stage(&[data, other], &work.path().join("in3"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("another input is also named \"data\""), "{err}");
    }
}
