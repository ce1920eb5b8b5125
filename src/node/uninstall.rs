//! `skillbox node uninstall`: puts back what install changed, byte for
//! byte and mode for mode, from the state and its backups, then removes
//! the state and the directories install created. containerd's main config,
//! if edited since install, keeps those edits and loses only the import.
//! Running it with nothing installed does nothing.

use std::fs;

use anyhow::Context;

use super::containerd_config;
use super::layout::{self, HostRoot, BACKUP_DIR, CONTAINERD_CONFIG, STATE};
use super::state::{sha256_hex, InstallState, InstalledFile};

/// The host paths restored or removed; empty when nothing was installed.
pub fn uninstall(root: &HostRoot) -> anyhow::Result<Vec<String>> {
    let Some(state) = InstallState::load(root)? else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    for file in state.files.iter().rev() {
        let path = root.path(&file.path);
        if file.path == CONTAINERD_CONFIG {
            if let Some(edited) = main_config_changed_since_install(root, file)? {
                // Changed since install: the administrator's edits stay;
                // only the import install added goes.
                let mode = layout::mode_of(&path)?;
                layout::write_atomic(&path, edited.as_bytes(), mode)?;
                done.push(file.path.clone());
                continue;
            }
        }
        match &file.original {
            Some(original) => {
                let backup = root.path(BACKUP_DIR).join(&original.sha256);
                let bytes = fs::read(&backup).with_context(|| {
                    format!(
                        "{}: the copy of {} is missing; not restoring it",
                        backup.display(),
                        file.path
                    )
                })?;
                layout::write_atomic(&path, &bytes, original.mode)?;
            }
            None => match fs::remove_file(&path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(err).with_context(|| format!("{}: cannot remove", path.display()))
                }
                _ => {}
            },
        }
        done.push(file.path.clone());
    }
    for file in &state.files {
        if let Some(original) = &file.original {
            let backup = root.path(BACKUP_DIR).join(&original.sha256);
            if let Err(err) = fs::remove_file(&backup) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    return Err(err).with_context(|| format!("{}: cannot remove", backup.display()));
                }
            }
        }
    }
    let state_path = root.path(STATE);
    fs::remove_file(&state_path).with_context(|| format!("{}: cannot remove", state_path.display()))?;
    for dir in state.created_dirs.iter().rev() {
        // Only when empty: anything else put there is not ours to remove.
        let _ = fs::remove_dir(root.path(dir));
    }
    Ok(done)
}

/// containerd's main config without install's import, when it changed
/// since install wrote it; `None` when it is as install wrote it (or gone).
fn main_config_changed_since_install(
    root: &HostRoot,
    file: &InstalledFile,
) -> anyhow::Result<Option<String>> {
    let Some(bytes) = layout::read_optional(&root.path(&file.path))? else {
        return Ok(None);
    };
    if sha256_hex(&bytes) == file.sha256 {
        return Ok(None);
    }
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8", file.path))?;
    Ok(Some(containerd_config::without_import(&file.path, &text)?))
}
