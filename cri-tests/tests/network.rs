//! The pod's network through CNI: the pod IP answers from the node (the
//! harness's network namespace, where containerd and the CNI bridge live),
//! and the containers of one pod share localhost. HTTP requests are written
//! with `nc`: Debian's static busybox `wget` crashes.

use std::time::{Duration, Instant};

use skillbox_cri_tests::{ContainerSpec, Handler, Node, OrFail, Pod};

const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// A shell command printing an HTTP/1.0 GET of `/`, to pipe into `nc`.
const GET: &str = r"printf 'GET / HTTP/1.0\r\n\r\n'";

/// An HTTP GET of `/` on `ip`:`port` from the node's network namespace,
/// retried for up to `limit`; the body, or the last answer.
fn fetch_from_node(node: &Node, ip: &str, port: u16, limit: Duration) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    let script = format!("{GET} | busybox timeout 5 busybox nc -w 3 {ip} {port}");
    loop {
        let output = node
            .netns()
            .command(&["sh", "-c", &script])
            .output()
            .map_err(|err| format!("running nc in the node's netns: {err}"))?;
        let response = String::from_utf8_lossy(&output.stdout).into_owned();
        if let Some((_, body)) = response.split_once("\r\n\r\n") {
            return Ok(body.to_owned());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "GET http://{ip}:{port}/ from the node got no HTTP answer for {limit:?}: {} {response:?}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A server in the app container answers on the pod IP.
fn pod_ip_answers(handler: Handler) {
    let mut pod = Pod::run_on_shared_node(handler, &format!("ip-{}", handler.name()));
    assert!(
        pod.ip.starts_with("10.88."),
        "pod IP {:?} not from the CNI subnet",
        pod.ip
    );
    let script = "echo served-by-$(hostname) > /scratch/index.html; exec httpd -f -p 8080 -h /scratch";
    pod.start(&ContainerSpec::sh("web", script)).or_fail(&pod.node);
    let body = fetch_from_node(&pod.node, &pod.ip, 8080, Duration::from_secs(20)).or_fail(&pod.node);
    assert_eq!(body, format!("served-by-{}\n", pod.name));
    pod.finish();
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
    let mut pod = Pod::run_on_shared_node(handler, &format!("localhost-{}", handler.name()));
    let server = "mkdir -p /scratch/www && echo over-localhost > /scratch/www/index.html; \
                  exec httpd -f -p 8081 -h /scratch/www";
    pod.start(&ContainerSpec::sh("server", server)).or_fail(&pod.node);
    let client = format!(
        "for i in $(seq 100); do {GET} | nc -w 2 127.0.0.1 8081 | grep -x over-localhost && exit 0; \
         sleep 0.2; done; exit 1"
    );
    let id = pod
        .start(&ContainerSpec::sh("client", &client))
        .or_fail(&pod.node);
    let exit = pod.wait_exit(&id, EXIT_LIMIT).or_fail(&pod.node);
    let log = pod.log_text("client");
    assert_eq!(exit.code, 0, "{exit:?}; client log {log:?}");
    assert!(log.iter().any(|line| line == "over-localhost"), "{log:?}");
    pod.finish();
}

#[test]
fn containers_share_localhost_runc() {
    containers_share_localhost(Handler::Runc);
}

#[test]
fn containers_share_localhost_skillbox() {
    containers_share_localhost(Handler::Skillbox);
}
