//! `skillbox-launch`: the first process of a pre-booted sandbox. It says
//! it is ready, waits for its header on stdin, then becomes the skill
//! (`execve`, so the skill is the sandbox's init, as in a cold start).
//!
//! Compiled on its own into a static executable by build.rs: it runs on
//! whatever root filesystem the skill has.

#[path = "protocol.rs"]
#[allow(dead_code)]
mod protocol;

use std::fs::File;
use std::io::{Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::process::{exit, Command};

/// The status of a launch that could not run the skill (as a shell's).
const CANNOT_RUN: i32 = 127;

fn fail(message: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "skillbox-launch: {message}");
    exit(CANNOT_RUN);
}

fn main() {
    // Unbuffered, not std's stdin: nothing past the header may be read.
    let mut stdin = ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let mut stdout = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    if stdout.write_all(protocol::READY).is_err() {
        fail("cannot write to stdout");
    }
    let mut prefix = [0u8; 4];
    if stdin.read_exact(&mut prefix).is_err() {
        // The pool went away before handing this sandbox out.
        exit(CANNOT_RUN);
    }
    let length = protocol::payload_length(prefix).unwrap_or_else(|err| fail(&err));
    let mut payload = vec![0u8; length];
    if stdin.read_exact(&mut payload).is_err() {
        fail("header cut short");
    }
    let (args, env) = protocol::decode(&payload).unwrap_or_else(|err| fail(&err));
    let mut command = Command::new(&args[0]);
    command.args(&args[1..]).env_clear();
    for entry in &env {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        command.env(name, value);
    }
    let err = command.exec();
    fail(&format!("{}: {err}", args[0]));
}
