//! Unit-testing your own controller with Capstan's fake backends.
//!
//! ```text
//! cargo run --example fake_backends_test     # plays the scenario once and prints it
//! cargo test --example fake_backends_test    # runs the tests at the bottom
//! ```
//!
//! The controller under test, `PodLabeller`, labels every running Pod with the node it runs
//! on (`example.com/node`) and copies its `example.com/team` annotation into a label, so
//! that `kubectl get pods -l example.com/team=web` works. A team that is not a valid label
//! value is refused with a typed error and a Warning Event, and nothing is written.
//!
//! Nothing runs but this process: the API is the real registry on the in-memory store, Pods
//! are bound by `FakeScheduler` and reported Running by `FakeKubelet`, and `ObjectHistory`
//! records every revision of every Pod so that a test can check an invariant at each step,
//! not only at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan::api::k8s_openapi::api::core::v1::{Event, Pod};
use capstan::api::kube_core::params::{Patch, PatchParams, PostParams};
use capstan::api::{Api, Client};
use capstan::controller::events::{EventBroadcaster, EventOptions, EventRecorder};
use capstan::controller::runtime::{
    Action, Context, Controller, ControllerError, Reconciler, ShutdownHandle,
};
use capstan::controller::testing::{FakeKubelet, FakeScheduler, KubeletOptions, ObjectHistory};
use serde_json::json;
use tokio::task::JoinHandle;

/// The label naming the Pod's node.
pub const NODE_LABEL: &str = "example.com/node";
/// The annotation users set, and the label it is copied to.
pub const TEAM: &str = "example.com/team";

/// Why labelling a Pod failed.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The team annotation is not a valid label value (at most 63 characters: letters,
    /// digits, `-`, `_` and `.`, starting and ending with a letter or digit). Not retryable:
    /// the user must fix the annotation.
    #[error("pod {pod}: team {value:?} is not a valid label value")]
    InvalidTeam {
        /// The Pod, `namespace/name`.
        pod: String,
        /// The annotation's value.
        value: String,
    },
    /// The API refused the write (a 409 means the cache was stale). Retried with backoff.
    #[error("labelling a pod: {0}")]
    Api(#[from] capstan::api::Error),
}

/// Labels running Pods with their node and team.
pub struct PodLabeller {
    client: Arc<dyn Client>,
    events: EventRecorder,
}

