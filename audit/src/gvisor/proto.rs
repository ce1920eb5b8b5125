//! The protobuf messages of gVisor's runtime monitoring that skillbox reads,
//! written by hand with gVisor's field numbers (facts from
//! `pkg/sentry/seccheck/points/*.proto` at release-20221219.0; see
//! `docs/gvisor-monitoring-facts.md`). Only the fields we use are declared;
//! protobuf decoding skips the others.
//!
//! Every `string` field of gVisor's schema is declared `bytes` here (the wire
//! encoding is the same): the sentry is untrusted and a path need not be
//! UTF-8, so text is converted lossily after decoding instead of failing the
//! whole message.

use prost::Message;

/// `gvisor.common.Handshake`, exchanged once when the sandbox connects.
#[derive(Clone, PartialEq, Message)]
pub struct Handshake {
    #[prost(uint32, tag = "1")]
    pub version: u32,
}

/// `gvisor.common.ContextData`: who made the call (the fields a session's
/// `context_fields` asked for; absent ones are zero/empty).
#[derive(Clone, PartialEq, Message)]
pub struct ContextData {
    #[prost(int32, tag = "2")]
    pub thread_id: i32,
    #[prost(int32, tag = "4")]
    pub thread_group_id: i32,
    #[prost(bytes = "vec", tag = "6")]
    pub container_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "9")]
    pub process_name: Vec<u8>,
}

/// `gvisor.container.Start` (message type 1).
#[derive(Clone, PartialEq, Message)]
pub struct ContainerStart {
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    #[prost(bytes = "vec", tag = "2")]
    pub id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub cwd: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub args: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub env: Vec<Vec<u8>>,
}

/// `gvisor.sentry.CloneInfo` (message type 2).
#[derive(Clone, PartialEq, Message)]
pub struct CloneInfo {
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    #[prost(int32, tag = "3")]
    pub created_thread_id: i32,
    #[prost(uint64, tag = "6")]
    pub flags: u64,
}

/// `gvisor.sentry.ExecveInfo` (message type 3). The context is the task
/// *before* the exec (its old process name).
#[derive(Clone, PartialEq, Message)]
pub struct ExecveInfo {
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    #[prost(bytes = "vec", tag = "2")]
    pub binary_path: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub argv: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub env: Vec<Vec<u8>>,
}

/// `gvisor.sentry.TaskExit` (type 5) and `ExitNotifyParentInfo` (type 4):
/// the same two fields.
#[derive(Clone, PartialEq, Message)]
pub struct TaskExit {
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    /// The wait(2) status.
    #[prost(int32, tag = "2")]
    pub exit_status: i32,
}

/// `gvisor.syscall.Exit`: present on `…/exit` points only.
#[derive(Clone, PartialEq, Message)]
pub struct SyscallExit {
    #[prost(int64, tag = "1")]
    pub result: i64,
    /// Set (and `result` 0) when the call failed.
    #[prost(int64, tag = "2")]
    pub errorno: i64,
}

/// `gvisor.syscall.Syscall` (type 6): a raw `syscall/sysno/N` point.
/// Note `sysno` is field 4 here, 3 in every typed syscall message.
#[derive(Clone, PartialEq, Message)]
pub struct RawSyscall {
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    #[prost(message, optional, tag = "2")]
    pub exit: Option<SyscallExit>,
    #[prost(uint64, tag = "4")]
    pub sysno: u64,
    #[prost(uint64, tag = "5")]
    pub arg1: u64,
    #[prost(uint64, tag = "6")]
    pub arg2: u64,
    #[prost(uint64, tag = "7")]
    pub arg3: u64,
}

/// The three fields every typed syscall message (types 7..=34) starts with:
/// enough to report any of them as a generic `syscall` event.
#[derive(Clone, PartialEq, Message)]
pub struct SyscallCommon {
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    #[prost(message, optional, tag = "2")]
    pub exit: Option<SyscallExit>,
    #[prost(uint64, tag = "3")]
    pub sysno: u64,
}

/// `gvisor.syscall.Open` (type 7): open, openat, creat.
#[derive(Clone, PartialEq, Message)]
pub struct Open {
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    #[prost(message, optional, tag = "2")]
    pub exit: Option<SyscallExit>,
    #[prost(uint64, tag = "3")]
    pub sysno: u64,
    #[prost(bytes = "vec", tag = "6")]
    pub pathname: Vec<u8>,
    #[prost(uint32, tag = "7")]
    pub flags: u32,
    #[prost(uint32, tag = "8")]
    pub mode: u32,
}

/// `gvisor.syscall.Connect` (type 10) and `Bind` (type 24): the socket
/// address is field 6 in both (`fd` is int64 in one, int32 in the other;
/// unused here).
#[derive(Clone, PartialEq, Message)]
pub struct SockaddrCall {
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    #[prost(message, optional, tag = "2")]
    pub exit: Option<SyscallExit>,
    #[prost(uint64, tag = "3")]
    pub sysno: u64,
    #[prost(bytes = "vec", tag = "6")]
    pub address: Vec<u8>,
}

/// `gvisor.syscall.Socket` (type 12).
#[derive(Clone, PartialEq, Message)]
pub struct Socket {
    #[prost(message, optional, tag = "1")]
    pub context_data: Option<ContextData>,
    #[prost(message, optional, tag = "2")]
    pub exit: Option<SyscallExit>,
    #[prost(uint64, tag = "3")]
    pub sysno: u64,
    #[prost(int32, tag = "4")]
    pub domain: i32,
    #[prost(int32, tag = "5")]
    pub r#type: i32,
    #[prost(int32, tag = "6")]
    pub protocol: i32,
}
