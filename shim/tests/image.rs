//! Containers from images: `ctr run <image>` passes the image's snapshot as
//! rootfs mounts in Create; the shim mounts them at `<bundle>/rootfs`, the
//! sandbox sees the image as its read-only root, and nothing stays mounted
//! after the container.

use std::path::Path;
use std::process::Command;

mod common;

use common::containerd::*;

const IMAGE: &str = "localhost/skillbox-test/busybox:1";

/// Builds an OCI image-layout tarball of the busybox base with
/// `support/make-oci-image.py` (python3 stdlib).
fn busybox_image(dir: &Path) -> std::path::PathBuf {
    skillbox_test_support::require("python3", "python3");
    let rootfs = busybox_rootfs();
    let tarball = dir.join("busybox-image.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/make-oci-image.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(rootfs)
        .arg(&tarball)
        .arg(IMAGE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    tarball
}

/// Lines of /proc/self/mountinfo that name `needle`.
fn mounts_naming(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}

fn run_image(containerd: &Containerd, namespace: &str, snapshotter: &str, id: &str) {
    let work = tempfile::tempdir().unwrap();
    let tarball = busybox_image(work.path());
    let import = containerd.ctr(
        namespace,
        &[
            "images",
            "import",
            "--snapshotter",
            snapshotter,
            tarball.to_str().unwrap(),
        ],
    );
    assert!(import.status.success(), "import: {}", text(&import.stderr));

    let out = containerd.ctr(
        namespace,
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--snapshotter",
            snapshotter,
            IMAGE,
            id,
            "/bin/sh",
            "-c",
            "echo from-image; ls /; touch /probe 2>/dev/null && echo root-writable || echo root-read-only",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "ctr run ({snapshotter}): {}\n{stdout}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"from-image"), "{stdout}");
    for dir in ["bin", "etc", "skill", "usr"] {
        assert!(
            lines.contains(&dir),
            "{dir} missing from the image root: {stdout}"
        );
    }
    assert_eq!(lines.last(), Some(&"root-read-only"), "{stdout}");

    // The cgroup `ctr run` names is /<namespace>/<id>.
    assert_no_leftovers(containerd, namespace, id, &format!("/{namespace}/{id}"));
    let bundle = containerd.bundle_dir(namespace, id).display().to_string();
    assert_eq!(mounts_naming(&bundle), Vec::<String>::new());

    // While a container runs, its image root is mounted, and it is
    // unmounted when the container is removed.
    let detached = format!("{id}-d");
    let out = containerd.ctr(
        namespace,
        &[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            "--snapshotter",
            snapshotter,
            IMAGE,
            &detached,
            "/bin/sleep",
            "30",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let root = containerd.bundle_dir(namespace, &detached).join("rootfs");
    let root = root.display().to_string();
    let mounted = mounts_naming(&root);
    assert_eq!(mounted.len(), 1, "{mounted:?}");
    kill_and_remove(containerd, namespace, &detached);
    assert_no_leftovers(
        containerd,
        namespace,
        &detached,
        &format!("/{namespace}/{detached}"),
    );
    assert_eq!(mounts_naming(&root), Vec::<String>::new());

    // A refused Create (host devices with --privileged) unmounts the root
    // it had mounted.
    let refused = format!("{id}-p");
    let out = containerd.ctr(
        namespace,
        &[
            "run",
            "--rm",
            "--privileged",
            "--runtime",
            RUNTIME,
            "--snapshotter",
            snapshotter,
            IMAGE,
            &refused,
            "/bin/true",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("refused"), "{}", text(&out.stderr));
    let _ = containerd.ctr(namespace, &["containers", "delete", &refused]);
    assert_no_leftovers(
        containerd,
        namespace,
        &refused,
        &format!("/{namespace}/{refused}"),
    );
    let bundle = containerd.bundle_dir(namespace, &refused).display().to_string();
    assert_eq!(mounts_naming(&bundle), Vec::<String>::new());

    let remove = containerd.ctr(namespace, &["images", "remove", IMAGE]);
    assert!(remove.status.success(), "{}", text(&remove.stderr));
}

#[test]
fn an_image_runs_from_a_native_snapshot_with_a_read_only_root() {
    let containerd = Containerd::start();
    run_image(&containerd, "skillbox-test-io-native", "native", "image-native-1");
}

#[test]
fn an_image_runs_from_an_overlayfs_snapshot_with_a_read_only_root() {
    let containerd = Containerd::start();
    run_image(
        &containerd,
        "skillbox-test-io-overlay",
        "overlayfs",
        "image-overlay-1",
    );
}

#[test]
fn a_killed_shim_leaves_no_image_root_mounted() {
    let containerd = Containerd::start();
    let namespace = "skillbox-test-io-killed";
    let id = "image-killed-1";
    let work = tempfile::tempdir().unwrap();
    let tarball = busybox_image(work.path());
    let tarball = tarball.to_str().unwrap();
    let import = containerd.ctr(
        namespace,
        &["images", "import", "--snapshotter", "native", tarball],
    );
    assert!(import.status.success(), "import: {}", text(&import.stderr));
    let out = containerd.ctr(
        namespace,
        &[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            "--snapshotter",
            "native",
            IMAGE,
            id,
            "/bin/sleep",
            "30",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let root = containerd.bundle_dir(namespace, id).join("rootfs");
    let root = root.display().to_string();
    assert_eq!(mounts_naming(&root).len(), 1);

    let shim = shim_pid(namespace, id).expect("the shim runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::SIGKILL).unwrap();
    // containerd runs the `delete` subcommand, which unmounts the root.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !mounts_naming(&root).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", mounts_naming(&root));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = containerd.ctr(namespace, &["tasks", "delete", id]);
    let removed = containerd.ctr(namespace, &["containers", "delete", id]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert_no_leftovers(&containerd, namespace, id, &format!("/{namespace}/{id}"));
    let remove = containerd.ctr(namespace, &["images", "remove", IMAGE]);
    assert!(remove.status.success(), "{}", text(&remove.stderr));
}