/// Whether `value` is a valid Kubernetes label value.
fn is_label_value(value: &str) -> bool {
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    value.is_empty()
        || (value.len() <= 63
            && alphanumeric(value.chars().next())
            && alphanumeric(value.chars().last())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

#[async_trait::async_trait]
impl Reconciler<Pod> for PodLabeller {
    type Error = LabelError;

    async fn reconcile(&self, pod: Arc<Pod>, ctx: &Context) -> Result<Action, LabelError> {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let (Some(node), true) = (node, running) else {
            return Ok(Action::await_change()); // not bound or not running yet
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }

        let mut wanted = BTreeMap::from([(NODE_LABEL.to_string(), node)]);
        if let Some(team) = pod.metadata.annotations.as_ref().and_then(|a| a.get(TEAM)) {
            if !is_label_value(team) {
                let error = LabelError::InvalidTeam {
                    pod: ctx.key().to_string(),
                    value: team.clone(),
                };
                self.events.warning(&*pod, "InvalidTeam", error.to_string());
                return Err(error);
            }
            wanted.insert(TEAM.to_string(), team.clone());
        }

        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if wanted.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return Ok(Action::await_change()); // already right: write nothing
        }
        // A merge patch carrying the resourceVersion we read: 409 if the cache was stale.
        let patch = json!({"metadata": {
            "resourceVersion": pod.metadata.resource_version,
            "labels": wanted,
        }});
        let namespace = ctx.key().namespace.clone().unwrap_or_default();
        Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .patch(
                &ctx.key().name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        self.events.normal(
            &*pod,
            "Labelled",
            format!("Labelled with node {}", wanted[NODE_LABEL]),
        );
        Ok(Action::await_change())
    }

    /// An invalid team waits for the user to change the Pod; API errors back off.
    fn error_policy(&self, _: Arc<Pod>, error: &LabelError, _: &Context) -> Action {
        match error {
            LabelError::InvalidTeam { .. } => Action::await_change(),
            LabelError::Api(_) => Action::backoff(),
        }
    }
}

/// A fake cluster: the registry on the memory store, two fake nodes (scheduler and kubelet)
/// and the controller under test.
pub struct FakeCluster {
    /// The API.
    pub client: Arc<dyn Client>,
    /// Every Event written, kept for assertions.
    pub events: EventBroadcaster,
    /// Every revision of every Pod.
    pub history: ObjectHistory<Pod>,
    _scheduler: FakeScheduler,
    _kubelet: FakeKubelet,
    shutdown: ShutdownHandle,
    controller: JoinHandle<Result<(), ControllerError>>,
}

impl FakeCluster {
    /// Starts everything; must run inside a tokio runtime.
    pub fn start() -> Self {
        let client = capstan::apiserver::testing::client();
        let events = EventBroadcaster::new(
            client.clone(),
            EventOptions::default().history_capacity(1000),
        );
        let history = ObjectHistory::record(client.clone());
        let nodes = vec!["node-a".to_string(), "node-b".to_string()];
        let scheduler = FakeScheduler::start(client.clone(), nodes.clone());
        let kubelet = FakeKubelet::start(
            client.clone(),
            nodes,
            KubeletOptions {
                startup_delay: Duration::from_millis(50),
                events: Some(events.recorder("kubelet")),
                ..KubeletOptions::default()
            },
        );
        let controller = Controller::<Pod>::from_client(client.clone()).named("pod-labeller");
        let shutdown = controller.shutdown_handle();
        let labeller = PodLabeller {
            client: client.clone(),
            events: events.recorder("pod-labeller"),
        };
        FakeCluster {
            client,
            events,
            history,
            _scheduler: scheduler,
            _kubelet: kubelet,
            shutdown,
            controller: tokio::spawn(controller.run(labeller)),
        }
    }

    /// The Pods API of `default`.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates Pod `name` in `default`, with a team annotation when given.
    pub async fn create_pod(&self, name: &str, team: Option<&str>) -> Pod {
        let annotations = team.map(|t| json!({ TEAM: t })).unwrap_or(json!({}));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
        }))
        .expect("a valid Pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create the pod")
    }

    /// Waits until Pod `name` satisfies `check`, and returns it.
    pub async fn wait_for_pod(&self, name: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        loop {
            if let Ok(pod) = self.pods().get(name).await {
                if check(&pod) {
                    return pod;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The Events recorded so far, after writing them.
    pub async fn events(&self) -> Vec<Event> {
        self.events.flush().await;
        self.events.history()
    }

    /// Waits until an Event with `reason` about Pod `pod` is recorded, and returns them all.
    pub async fn wait_for_event(&self, pod: &str, reason: &str) -> Vec<Event> {
        loop {
            let events = self.events().await;
            if events.iter().any(|e| {
                e.involved_object.name.as_deref() == Some(pod)
                    && e.reason.as_deref() == Some(reason)
            }) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the controller, letting its reconciles finish.
    pub async fn stop(self) {
        self.shutdown.shut_down();
        self.controller
            .await
            .expect("the controller task")
            .expect("the controller ran");
    }
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = FakeCluster::start();
    cluster.create_pod("web-1", Some("web")).await;
    cluster.create_pod("batch-1", None).await;
    cluster.create_pod("odd-1", Some("not a label!")).await;

    for name in ["web-1", "batch-1"] {
        let pod = cluster
            .wait_for_pod(name, |p| label(p, NODE_LABEL).is_some())
            .await;
        println!(
            "{name}: node label {:?}, team label {:?}",
            label(&pod, NODE_LABEL).unwrap_or_default(),
            label(&pod, TEAM).unwrap_or("-")
        );
    }
    let odd = cluster.wait_for_pod("odd-1", is_running).await;
    println!(
        "odd-1: running on {:?}, labels {:?}",
        odd.spec.and_then(|s| s.node_name).unwrap_or_default(),
        odd.metadata.labels.unwrap_or_default()
    );
    cluster.wait_for_event("web-1", "Labelled").await;
    cluster.wait_for_event("batch-1", "Labelled").await;
    for event in cluster.wait_for_event("odd-1", "InvalidTeam").await {
        println!(
            "event: {} {} {}: {}",
            event.type_.unwrap_or_default(),
            event.involved_object.name.unwrap_or_default(),
            event.reason.unwrap_or_default(),
            event.message.unwrap_or_default()
        );
    }
    println!(
        "{} Pod revisions recorded",
        cluster.history.revisions().len()
    );
    cluster.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan::controller::runtime::ObjectKey;
    use capstan::testing::within;

    /// Every test's time limit.
    const LIMIT: Duration = Duration::from_secs(30);

    fn reasons(events: &[Event], pod: &str) -> Vec<String> {
        events
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(pod))
            .filter_map(|e| e.reason.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_running_pod_gets_its_node_and_team_labels_and_an_event_says_so() {
        within(LIMIT, async {
            let cluster = FakeCluster::start();
            cluster.create_pod("web-1", Some("web")).await;

            let pod = cluster
                .wait_for_pod("web-1", |p| label(p, NODE_LABEL).is_some())
                .await;
            let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            assert_eq!(label(&pod, NODE_LABEL), node);
            assert_eq!(label(&pod, TEAM), Some("web"));
            assert!(is_running(&pod));

            let events = cluster.wait_for_event("web-1", "Labelled").await;
            let reasons = reasons(&events, "web-1");
            assert!(!reasons.contains(&"InvalidTeam".to_string()), "{reasons:?}");
            cluster.stop().await;
        })
        .await
    }

    #[tokio::test]
    async fn no_revision_ever_shows_a_label_before_the_pod_is_bound_and_running() {
        within(LIMIT, async {
            let cluster = FakeCluster::start();
            for i in 0..4 {
                cluster.create_pod(&format!("p-{i}"), None).await;
            }
            cluster
                .history
                .wait_until(|pods| {
                    pods.len() == 4 && pods.values().all(|p| label(p, NODE_LABEL).is_some())
                })
                .await;

            // Checked at every revision the watch saw, not only at the end.
            for (version, pods) in cluster.history.states() {
                for pod in pods.values() {
                    if let Some(labelled) = label(pod, NODE_LABEL) {
                        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
                        assert_eq!(Some(labelled), node, "at resourceVersion {version}");
                        assert!(is_running(pod), "labelled before running at {version}");
                    }
                }
            }
            cluster.stop().await;
        })
        .await
    }

    #[tokio::test]
    async fn an_invalid_team_is_a_typed_error_with_a_warning_and_nothing_is_written() {
        within(LIMIT, async {
            let cluster = FakeCluster::start();
            cluster.create_pod("odd-1", Some("not a label!")).await;
            let running = cluster.wait_for_pod("odd-1", is_running).await;

            // Called directly, the reconciler says why, and writes nothing.
            let labeller = PodLabeller {
                client: cluster.client.clone(),
                events: cluster.events.recorder("pod-labeller"),
            };
            let ctx = Context::new("pod-labeller", ObjectKey::namespaced("default", "odd-1"));
            let error = labeller
                .reconcile(Arc::new(running.clone()), &ctx)
                .await
                .expect_err("an invalid team is refused");
            assert!(
                matches!(&error, LabelError::InvalidTeam { value, .. } if value == "not a label!"),
                "{error}"
            );
            let after = cluster.pods().get("odd-1").await.unwrap();
            assert_eq!(
                after.metadata.resource_version,
                running.metadata.resource_version
            );
            assert_eq!(after.metadata.labels, None);

            // It is reported as a Warning.
            let events = cluster.wait_for_event("odd-1", "InvalidTeam").await;
            let warning = events
                .iter()
                .find(|e| e.reason.as_deref() == Some("InvalidTeam"))
                .expect("an InvalidTeam event");
            assert_eq!(warning.type_.as_deref(), Some("Warning"));
            assert!(!reasons(&events, "odd-1").contains(&"Labelled".to_string()));
            cluster.stop().await;
        })
        .await
    }

    #[tokio::test]
    async fn fixing_the_annotation_lets_the_pod_be_labelled() {
        within(LIMIT, async {
            let cluster = FakeCluster::start();
            cluster.create_pod("odd-1", Some("-bad-")).await;
            cluster.wait_for_pod("odd-1", is_running).await;
            let patch = json!({"metadata": {"annotations": { TEAM: "good" }}});
            cluster
                .pods()
                .patch("odd-1", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
            let pod = cluster
                .wait_for_pod("odd-1", |p| label(p, TEAM).is_some())
                .await;
            assert_eq!(label(&pod, TEAM), Some("good"));
            cluster.stop().await;
        })
        .await
    }

    #[tokio::test]
    async fn reconciling_a_labelled_pod_again_writes_nothing() {
        within(LIMIT, async {
            let cluster = FakeCluster::start();
            cluster.create_pod("web-1", Some("web")).await;
            let labelled = cluster
                .wait_for_pod("web-1", |p| label(p, TEAM).is_some())
                .await;
            let labeller = PodLabeller {
                client: cluster.client.clone(),
                events: cluster.events.recorder("pod-labeller"),
            };
            let ctx = Context::new("pod-labeller", ObjectKey::namespaced("default", "web-1"));
            let action = labeller
                .reconcile(Arc::new(labelled.clone()), &ctx)
                .await
                .unwrap();
            assert_eq!(action, Action::AwaitChange);
            let after = cluster.pods().get("web-1").await.unwrap();
            assert_eq!(
                after.metadata.resource_version,
                labelled.metadata.resource_version
            );
            cluster.stop().await;
        })
        .await
    }

    #[test]
    fn label_values_follow_kubernetes_rules() {
        for good in ["", "web", "a.b-c_d", &"x".repeat(63)] {
            assert!(is_label_value(good), "{good:?}");
        }
        for bad in ["not a label!", "-bad", "bad-", &"x".repeat(64), "é"] {
            assert!(!is_label_value(bad), "{bad:?}");
        }
    }
}
