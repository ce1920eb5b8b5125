//! Decoder tests: messages encoded with prost, packets captured from runsc
//! 20221219, and malformed input.

use prost::Message;
use rand::{Rng, SeedableRng};

use super::decode::*;
use super::proto::{self, ContextData, SyscallExit};
use super::wire::{frame, MAX_MESSAGE_BYTES};
use super::{limits, sysno};
use crate::{AuditEvent, Error, Task};

fn context(tgid: i32, tid: i32, process: &str) -> Option<ContextData> {
    Some(ContextData {
        thread_id: tid,
        thread_group_id: tgid,
        container_id: b"box-1".to_vec(),
        process_name: process.as_bytes().to_vec(),
    })
}

fn task(pid: u32, tid: u32, process: &str) -> Task {
    Task {
        pid: Some(pid),
        tid: Some(tid),
        process: Some(process.to_owned()),
    }
}

fn event(packet: &[u8]) -> AuditEvent {
    match decode(packet).unwrap().body {
        Body::Event { event, container_id } => {
            assert_eq!(container_id.as_deref(), Some("box-1"));
            event
        }
        Body::Unknown => panic!("unknown"),
    }
}

#[test]
fn exec_keeps_argv_and_only_environment_names() {
    let message = proto::ExecveInfo {
        context_data: context(3, 3, "sh"),
        binary_path: b"/bin/busybox".to_vec(),
        argv: vec![b"nc".to_vec(), b"127.0.0.1".to_vec()],
        env: vec![b"PATH=/bin".to_vec(), b"TOKEN=s3cr3t".to_vec()],
    };
    let packet = frame(SENTRY_EXEC, 0, &message.encode_to_vec());
    let event = event(&packet);
    assert_eq!(
        event,
        AuditEvent::Exec {
            task: task(3, 3, "sh"),
            path: "/bin/busybox".to_owned(),
            argv: vec!["nc".to_owned(), "127.0.0.1".to_owned()],
            env_names: vec!["PATH".to_owned(), "TOKEN".to_owned()],
        }
    );
    assert!(!serde_json::to_string(&event).unwrap().contains("s3cr3t"));
}

#[test]
fn opens_report_write_intent_and_the_callers_result() {
    let open = |flags, exit| proto::Open {
        context_data: context(1, 1, "sh"),
        exit,
        sysno: 257,
        pathname: b"/tmp/x".to_vec(),
        flags,
        mode: 0o666,
    };
    let write = open(
        0o1101,
        Some(SyscallExit {
            result: 3,
            errorno: 0,
        }),
    );
    match event(&frame(SYSCALL_OPEN, 0, &write.encode_to_vec())) {
        AuditEvent::FileOpen {
            write,
            result,
            mode,
            path,
            ..
        } => {
            assert!(write);
            assert_eq!((result, mode, path.as_str()), (Some(3), Some(0o666), "/tmp/x"));
        }
        other => panic!("{other:?}"),
    }
    let failed_read = open(
        0,
        Some(SyscallExit {
            result: 0,
            errorno: 2,
        }),
    );
    match event(&frame(SYSCALL_OPEN, 0, &failed_read.encode_to_vec())) {
        AuditEvent::FileOpen {
            write, result, mode, ..
        } => {
            assert!(!write);
            assert_eq!((result, mode), (Some(-2), None));
        }
        other => panic!("{other:?}"),
    }
}

/// A connect packet exactly as runsc 20221219 sent it for `nc 127.0.0.1 9`
/// (refused: errno 111).
#[test]
fn a_captured_connect_packet() {
    let packet = hex("08000a00000000000a1010032003320670726f6265314a026e631202106f182a20033210020000097f0000010000000000000000");
    let decoded = decode(&packet).unwrap();
    assert_eq!(decoded.header.dropped_count, 0);
    assert_eq!(
        decoded.body,
        Body::Event {
            event: AuditEvent::Connect {
                task: task(3, 3, "nc"),
                address: "127.0.0.1".to_owned(),
                port: Some(9),
                result: Some(-111),
            },
            container_id: Some("probe1".to_owned()),
        }
    );
}

/// A raw `syscall/sysno/50/exit` packet as runsc 20221219 sent it: no
/// context (see `config`), listen(3, 1) returning 0.
#[test]
fn a_captured_raw_listen_packet() {
    let packet = hex("0800060000000000120020322803300138ed0b40e9abe19fcffb988f6848075090aefb02");
    let decoded = decode(&packet).unwrap();
    assert_eq!(
        decoded.body,
        Body::Event {
            event: AuditEvent::Listen {
                task: Task::default(),
                fd: 3,
                backlog: 1,
                result: Some(0),
            },
            container_id: None,
        }
    );
}

