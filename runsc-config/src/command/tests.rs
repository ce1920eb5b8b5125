//! Golden tests: the exact argv for every subcommand. If one of these changes,
//! the runsc command line skillbox produces has changed.

use std::ffi::OsString;
#[cfg(unix)]
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use super::*;
use crate::flags::{NetworkMode, Platform};

fn plain() -> GlobalOptions {
    GlobalOptions::new("/run/skillbox/runsc")
}

fn render(sub: Subcommand) -> Vec<String> {
    render_with(&plain(), &RunscFlags::default(), sub)
}

fn render_with(global: &GlobalOptions, flags: &RunscFlags, sub: Subcommand) -> Vec<String> {
    argv(global, flags, &sub)
        .into_iter()
        .map(|a| a.into_string().expect("test argv is UTF-8"))
        .collect()
}

/// Prefix every golden vector shares with the default options.
const PRE: [&str; 3] = [
    "--root=/run/skillbox/runsc",
    "--network=none",
    "--platform=ptrace",
];

fn expect(tail: &[&str]) -> Vec<String> {
    PRE.iter().chain(tail).map(|s| s.to_string()).collect()
}

#[test]
fn all_global_options_come_first_in_fixed_order() {
    let global = GlobalOptions {
        root: "/r".into(),
        log: Some("/l/runsc.log".into()),
        log_format_json: true,
        debug_log: Some("/d".into()),
        debug: true,
        panic_log: Some("/l/panic.log".into()),
        pod_init_config: Some("/a/session.json".into()),
    };
    let flags = RunscFlags {
        network: NetworkMode::Sandbox,
        platform: Platform::Systrap,
        overlay: true,
    };
    assert_eq!(
        render_with(&global, &flags, Subcommand::State { id: "c1".into() }),
        [
            "--root=/r",
            "--log=/l/runsc.log",
            "--log-format=json",
            "--debug-log=/d/",
            "--debug",
            "--panic-log=/l/panic.log",
            "--pod-init-config=/a/session.json",
            "--network=sandbox",
            "--platform=systrap",
            "--overlay",
            "state",
            "c1",
        ]
    );
}

#[test]
fn debug_log_trailing_slash_not_doubled() {
    let global = GlobalOptions {
        debug_log: Some("/d/".into()),
        ..GlobalOptions::new("/r")
    };
    let args = render_with(&global, &RunscFlags::default(), Subcommand::List);
    assert_eq!(args[1], "--debug-log=/d/");
}

#[test]
fn run_minimal() {
    let sub = Subcommand::Run {
        bundle: "/b".into(),
        id: "sk-1".into(),
        detach: false,
        pid_file: None,
    };
    assert_eq!(render(sub), expect(&["run", "--bundle=/b", "sk-1"]));
}

#[test]
fn run_full() {
    let sub = Subcommand::Run {
        bundle: "/b".into(),
        id: "sk-1".into(),
        detach: true,
        pid_file: Some("/p/pid".into()),
    };
    assert_eq!(
        render(sub),
        expect(&["run", "--bundle=/b", "--detach", "--pid-file=/p/pid", "sk-1"])
    );
}

#[test]
fn create_minimal() {
    let sub = Subcommand::Create {
        bundle: "/b".into(),
        id: "sk-1".into(),
        pid_file: None,
        console_socket: None,
    };
    assert_eq!(render(sub), expect(&["create", "--bundle=/b", "sk-1"]));
}

#[test]
fn create_full() {
    let sub = Subcommand::Create {
        bundle: "/b".into(),
        id: "sk-1".into(),
        pid_file: Some("/p/pid".into()),
        console_socket: Some("/s/tty.sock".into()),
    };
    assert_eq!(
        render(sub),
        expect(&[
            "create",
            "--bundle=/b",
            "--pid-file=/p/pid",
            "--console-socket=/s/tty.sock",
            "sk-1",
        ])
    );
}

#[test]
fn id_only_subcommands() {
    let cases = [
        (Subcommand::Start { id: "x".into() }, "start"),
        (Subcommand::State { id: "x".into() }, "state"),
        (Subcommand::Wait { id: "x".into() }, "wait"),
        (Subcommand::Pause { id: "x".into() }, "pause"),
        (Subcommand::Resume { id: "x".into() }, "resume"),
    ];
    for (sub, word) in cases {
        assert_eq!(render(sub), expect(&[word, "x"]));
    }
}

