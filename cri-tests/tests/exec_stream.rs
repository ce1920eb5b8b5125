//! The streaming Exec that `kubectl exec` uses: the CRI `Exec` call answers
//! with a URL on containerd's streaming server, and the harness opens the
//! session there with the remote-command protocol over WebSocket
//! (`skillbox_cri_tests::stream`): stdout, stderr and the exit code on the
//! error stream; a terminal, and its resize; stdin, and its closing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use skillbox_cri_tests::stream::{Output, Session};
use skillbox_cri_tests::{ContainerSpec, Handler, Node, OrFail, Pod};

/// How long any one step of a session may take.
const STEP: Duration = Duration::from_secs(20);

/// A container that runs until TERM.
const IDLE: &str = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.2; done";

/// A pod under `handler` with an idle container; returns it and the
/// container's id.
fn idle_pod(handler: Handler, name: &str) -> (Pod, String) {
    let node = Node::shared();
    let mut pod = Pod::run(&node, handler, &format!("{name}-{}", handler.name())).or_fail(&node);
    let id = pod.start(&ContainerSpec::sh("idle", IDLE)).or_fail(&node);
    pod.wait_log("idle", "ready", Duration::from_secs(20))
        .or_fail(&node);
    (pod, id)
}

/// Exec of `cmd` in container `id`, then the session at its URL.
fn open(node: &Arc<Node>, id: &str, cmd: &[&str], tty: bool, stdin: bool) -> Session {
    let url = node.cri.exec(id, cmd, tty, stdin).or_fail(node);
    Session::open(&url, &node.netns().path(), STEP).or_fail(node)
}

/// Without a terminal: stdout and stderr apart, the exit code on the error
/// stream.
fn exec_stream_output_and_exit_code(handler: Handler) {
    let (pod, id) = idle_pod(handler, "stream-out");
    let node = &pod.node;
    let started = Instant::now();
    let session = open(
        node,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        false,
        false,
    );
    let output = session.finish(STEP).or_fail(node);
    eprintln!(
        "cri-timing: {} streaming Exec, Exec to the session's end {:.3?}",
        handler.name(),
        started.elapsed()
    );
    assert_eq!(
        (output.stdout_text().as_str(), output.stderr_text().as_str()),
        ("out\n", "err\n"),
        "{output:?}"
    );
    assert_eq!(output.exit_code(), Ok(3), "{output:?}");

    let output = open(node, &id, &["true"], false, false)
        .finish(STEP)
        .or_fail(node);
    assert_eq!(output.exit_code(), Ok(0), "{output:?}");
    pod.finish();
}

#[test]
fn exec_stream_output_and_exit_code_runc() {
    exec_stream_output_and_exit_code(Handler::Runc);
}

#[test]
fn exec_stream_output_and_exit_code_skillbox() {
    exec_stream_output_and_exit_code(Handler::Skillbox);
}

/// The `rows columns` lines `stty size` printed so far.
fn sizes(output: &Output) -> Vec<(u16, u16)> {
    output
        .stdout_text()
        .lines()
        .filter_map(|line| {
            let (rows, columns) = line.trim().split_once(' ')?;
            Some((rows.parse().ok()?, columns.parse().ok()?))
        })
        .collect()
}

/// Sends a line to the terminal until `stty size` reports `rows columns`:
/// a resize and stdin travel apart (containerd's ResizePty, the console's
/// input), so the first line may still see the old size.
fn wait_for_size(session: &mut Session, node: &Node, rows: u16, columns: u16) {
    let deadline = Instant::now() + STEP;
    while !sizes(&session.output).contains(&(rows, columns)) {
        assert!(
            Instant::now() < deadline,
            "a resize to {columns}x{rows} never showed in `stty size`: {:?}",
            session.output.stdout_text()
        );
        session.stdin(b"\n").or_fail(node);
        let asked = session.output.stdout.len();
        let _ = session.wait_for("`stty size`", Duration::from_millis(300), |output| {
            output.stdout.len() > asked && output.stdout.ends_with(b"\n")
        });
    }
}

