//! The two images every pod needs, built offline into OCI image-layout
//! tarballs and imported into containerd's `k8s.io` namespace:
//!
//! - the pause image: `FROM scratch` with only `/pause`, a static program
//!   built here with `gcc -static` (busybox has no `pause` applet), so the
//!   image has no mount points (/dev, /etc, /proc) at all, like the real one;
//! - a busybox app image: `/bin/busybox` (busybox-static) and a symlink per
//!   applet in `/bin`, again with no /dev, /etc or /proc.
//!
//! [`build_image`] is the one place that turns a root directory into an
//! image. Skill images are built the way the registry builds them at
//! publish time, by `skillbox image build` (the `skillbox-image` crate), on
//! the busybox image as their base: [`SKILL_IMAGE`] and
//! [`GREEDY_SKILL_IMAGE`].
//!
//! Diagnostic only: with `SKILLBOX_CRI_MOUNT_POINTS=1` both images carry
//! the mount points CRI binds onto (/dev/shm, /etc/hosts, /etc/resolv.conf,
//! …), which shows what fails behind a runtime that cannot create mount
//! points in a read-only root.

use std::path::{Path, PathBuf};
use std::process::Command;

use skillbox_test_support::{must, require, workspace_dir};

pub const PAUSE_IMAGE: &str = "localhost/skillbox-cri/pause:1";
pub const BUSYBOX_IMAGE: &str = "localhost/skillbox-cri/busybox:1";
/// A skill whose policy gives it a writable `/out` and 2 s: it reports who
/// and where it runs, then sleeps past its timeout.
pub const SKILL_IMAGE: &str = "localhost/skillbox-cri/timed-skill:1";
/// A skill asking for more memory than the node's ceiling (2Gi).
pub const GREEDY_SKILL_IMAGE: &str = "localhost/skillbox-cri/greedy-skill:1";

/// The policy fields of the skills, under `security_policy:` after
/// `version` and `entrypoint`.
const TIMED_SKILL_POLICY: &str = "  filesystem:\n    writable:\n      - { path: /out, size: 1Mi }\n  \
                                  resources: { memory: 64Mi, timeout: 2s }\n";
const GREEDY_SKILL_POLICY: &str = "  resources: { memory: 4Gi }\n";
/// What the timed skill runs.
const TIMED_SKILL_SCRIPT: &str = "echo uid=$(id -u); test -d /out && echo out-ok; \
                                  echo x > /out/f && echo write-ok; \
                                  touch /skill/new 2>/dev/null || echo skill-read-only; \
                                  echo ready; exec sleep 30";
/// Set to `1` to give both images the mount points CRI binds onto.
pub const MOUNT_POINTS_ENV: &str = "SKILLBOX_CRI_MOUNT_POINTS";

/// The directories and files containerd's CRI and kubelet mount onto.
const MOUNT_POINT_DIRS: &[&str] = &[
    "dev/shm",
    "dev/pts",
    "dev/mqueue",
    "etc",
    "proc",
    "sys",
    "tmp",
    "scratch",
];
const MOUNT_POINT_FILES: &[&str] = &[
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    "dev/termination-log",
];

/// Adds the mount points to `rootfs` when [`MOUNT_POINTS_ENV`] asks for them.
fn add_mount_points_if_asked(rootfs: &Path) {
    if std::env::var(MOUNT_POINTS_ENV).as_deref() != Ok("1") {
        return;
    }
    for dir in MOUNT_POINT_DIRS {
        std::fs::create_dir_all(rootfs.join(dir)).expect("creating a mount point");
    }
    for file in MOUNT_POINT_FILES {
        std::fs::write(rootfs.join(file), "").expect("creating a mount point");
    }
}

/// What pause does: wait for signals; SIGINT and SIGTERM end it, SIGCHLD
/// reaps.
const PAUSE_C: &str = r#"#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"#;

/// An image tarball ready for `ctr images import`.
#[derive(Debug, Clone)]
pub struct ImageTar {
    pub name: &'static str,
    pub tar: PathBuf,
}

