//! Golden and determinism tests of the compiler's output.
//!
//! `config.json` is what runsc enforces, so any change to it must be visible in
//! review: the golden file pins it byte for byte. Regenerate after an
//! intended change with `UPDATE_GOLDEN=1 cargo test -p policy-compiler --test golden`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use policy_compiler::{compile, load, CompileOptions, NodeConfig};

const BASE_ROOTFS: &str = "/var/lib/skillbox/rootfs/busybox";
const CGROUP: &str = "/skillbox/golden-0001";

const HELLO_SKILL_MD: &str = r#"---
name: hello
description: Prints a greeting and its arguments
version: 1.0.0
security_policy:
  version: 1
  entrypoint: ["sh", "scripts/hello.sh"]
  filesystem:
    writable:
      - { path: /tmp, size: 1Mi }
  resources: { cpus: 0.25, memory: 64Mi, pids: 8, timeout: 10s }
  env: { pass: [GREETING_STYLE] }
  audit: { syscalls: security }
---
# hello

Prints a greeting.
"#;

const HELLO_SH: &str = "#!/bin/sh\necho \"hello from $(hostname): $*\"\n";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn update_golden() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0")
}

/// Writes the fixed hello skill into `dir`, with explicit modes so the
/// package digest does not depend on the umask.
fn write_hello_skill(dir: &Path) {
    fs::create_dir_all(dir.join("scripts")).unwrap();
    fs::create_dir_all(dir.join("assets")).unwrap();
    fs::write(dir.join("SKILL.md"), HELLO_SKILL_MD).unwrap();
    fs::write(dir.join("scripts/hello.sh"), HELLO_SH).unwrap();
    fs::write(dir.join("assets/greeting.txt"), "hello\n").unwrap();
    fs::set_permissions(dir.join("SKILL.md"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(dir.join("assets/greeting.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(dir.join("scripts/hello.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../assets/greeting.txt", dir.join("scripts/greeting.txt")).unwrap();
}

fn compile_hello(skill: &Path, bundle: &Path) -> Vec<String> {
    let node = NodeConfig::default();
    let env = BTreeMap::from([
        ("GREETING_STYLE".to_owned(), "formal".to_owned()),
        ("NOT_PASSED".to_owned(), "secret".to_owned()),
    ]);
    let args = vec!["world".to_owned()];
    let package = load(skill).unwrap();
    let compiled = compile(
        &package,
        bundle,
        &CompileOptions {
            node: &node,
            node_config_name: "/etc/skillbox/config.toml",
            base_rootfs: Path::new(BASE_ROOTFS),
            extra_args: &args,
            env: &env,
            cgroups_path: Some(CGROUP),
        },
    )
    .unwrap();
    compiled.warnings
}

/// Every file, directory and symlink below `root`, with contents and, when
/// `with_modes`, permission bits.
fn tree(root: &Path, with_modes: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = if with_modes {
                meta.permissions().mode() & 0o7777
            } else {
                0
            };
            let description = if meta.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {mode:o}")
            } else {
                let contents = fs::read(&path).unwrap();
                format!("file {mode:o} {}", String::from_utf8_lossy(&contents))
            };
            out.insert(relative, description);
        }
    }
    out
}

#[test]
fn compiling_twice_gives_identical_bundles() {
    let work = tempfile::tempdir().unwrap();
    let skill = work.path().join("hello");
    write_hello_skill(&skill);
    let first = work.path().join("first");
    compile_hello(&skill, &first);
    let bundle = work.path().join("elsewhere/second");
    compile_hello(&skill, &bundle);

    // Relocatable: config.json names no output directory, so two output
    // directories give the same bytes.
    let first_config = fs::read(first.join("config.json")).unwrap();
    let second_config = fs::read(bundle.join("config.json")).unwrap();
    assert!(
        first_config == second_config,
        "config.json differs between compiles of the same skill into two directories"
    );
    let text = String::from_utf8(first_config).unwrap();
    assert!(!text.contains(work.path().to_str().unwrap()), "{text}");
    assert_eq!(
        tree(&first.join("skill"), true),
        tree(&bundle.join("skill"), true)
    );
    // Modes differ on purpose: the copy is made read-only.
    assert_eq!(
        tree(&bundle.join("skill"), false),
        tree(&skill, false),
        "skill/ is not a faithful copy"
    );
}

#[test]
fn bundle_is_private_and_code_read_only() {
    let work = tempfile::tempdir().unwrap();
    let skill = work.path().join("hello");
    write_hello_skill(&skill);
    let bundle = work.path().join("bundle");
    compile_hello(&skill, &bundle);

    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // config.json holds passed environment values.
    assert_eq!(mode(&bundle), 0o700);
    assert_eq!(mode(&bundle.join("config.json")), 0o600);
    assert_eq!(mode(&bundle.join("skill/SKILL.md")), 0o444);
    assert_eq!(mode(&bundle.join("skill/scripts/hello.sh")), 0o555);
}

#[test]
fn hello_config_matches_golden_file() {
    let work = tempfile::tempdir().unwrap();
    let skill = work.path().join("hello");
    write_hello_skill(&skill);
    let bundle = work.path().join("bundle");
    let warnings = compile_hello(&skill, &bundle);
    assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");

    let config = fs::read_to_string(bundle.join("config.json")).unwrap();
    assert!(
        !config.contains("secret"),
        "a variable not in env.pass leaked into config.json"
    );
    assert!(
        !config.contains(bundle.to_str().unwrap()),
        "config.json names its directory"
    );
    let golden = manifest_dir().join("tests/golden/hello.config.json");
    if update_golden() {
        fs::write(&golden, &config).unwrap();
        return;
    }
    let expected = fs::read_to_string(&golden).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; run with UPDATE_GOLDEN=1 to create it",
            golden.display()
        )
    });
    assert!(
        config == expected,
        "config.json differs from {}; if the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff.\n--- got ---\n{config}",
        golden.display()
    );
}

#[test]
fn committed_schema_matches_the_parser() {
    let generated = policy_compiler::schema::security_policy_schema();
    let committed = manifest_dir()
        .join("..")
        .join(policy_compiler::schema::SCHEMA_PATH);
    if update_golden() {
        fs::write(&committed, &generated).unwrap();
        return;
    }
    let on_disk = fs::read_to_string(&committed).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; run with UPDATE_GOLDEN=1 to create it",
            committed.display()
        )
    });
    assert!(
        on_disk == generated,
        "{} is out of date with the security_policy types; rerun with UPDATE_GOLDEN=1",
        committed.display()
    );
}
