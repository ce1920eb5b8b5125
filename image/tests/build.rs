//! The image builder on small real inputs (a skill folder and a base
//! directory written here): determinism, layer contents, config fields,
//! base archives and the errors for bad inputs. No root needed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use skillbox_image::{build, Base, BuildRequest, Built};

const SKILL_MD: &str = "---
name: hello
description: Prints a greeting
version: 1.2.0
security_policy:
  version: 1
  entrypoint: [sh, scripts/hello.sh]
---
# hello
";

fn write_skill(dir: &Path) -> PathBuf {
    let skill = dir.join("hello");
    fs::create_dir_all(skill.join("scripts")).unwrap();
    fs::write(skill.join("SKILL.md"), SKILL_MD).unwrap();
    fs::write(skill.join("scripts/hello.sh"), "echo hello\n").unwrap();
    fs::set_permissions(skill.join("scripts/hello.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    skill
}

fn write_base(dir: &Path) -> PathBuf {
    let base = dir.join("base");
    fs::create_dir_all(base.join("bin")).unwrap();
    fs::create_dir_all(base.join("skill")).unwrap();
    fs::write(base.join("bin/sh"), "not really a shell").unwrap();
    fs::write(base.join("skill/stale.txt"), "from the base").unwrap();
    for (path, mode) in [
        ("bin", 0o755),
        ("bin/sh", 0o755),
        ("skill", 0o755),
        ("skill/stale.txt", 0o644),
    ] {
        fs::set_permissions(base.join(path), fs::Permissions::from_mode(mode)).unwrap();
    }
    base
}

fn build_into(skill: &Path, base: &Path, output: &Path, name: Option<&str>) -> Built {
    build(&BuildRequest {
        skill_dir: skill,
        base: &Base::at(base).unwrap(),
        output,
        name,
    })
    .unwrap()
}

/// The files of a layout tar, by path.
fn layout_files(tar: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(fs::File::open(tar).unwrap());
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            files.insert(path, bytes);
        }
    }
    files
}

struct Image {
    files: BTreeMap<String, Vec<u8>>,
    index: Value,
    manifest: Value,
    config: Value,
}

fn blob(files: &BTreeMap<String, Vec<u8>>, digest: &Value) -> Vec<u8> {
    let digest = digest.as_str().unwrap();
    files[&format!("blobs/{}", digest.replacen(':', "/", 1))].clone()
}

fn read_image(tar: &Path) -> Image {
    let files = layout_files(tar);
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let manifest: Value = serde_json::from_slice(&blob(&files, &index["manifests"][0]["digest"])).unwrap();
    let config: Value = serde_json::from_slice(&blob(&files, &manifest["config"]["digest"])).unwrap();
    Image {
        files,
        index,
        manifest,
        config,
    }
}

