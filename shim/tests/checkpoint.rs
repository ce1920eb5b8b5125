//! Checkpoint. Through containerd (`ctr task checkpoint`), which always asks
//! to leave the task running: refused with the reason, and the task goes
//! on. With `exit` (what containerd's runc options carry), driven on the
//! `Container` directly: `runsc checkpoint` writes its image and the
//! container stops with its exit reported.

mod common;

use std::sync::Mutex;

use common::containerd::*;

/// The `Container` test makes this process a subreaper that reaps any
/// child (as the shim does): the other test's `ctr` children must not run
/// meanwhile, or their status is taken from them.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn ctr_task_checkpoint_is_refused_with_the_reason_and_the_task_goes_on() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-io-checkpoint";
    let id = "cp-1";
    let bundle = compile_skill(work.path(), "cp", "while true; do sleep 0.1; done");
    let out = containerd.run_bundle(namespace, &bundle.join("config.json"), id, &["-d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Without --exit: refused, and the task still runs (containerd resumes
    // the task it paused for the checkpoint).
    let out = containerd.ctr(namespace, &["tasks", "checkpoint", id]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot checkpoint and leave it running"),
        "{stderr}"
    );
    assert!(stderr.contains("--exit"), "{stderr}");
    assert_eq!(task_status(&containerd, namespace, id), "RUNNING");

    // ctr 1.6 sends CheckpointOptions (--exit, --image-path) only to runc
    // runtimes: `--exit` does not reach this shim and is refused the same.
    let out = containerd.ctr(namespace, &["tasks", "checkpoint", "--exit", id]);
    assert!(!out.status.success());
    assert_eq!(task_status(&containerd, namespace, id), "RUNNING");
    kill_and_remove(&containerd, namespace, id);
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-cp");
}

#[test]
fn checkpoint_with_exit_writes_the_image_and_stops_the_container() {
    use policy_compiler::NodeConfig;
    use skillbox_shim::config::ShimConfig;
    use skillbox_shim::container::{Container, Status, StdioPaths};

    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let work = tempfile::tempdir().unwrap();
    let bundle = skillbox_test_support::compile_skill(work.path(), "cpexit", "  entrypoint: [sleep, '30']\n");
    let runsc_root = work.path().join("runsc");
    let container = Container::create(
        "cpexit-1",
        skillbox_sandbox::BundleSpec::load(&bundle).unwrap(),
        StdioPaths::default(),
        false,
        &runsc_root,
        &ShimConfig {
            node: NodeConfig::default(),
            origin: "the built-in defaults".to_owned(),
        },
        "skillbox-test-io-cpexit",
    )
    .unwrap();
    container.start().unwrap();
    // containerd pauses a task around its checkpoint: start from there.
    container.set_paused(true).unwrap();
    let image = work.path().join("image");
    let refused = container.checkpoint(&image, false).unwrap_err();
    assert!(refused.to_string().contains("leave it running"), "{refused}");
    container.checkpoint(&image, true).unwrap();
    let written = std::fs::metadata(image.join("checkpoint.img")).unwrap().len();
    assert!(written > 0, "empty checkpoint.img");
    let exit = tokio::runtime::Runtime::new().unwrap().block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(10), container.wait())
            .await
            .unwrap()
    });
    eprintln!("checkpoint.img: {written} bytes; exit status {}", exit.status);
    assert_eq!(container.status().0, Status::Stopped);
    container.delete().unwrap();
    let list = std::process::Command::new("runsc")
        .arg(format!("--root={}", runsc_root.display()))
        .args(["list", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(text(&list.stdout).trim(), "");
}