/// Builds the pause, busybox and skill images under `dir`.
pub fn build_all(dir: &Path) -> Vec<ImageTar> {
    let busybox = busybox_image(dir);
    let skills = [
        (SKILL_IMAGE, "timed-skill", TIMED_SKILL_POLICY),
        (GREEDY_SKILL_IMAGE, "greedy-skill", GREEDY_SKILL_POLICY),
    ]
    .map(|(name, skill, policy)| skill_image(dir, &busybox.tar, name, skill, policy));
    let mut images = vec![pause_image(dir), busybox];
    images.extend(skills);
    images
}

/// Builds skill `skill` (its `security_policy` fields `policy`, running
/// the timed skill's script) as image `name` on the image archive `base`,
/// with `skillbox image build`'s library.
fn skill_image(dir: &Path, base: &Path, name: &'static str, skill: &str, policy: &str) -> ImageTar {
    let skill_dir = dir.join(skill);
    std::fs::create_dir_all(&skill_dir).expect("creating a skill folder");
    let entrypoint =
        serde_json::to_string(&["sh", "-c", TIMED_SKILL_SCRIPT]).expect("a list of strings serializes");
    std::fs::write(
        skill_dir.join("SKILL.md"),
        format!(
            "---\nname: {skill}\ndescription: A skill the CRI suite runs from its image.\nversion: 1.0.0\n\
             security_policy:\n  version: 1\n  entrypoint: {entrypoint}\n{policy}---\n"
        ),
    )
    .expect("writing SKILL.md");
    let tar = dir.join(format!("{skill}.tar"));
    skillbox_image::build(&skillbox_image::BuildRequest {
        skill_dir: &skill_dir,
        base: &skillbox_image::Base::Archive(base.to_owned()),
        output: &tar,
        name: Some(name),
    })
    .unwrap_or_else(|err| panic!("skillbox image build of {skill}: {err}"));
    ImageTar { name, tar }
}

fn pause_image(dir: &Path) -> ImageTar {
    require("gcc", "gcc (and libc6-dev for the static libc)");
    let rootfs = dir.join("pause-rootfs");
    std::fs::create_dir_all(&rootfs).expect("creating the pause rootfs");
    let source = dir.join("pause.c");
    std::fs::write(&source, PAUSE_C).expect("writing pause.c");
    let binary = rootfs.join("pause");
    must(&[
        "gcc",
        "-static",
        "-Os",
        "-o",
        binary.to_str().expect("a UTF-8 path"),
        source.to_str().expect("a UTF-8 path"),
    ]);
    add_mount_points_if_asked(&rootfs);
    build_image(&rootfs, PAUSE_IMAGE, &["/pause"], dir)
}

fn busybox_image(dir: &Path) -> ImageTar {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "prerequisite missing: /bin/busybox (install Debian's busybox-static)"
    );
    let rootfs = dir.join("busybox-rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).expect("creating the busybox rootfs");
    std::fs::copy(busybox, bin.join("busybox")).expect("copying /bin/busybox");
    for applet in must(&["/bin/busybox", "--list"]).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("an applet symlink");
        }
    }
    add_mount_points_if_asked(&rootfs);
    build_image(&rootfs, BUSYBOX_IMAGE, &["/bin/sh"], dir)
}

/// Turns `rootfs` into an OCI image-layout tarball named `name` whose Cmd
/// is `cmd`, written into `dir`.
pub fn build_image(rootfs: &Path, name: &'static str, cmd: &[&str], dir: &Path) -> ImageTar {
    require("python3", "python3");
    let script = workspace_dir().join("shim/tests/support/make-oci-image.py");
    let file = name.rsplit('/').next().unwrap_or(name).replace(':', "-");
    let tar = dir.join(format!("{file}.tar"));
    let cmd = serde_json::to_string(cmd).expect("a list of strings serializes");
    let output = Command::new("python3")
        .arg(&script)
        .arg(rootfs)
        .arg(&tar)
        .arg(name)
        .arg(cmd)
        .output()
        .expect("running make-oci-image.py");
    assert!(
        output.status.success(),
        "building image {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    ImageTar { name, tar }
}