/// (path, type, mode, uid, gid) of every entry of layer `n`.
fn layer_entries(image: &Image, n: usize) -> Vec<(String, char, u32, u64, u64)> {
    let bytes = blob(&image.files, &image.manifest["layers"][n]["digest"]);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let header = entry.header();
            (
                entry.path().unwrap().display().to_string(),
                header.entry_type().as_byte() as char,
                header.mode().unwrap(),
                header.uid().unwrap(),
                header.gid().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_same_skill_and_base_give_the_same_bytes_wherever_written() {
    let work = tempfile::tempdir().unwrap();
    let skill = write_skill(work.path());
    let base = write_base(work.path());
    let first = build_into(&skill, &base, &work.path().join("one.oci.tar"), None);
    fs::create_dir(work.path().join("other")).unwrap();
    let second = build_into(&skill, &base, &work.path().join("other/two.oci.tar"), None);
    assert_eq!(first, second);
    let one = fs::read(work.path().join("one.oci.tar")).unwrap();
    let two = fs::read(work.path().join("other/two.oci.tar")).unwrap();
    assert!(one == two, "two builds of the same skill and base differ");

    // The same skill copied elsewhere is the same skill.
    let moved = work.path().join("moved");
    fs::create_dir(&moved).unwrap();
    let skill_copy = write_skill(&moved);
    let third = build_into(&skill_copy, &base, &work.path().join("three.oci.tar"), None);
    assert_eq!(first.manifest_digest, third.manifest_digest);
}

#[test]
fn the_skill_layer_holds_the_package_read_only_and_owned_by_root() {
    let work = tempfile::tempdir().unwrap();
    let skill = write_skill(work.path());
    let base = write_base(work.path());
    let output = work.path().join("hello.oci.tar");
    let built = build_into(&skill, &base, &output, None);
    let image = read_image(&output);
    assert_eq!(built.layers, 2);
    assert_eq!(image.manifest["layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        layer_entries(&image, 1),
        [
            ("skill".to_owned(), '5', 0o555, 0, 0),
            ("skill/.wh..wh..opq".to_owned(), '0', 0o444, 0, 0),
            ("skill/SKILL.md".to_owned(), '0', 0o444, 0, 0),
            ("skill/scripts".to_owned(), '5', 0o555, 0, 0),
            ("skill/scripts/hello.sh".to_owned(), '0', 0o555, 0, 0),
        ]
    );
    let base_paths: Vec<String> = layer_entries(&image, 0).into_iter().map(|e| e.0).collect();
    assert_eq!(base_paths, ["bin", "bin/sh", "skill", "skill/stale.txt"]);
    for layer in image.manifest["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    }
}

#[test]
fn the_config_runs_the_entrypoint_in_skill_as_nobody_and_names_the_skill() {
    let work = tempfile::tempdir().unwrap();
    let skill = write_skill(work.path());
    let base = write_base(work.path());
    let output = work.path().join("hello.oci.tar");
    let built = build_into(&skill, &base, &output, None);
    let image = read_image(&output);
    let config = &image.config["config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["sh", "scripts/hello.sh"])
    );
    assert_eq!(config["Cmd"], Value::Null);
    assert_eq!(config["User"], "65534");
    assert_eq!(config["WorkingDir"], "/skill");
    assert_eq!(
        config["Env"],
        serde_json::json!(["PATH=/usr/local/bin:/usr/bin:/bin"])
    );
    let package = policy_compiler::load(&skill).unwrap();
    assert_eq!(config["Labels"]["io.skillbox.skill.name"], "hello");
    assert_eq!(config["Labels"]["io.skillbox.skill.version"], "1.2.0");
    assert_eq!(
        config["Labels"]["io.skillbox.skill.digest"],
        package.digest.as_str()
    );
    assert_eq!(built.skill_digest, package.digest);
    assert_eq!(image.config["created"], Value::Null);
    assert_eq!(image.config["os"], "linux");
    assert_eq!(image.config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(image.config["history"].as_array().unwrap().len(), 2);

    let manifest = &image.index["manifests"][0];
    assert_eq!(
        manifest["annotations"]["io.containerd.image.name"],
        "localhost/skillbox/hello:1.2.0"
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.ref.name"],
        "1.2.0"
    );
    assert_eq!(manifest["digest"], built.manifest_digest.as_str());
    assert_eq!(manifest["platform"]["os"], "linux");
    assert_eq!(image.files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
}

#[test]
fn an_image_archive_base_keeps_its_layers_and_history() {
    let work = tempfile::tempdir().unwrap();
    let skill = write_skill(work.path());
    let base = write_base(work.path());
    let first = work.path().join("base.oci.tar");
    build_into(&skill, &base, &first, Some("localhost/test/base:1"));
    let base_image = read_image(&first);

    let second = work.path().join("on-image.oci.tar");
    let built = build_into(&skill, &first, &second, Some("localhost/test/on-image:2"));
    let image = read_image(&second);
    assert_eq!(built.layers, 3);
    let layers = image.manifest["layers"].as_array().unwrap();
    assert_eq!(
        &layers[..2],
        base_image.manifest["layers"].as_array().unwrap().as_slice()
    );
    let diff_ids = image.config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(
        &diff_ids[..2],
        base_image.config["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .as_slice()
    );
    assert_eq!(image.config["history"].as_array().unwrap().len(), 3);
    assert_eq!(
        image.manifest["annotations"]["org.opencontainers.image.base.digest"],
        base_image.index["manifests"][0]["digest"]
    );
    assert_eq!(
        image.index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "localhost/test/on-image:2"
    );
    // Deterministic on an archive base too.
    let again = build_into(
        &skill,
        &first,
        &work.path().join("again.oci.tar"),
        Some("localhost/test/on-image:2"),
    );
    assert_eq!(built, again);
}

/// Writes a tar holding `files` (path, bytes).
fn write_tar(path: &Path, files: &[(&str, Vec<u8>)]) {
    let mut tar = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, &bytes[..]).unwrap();
    }
    tar.finish().unwrap();
}

fn error_of(skill: &Path, base: &Path, work: &Path) -> String {
    let base = match Base::at(base) {
        Ok(base) => base,
        Err(err) => return err.to_string(),
    };
    build(&BuildRequest {
        skill_dir: skill,
        base: &base,
        output: &work.join("out.oci.tar"),
        name: None,
    })
    .unwrap_err()
    .to_string()
}

#[test]
fn bad_inputs_are_named_with_what_was_expected() {
    let work = tempfile::tempdir().unwrap();
    let skill = write_skill(work.path());
    let base = write_base(work.path());

    let missing = error_of(&skill, &work.path().join("nope"), work.path());
    assert!(missing.contains("nope: cannot read the base"), "{missing}");

    let not_skill = error_of(&base, &base, work.path());
    assert!(
        not_skill.contains("does not load") && not_skill.contains("SKILL.md"),
        "{not_skill}"
    );

    let docker = work.path().join("docker.tar");
    write_tar(&docker, &[("manifest.json", b"[]".to_vec())]);
    let err = error_of(&skill, &docker, work.path());
    assert!(
        err.contains("not an OCI image layout") && err.contains("docker save"),
        "{err}"
    );

    let not_tar = work.path().join("not.tar");
    fs::write(&not_tar, vec![b'x'; 2048]).unwrap();
    let err = error_of(&skill, &not_tar, work.path());
    assert!(err.contains("not an OCI image layout"), "{err}");

    // A multi-platform index with no linux/amd64 image.
    let arm_index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "size": 2,
            "platform": {"os": "linux", "architecture": "arm64"},
        }, {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
            "size": 2,
            "platform": {"os": "windows", "architecture": "amd64"},
        }],
    });
    let arm = work.path().join("arm.tar");
    write_tar(
        &arm,
        &[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ("index.json", serde_json::to_vec(&arm_index).unwrap()),
        ],
    );
    let err = error_of(&skill, &arm, work.path());
    assert!(
        err.contains("no image for exactly one linux/amd64") && err.contains("linux/arm64, windows/amd64"),
        "{err}"
    );

    let bad_name = build(&BuildRequest {
        skill_dir: &skill,
        base: &Base::at(&base).unwrap(),
        output: &work.path().join("out.oci.tar"),
        name: Some("hello:1"),
    })
    .unwrap_err()
    .to_string();
    assert!(bad_name.contains("no registry host"), "{bad_name}");
    assert!(
        !work.path().join("out.oci.tar").exists(),
        "a failed build left output"
    );
}
