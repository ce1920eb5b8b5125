//! `skillbox node install`: binaries, node config and containerd drop-in
//! onto the host root, each written atomically and recorded in the state.
//! Running it twice with the same inputs changes no byte.

use std::path::PathBuf;

use anyhow::Context;
use policy_compiler::NodeConfig;

use super::containerd_config::{self, ConfigVersion};
use super::layout::{
    self, HostRoot, BACKUP_DIR, BIN_DIR, CONTAINERD_CONFIG, DROP_IN, NODE_CONFIG, SHIM_NAME, STATE,
};
use super::state::{sha256_hex, InstallState, InstalledFile, Original};

/// The node config written when none is given: an empty file is the
/// built-in defaults.
const DEFAULT_NODE_CONFIG_TEXT: &str =
    "# skillbox node config: empty, so the built-in defaults apply (see docs/node-config.md).\n";

/// What to install.
#[derive(Debug)]
pub struct Inputs {
    pub shim: PathBuf,
    pub cli: PathBuf,
    pub runsc: PathBuf,
    pub node_config: Option<PathBuf>,
    /// The config version for a host without `/etc/containerd/config.toml`:
    /// the one its running containerd reads (version 2 when not known).
    pub version_without_config: ConfigVersion,
}

/// One file's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Created,
    Updated,
}

#[derive(Debug)]
pub struct Report {
    /// Host path and what happened to it.
    pub changes: Vec<(String, Change)>,
}

impl Report {
    /// Whether install wrote anything.
    pub fn changed(&self) -> bool {
        self.changes
            .iter()
            .any(|(_, change)| *change != Change::Unchanged)
    }

    /// Whether install wrote a config containerd reads (the shim and the
    /// node config are read afresh by every pod: they need no restart).
    pub fn containerd_config_changed(&self) -> bool {
        self.changes
            .iter()
            .any(|(path, change)| *change != Change::Unchanged && layout::read_by_containerd(path))
    }
}

struct Installer<'a> {
    root: &'a HostRoot,
    prior: InstallState,
    next: InstallState,
    changes: Vec<(String, Change)>,
}

pub fn install(root: &HostRoot, inputs: &Inputs) -> anyhow::Result<Report> {
    let prior = InstallState::load(root)?.unwrap_or_else(InstallState::empty);
    // Decide everything that can be refused before writing anything.
    let node_config = match &inputs.node_config {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            let text = String::from_utf8(bytes.clone())
                .map_err(|_| anyhow::anyhow!("{}: not UTF-8", path.display()))?;
            NodeConfig::from_toml(path, &text)?;
            bytes
        }
        None => DEFAULT_NODE_CONFIG_TEXT.as_bytes().to_vec(),
    };
    let main_path = root.path(CONTAINERD_CONFIG);
    let (main_config, drop_in) = match layout::read_optional(&main_path)? {
        None => {
            let version = inputs.version_without_config;
            (
                Some(containerd_config::minimal_config(version).into_bytes()),
                containerd_config::drop_in(version, None),
            )
        }
        Some(bytes) => {
            let text =
                String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{CONTAINERD_CONFIG}: not UTF-8"))?;
            let (edited, version) = containerd_config::with_import(CONTAINERD_CONFIG, &text)?;
            let (main, _) = containerd_config::detect(CONTAINERD_CONFIG, &text)?;
            (
                edited.map(String::into_bytes),
                containerd_config::drop_in(version, Some(&main)),
            )
        }
    };
    let binaries = [
        ("shim", &inputs.shim, SHIM_NAME),
        ("cli", &inputs.cli, "skillbox"),
        ("runsc", &inputs.runsc, "runsc"),
    ]
    .map(|(role, from, name)| {
        std::fs::read(from)
            .with_context(|| format!("--{role} {}: cannot read", from.display()))
            .map(|bytes| (role, bytes, format!("{BIN_DIR}/{name}")))
    });

    let binaries = binaries.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    // The shim and the CLI come from this build; runsc says its own.
    let versions = [
        env!("CARGO_PKG_VERSION").to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
        runsc_version(&inputs.runsc)?,
    ];

    let mut installer = Installer {
        root,
        next: InstallState {
            created_dirs: prior.created_dirs.clone(),
            ..InstallState::empty()
        },
        prior,
        changes: Vec::new(),
    };
    installer.ensure_dir(BACKUP_DIR)?;
    for ((role, bytes, path), version) in binaries.into_iter().zip(versions) {
        installer.place(role, &path, &bytes, 0o755, Some(version))?;
    }
    installer.place("node-config", NODE_CONFIG, &node_config, 0o644, None)?;
    installer.place("drop-in", DROP_IN, drop_in.as_bytes(), 0o644, None)?;
    match main_config {
        Some(bytes) => {
            let mode = if main_path.exists() {
                layout::mode_of(&main_path)?
            } else {
                0o644
            };
            installer.place("containerd-config", CONTAINERD_CONFIG, &bytes, mode, None)?;
        }
        // Already imports the drop-in: keep what an earlier install recorded.
        None => {
            if let Some(entry) = installer.prior.file(CONTAINERD_CONFIG).cloned() {
                installer.next.files.push(entry);
            }
            installer
                .changes
                .push((CONTAINERD_CONFIG.to_owned(), Change::Unchanged));
        }
    }
    let state_path = root.path(STATE);
    let state_bytes = installer.next.to_bytes();
    if layout::read_optional(&state_path)?.as_deref() != Some(&state_bytes[..]) {
        layout::write_atomic(&state_path, &state_bytes, 0o644)?;
    }
    Ok(Report {
        changes: installer.changes,
    })
}

