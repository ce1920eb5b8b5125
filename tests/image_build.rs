//! `skillbox image build` on the busybox base, imported into a private
//! containerd (Debian's 1.6) with `ctr images import`: the name it lists,
//! the config's labels, the unpacked `/skill`, and an image built on top of
//! another skill image keeping its base's layers. Needs root (containerd
//! and `ctr images mount`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skillbox_test_support::{busybox_rootfs, cgroup_hierarchies, example_dir, require, Cli};

const SKILLBOX: Cli = Cli::new(env!("CARGO_BIN_EXE_skillbox"));

/// The containerd namespace the tests import and run images in.
const NAMESPACE: &str = "skillbox-image";

/// A containerd of this test's own (config, root, state and socket in a
/// temp dir, no CRI), stopped on drop.
struct Containerd {
    dir: tempfile::TempDir,
    process: Child,
}

impl Containerd {
    fn start() -> Containerd {
        for program in ["containerd", "ctr"] {
            require(program, "containerd");
        }
        let dir = tempfile::Builder::new()
            .prefix("skillbox-image.")
            .tempdir()
            .unwrap();
        let path = dir.path();
        std::fs::write(
            path.join("config.toml"),
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{0}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n",
                path.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(path.join("containerd.log")).unwrap();
        let process = Command::new("containerd")
            .arg("--config")
            .arg(path.join("config.toml"))
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let containerd = Containerd { dir, process };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !containerd.dir.path().join("containerd.sock").exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr -n <NAMESPACE> <args>`, which must succeed; its stdout.
    fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", NAMESPACE])
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .expect("running ctr");
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, digest: &str) -> Value {
        serde_json::from_str(&self.ctr(&["content", "get", digest])).unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.process.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = self.process.wait();
        // runc removes a container's cgroup (containerd's default path is
        // `/<namespace>/<id>`) but not the namespace's, left empty in every
        // hierarchy.
        for hierarchy in cgroup_hierarchies() {
            let _ = std::fs::remove_dir(hierarchy.join(NAMESPACE));
        }
    }
}

/// `skillbox image build <skill> --base <base> -o <output> [extra…]`; its
/// JSON summary.
fn image_build(skill: &Path, base: &Path, output: &Path, extra: &[&str]) -> Value {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "image".as_ref(),
        "build".as_ref(),
        skill.as_os_str(),
        "--base".as_ref(),
        base.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let out = SKILLBOX.run(args);
    assert_eq!(out.code, 0, "image build: {}", out.describe());
    serde_json::from_str(&out.stdout).unwrap_or_else(|err| panic!("{err}: {}", out.stdout))
}

fn field<'a>(summary: &'a Value, key: &str) -> &'a str {
    summary[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {summary}"))
}

/// A read-only mount of image `name` at a fresh directory, unmounted on drop.
struct ImageMount<'a> {
    containerd: &'a Containerd,
    dir: tempfile::TempDir,
}

impl<'a> ImageMount<'a> {
    fn new(containerd: &'a Containerd, name: &str) -> ImageMount<'a> {
        let dir = tempfile::tempdir().unwrap();
        containerd.ctr(&["images", "mount", name, dir.path().to_str().unwrap()]);
        ImageMount { containerd, dir }
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.dir.path().join(inside.trim_start_matches('/'))
    }
}

impl Drop for ImageMount<'_> {
    fn drop(&mut self) {
        self.containerd
            .ctr(&["images", "unmount", "--rm", self.dir.path().to_str().unwrap()]);
    }
}

#[test]
fn a_built_image_imports_into_containerd_with_its_name_labels_and_read_only_skill() {
    use std::os::unix::fs::MetadataExt;
    let base = busybox_rootfs();
    let work = tempfile::tempdir().unwrap();
    let hello = example_dir("hello");
    let tarball = work.path().join("hello.oci.tar");
    let summary = image_build(&hello, base, &tarball, &[]);
    let name = field(&summary, "name");
    assert_eq!(name, "localhost/skillbox/hello:1.0.0");
    // The same skill and base again, elsewhere: the same bytes.
    let again = work.path().join("again.oci.tar");
    image_build(&hello, base, &again, &[]);
    assert!(
        std::fs::read(&tarball).unwrap() == std::fs::read(&again).unwrap(),
        "two builds differ"
    );

    let containerd = Containerd::start();
    containerd.ctr(&["images", "import", tarball.to_str().unwrap()]);
    let listed = containerd.ctr(&["images", "ls", "--quiet"]);
    assert!(listed.lines().any(|line| line == name), "{listed}");
    let check = containerd.ctr(&["images", "check"]);
    assert!(check.contains("complete"), "{check}");

    let config = containerd.json(field(&summary, "config_digest"));
    let labels = &config["config"]["Labels"];
    let package = policy_compiler::load(&hello).unwrap();
    assert_eq!(labels["io.skillbox.skill.name"], "hello");
    assert_eq!(labels["io.skillbox.skill.version"], "1.0.0");
    assert_eq!(labels["io.skillbox.skill.digest"], package.digest.as_str());
    assert_eq!(field(&summary, "skill_digest"), package.digest);
    assert_eq!(config["config"]["User"], "65534");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["sh", "scripts/hello.sh"])
    );

    let mount = ImageMount::new(&containerd, name);
    let skill_md = std::fs::metadata(mount.path("/skill/SKILL.md")).unwrap();
    assert_eq!(
        (skill_md.mode() & 0o7777, skill_md.uid(), skill_md.gid()),
        (0o444, 0, 0)
    );
    let dir = std::fs::metadata(mount.path("/skill")).unwrap();
    assert_eq!((dir.mode() & 0o7777, dir.uid(), dir.gid()), (0o555, 0, 0));
    assert_eq!(
        std::fs::read(mount.path("/skill/scripts/hello.sh")).unwrap(),
        std::fs::read(hello.join("scripts/hello.sh")).unwrap()
    );
    assert!(
        mount.path("/bin/busybox").is_file(),
        "the base is below the skill"
    );
}

#[test]
fn an_image_on_a_skill_image_keeps_the_base_layers_and_only_its_own_skill() {
    let work = tempfile::tempdir().unwrap();
    let base_tar = work.path().join("hello.oci.tar");
    let base = image_build(&example_dir("hello"), busybox_rootfs(), &base_tar, &[]);
    let top_tar = work.path().join("file-writer.oci.tar");
    let name = "localhost/skillbox-test/file-writer-on-hello:1";
    let top = image_build(
        &example_dir("file-writer"),
        &base_tar,
        &top_tar,
        &["--name", name],
    );
    assert_eq!(top["layers"], 3);

    let containerd = Containerd::start();
    containerd.ctr(&["images", "import", base_tar.to_str().unwrap()]);
    containerd.ctr(&["images", "import", top_tar.to_str().unwrap()]);
    let base_manifest = containerd.json(field(&base, "manifest_digest"));
    let top_manifest = containerd.json(field(&top, "manifest_digest"));
    let base_layers = base_manifest["layers"].as_array().unwrap();
    assert_eq!(
        &top_manifest["layers"].as_array().unwrap()[..2],
        base_layers.as_slice()
    );
    assert_eq!(
        top_manifest["annotations"]["org.opencontainers.image.base.digest"],
        field(&base, "manifest_digest")
    );
    let top_config = containerd.json(field(&top, "config_digest"));
    assert_eq!(
        top_config["config"]["Labels"]["io.skillbox.skill.name"],
        "file-writer"
    );

    // The lower skill's files are hidden under the new /skill.
    let mount = ImageMount::new(&containerd, name);
    assert!(mount.path("/skill/SKILL.md").is_file());
    assert!(
        !mount.path("/skill/scripts/hello.sh").exists(),
        "hello's script shows through"
    );
    assert!(mount.path("/bin/busybox").is_file());
}

#[test]
fn a_bad_base_or_skill_folder_fails_naming_it() {
    let work = tempfile::tempdir().unwrap();
    let not_image = work.path().join("not-an-image.tar");
    std::fs::write(&not_image, "plain text").unwrap();
    let out = SKILLBOX.run([
        "image".as_ref(),
        "build".as_ref(),
        example_dir("hello").as_os_str(),
        "--base".as_ref(),
        not_image.as_os_str(),
        "-o".as_ref(),
        work.path().join("out.tar").as_os_str(),
    ]);
    assert_eq!(out.code, 1, "{}", out.describe());
    assert!(
        out.stderr.contains("not-an-image.tar: not an OCI image layout"),
        "{}",
        out.stderr
    );
    let out = SKILLBOX.run([
        "image".as_ref(),
        "build".as_ref(),
        work.path().as_os_str(),
        "--base".as_ref(),
        work.path().as_os_str(),
        "-o".as_ref(),
        work.path().join("out.tar").as_os_str(),
    ]);
    assert_eq!(out.code, 1, "{}", out.describe());
    assert!(
        out.stderr.contains("does not load") && out.stderr.contains("SKILL.md"),
        "{}",
        out.stderr
    );
}

/// The shim binary beside the `skillbox` under test: `cargo test
/// --workspace` builds it; a run of this test binary alone builds it here
/// when it is missing (one left there by an older build is used as it is).
fn shim_beside_skillbox() -> PathBuf {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_skillbox")).parent().unwrap();
    let shim = bin_dir.join("containerd-shim-skillbox-v1");
    if !shim.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "skillbox-shim",
                "--bin",
                "containerd-shim-skillbox-v1",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build -p skillbox-shim");
        assert!(status.success(), "cargo build -p skillbox-shim failed");
    }
    assert!(shim.is_file(), "{} missing", shim.display());
    shim
}

#[test]
fn the_node_image_holds_the_charts_binaries_and_they_run_from_it() {
    require("runsc", "runsc");
    require("nsenter", "util-linux");
    require("runc", "runc");
    let shim = shim_beside_skillbox();
    let work = tempfile::tempdir().unwrap();
    let tarball = work.path().join("node.oci.tar");
    let out = Command::new("bash")
        .arg("scripts/build-node-image.sh")
        .arg("--bin-dir")
        .arg(shim.parent().unwrap())
        .arg("-o")
        .arg(&tarball)
        .arg("--rootfs")
        .arg(work.path().join("rootfs"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/build-node-image.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "build-node-image.sh: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(&stdout[stdout.find("\n{").expect("the JSON summary")..])
        .unwrap_or_else(|err| panic!("{err}: {stdout}"));
    let name = field(&summary, "name");
    assert_eq!(
        name,
        concat!("localhost/skillbox/node:", env!("CARGO_PKG_VERSION"))
    );

    let containerd = Containerd::start();
    containerd.ctr(&["images", "import", tarball.to_str().unwrap()]);
    let check = containerd.ctr(&["images", "check"]);
    assert!(check.contains("complete"), "{check}");
    let config = containerd.json(field(&summary, "config_digest"));
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!([
            "PATH=/opt/skillbox/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ])
    );
    assert!(
        config["config"].get("User").is_none(),
        "the installer runs as root"
    );

    // runc keeps its state under /run/containerd/runc/<namespace>/<id>
    // whichever containerd started it: ids of this process's own.
    let check_id = format!("skillbox-node-image-check-{}", std::process::id());
    let install_id = format!("skillbox-node-image-install-{}", std::process::id());
    // What the chart runs, run in a container of the imported image (runc,
    // containerd's default runtime): the binaries find their libraries there.
    let out = containerd.ctr(&[
        "run",
        "--rm",
        name,
        &check_id,
        "/bin/sh",
        "-c",
        "skillbox --version && containerd-shim-skillbox-v1 --version && runsc --version && /usr/bin/nsenter --version \
         && skillbox image build-node --help",
    ]);
    for expected in [
        concat!("skillbox ", env!("CARGO_PKG_VERSION")),
        "Runtime: io.containerd.skillbox.v1",
        "runsc version",
        "nsenter from util-linux",
        "--rootfs",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    let mount = ImageMount::new(&containerd, name);
    for file in [
        "/opt/skillbox/bin/skillbox",
        "/opt/skillbox/bin/containerd-shim-skillbox-v1",
        "/opt/skillbox/bin/runsc",
        "/usr/bin/nsenter",
    ] {
        let meta = std::fs::metadata(mount.path(file)).unwrap_or_else(|err| panic!("{file}: {err}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{file}");
    }

    // The chart's install from the image's own paths, onto a fake host root
    // bind-mounted at /host (files only: --no-reload, no containerd to ask).
    let host = work.path().join("host");
    std::fs::create_dir_all(host.join("etc")).unwrap();
    let mount_host = format!("type=bind,src={},dst=/host,options=rbind:rw", host.display());
    containerd.ctr(&[
        "run",
        "--rm",
        "--mount",
        &mount_host,
        name,
        &install_id,
        "/opt/skillbox/bin/skillbox",
        "node",
        "install",
        "--host-root",
        "/host",
        "--shim",
        "/opt/skillbox/bin/containerd-shim-skillbox-v1",
        "--cli",
        "/opt/skillbox/bin/skillbox",
        "--runsc",
        "/opt/skillbox/bin/runsc",
        "--no-reload",
    ]);
    for (installed, from_image) in [
        ("usr/local/bin/skillbox", "/opt/skillbox/bin/skillbox"),
        (
            "usr/local/bin/containerd-shim-skillbox-v1",
            "/opt/skillbox/bin/containerd-shim-skillbox-v1",
        ),
        ("usr/local/bin/runsc", "/opt/skillbox/bin/runsc"),
    ] {
        assert!(
            std::fs::read(host.join(installed)).unwrap() == std::fs::read(mount.path(from_image)).unwrap(),
            "{installed} is not the image's {from_image}"
        );
    }
    assert!(host.join("etc/containerd/conf.d/skillbox.toml").is_file());
}

#[test]
fn build_node_refuses_a_root_filesystem_without_the_charts_binaries() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("rootfs/opt/skillbox/bin")).unwrap();
    let out = SKILLBOX.run([
        "image".as_ref(),
        "build-node".as_ref(),
        "--rootfs".as_ref(),
        work.path().join("rootfs").as_os_str(),
        "-o".as_ref(),
        work.path().join("node.tar").as_os_str(),
    ]);
    assert_eq!(out.code, 1, "{}", out.describe());
    assert!(
        out.stderr
            .contains("/opt/skillbox/bin/skillbox: No such file or directory")
            && out.stderr.contains("scripts/build-node-image.sh"),
        "{}",
        out.stderr
    );
    assert!(!work.path().join("node.tar").exists());
}
