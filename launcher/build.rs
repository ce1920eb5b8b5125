//! Compiles `src/launch.rs` on its own into a static executable: it runs
//! inside sandboxes whose root filesystem may have no C library, and cargo
//! cannot link one binary of a workspace statically and the others not.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/launch.rs");
    println!("cargo:rerun-if-changed=src/protocol.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("skillbox-launch");
    let status = Command::new(&rustc)
        .args([
            "--edition=2021",
            "--crate-type=bin",
            "--crate-name=skillbox_launch",
        ])
        .args(["--target", &target])
        .args(["-C", "opt-level=s", "-C", "panic=abort", "-C", "strip=symbols"])
        .args(["-C", "target-feature=+crt-static"])
        .arg("-o")
        .arg(&out)
        .arg("src/launch.rs")
        .status()
        .unwrap_or_else(|err| panic!("cannot run {rustc}: {err}"));
    assert!(
        status.success(),
        "{rustc} could not build src/launch.rs statically ({status})"
    );
}
