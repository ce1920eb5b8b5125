//! One monitoring packet → one [`AuditEvent`]. Pure: no I/O, no clock.
//!
//! Message types (gVisor's `MessageType`): 1 container start, 2 clone,
//! 3 exec, 4/5 exit (notify-parent / task), 6 raw `syscall/sysno/N`, 7 open
//! family, 10 connect, 12 socket, 24 bind; every other typed syscall message
//! (8..=34) becomes a generic `syscall` event from the fields all of them
//! share (context 1, exit 2, sysno 3). A raw `listen` (sysno 50: this runsc
//! has no typed listen point) becomes `listen`. Types above 34 are newer
//! than this decoder: [`Body::Unknown`], counted by the caller, not fatal.

use prost::Message;

use super::limits::{self, lossy, lossy_list};
use super::proto::{self, ContextData, SyscallExit};
use super::wire::{self, Header};
use super::{sockaddr, sysno};
use crate::event::{AuditEvent, Task};
use crate::Error as DecodeError;

pub const CONTAINER_START: u16 = 1;
pub const SENTRY_CLONE: u16 = 2;
pub const SENTRY_EXEC: u16 = 3;
pub const SENTRY_EXIT_NOTIFY_PARENT: u16 = 4;
pub const SENTRY_TASK_EXIT: u16 = 5;
pub const SYSCALL_RAW: u16 = 6;
pub const SYSCALL_OPEN: u16 = 7;
pub const SYSCALL_CONNECT: u16 = 10;
pub const SYSCALL_SOCKET: u16 = 12;
pub const SYSCALL_BIND: u16 = 24;
/// The last message type of runsc 20221219 (`MESSAGE_SYSCALL_WRITE`).
pub const LAST_KNOWN: u16 = 34;

const SYS_LISTEN: u64 = 50;
const SYS_CREAT: u64 = 85;

const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
/// Flags that make an open a write: any of them.
pub const WRITE_FLAGS: u32 = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND;

/// A decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub header: Header,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Event {
        event: AuditEvent,
        /// The container the sentry says the task belongs to (`None` when
        /// the message carries no context, e.g. raw syscall points).
        container_id: Option<String>,
    },
    /// A message type this decoder does not know.
    Unknown,
}

/// Decodes one packet as received from the socket.
pub fn decode(packet: &[u8]) -> Result<Decoded, DecodeError> {
    let (header, payload) = wire::split(packet)?;
    let body = decode_payload(header.message_type, payload)?;
    Ok(Decoded { header, body })
}

fn decode_payload(message_type: u16, payload: &[u8]) -> Result<Body, DecodeError> {
    let parse = |error| DecodeError::Protobuf {
        message_type,
        source: error,
    };
    let (context, event) = match message_type {
        CONTAINER_START => {
            let m = proto::ContainerStart::decode(payload).map_err(parse)?;
            let event = AuditEvent::ContainerStart {
                task: task(m.context_data.as_ref()),
                argv: lossy_list(&m.args, limits::MAX_ARGS, limits::MAX_ARG_BYTES),
                env_names: limits::env_names(&m.env),
                cwd: (!m.cwd.is_empty()).then(|| lossy(&m.cwd, limits::MAX_PATH_BYTES)),
            };
            (m.context_data, event)
        }
        SENTRY_CLONE => {
            let m = proto::CloneInfo::decode(payload).map_err(parse)?;
            let event = AuditEvent::Clone {
                task: task(m.context_data.as_ref()),
                child_tid: positive(m.created_thread_id),
                flags: Some(m.flags),
            };
            (m.context_data, event)
        }
        SENTRY_EXEC => {
            let m = proto::ExecveInfo::decode(payload).map_err(parse)?;
            let event = AuditEvent::Exec {
                task: task(m.context_data.as_ref()),
                path: lossy(&m.binary_path, limits::MAX_PATH_BYTES),
                argv: lossy_list(&m.argv, limits::MAX_ARGS, limits::MAX_ARG_BYTES),
                env_names: limits::env_names(&m.env),
            };
            (m.context_data, event)
        }
        SENTRY_EXIT_NOTIFY_PARENT | SENTRY_TASK_EXIT => {
            let m = proto::TaskExit::decode(payload).map_err(parse)?;
            let event = AuditEvent::ProcessExit {
                task: task(m.context_data.as_ref()),
                exit_status: Some(m.exit_status),
            };
            (m.context_data, event)
        }
        SYSCALL_RAW => {
            let m = proto::RawSyscall::decode(payload).map_err(parse)?;
            let task = task(m.context_data.as_ref());
            let result = result(m.exit.as_ref());
            let event = if m.sysno == SYS_LISTEN {
                AuditEvent::Listen {
                    task,
                    // The kernel reads both as C ints.
                    fd: i64::from(m.arg1 as i32),
                    backlog: i64::from(m.arg2 as i32),
                    result,
                }
            } else {
                generic(task, m.sysno, result)
            };
            (m.context_data, event)
        }
        SYSCALL_OPEN => {
            let m = proto::Open::decode(payload).map_err(parse)?;
            let creates = m.sysno == SYS_CREAT || m.flags & O_CREAT != 0;
            let event = AuditEvent::FileOpen {
                task: task(m.context_data.as_ref()),
                path: lossy(&m.pathname, limits::MAX_PATH_BYTES),
                flags: m.flags,
                mode: creates.then_some(m.mode),
                write: m.sysno == SYS_CREAT || m.flags & WRITE_FLAGS != 0,
                result: result(m.exit.as_ref()),
            };
            (m.context_data, event)
        }
        SYSCALL_CONNECT | SYSCALL_BIND => {
            let m = proto::SockaddrCall::decode(payload).map_err(parse)?;
            let task = task(m.context_data.as_ref());
            let (address, port) = sockaddr::describe(&m.address);
            let result = result(m.exit.as_ref());
            let event = if message_type == SYSCALL_CONNECT {
                AuditEvent::Connect {
                    task,
                    address,
                    port,
                    result,
                }
            } else {
                AuditEvent::Bind {
                    task,
                    address,
                    port,
                    result,
                }
            };
            (m.context_data, event)
        }
        SYSCALL_SOCKET => {
            let m = proto::Socket::decode(payload).map_err(parse)?;
            let event = AuditEvent::Socket {
                task: task(m.context_data.as_ref()),
                domain: m.domain,
                socket_type: m.r#type,
                protocol: m.protocol,
                result: result(m.exit.as_ref()),
            };
            (m.context_data, event)
        }
        8..=LAST_KNOWN => {
            let m = proto::SyscallCommon::decode(payload).map_err(parse)?;
            let event = generic(task(m.context_data.as_ref()), m.sysno, result(m.exit.as_ref()));
            (m.context_data, event)
        }
        _ => return Ok(Body::Unknown),
    };
    let container_id = context
        .filter(|c| !c.container_id.is_empty())
        .map(|c| lossy(&c.container_id, limits::MAX_NAME_BYTES));
    Ok(Body::Event { event, container_id })
}

