//! `containerd-shim-skillbox-v1`: containerd's runtime `io.containerd.skillbox.v1`.

use skillbox_shim::service::{config, SkillboxShim, RUNTIME_ID};

#[tokio::main]
async fn main() {
    containerd_shim::asynchronous::run::<SkillboxShim>(RUNTIME_ID, Some(config())).await;
}