/// With a terminal: the command's stdin and stdout are a terminal (isatty)
/// with TERM set, and resize messages set the size `stty size` reports (a
/// new terminal has none: kubectl sends the first size at once); ^D ends the
/// input. `tty` cannot be asked for the terminal's name: under gVisor an
/// exec's terminal is the host's pty handed in as a host file
/// (`/proc/self/fd/0 -> host:[7]`), which no path inside names, so `tty`
/// says "not a tty" there (docs/runsc-facts.md).
fn exec_stream_tty_and_resize(handler: Handler) {
    let (pod, id) = idle_pod(handler, "stream-tty");
    let node = &pod.node;
    let script = "[ -t 0 ] && [ -t 1 ] && echo on-a-terminal; echo TERM=$TERM; \
                  while read line; do stty size; done; echo bye";
    let mut session = open(node, &id, &["sh", "-c", script], true, true);
    session.resize(80, 24).or_fail(node);
    session
        .wait_for("TERM", STEP, |output| output.stdout_text().contains("TERM="))
        .or_fail(node);
    let text = session.output.stdout_text();
    assert!(
        text.lines().any(|line| line.trim() == "on-a-terminal"),
        "stdin and stdout are not a terminal: {text:?}"
    );
    assert!(
        text.lines().any(|line| line.trim() == "TERM=xterm"),
        "no TERM=xterm: {text:?}"
    );
    wait_for_size(&mut session, node, 24, 80);
    session.resize(123, 45).or_fail(node);
    wait_for_size(&mut session, node, 45, 123);
    // ^D at the start of a line: end of input for `read`.
    session.stdin(b"\x04").or_fail(node);
    let output = session.finish(STEP).or_fail(node);
    assert!(output.stdout_text().contains("bye"), "{output:?}");
    assert_eq!(output.exit_code(), Ok(0), "{output:?}");
    pod.finish();
}

#[test]
fn exec_stream_tty_and_resize_runc() {
    exec_stream_tty_and_resize(Handler::Runc);
}

#[test]
fn exec_stream_tty_and_resize_skillbox() {
    exec_stream_tty_and_resize(Handler::Skillbox);
}

/// Lists the names of the container's processes using shell builtins only
/// (no process of its own to count).
const PROCESS_NAMES: &str = "for p in /proc/[0-9]*; do read -r n < $p/comm && echo $n; done";

/// Whether container `id` runs a process named `name` (ExecSync).
fn runs(node: &Node, id: &str, name: &str) -> bool {
    let result = node
        .cri
        .exec_sync(id, &["sh", "-c", PROCESS_NAMES], 10)
        .or_fail(node);
    String::from_utf8_lossy(&result.stdout)
        .lines()
        .any(|line| line == name)
}

/// stdin reaches the command (`cat` echoes a line back), and closing the
/// session closes it: `cat` sees its end and exits.
fn exec_stream_stdin(handler: Handler) {
    let (pod, id) = idle_pod(handler, "stream-stdin");
    let node = &pod.node;
    let mut session = open(node, &id, &["cat"], false, true);
    session.stdin(b"hello through stdin\n").or_fail(node);
    session
        .wait_for("cat's echo", STEP, |output| {
            output.stdout_text() == "hello through stdin\n"
        })
        .or_fail(node);
    assert!(runs(node, &id, "cat"), "no cat among the container's processes");

    session.close(STEP).or_fail(node);
    let deadline = Instant::now() + STEP;
    while runs(node, &id, "cat") {
        assert!(
            Instant::now() < deadline,
            "cat still runs {STEP:?} after the session (its stdin) was closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pod.finish();
}

#[test]
fn exec_stream_stdin_runc() {
    exec_stream_stdin(Handler::Runc);
}

#[test]
fn exec_stream_stdin_skillbox() {
    exec_stream_stdin(Handler::Skillbox);
}
