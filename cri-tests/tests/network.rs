//! The pod's network through CNI: the pod IP answers from the node (the
//! harness's network namespace, where containerd and the CNI bridge live),
//! and the containers of one pod share localhost.

use std::time::{Duration, Instant};

use skillbox_cri_tests::{ContainerSpec, Handler, Node, OrFail, Pod};

const EXIT_LIMIT: Duration = Duration::from_secs(30);

fn run_pod(handler: Handler, name: &str) -> Pod {
    let node = Node::shared();
    let pod = Pod::run(&node, handler, name).or_fail(&node);
    eprintln!(
        "cri-timing: {} RunPodSandbox {:.3?} (pod {name}, ip {})",
        handler.name(),
        pod.run_time,
        pod.ip
    );
    pod
}

/// An HTTP GET of `url` from the node's network namespace, retried for up
/// to `limit`; the body, or the last error.
fn fetch_from_node(node: &Node, url: &str, limit: Duration) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let output = node
            .netns()
            .command(&[
                "busybox", "timeout", "5", "busybox", "wget", "-q", "-T", "3", "-O", "-", url,
            ])
            .output()
            .map_err(|err| format!("running wget in the node's netns: {err}"))?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "GET {url} from the node failed for {limit:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A server in the app container answers on the pod IP.
fn pod_ip_answers(handler: Handler) {
    let mut pod = run_pod(handler, &format!("ip-{}", handler.name()));
    assert!(
        pod.ip.starts_with("10.88."),
        "pod IP {:?} not from the CNI subnet",
        pod.ip
    );
    let script = "echo served-by-$(hostname) > /scratch/index.html; exec httpd -f -p 8080 -h /scratch";
    pod.start(&ContainerSpec::sh("web", script)).or_fail(&pod.node);
    let body = fetch_from_node(
        &pod.node,
        &format!("http://{}:8080/", pod.ip),
        Duration::from_secs(20),
    )
    .or_fail(&pod.node);
    assert_eq!(body, format!("served-by-{}\n", pod.name));
    let node = pod.node.clone();
    pod.teardown().or_fail(&node);
}

#[test]
fn pod_ip_answers_runc() {
    pod_ip_answers(Handler::Runc);
}

#[test]
fn pod_ip_answers_skillbox() {
    pod_ip_answers(Handler::Skillbox);
}

/// Two containers of one pod: a client reaches the other's server on
/// 127.0.0.1.
fn containers_share_localhost(handler: Handler) {
    let mut pod = run_pod(handler, &format!("localhost-{}", handler.name()));
    let server = "mkdir -p /scratch/www && echo over-localhost > /scratch/www/index.html; \
                  exec httpd -f -p 8081 -h /scratch/www";
    pod.start(&ContainerSpec::sh("server", server)).or_fail(&pod.node);
    let client =
        "for i in $(seq 100); do wget -q -T 2 -O - http://127.0.0.1:8081/ && exit 0; sleep 0.2; done; exit 1";
    let id = pod.start(&ContainerSpec::sh("client", client)).or_fail(&pod.node);
    let exit = pod.wait_exit(&id, EXIT_LIMIT).or_fail(&pod.node);
    let log = pod.log_text("client");
    assert_eq!(exit.code, 0, "{exit:?}; client log {log:?}");
    assert!(log.iter().any(|line| line == "over-localhost"), "{log:?}");
    let node = pod.node.clone();
    pod.teardown().or_fail(&node);
}

#[test]
fn containers_share_localhost_runc() {
    containers_share_localhost(Handler::Runc);
}

#[test]
fn containers_share_localhost_skillbox() {
    containers_share_localhost(Handler::Skillbox);
}
