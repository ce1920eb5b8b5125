//! Checkpoint: `runsc checkpoint --image-path=<dir> [--leave-running] <id>`.
//!
//! The task API's `CheckpointTaskRequest` names the directory in `path`;
//! containerd's runc options (`containerd.runc.v1.CheckpointOptions`) may
//! name another in `image_path` (field 8), which wins, and ask the container
//! to stop afterwards with `exit` (field 1). Other option types are refused.
//! Without options the container would keep running (`ctr task checkpoint`
//! without `--exit`), which runsc 20221219 cannot do for this shim: such a
//! request is refused (FAILED_PRECONDITION, [`LEAVE_RUNNING_UNSUPPORTED`]).
//! With `exit`, runsc (ptrace platform) writes one file, `checkpoint.img`,
//! and stops the sandbox, whose exit the shim reports as usual (see
//! docs/runsc-facts.md).

use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::CodedInputStream;

use super::{Container, ContainerError, Status};

/// The runc shim's checkpoint options type, which `ctr task checkpoint`
/// sends to runc-like runtimes.
pub const CHECKPOINT_OPTIONS_TYPE: &str = "containerd.runc.v1.CheckpointOptions";
const EXIT_FIELD: u32 = 1;
const IMAGE_PATH_FIELD: u32 = 8;

/// What one Checkpoint call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRequest {
    pub image_path: PathBuf,
    /// Stop the container once its state is saved.
    pub exit: bool,
}

/// Reads the request's directory and options.
pub fn checkpoint_request(path: &str, options: Option<&Any>) -> Result<CheckpointRequest, String> {
    let mut request = CheckpointRequest {
        image_path: PathBuf::from(path),
        exit: false,
    };
    if let Some(any) = options.filter(|any| !any.type_url.is_empty() || !any.value.is_empty()) {
        let kind = any.type_url.trim_start_matches("type.googleapis.com/");
        if kind != CHECKPOINT_OPTIONS_TYPE {
            return Err(format!(
                "checkpoint options of type {:?}: expected {CHECKPOINT_OPTIONS_TYPE}",
                any.type_url
            ));
        }
        let malformed = |err| format!("malformed {CHECKPOINT_OPTIONS_TYPE}: {err}");
        let mut input = CodedInputStream::from_bytes(&any.value);
        while let Some(tag) = input.read_raw_tag_or_eof().map_err(malformed)? {
            let (field, wire_type) = (tag >> 3, tag & 7);
            match (field, wire_type) {
                (EXIT_FIELD, 0) => request.exit = input.read_bool().map_err(malformed)?,
                (IMAGE_PATH_FIELD, 2) => {
                    let image_path = input.read_string().map_err(malformed)?;
                    if !image_path.is_empty() {
                        request.image_path = PathBuf::from(image_path);
                    }
                }
                _ => {
                    let wire_type = containerd_shim::protos::protobuf::rt::WireType::new(wire_type)
                        .ok_or_else(|| {
                            format!("malformed {CHECKPOINT_OPTIONS_TYPE}: wire type {wire_type}")
                        })?;
                    input.skip_field(wire_type).map_err(malformed)?;
                }
            }
        }
    }
    if !request.image_path.is_absolute() {
        return Err(format!(
            "checkpoint image path {:?} is not an absolute directory",
            request.image_path
        ));
    }
    Ok(request)
}

/// Why a checkpoint that leaves the container running is refused.
pub const LEAVE_RUNNING_UNSUPPORTED: &str = "runsc 20221219 implements --leave-running by destroying the sandbox and restoring a new one (a new sandbox process, which would end this task), and panics (\"invalid state transition: paused => stopped\") on the paused container containerd hands it; checkpoint with exit instead (`ctr task checkpoint --exit`)";

impl Container {
    /// Saves the running or paused container's state into `image_path`
    /// (created if missing) and stops it: `exit` must be set (see
    /// [`LEAVE_RUNNING_UNSUPPORTED`]). containerd's client pauses a task
    /// around its checkpoint; runsc cannot checkpoint a paused sandbox, so
    /// it is resumed first. Blocking.
    pub fn checkpoint(&self, image_path: &Path, exit: bool) -> Result<(), ContainerError> {
        let current = self.status().0;
        if current != Status::Running && current != Status::Paused {
            return Err(ContainerError::State {
                id: self.id.clone(),
                state: current,
                action: "checkpoint",
            });
        }
        if !exit {
            return Err(ContainerError::CheckpointUnsupported {
                id: self.id.clone(),
                reason: LEAVE_RUNNING_UNSUPPORTED,
            });
        }
        std::fs::create_dir_all(image_path).map_err(|source| ContainerError::CheckpointDir {
            path: image_path.to_owned(),
            source,
        })?;
        if current == Status::Paused {
            self.set_paused(false)?;
        }
        self.runsc.checkpoint(&self.id, image_path, false)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(value: Vec<u8>) -> Any {
        Any {
            type_url: format!("type.googleapis.com/{CHECKPOINT_OPTIONS_TYPE}"),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn the_request_path_is_used_without_options() {
        let request = checkpoint_request("/run/cp", None).unwrap();
        assert_eq!(request.image_path, PathBuf::from("/run/cp"));
        assert!(!request.exit);
    }

    #[test]
    fn runc_options_name_the_directory_and_exit() {
        // exit = true (field 1, varint), image_path = "/x" (field 8), and
        // open_tcp = true (field 2) skipped.
        let value = vec![0x08, 0x01, 0x10, 0x01, 0x42, 0x02, b'/', b'x'];
        let request = checkpoint_request("/run/cp", Some(&options(value))).unwrap();
        assert_eq!(request.image_path, PathBuf::from("/x"));
        assert!(request.exit);
    }

    #[test]
    fn other_options_and_relative_paths_are_refused() {
        let other = Any {
            type_url: "runtimeoptions.v1.Options".to_owned(),
            value: vec![0x12, 0x01, b'x'],
            ..Default::default()
        };
        assert!(checkpoint_request("/run/cp", Some(&other)).is_err());
        assert!(checkpoint_request("", None).is_err());
        assert!(checkpoint_request("/run/cp", Some(&options(vec![0x08]))).is_err());
    }
}
