//! The package rules, each with a real folder in a temp dir.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::*;

#[test]
fn symlink_containment() {
    assert!(stays_inside(Path::new("scripts/a"), Path::new("b")));
    assert!(stays_inside(Path::new("scripts/a"), Path::new("../assets/x")));
    assert!(!stays_inside(
        Path::new("scripts/a"),
        Path::new("../../etc/passwd")
    ));
    assert!(!stays_inside(Path::new("a"), Path::new("/etc/passwd")));
    assert!(!stays_inside(Path::new("a"), Path::new("..")));
}

fn write(path: &Path, contents: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

const SKILL_MD_TEXT: &str = "---\nname: t\ndescription: d\n---\n";

#[test]
fn a_hard_linked_host_file_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("host/secret.key");
    write(&secret, "root-only key");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o400)).unwrap();
    let skill = work.path().join("skill");
    write(&skill.join(SKILL_MD), SKILL_MD_TEXT);
    fs::create_dir(skill.join("assets")).unwrap();
    fs::hard_link(&secret, skill.join("assets/key")).unwrap();
    let err = load(&skill).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}/assets/key: the file has 2 hard links: a package's files may have no other name (copy it instead of linking it)",
            skill.display()
        )
    );
    // The same file copied instead of linked is accepted.
    fs::remove_file(skill.join("assets/key")).unwrap();
    fs::copy(&secret, skill.join("assets/key")).unwrap();
    assert!(load(&skill).is_ok());
}

#[test]
fn digest_ignores_nothing_that_matters() {
    let file = |relative: &str, contents: &[u8]| PackageEntry {
        relative: relative.to_owned(),
        kind: EntryKind::File {
            executable: false,
            contents: contents.to_vec(),
        },
    };
    let a = digest(&[file("a", b"bc")]);
    assert_eq!(a, digest(&[file("a", b"bc")]));
    assert_ne!(a, digest(&[file("ab", b"c")]));
    assert_ne!(a, digest(&[file("a", b"bd")]));
}

/// A skill folder with only a SKILL.md, and the temp dir holding it.
fn skill() -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let skill = work.path().join("skill");
    write(&skill.join(SKILL_MD), SKILL_MD_TEXT);
    (work, skill)
}

/// The error `load` gives for `skill`, with its path shortened to `<skill>`.
fn refusal(skill: &Path) -> String {
    let err = load(skill).expect_err("the package was accepted");
    err.to_string().replace(skill.to_str().unwrap(), "<skill>")
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[test]
fn a_directory_bomb_is_refused_at_the_first_directory_past_the_limit() {
    let (_work, skill) = skill();
    for i in 0..=MAX_DIRS {
        fs::create_dir(skill.join(format!("d{i:03}"))).unwrap();
    }
    // Sorted after the directories: reached only by a walk that goes on.
    mkfifo(&skill.join("zz-pipe"));
    assert_eq!(
        refusal(&skill),
        "<skill>/d100: the package has more than 100 directories"
    );
}

#[test]
fn a_huge_directory_is_refused_naming_it_without_reading_it_all() {
    let (_work, skill) = skill();
    fs::create_dir(skill.join("assets")).unwrap();
    for i in 0..2_000 {
        fs::create_dir(skill.join(format!("assets/d{i:04}"))).unwrap();
    }
    assert_eq!(
        refusal(&skill),
        "<skill>/assets: the package has more than 200 entries (files, directories, symlinks and others)"
    );
}

#[test]
fn nesting_deeper_than_the_limit_is_refused_naming_the_path() {
    let (_work, skill) = skill();
    let deepest = skill.join(vec!["a"; MAX_DEPTH + 1].join("/"));
    fs::create_dir_all(&deepest).unwrap();
    mkfifo(&skill.join("zz-pipe"));
    let expected = format!(
        "<skill>/{}: the package nests more than 16 levels deep",
        vec!["a"; MAX_DEPTH + 1].join("/")
    );
    assert_eq!(refusal(&skill), expected);
    // Exactly at the limit is fine.
    fs::remove_dir(&deepest).unwrap();
    fs::remove_file(skill.join("zz-pipe")).unwrap();
    assert!(load(&skill).is_ok());
}

#[test]
fn the_file_limit_names_the_first_file_past_it_and_walks_in_sorted_order() {
    let (_work, skill) = skill();
    for i in 0..MAX_FILES {
        write(&skill.join(format!("assets/f{i:03}.txt")), "x");
    }
    assert_eq!(
        refusal(&skill),
        "<skill>/assets/f099.txt: the package has more than 100 files"
    );
    fs::remove_file(skill.join("assets/f099.txt")).unwrap();
    let package = load(&skill).unwrap();
    let order: Vec<&str> = package
        .entries
        .iter()
        .map(|e| e.relative.as_str())
        .take(3)
        .collect();
    assert_eq!(order, ["SKILL.md", "assets", "assets/f000.txt"]);
}
