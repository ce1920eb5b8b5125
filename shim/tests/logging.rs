//! Container output through containerd's log URIs: a `binary://` logger
//! (`ctr run --log-uri binary:///path?k=v`) gets every line of both
//! streams, its environment names the container, and it is gone after the
//! container.

mod common;

use common::containerd::*;

/// A logger in shell: copies fd 3 and fd 4 to files, records its
/// arguments and environment, and signals readiness by closing fd 5 (the
/// copies started in the background must not keep fd 5 open).
fn write_logger(dir: &std::path::Path) -> std::path::PathBuf {
    let logger = dir.join("skillbox-test-logger.sh");
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\n\
             out={0}\n\
             env > $out/env\n\
             echo \"$@\" > $out/args\n\
             cat <&3 > $out/stdout 5>&- &\n\
             cat <&4 > $out/stderr 5>&- &\n\
             exec 5>&-\n\
             wait\n\
             echo done > $out/finished\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    logger
}

#[test]
fn a_binary_logger_receives_both_streams_completely_and_is_gone_after() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-io-binary";
    let id = "logged-1";
    let logger = write_logger(work.path());

    // 1000 numbered lines, stderr interleaved, and a last line of each
    // stream written just before the skill exits.
    let bundle = compile_skill(
        work.path(),
        "logged",
        "i=1; while [ $i -le 1000 ]; do echo out-$i; [ $((i % 100)) -eq 0 ] && echo err-$i >&2; i=$((i+1)); done; echo err-last >&2; echo out-last",
    );
    let uri = format!("binary://{}?--level=info&-v", logger.display());
    let out = containerd.run_bundle(
        namespace,
        &bundle.join("config.json"),
        id,
        &["--rm", "--log-uri", &uri],
    );
    assert!(
        out.status.success(),
        "ctr run failed: {}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    // Nothing went to ctr itself.
    assert_eq!(text(&out.stdout), "");

    let read = |name: &str| std::fs::read_to_string(work.path().join(name)).unwrap_or_default();
    let stdout = read("stdout");
    let mut expected: Vec<String> = (1..=1000).map(|i| format!("out-{i}")).collect();
    expected.push("out-last".to_owned());
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected, "stdout incomplete");
    let mut expected: Vec<String> = (1..=10).map(|i| format!("err-{}", i * 100)).collect();
    expected.push("err-last".to_owned());
    assert_eq!(
        read("stderr").lines().collect::<Vec<_>>(),
        expected,
        "stderr incomplete"
    );

    let env = read("env");
    assert!(
        env.lines().any(|line| line == format!("CONTAINER_ID={id}")),
        "{env}"
    );
    assert!(
        env.lines()
            .any(|line| line == format!("CONTAINER_NAMESPACE={namespace}")),
        "{env}"
    );
    // containerd's contract: no other environment is passed on.
    assert!(
        !env.lines().any(|line| line.starts_with("TTRPC_ADDRESS=")),
        "{env}"
    );
    assert_eq!(read("args").trim(), "--level info -v");
    // It exited on its own after reading both streams to the end.
    assert_eq!(read("finished").trim(), "done");

    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-logged");
    let loggers: Vec<_> = processes()
        .into_iter()
        .filter(|(_, args)| args.iter().any(|arg| arg.contains("skillbox-test-logger.sh")))
        .collect();
    assert!(loggers.is_empty(), "logger left running: {loggers:?}");
}

#[test]
fn a_logger_that_is_not_executable_fails_create_and_leaves_nothing() {
    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let namespace = "skillbox-test-io-badlogger";
    let id = "badlog-1";
    let bundle = compile_skill(work.path(), "badlog", "echo never");
    let uri = format!("binary://{}/no-such-logger", work.path().display());
    let out = containerd.run_bundle(
        namespace,
        &bundle.join("config.json"),
        id,
        &["--rm", "--log-uri", &uri],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot start the logger"), "{stderr}");
    // `ctr run --rm` does not remove a container whose task failed to create.
    let _ = containerd.ctr(namespace, &["containers", "delete", id]);
    assert_no_leftovers(&containerd, namespace, id, "/skillbox-test-badlog");
}