/// `runsc --version`'s version (`0.0~20221219.0`, `release-20240729.0`).
fn runsc_version(runsc: &std::path::Path) -> anyhow::Result<String> {
    let output = std::process::Command::new(runsc)
        .arg("--version")
        .output()
        .with_context(|| format!("--runsc {}: cannot run it", runsc.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .next()
        .and_then(|line| line.strip_prefix("runsc version "))
        .map(|v| v.trim().to_owned())
        .filter(|_| output.status.success())
        .with_context(|| {
            format!(
                "--runsc {}: `--version` did not print `runsc version …` ({}; {})",
                runsc.display(),
                output.status,
                text.trim()
            )
        })
}

impl Installer<'_> {
    fn ensure_dir(&mut self, host_dir: &str) -> anyhow::Result<()> {
        let marker = self.root.path(host_dir).join("x");
        for dir in layout::create_parents(&marker)? {
            let host = dir
                .strip_prefix(self.root.path("/"))
                .map(|p| format!("/{}", p.display()))
                .unwrap_or_else(|_| dir.display().to_string());
            self.next.created_dirs.push(host);
        }
        Ok(())
    }

    /// Writes `bytes` at `host_path` unless they are there already, keeping
    /// a copy of what install replaces the first time it does.
    fn place(
        &mut self,
        role: &str,
        host_path: &str,
        bytes: &[u8],
        mode: u32,
        program_version: Option<String>,
    ) -> anyhow::Result<()> {
        let path = self.root.path(host_path);
        self.ensure_dir(host_path.rsplit_once('/').map_or("/", |(dir, _)| dir))?;
        let current = layout::read_optional(&path)?;
        let original = match self.prior.file(host_path) {
            Some(entry) => entry.original.clone(),
            None => match &current {
                None => None,
                Some(old) => {
                    let sha256 = sha256_hex(old);
                    let backup = self.root.path(BACKUP_DIR).join(&sha256);
                    layout::write_atomic(&backup, old, 0o600)?;
                    Some(Original {
                        sha256,
                        mode: layout::mode_of(&path)?,
                    })
                }
            },
        };
        let change = match &current {
            Some(old) if old == bytes && layout::mode_of(&path)? == mode => Change::Unchanged,
            Some(_) => Change::Updated,
            None => Change::Created,
        };
        self.changes.push((host_path.to_owned(), change));
        self.next.files.push(InstalledFile {
            role: role.to_owned(),
            path: host_path.to_owned(),
            sha256: sha256_hex(bytes),
            program_version,
            original,
        });
        if change != Change::Unchanged {
            // Recorded before written: if install stops half-way, uninstall
            // still knows this file and its original.
            self.checkpoint()?;
            layout::write_atomic(&path, bytes, mode)?;
        }
        Ok(())
    }

    /// Writes the state as it stands: the files placed so far, then those
    /// of the earlier install not placed yet.
    fn checkpoint(&self) -> anyhow::Result<()> {
        let mut state = self.next.clone();
        let pending = self
            .prior
            .files
            .iter()
            .filter(|f| state.file(&f.path).is_none())
            .cloned();
        state.files.extend(pending.collect::<Vec<_>>());
        layout::write_atomic(&self.root.path(STATE), &state.to_bytes(), 0o644)
    }
}
