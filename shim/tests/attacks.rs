//! The adversarial corpus through containerd and the shim: every hostile
//! skill of `skillbox_test_support::attacks`, compiled and run with `ctr
//! run`, must report that the sandbox held, and leave nothing behind.

mod common;

use common::containerd::*;
use skillbox_test_support::attacks::{full_script, verdict, PlantedSecret, ATTACKS};
use skillbox_test_support::{compile_bundle, Skill};

#[test]
fn every_attack_of_the_corpus_is_held_by_the_shim() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-attacks";
    let secret = PlantedSecret::plant();
    let mut failures = Vec::new();
    for attack in ATTACKS {
        // A compiled bundle takes no arguments at run time: the secret's
        // path is set in the script.
        let script = format!("set -- {}\n{}", secret.path(), full_script(attack));
        let skill = Skill::sh(attack.name, attack.policy, &script);
        let bundle = work.path().join(attack.name);
        let cgroup = format!("/skillbox-test-{}", attack.name);
        compile_bundle(skill.path(), &bundle, &cgroup);
        let id = format!("{}-1", attack.name);
        let out = containerd.run_bundle(namespace, &bundle.join("config.json"), &id, &["--rm"]);
        if let Err(failure) = verdict(attack, &text(&out.stdout)) {
            failures.push(format!("{failure}\nstderr: {}", text(&out.stderr)));
        }
        assert_nothing_left(&containerd, namespace, &id, &cgroup);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
