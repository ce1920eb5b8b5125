//! The top layer: the skill package at `/skill`, as a compiled bundle holds
//! it — read-only (files 0444, executables and directories 0555), owned
//! 0:0, so the skill running as 65534 can read its code and change none of
//! it.

use std::path::PathBuf;

use policy_compiler::package::{EntryKind, SkillPackage};
use policy_compiler::scratch_path::SKILL_MOUNT;

use crate::layer::{Layer, LayerWriter, ROOT};

pub const DIR_MODE: u32 = 0o555;
pub const FILE_MODE: u32 = 0o444;
pub const EXECUTABLE_MODE: u32 = 0o555;

/// An opaque-directory whiteout: whatever a lower layer holds under
/// `/skill` (a base that is itself a skill image) is hidden, so the image
/// holds this skill's files and no others.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// `/skill` without its leading slash: layer paths are relative.
fn skill_dir() -> PathBuf {
    PathBuf::from(SKILL_MOUNT.trim_start_matches('/'))
}

/// The layer holding `package` at `/skill`. Entries come in the package's
/// order (sorted by path), so the layer is deterministic.
pub fn layer_of_skill(package: &SkillPackage) -> std::io::Result<Layer> {
    let root = skill_dir();
    let mut layer = LayerWriter::new();
    layer.dir(&root, DIR_MODE, ROOT)?;
    layer.file(&root.join(OPAQUE_WHITEOUT), 0o444, ROOT, 0, std::io::empty())?;
    for entry in &package.entries {
        let path = root.join(&entry.relative);
        match &entry.kind {
            EntryKind::Dir => layer.dir(&path, DIR_MODE, ROOT)?,
            EntryKind::Symlink { target } => layer.symlink(&path, target, ROOT)?,
            EntryKind::File { executable, contents } => {
                let mode = if *executable { EXECUTABLE_MODE } else { FILE_MODE };
                layer.file(&path, mode, ROOT, contents.len() as u64, &contents[..])?;
            }
        }
    }
    layer.finish()
}
