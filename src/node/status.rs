//! `skillbox node status`: what install recorded against what is on the
//! host now, and what the host's containerd says. Healthy means installed,
//! every file as install wrote it, the drop-in in place and imported by
//! containerd's main config, and containerd's CRI (when its socket is
//! there) knowing the `skillbox` handler.

use std::path::Path;

use serde::Serialize;

use super::activate::HANDLER;
use super::containerd_config;
use super::cri::Cri;
use super::layout::{self, HostRoot, CONTAINERD_CONFIG, DROP_IN, NODE_CONFIG};
use super::state::{sha256_hex, InstallState};

#[derive(Debug, Serialize)]
pub struct Status {
    pub installed: bool,
    pub files: Vec<FileStatus>,
    pub drop_in_present: bool,
    pub import_present: bool,
    pub node_config: String,
    /// What containerd's CRI said; `None` when its socket is not there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containerd: Option<ContainerdStatus>,
}

#[derive(Debug, Serialize)]
pub struct ContainerdStatus {
    /// The socket, as the host sees it.
    pub socket: String,
    /// `containerd 1.6.20~ds1`; absent when it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub sees_handler: bool,
    /// Why it could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FileStatus {
    pub role: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program_version: Option<String>,
    /// As installed.
    pub sha256: String,
    /// `ok`, `changed` or `missing`.
    pub state: &'static str,
}

impl Status {
    pub fn healthy(&self) -> bool {
        self.installed
            && self.drop_in_present
            && self.import_present
            && self.files.iter().all(|f| f.state == "ok")
            && self.containerd.as_ref().is_none_or(|c| c.sees_handler)
    }
}

/// Asks the CRI on `socket` (a host path) when it exists.
pub fn status(root: &HostRoot, socket: &Path) -> anyhow::Result<Status> {
    let state = InstallState::load(root)?;
    let mut files = Vec::new();
    for file in state.iter().flat_map(|s| &s.files) {
        let current = layout::read_optional(&root.path(&file.path))?;
        files.push(FileStatus {
            role: file.role.clone(),
            path: file.path.clone(),
            program_version: file.program_version.clone(),
            sha256: file.sha256.clone(),
            state: match current {
                None => "missing",
                Some(bytes) if sha256_hex(&bytes) == file.sha256 => "ok",
                Some(_) => "changed",
            },
        });
    }
    let import_present = layout::read_optional(&root.path(CONTAINERD_CONFIG))?
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| containerd_config::detect(CONTAINERD_CONFIG, &text).ok())
        .is_some_and(|(doc, _)| containerd_config::imports_drop_in(&doc));
    Ok(Status {
        installed: state.is_some(),
        files,
        drop_in_present: root.path(DROP_IN).is_file(),
        import_present,
        node_config: NODE_CONFIG.to_owned(),
        containerd: containerd_status(root, socket)?,
    })
}

fn containerd_status(root: &HostRoot, socket: &Path) -> anyhow::Result<Option<ContainerdStatus>> {
    let here = root.path(&socket.to_string_lossy());
    if !here.exists() {
        return Ok(None);
    }
    let (version, sees_handler, error) = match Cri::new(&here)?.view() {
        Ok(view) => (
            Some(format!("{} {}", view.runtime_name, view.runtime_version)),
            view.handlers.contains(HANDLER),
            None,
        ),
        Err(err) => (None, false, Some(format!("{err:#}"))),
    };
    Ok(Some(ContainerdStatus {
        socket: socket.display().to_string(),
        version,
        sees_handler,
        error,
    }))
}

/// The text form.
pub fn render(status: &Status) -> String {
    if !status.installed {
        return "skillbox is not installed on this node\n".to_owned();
    }
    let mut out = String::new();
    for file in &status.files {
        let version = file
            .program_version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default();
        out += &format!(
            "{:<18} {}{version} sha256:{} {}\n",
            file.role, file.path, file.sha256, file.state
        );
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    out += &format!("drop-in {DROP_IN}: {}\n", yes_no(status.drop_in_present));
    out += &format!(
        "imported by {CONTAINERD_CONFIG}: {}\n",
        yes_no(status.import_present)
    );
    out += &format!("node config: {}\n", status.node_config);
    match &status.containerd {
        None => out += "containerd: not asked (no CRI socket)\n",
        Some(c) => match (&c.version, &c.error) {
            (Some(version), _) => {
                out += &format!(
                    "containerd: {version} on {}, sees the `{HANDLER}` handler: {}\n",
                    c.socket,
                    yes_no(c.sees_handler)
                )
            }
            (None, error) => {
                out += &format!(
                    "containerd: no answer on {}: {}\n",
                    c.socket,
                    error.as_deref().unwrap_or_default()
                )
            }
        },
    }
    out += if status.healthy() {
        "healthy\n"
    } else {
        "drifted\n"
    };
    out
}