#[test]
fn kill_signal_follows_id() {
    let sub = Subcommand::Kill {
        id: "x".into(),
        signal: 15,
        all: false,
    };
    assert_eq!(render(sub), expect(&["kill", "x", "15"]));
}

#[test]
fn kill_all() {
    let sub = Subcommand::Kill {
        id: "x".into(),
        signal: 9,
        all: true,
    };
    assert_eq!(render(sub), expect(&["kill", "--all", "x", "9"]));
}

#[test]
fn kill_one_process_names_its_sandbox_pid() {
    let sub = Subcommand::KillProcess {
        id: "x".into(),
        pid: 7,
        signal: 2,
    };
    assert_eq!(render(sub), expect(&["kill", "--pid=7", "x", "2"]));
}

#[test]
fn exec_has_both_pid_files_and_is_detached_only_when_asked() {
    let sub = |console_socket: Option<&str>, detach: bool| Subcommand::Exec {
        id: "x".into(),
        process: "/b/p.json".into(),
        pid_file: "/b/p.pid".into(),
        internal_pid_file: "/b/p.ipid".into(),
        console_socket: console_socket.map(Into::into),
        detach,
    };
    let files = [
        "--process=/b/p.json",
        "--pid-file=/b/p.pid",
        "--internal-pid-file=/b/p.ipid",
    ];
    let args = |detach: &[&str], extra: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(detach);
        args.extend_from_slice(&files);
        args.extend_from_slice(extra);
        args.push("x");
        expect(&args)
    };
    assert_eq!(render(sub(None, false)), args(&[], &[]));
    assert_eq!(
        render(sub(Some("/s.sock"), true)),
        args(&["--detach"], &["--console-socket=/s.sock"])
    );
}

#[test]
fn delete_with_and_without_force() {
    let plain = Subcommand::Delete {
        id: "x".into(),
        force: false,
    };
    assert_eq!(render(plain), expect(&["delete", "x"]));
    let forced = Subcommand::Delete {
        id: "x".into(),
        force: true,
    };
    assert_eq!(render(forced), expect(&["delete", "--force", "x"]));
}

#[test]
fn events_with_and_without_stats() {
    let plain = Subcommand::Events {
        id: "x".into(),
        stats: false,
    };
    assert_eq!(render(plain), expect(&["events", "x"]));
    let stats = Subcommand::Events {
        id: "x".into(),
        stats: true,
    };
    assert_eq!(render(stats), expect(&["events", "--stats", "x"]));
}

#[test]
fn ps_with_and_without_json() {
    let plain = Subcommand::Ps {
        id: "x".into(),
        json: false,
    };
    assert_eq!(render(plain), expect(&["ps", "x"]));
    let json = Subcommand::Ps {
        id: "x".into(),
        json: true,
    };
    assert_eq!(render(json), expect(&["ps", "--format=json", "x"]));
}

#[test]
fn checkpoint_stops_or_leaves_running() {
    let stop = Subcommand::Checkpoint {
        id: "x".into(),
        image_path: PathBuf::from("/var/cp"),
        leave_running: false,
    };
    assert_eq!(render(stop), expect(&["checkpoint", "--image-path=/var/cp", "x"]));
    let keep = Subcommand::Checkpoint {
        id: "x".into(),
        image_path: PathBuf::from("/var/cp"),
        leave_running: true,
    };
    assert_eq!(
        render(keep),
        expect(&["checkpoint", "--image-path=/var/cp", "--leave-running", "x"])
    );
}

#[test]
fn list_has_no_id() {
    assert_eq!(render(Subcommand::List), expect(&["list"]));
}

#[test]
fn id_accessor() {
    assert_eq!(Subcommand::List.id(), None);
    let sub = Subcommand::Kill {
        id: "abc".into(),
        signal: 2,
        all: false,
    };
    assert_eq!(sub.id(), Some("abc"));
    let sub = Subcommand::Run {
        bundle: PathBuf::from("/b"),
        id: "run-id".into(),
        detach: true,
        pid_file: None,
    };
    assert_eq!(sub.id(), Some("run-id"));
}

#[cfg(unix)]
#[test]
fn non_utf8_paths_pass_through_unchanged() {
    let bundle = PathBuf::from(OsString::from_vec(b"/b\xffz".to_vec()));
    let sub = Subcommand::Run {
        bundle,
        id: "x".into(),
        detach: false,
        pid_file: None,
    };
    let args = argv(&plain(), &RunscFlags::default(), &sub);
    assert_eq!(args[4].clone().into_vec(), b"--bundle=/b\xffz".to_vec());
}
