//! Skill images as the registry builds them (`skillbox image build`), run
//! as pods: under the `skillbox` handler the image's own `/skill/SKILL.md`
//! is the policy (user, writable directories, timeout, identity in the
//! audit log) and a policy above the node's ceiling fails the container,
//! naming why (containerd's CRI plugin creates the task, so the shim sees
//! the container, at StartContainer); under `runc` (the control) the same
//! image just runs.

use std::time::Duration;

use skillbox_cri_tests::images::{GREEDY_SKILL_IMAGE, SKILL_IMAGE};
use skillbox_cri_tests::{ContainerSpec, Handler, OrFail, Pod};

/// A container of `image` running its own entrypoint.
fn from_image(name: &str, image: &str) -> ContainerSpec {
    ContainerSpec {
        image: image.to_owned(),
        command: Vec::new(),
        ..ContainerSpec::sh(name, "")
    }
}

#[test]
fn a_skill_image_runs_under_its_own_policy_skillbox() {
    let mut pod = Pod::run_on_shared_node(Handler::Skillbox, "skill-skillbox");
    let id = pod.start(&from_image("skill", SKILL_IMAGE)).or_fail(&pod.node);
    // The policy's 2 s timeout ends it long before its `sleep 30`.
    let exit = pod.wait_exit(&id, Duration::from_secs(20)).or_fail(&pod.node);
    let log = pod.log_text("skill");
    assert_eq!(
        (exit.code, exit.reason.as_str()),
        (124, "Error"),
        "{exit:?}; log {log:?}"
    );
    for line in ["uid=65534", "out-ok", "write-ok", "skill-read-only", "ready"] {
        assert!(log.iter().any(|l| l == line), "no {line:?} in {log:?}");
    }
    // kubelet shows the termination message as the container's message.
    let message = std::fs::read_to_string(pod.termination_log("skill")).unwrap_or_default();
    assert!(
        message.contains("resources.timeout") && message.contains("124"),
        "termination message {message:?}"
    );
    // The audit trail names the skill the image holds.
    let audit = std::fs::read_to_string(pod.node.audit_log(&id)).unwrap_or_default();
    let start = audit
        .lines()
        .find(|line| line.contains("\"start\""))
        .unwrap_or_else(|| panic!("no start event in the audit log {audit:?}"));
    assert!(
        start.contains("\"timed-skill\"") && start.contains("sha256:"),
        "{start}"
    );
    assert!(audit.lines().any(|line| line.contains("\"timeout\"")), "{audit}");
    pod.finish();
}

#[test]
fn a_skill_image_runs_under_its_own_policy_runc() {
    // The control: the image is an ordinary image whose entrypoint runs as
    // its user; nothing enforces the skill's policy.
    let mut pod = Pod::run_on_shared_node(Handler::Runc, "skill-runc");
    pod.start(&from_image("skill", SKILL_IMAGE)).or_fail(&pod.node);
    pod.wait_log("skill", "ready", Duration::from_secs(20))
        .or_fail(&pod.node);
    let log = pod.log_text("skill");
    assert!(log.iter().any(|l| l == "uid=65534"), "{log:?}");
    assert!(!log.iter().any(|l| l == "out-ok"), "runc made /out: {log:?}");
    pod.finish();
}

#[test]
fn a_skill_above_the_ceiling_fails_to_start_naming_why_skillbox() {
    let mut pod = Pod::run_on_shared_node(Handler::Skillbox, "greedy-skillbox");
    let err = pod
        .start(&from_image("greedy", GREEDY_SKILL_IMAGE))
        .expect_err("a skill above the ceiling started")
        .to_string();
    assert!(
        err.contains("resources.memory") && err.contains("4Gi") && err.contains("2Gi"),
        "{err}"
    );
    // The pod goes on: another container still runs in it.
    let id = pod
        .start(&ContainerSpec::sh("after", "echo still-here"))
        .or_fail(&pod.node);
    let exit = pod.wait_exit(&id, Duration::from_secs(20)).or_fail(&pod.node);
    assert_eq!(exit.code, 0, "{exit:?}");
    pod.finish();
}
