//! `skillbox node status`: what install recorded against what is on the
//! host now. Healthy means installed, every file as install wrote it, the
//! drop-in in place and imported by containerd's main config.

use serde::Serialize;

use super::containerd_config;
use super::layout::{self, HostRoot, CONTAINERD_CONFIG, DROP_IN, NODE_CONFIG};
use super::state::{sha256_hex, InstallState};

#[derive(Debug, Serialize)]
pub struct Status {
    pub installed: bool,
    pub files: Vec<FileStatus>,
    pub drop_in_present: bool,
    pub import_present: bool,
    pub node_config: String,
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
    }
}

pub fn status(root: &HostRoot) -> anyhow::Result<Status> {
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
    })
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
    out += if status.healthy() {
        "healthy\n"
    } else {
        "drifted\n"
    };
    out
}
