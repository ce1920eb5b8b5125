//! Any packet a sentry could send: decoding must return, never panic, and
//! respect the crate's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skillbox_audit::gvisor::decode::{decode, Body};
use skillbox_audit::gvisor::limits;
use skillbox_audit::AuditEvent;

fuzz_target!(|packet: &[u8]| {
    if let Ok(decoded) = decode(packet) {
        if let Body::Event { event, .. } = decoded.body {
            match &event {
                AuditEvent::Exec { path, argv, env_names, .. } => {
                    assert!(path.len() <= limits::MAX_PATH_BYTES);
                    assert!(argv.len() <= limits::MAX_ARGS);
                    assert!(env_names.len() <= limits::MAX_ENV_NAMES);
                }
                AuditEvent::FileOpen { path, .. } => assert!(path.len() <= limits::MAX_PATH_BYTES),
                _ => {}
            }
            let _ = serde_json::to_vec(&event);
        }
    }
});