#[test]
fn other_typed_and_raw_syscalls_are_generic_events() {
    let setuid = proto::SyscallCommon {
        context_data: context(4, 5, "su"),
        exit: Some(SyscallExit {
            result: 0,
            errorno: 1,
        }),
        sysno: 105,
    };
    assert_eq!(
        event(&frame(14, 0, &setuid.encode_to_vec())),
        AuditEvent::Syscall {
            task: task(4, 5, "su"),
            name: "setuid".to_owned(),
            sysno: 105,
            result: Some(-1),
        }
    );
    let raw = proto::RawSyscall {
        context_data: context(4, 4, "sh"),
        exit: None,
        sysno: 999,
        arg1: 0,
        arg2: 0,
        arg3: 0,
    };
    match event(&frame(SYSCALL_RAW, 0, &raw.encode_to_vec())) {
        AuditEvent::Syscall { name, result, .. } => assert_eq!((name.as_str(), result), ("sysno_999", None)),
        other => panic!("{other:?}"),
    }
    assert_eq!(sysno::name(105), Some("setuid"));
}

#[test]
fn unknown_types_are_not_errors() {
    assert_eq!(
        decode(&frame(LAST_KNOWN + 1, 7, b"\xff\xff")).unwrap().body,
        Body::Unknown
    );
    assert_eq!(decode(&frame(0, 0, b"")).unwrap().body, Body::Unknown);
}

#[test]
fn long_fields_are_truncated_to_their_limits() {
    let message = proto::ExecveInfo {
        context_data: context(1, 1, &"p".repeat(1000)),
        binary_path: vec![b'a'; 10_000],
        argv: std::iter::once(vec![b'x'; 5000])
            .chain(vec![b"y".to_vec(); 299])
            .collect(),
        env: vec![b"A=1".to_vec(); 300],
    };
    let packet = frame(SENTRY_EXEC, 0, &message.encode_to_vec());
    assert!(packet.len() < MAX_MESSAGE_BYTES);
    match event(&packet) {
        AuditEvent::Exec {
            task,
            path,
            argv,
            env_names,
        } => {
            assert_eq!(path.len(), limits::MAX_PATH_BYTES);
            assert_eq!(argv.len(), limits::MAX_ARGS);
            assert_eq!(argv[0].len(), limits::MAX_ARG_BYTES);
            assert_eq!(env_names.len(), limits::MAX_ENV_NAMES);
            assert_eq!(task.process.unwrap().len(), limits::MAX_NAME_BYTES);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_and_garbage_payloads_are_errors() {
    let message = proto::Open {
        context_data: context(1, 1, "sh"),
        exit: None,
        sysno: 2,
        pathname: b"/etc/passwd".to_vec(),
        flags: 0,
        mode: 0,
    };
    let packet = frame(SYSCALL_OPEN, 0, &message.encode_to_vec());
    for cut in 9..packet.len() {
        // Cutting inside a length-delimited field is an error; cutting
        // between fields is a shorter valid message. Neither panics.
        if let Err(error) = decode(&packet[..cut]) {
            assert!(
                matches!(error, Error::Protobuf { message_type: 7, .. }),
                "{error}"
            );
        }
    }
    assert!(decode(&frame(SYSCALL_OPEN, 0, &[0x32, 0xff, 0xff, 0xff, 0xff, 0x0f])).is_err());
    assert!(decode(&[1, 2, 3]).is_err());
}

/// Stable-Rust stand-in for the fuzz target: random packets and random
/// mutations of valid ones never panic.
#[test]
fn random_and_mutated_packets_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let seeds: Vec<Vec<u8>> = super::decode::seed_packets();
    for _ in 0..20_000 {
        let mut packet = if rng.random_bool(0.3) {
            let len = rng.random_range(0..200);
            (0..len).map(|_| rng.random()).collect()
        } else {
            seeds[rng.random_range(0..seeds.len())].clone()
        };
        for _ in 0..rng.random_range(1..6) {
            if packet.is_empty() {
                break;
            }
            let at = rng.random_range(0..packet.len());
            match rng.random_range(0..3) {
                0 => packet[at] = rng.random(),
                1 => packet.truncate(at),
                _ => packet.insert(at, rng.random()),
            }
        }
        if packet.len() >= 4 && rng.random_bool(0.5) {
            // Keep the message type meaningful more often than chance.
            packet[2] = rng.random_range(0..40);
            packet[3] = 0;
        }
        let _ = decode(&packet);
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Writes the fuzz seeds (`SKILLBOX_WRITE_FUZZ_SEEDS=1 cargo test -p
/// skillbox-audit write_fuzz_seeds`); otherwise checks they are current.
#[test]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/decode");
    for (i, packet) in super::decode::seed_packets().iter().enumerate() {
        let path = dir.join(format!("seed-{i}"));
        if std::env::var_os("SKILLBOX_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::write(&path, packet).unwrap();
        }
        assert_eq!(
            &std::fs::read(&path).unwrap(),
            packet,
            "{} is stale",
            path.display()
        );
    }
}
