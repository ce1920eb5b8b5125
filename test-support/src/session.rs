//! The `SessionConfig` the egress session test and its benchmark
//! (`bench/egress-session`) start an `EgressSession` with: the sandbox's
//! events go to a JSON Lines file under the compiled skill's identity.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use policy_compiler::bundle::CompiledAnnotations;
use skillbox_egress::events::{JsonLinesWriter, SandboxIdentity, SkillIdentity};
use skillbox_egress::netns::NetnsName;
use skillbox_egress::session::SessionConfig;

/// The session of sandbox `id` (also its container id), compiled with
/// `annotations`: its veth and NAT in `outer`, `upstream` its only
/// resolver, a 10 s TTL grace, and its events appended to `events`.
pub fn session_config(
    id: &str,
    annotations: &CompiledAnnotations,
    outer: &NetnsName,
    upstream: SocketAddr,
    events: &Path,
) -> SessionConfig {
    let identity = SandboxIdentity {
        execution_id: id.to_owned(),
        skill: SkillIdentity {
            name: annotations.skill_name.clone(),
            version: annotations.skill_version.clone(),
            digest: Some(annotations.skill_digest.clone()),
        },
        container_id: id.to_owned(),
    };
    SessionConfig {
        outer: Some(outer.clone()),
        upstreams: vec![upstream],
        ttl_grace: Duration::from_secs(10),
        events: Arc::new(JsonLinesWriter::open(events, identity).expect("the events file opens")),
    }
}

/// The session of sandbox `id` for a policy built in the test (no
/// compiled skill): its veth and NAT in `outer`, `upstreams` its
/// resolvers (maybe none), a 10 s TTL grace, and its events appended to
/// `events` under a skill named `id`.
pub fn plain_session_config(
    id: &str,
    outer: &NetnsName,
    upstreams: Vec<SocketAddr>,
    events: &Path,
) -> SessionConfig {
    let identity = SandboxIdentity {
        execution_id: id.to_owned(),
        skill: SkillIdentity {
            name: id.to_owned(),
            version: None,
            digest: None,
        },
        container_id: id.to_owned(),
    };
    SessionConfig {
        outer: Some(outer.clone()),
        upstreams,
        ttl_grace: Duration::from_secs(10),
        events: Arc::new(JsonLinesWriter::open(events, identity).expect("the events file opens")),
    }
}