fn task(context: Option<&ContextData>) -> Task {
    let Some(context) = context else {
        return Task::default();
    };
    Task {
        pid: positive(context.thread_group_id),
        tid: positive(context.thread_id),
        process: (!context.process_name.is_empty())
            .then(|| lossy(&context.process_name, limits::MAX_NAME_BYTES)),
    }
}

/// gVisor leaves an id 0 when the context field was not requested.
fn positive(id: i32) -> Option<u32> {
    u32::try_from(id).ok().filter(|&id| id > 0)
}

/// The return value as the caller saw it: `-errno` on failure (gVisor sends
/// `result` 0 and the errno apart), `None` on an enter point.
fn result(exit: Option<&SyscallExit>) -> Option<i64> {
    exit.map(|exit| match exit.errorno {
        0 => exit.result,
        errno => errno.saturating_neg(),
    })
}

fn generic(task: Task, number: u64, result: Option<i64>) -> AuditEvent {
    AuditEvent::Syscall {
        task,
        name: sysno::name(number).map_or_else(|| format!("sysno_{number}"), str::to_owned),
        sysno: number,
        result,
    }
}

/// One valid packet of each decoded message type: seeds for the fuzz
/// corpus and the stable-Rust mutation test.
pub fn seed_packets() -> Vec<Vec<u8>> {
    let context = Some(ContextData {
        thread_id: 2,
        thread_group_id: 2,
        container_id: b"box-1".to_vec(),
        process_name: b"sh".to_vec(),
    });
    let exit = Some(SyscallExit {
        result: 3,
        errorno: 0,
    });
    vec![
        wire::frame(
            CONTAINER_START,
            0,
            &proto::ContainerStart {
                context_data: context.clone(),
                id: b"box-1".to_vec(),
                cwd: b"/".to_vec(),
                args: vec![b"sh".to_vec(), b"-c".to_vec()],
                env: vec![b"PATH=/bin".to_vec()],
            }
            .encode_to_vec(),
        ),
        wire::frame(
            SENTRY_CLONE,
            0,
            &proto::CloneInfo {
                context_data: context.clone(),
                created_thread_id: 3,
                flags: 17,
            }
            .encode_to_vec(),
        ),
        wire::frame(
            SENTRY_EXEC,
            0,
            &proto::ExecveInfo {
                context_data: context.clone(),
                binary_path: b"/bin/busybox".to_vec(),
                argv: vec![b"cat".to_vec(), b"/etc/hostname".to_vec()],
                env: vec![b"HOME=/root".to_vec()],
            }
            .encode_to_vec(),
        ),
        wire::frame(
            SENTRY_TASK_EXIT,
            1,
            &proto::TaskExit {
                context_data: context.clone(),
                exit_status: 256,
            }
            .encode_to_vec(),
        ),
        wire::frame(
            SYSCALL_RAW,
            1,
            &proto::RawSyscall {
                context_data: context.clone(),
                exit: None,
                sysno: 50,
                arg1: 3,
                arg2: 1,
                arg3: 0,
            }
            .encode_to_vec(),
        ),
        wire::frame(
            SYSCALL_OPEN,
            2,
            &proto::Open {
                context_data: context.clone(),
                exit: exit.clone(),
                sysno: 257,
                pathname: b"/tmp/x".to_vec(),
                flags: 0o1101,
                mode: 0o666,
            }
            .encode_to_vec(),
        ),
        wire::frame(
            SYSCALL_CONNECT,
            2,
            &proto::SockaddrCall {
                context_data: context.clone(),
                exit: exit.clone(),
                sysno: 42,
                address: vec![2, 0, 0, 9, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            }
            .encode_to_vec(),
        ),
        wire::frame(
            SYSCALL_SOCKET,
            2,
            &proto::Socket {
                context_data: context,
                exit,
                sysno: 41,
                domain: 2,
                r#type: 1,
                protocol: 0,
            }
            .encode_to_vec(),
        ),
    ]
}
