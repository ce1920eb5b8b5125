//! The harness itself: the node starts, containerd's CRI plugin answers
//! Version and knows both images, and its config raises no deprecation
//! warning on the containerd under test (config version 2 is what 1.6
//! reads and what 2.x still migrates).

use skillbox_cri_tests::images::{BUSYBOX_IMAGE, PAUSE_IMAGE};
use skillbox_cri_tests::{Node, OrFail};

#[test]
fn the_node_answers_version_and_has_both_images() {
    let node = Node::shared();
    let version = node.cri.version().or_fail(&node);
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");
    for image in [PAUSE_IMAGE, BUSYBOX_IMAGE] {
        let status = node.cri.image_status(image).or_fail(&node);
        let image = status.unwrap_or_else(|| panic!("ImageStatus: no {image}"));
        assert!(image.size > 0, "{image:?}");
    }
    let log = node.log();
    let deprecations: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("level=warn") && line.to_lowercase().contains("deprecat"))
        .collect();
    eprintln!(
        "cri-tests: {} config deprecations: {deprecations:#?}",
        node.version
    );
    assert!(deprecations.is_empty(), "{deprecations:#?}");
}
