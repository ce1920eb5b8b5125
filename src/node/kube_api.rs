//! The Kubernetes API, as the chart's pods reach it (in-cluster config, or
//! `KUBECONFIG`): the label that tells the scheduler a node runs skills,
//! and the wait of the chart's uninstall hook for its DaemonSet.

use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};

/// The node label the RuntimeClass's `scheduling.nodeSelector` names.
pub const READY_LABEL: &str = "skillbox.dev/runtime";
pub const READY_VALUE: &str = "ready";

/// How often a wait asks again.
const POLL_EVERY: Duration = Duration::from_secs(1);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime for the Kubernetes client")
}

async fn client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (in-cluster service account, or KUBECONFIG)")
}

/// The merge patch setting the label (`Some`) or removing it (`None`).
pub fn label_patch(value: Option<&str>) -> serde_json::Value {
    serde_json::json!({ "metadata": { "labels": { READY_LABEL: value } } })
}

/// Sets or removes [`READY_LABEL`] on the node.
pub fn set_ready_label(node: &str, ready: bool) -> anyhow::Result<()> {
    let patch = label_patch(ready.then_some(READY_VALUE));
    runtime()?.block_on(async {
        let nodes: Api<Node> = Api::all(client().await?);
        nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| {
                format!(
                    "cannot {} label {READY_LABEL} on node {node}",
                    if ready { "set" } else { "remove" }
                )
            })?;
        Ok(())
    })
}

/// How far a DaemonSet's rollout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub desired: i32,
    pub ready: i32,
    /// Whether the controller has seen the DaemonSet's current spec.
    pub observed: bool,
}

impl Rollout {
    pub fn of(daemon_set: &DaemonSet) -> Rollout {
        let status = daemon_set.status.clone().unwrap_or_default();
        Rollout {
            desired: status.desired_number_scheduled,
            ready: status.number_ready,
            observed: status.observed_generation.is_some()
                && status.observed_generation >= daemon_set.metadata.generation,
        }
    }

    /// Every pod it should run is ready.
    pub fn complete(&self) -> bool {
        self.observed && self.ready >= self.desired
    }
}

/// Waits until every pod of the DaemonSet is ready, for at most `limit`.
pub fn wait_daemon_set(namespace: &str, name: &str, limit: Duration) -> anyhow::Result<Rollout> {
    runtime()?.block_on(async {
        let daemon_sets: Api<DaemonSet> = Api::namespaced(client().await?, namespace);
        let start = Instant::now();
        loop {
            let last = match daemon_sets.get(name).await {
                Ok(daemon_set) => {
                    let rollout = Rollout::of(&daemon_set);
                    if rollout.complete() {
                        return Ok(rollout);
                    }
                    format!("{} of {} pods ready", rollout.ready, rollout.desired)
                }
                Err(err) => format!("cannot read it: {err}"),
            };
            if start.elapsed() >= limit {
                anyhow::bail!("DaemonSet {namespace}/{name} not ready within {limit:?}: {last}");
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetStatus;

    #[test]
    fn the_label_patch_sets_or_removes_one_label() {
        assert_eq!(
            label_patch(Some("ready")).to_string(),
            r#"{"metadata":{"labels":{"skillbox.dev/runtime":"ready"}}}"#
        );
        assert_eq!(
            label_patch(None).to_string(),
            r#"{"metadata":{"labels":{"skillbox.dev/runtime":null}}}"#
        );
    }

    #[test]
    fn a_rollout_is_complete_once_observed_and_every_pod_is_ready() {
        let daemon_set = |generation: i64, observed: Option<i64>, desired: i32, ready: i32| DaemonSet {
            metadata: kube::api::ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            status: Some(DaemonSetStatus {
                desired_number_scheduled: desired,
                number_ready: ready,
                observed_generation: observed,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(Rollout::of(&daemon_set(1, Some(1), 3, 3)).complete());
        assert!(!Rollout::of(&daemon_set(1, Some(1), 3, 2)).complete());
        assert!(!Rollout::of(&daemon_set(2, Some(1), 3, 3)).complete());
        assert!(!Rollout::of(&daemon_set(1, None, 0, 0)).complete());
        assert!(Rollout::of(&daemon_set(1, Some(1), 0, 0)).complete());
    }
}
