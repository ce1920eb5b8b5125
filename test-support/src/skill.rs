//! Fixture skills written by tests.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
