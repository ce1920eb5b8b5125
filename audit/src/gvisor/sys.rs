//! The crate's only `unsafe`: taking ownership of a descriptor accept(2)
//! returned (nix hands back a raw fd).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{accept4, SockFlag};

/// Accepts one connection on `listener`, close-on-exec.
pub fn accept(listener: &OwnedFd) -> nix::Result<OwnedFd> {
    let fd = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned `fd`, a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
