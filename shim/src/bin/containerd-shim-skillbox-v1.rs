//! `containerd-shim-skillbox-v1`: containerd's runtime `io.containerd.skillbox.v1`.

use std::io::Write;

use skillbox_shim::introspection::{self, Introspection};
use skillbox_shim::service::{config, SkillboxShim, RUNTIME_ID};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match introspection::parse(&args) {
        Some(Introspection::Version) => print!("{}", introspection::version_text()),
        Some(Introspection::Info) => {
            let _ = std::io::stdout().write_all(&introspection::info_bytes());
        }
        None => containerd_shim::asynchronous::run::<SkillboxShim>(RUNTIME_ID, Some(config())).await,
    }
}
