//! Fixture skills written by tests, and bundles compiled from them.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use policy_compiler::{compile, load, CompileOptions, NodeConfig};

/// A skill folder written by a test, removed when dropped.
pub struct Skill {
    dir: tempfile::TempDir,
}

impl Skill {
    /// A busybox-sh skill named `name` whose entrypoint is `scripts/main.sh`
    /// holding `script`. `policy_tail` is YAML appended inside
    /// `security_policy` (indented by two spaces).
    pub fn sh(name: &str, policy_tail: &str, script: &str) -> Skill {
        let skill_md = format!(
            "---\nname: {name}\ndescription: Test fixture {name}\nsecurity_policy:\n  version: 1\n  \
             entrypoint: [\"sh\", \"scripts/main.sh\"]\n{policy_tail}---\n# {name}\n"
        );
        Skill::with_skill_md(&skill_md).file("scripts/main.sh", script)
    }

    pub fn with_skill_md(skill_md: &str) -> Skill {
        let skill = Skill {
            dir: tempfile::Builder::new()
                .prefix("skillbox-fixture.")
                .tempdir()
                .unwrap(),
        };
        skill.file("SKILL.md", skill_md)
    }

    /// Adds a file (parents created) and returns the skill.
    pub fn file(self, relative: &str, contents: &str) -> Skill {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A valid frontmatter whose `security_policy` ends with `policy_tail`
/// (YAML indented by two spaces).
pub fn with_policy(policy_tail: &str) -> String {
    format!("---\nname: probe\ndescription: A test skill\nsecurity_policy:\n  version: 1\n{policy_tail}---\n# probe\n")
}

/// The value of `key=value` in `text`, panicking with the whole text if absent.
pub fn field<'a>(text: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no `{key}=` line in output:\n{text}"))
}

/// Compiles the skill folder `skill` on the busybox base into `bundle`, as
/// `skillbox compile` does but with the built-in node defaults and without
/// the invoking environment, the sandbox's cgroup being `cgroups_path`,
/// and with absolute paths (`skillbox compile --absolute-paths`), as the
/// `ctr run --config` tests need; panics with the compiler's error.
pub fn compile_bundle(skill: &Path, bundle: &Path, cgroups_path: &str) {
    let package = load(skill).unwrap_or_else(|err| panic!("{}: {err}", skill.display()));
    compile(
        &package,
        bundle,
        &CompileOptions {
            node: &NodeConfig::default(),
            node_config_name: "defaults",
            base_rootfs: crate::busybox_rootfs(),
            extra_args: &[],
            env: &BTreeMap::new(),
            cgroups_path: Some(cgroups_path),
        },
    )
    .unwrap_or_else(|err| panic!("compiling {}: {err}", skill.display()));
    policy_compiler::bundle::pin_config(bundle)
        .unwrap_or_else(|err| panic!("pinning {}: {err}", bundle.display()));
}

/// Compiles a busybox skill whose `security_policy` body (after
/// `version: 1`) is `policy`, written to `<dir>/<name>`, into
/// `<dir>/<name>-bundle`, with the cgroup `/skillbox-test-<name>`.
pub fn compile_skill(dir: &Path, name: &str, policy: &str) -> PathBuf {
    let skill = dir.join(name);
    std::fs::create_dir_all(&skill).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        format!("---\nname: {name}\ndescription: test\nsecurity_policy:\n  version: 1\n{policy}---\n"),
    )
    .unwrap();
    let bundle = dir.join(format!("{name}-bundle"));
    compile_bundle(&skill, &bundle, &format!("/skillbox-test-{name}"));
    bundle
}
