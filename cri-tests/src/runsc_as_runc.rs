//! The benchmark's baseline runtime behind the `runc-runsc` handler: the
//! program containerd's runc shim (`io.containerd.runc.v2`) runs as its
//! runc binary. It runs runsc with runsc's own flags on every call (runsc
//! takes runc's command line), and at `create` it removes from the bundle's
//! spec the CRI annotations that make runsc put an app container into its
//! pod's pause sandbox: that grouping does not work under the runc shim
//! (StartContainer blocks, exits are never reported, Stop and Remove hang),
//! so each container, pause included, gets a gVisor sandbox of its own —
//! the only way runsc runs pods behind the runc shim.
//!
//! One message is translated: once a container's only process has exited,
//! its sandbox is gone, and `runsc kill` fails with "sandbox is not
//! running" where runc says "container not running" — the words the runc
//! shim takes for "already exited". Without them containerd's CRI fails to
//! handle the exit (it kills before it deletes) and never reports it.
//!
//! The decisions are pure functions of the arguments and the spec; the
//! binary `runsc-as-runc` reads and writes the spec and execs runsc.

use std::path::PathBuf;

/// runsc's flags on every call, as skillbox's shim runs a CRI pod: the
/// pod's network namespace used as the host network, the ptrace platform
/// (the node config's default).
pub const RUNSC_FLAGS: &[&str] = &["--network=host", "--platform=ptrace"];

/// The annotations runsc reads to join a container to its pod's sandbox.
pub const GROUPING_ANNOTATIONS: &[&str] =
    &["io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id"];

/// runc's global flags that take a value (`--root <dir>`…).
const GLOBAL_FLAGS_WITH_VALUE: &[&str] = &["--root", "--log", "--log-format", "--criu"];

/// The subcommand in runc's arguments: the first that is neither a global
/// flag nor its value.
pub fn subcommand(args: &[String]) -> Option<&str> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if GLOBAL_FLAGS_WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

/// What to add to a failed `runsc kill`'s output so that the runc shim
/// reads it as runc's "the container has exited already".
pub fn runc_kill_error(output: &str) -> Option<&'static str> {
    output
        .contains("is not running")
        .then_some("container not running")
}

/// The bundle directory of a `create` call (`… create --bundle <dir> …` or
/// `--bundle=<dir>`, `-b` too); `None` for any other subcommand.
pub fn create_bundle(args: &[String]) -> Option<PathBuf> {
    if subcommand(args) != Some("create") {
        return None;
    }
    let create = args.iter().position(|arg| arg == "create")?;
    let rest = &args[create + 1..];
    rest.iter().enumerate().find_map(|(i, arg)| {
        if let Some(value) = arg.strip_prefix("--bundle=") {
            Some(PathBuf::from(value))
        } else if arg == "--bundle" || arg == "-b" {
            rest.get(i + 1).map(PathBuf::from)
        } else {
            None
        }
    })
}

/// Removes [`GROUPING_ANNOTATIONS`] from an OCI runtime spec; whether
/// there were any.
pub fn ungroup(spec: &mut serde_json::Value) -> bool {
    let Some(annotations) = spec
        .get_mut("annotations")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return false;
    };
    let mut removed = false;
    for key in GROUPING_ANNOTATIONS {
        removed |= annotations.remove(*key).is_some();
    }
    removed
}

/// runsc's arguments for the runc shim's `args`.
pub fn runsc_args(args: &[String]) -> Vec<String> {
    RUNSC_FLAGS
        .iter()
        .map(|flag| (*flag).to_owned())
        .chain(args.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn the_bundle_of_the_runc_shims_create() {
        let args = strings(&[
            "--root",
            "/r/k8s.io",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "abc",
        ]);
        assert_eq!(create_bundle(&args), Some(PathBuf::from("/b")));
        assert_eq!(
            create_bundle(&strings(&["create", "--bundle=/c", "x"])),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(create_bundle(&strings(&["--root", "/r", "start", "abc"])), None);
        assert_eq!(create_bundle(&strings(&["delete", "--force", "abc"])), None);
    }

    #[test]
    fn the_subcommand_after_runcs_global_flags() {
        let args = strings(&[
            "--root",
            "/r",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "kill",
            "abc",
            "9",
        ]);
        assert_eq!(subcommand(&args), Some("kill"));
        assert_eq!(
            subcommand(&strings(&["--systemd-cgroup", "delete", "x"])),
            Some("delete")
        );
        assert_eq!(subcommand(&strings(&["--root", "create"])), None);
    }

    #[test]
    fn an_exited_sandbox_reads_as_runcs_exited_container() {
        assert_eq!(
            runc_kill_error("sandbox is not running\n"),
            Some("container not running")
        );
        assert_eq!(runc_kill_error("container \"x\" does not exist"), None);
    }

    #[test]
    fn ungrouping_removes_only_the_grouping_annotations() {
        let mut spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": "p",
                "io.kubernetes.cri.container-name": "app"
            }
        });
        assert!(ungroup(&mut spec));
        assert_eq!(
            spec["annotations"],
            serde_json::json!({ "io.kubernetes.cri.container-name": "app" })
        );
        assert!(!ungroup(&mut spec));
        assert!(!ungroup(&mut serde_json::json!({ "ociVersion": "1.0.2" })));
    }

    #[test]
    fn runsc_gets_its_flags_first() {
        assert_eq!(
            runsc_args(&strings(&["--root", "/r", "start", "abc"])),
            [
                "--network=host",
                "--platform=ptrace",
                "--root",
                "/r",
                "start",
                "abc"
            ]
        );
    }
}
