//! Ephemeral containers on the fake runtime: added through the API server's
//! `pods/ephemeralcontainers` subresource (as `kubectl debug` adds them), started once in the
//! running Pod's sandbox with their stdin and TTY, never restarted, and reported in
//! `status.ephemeralContainerStatuses` without touching the Pod's phase or readiness.

mod support;

use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use capstan_api::kube_core::params::{Patch, PatchParams};
use capstan_api::Client;
use capstan_apiserver::registry::Registry;
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_runtime::fake::{FakeRuntime, ImageBehaviour};
use capstan_runtime::{ContainerFilter, ContainerRuntime, FakeClock};
use parking_lot::Mutex;
use serde_json::json;
use support::*;

/// A node whose API is the registry itself, so the test can write the subresource.
async fn node_on(registry: &Arc<Registry>, images: Vec<(&str, ImageBehaviour)>) -> Node {
    let client: Arc<dyn Client> = registry.clone();
    let clock = FakeClock::new();
    let mut builder = FakeRuntime::builder().node_name(NODE).clock(clock.clone());
    for (image, behaviour) in images {
        builder = builder.image(image, behaviour);
    }
    let fake = builder.build();
    let events = EventBroadcaster::new(
        client.clone(),
        EventOptions::default().history_capacity(1000),
    );
    let mut node = Node {
        client,
        clock,
        runtime: Arc::new(RecordingRuntime {
            inner: fake.clone(),
            stops: Mutex::new(Vec::new()),
        }),
        fake,
        network: Arc::new(TestNetwork::default()),
        prober: Arc::new(ScriptedProber::default()),
        events,
        kubelet: None,
    };
    node.start_kubelet().await;
    node
}

async fn add_debugger(registry: &Registry, pod: &str, container: serde_json::Value) {
    let patch = json!({ "spec": { "ephemeralContainers": [container] } });
    registry
        .patch_ephemeral_containers(NS, pod, &Patch::Strategic(patch), &PatchParams::default())
        .await
        .expect("the ephemeral container is added");
}

fn ephemeral<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .ephemeral_container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == name)
}

fn running(pod: &Pod, name: &str) -> bool {
    ephemeral(pod, name)
        .and_then(|s| s.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debugger_starts_once_in_the_running_pod_and_is_reported_apart() {
    within(LIMIT, async {
        let registry = capstan_apiserver::testing::registry();
        let node = node_on(
            &registry,
            vec![
                ("web", ImageBehaviour::new()),
                ("busybox", ImageBehaviour::new()),
            ],
        )
        .await;
        node.create(pod("p", &[("app", "web")], json!({}))).await;
        node.wait_pod("p", "Running and Ready", |p| {
            phase(p) == "Running" && condition(p, "Ready") == Some("True")
        })
        .await;
        add_debugger(
            &registry,
            "p",
            json!({ "name": "debugger", "image": "busybox", "targetContainerName": "app",
                    "command": ["sleep", "1000"], "stdin": true, "tty": true }),
        )
        .await;
        let pod = node
            .wait_pod("p", "the debugger running", |p| running(p, "debugger"))
            .await;
        let status = ephemeral(&pod, "debugger").unwrap();
        assert!(!status.ready, "an ephemeral container is never ready");
        assert_eq!(status.image, "busybox");
        assert!(status
            .container_id
            .as_deref()
            .unwrap()
            .starts_with("fake://"));
        // The Pod's own status is untouched by it.
        assert_eq!(phase(&pod), "Running");
        assert_eq!(condition(&pod, "Ready"), Some("True"));
        assert_eq!(
            pod.status
                .as_ref()
                .unwrap()
                .container_statuses
                .as_ref()
                .unwrap()
                .len(),
            1
        );

        // It runs in the Pod's sandbox, with the stdin and TTY it asked for.
        let sandbox = node
            .fake
            .list_containers(ContainerFilter::all())
            .await
            .unwrap();
        let app = sandbox.iter().find(|c| c.metadata.name == "app").unwrap();
        let debugger = sandbox
            .iter()
            .find(|c| c.metadata.name == "debugger")
            .unwrap();
        assert_eq!(debugger.pod_sandbox_id, app.pod_sandbox_id);
        let created = node.fake.container_status(&debugger.id).await.unwrap();
        assert_eq!(created.image.image, "busybox");
        assert!(
            node.has_event("Started", "Started container debugger")
                .await
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exited_debugger_is_terminated_and_never_restarted() {
    within(LIMIT, async {
        let registry = capstan_apiserver::testing::registry();
        let node = node_on(
            &registry,
            vec![
                ("web", ImageBehaviour::new()),
                (
                    "oneshot",
                    ImageBehaviour::new().exit_after(Duration::from_secs(2), 3),
                ),
            ],
        )
        .await;
        node.create(pod("p", &[("app", "web")], json!({}))).await;
        node.wait_pod("p", "Running", |p| phase(p) == "Running")
            .await;
        add_debugger(
            &registry,
            "p",
            json!({ "name": "once", "image": "oneshot" }),
        )
        .await;
        node.wait_pod("p", "the debugger running", |p| running(p, "once"))
            .await;
        node.advance(2).await;
        let pod = node
            .wait_pod("p", "the debugger terminated", |p| {
                ephemeral(p, "once")
                    .and_then(|s| s.state.as_ref())
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == 3)
            })
            .await;
        assert_eq!(phase(&pod), "Running", "the Pod keeps running");
        // Time passes, syncs happen, and it stays terminated: one attempt only.
        for _ in 0..15 {
            node.advance(1).await;
        }
        let attempts = node
            .fake
            .list_containers(ContainerFilter::all())
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.metadata.name == "once")
            .count();
        assert_eq!(attempts, 1);
        let pod = node.get("p").await.unwrap();
        let status = ephemeral(&pod, "once").unwrap();
        assert_eq!(status.restart_count, 0);
        assert!(status.state.as_ref().unwrap().terminated.is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debugger_whose_image_cannot_be_pulled_waits_with_the_pull_reason() {
    within(LIMIT, async {
        let registry = capstan_apiserver::testing::registry();
        let node = node_on(&registry, vec![("web", ImageBehaviour::new())]).await;
        node.create(pod("p", &[("app", "web")], json!({}))).await;
        node.wait_pod("p", "Running", |p| phase(p) == "Running")
            .await;
        add_debugger(&registry, "p", json!({ "name": "dbg", "image": "missing" })).await;
        let pod = node
            .wait_pod("p", "the debugger waiting", |p| {
                ephemeral(p, "dbg")
                    .and_then(|s| s.state.as_ref())
                    .and_then(|s| s.waiting.as_ref())
                    .is_some_and(|w| {
                        matches!(
                            w.reason.as_deref(),
                            Some("ErrImagePull" | "ImagePullBackOff")
                        )
                    })
            })
            .await;
        assert_eq!(phase(&pod), "Running");
        assert_eq!(condition(&pod, "Ready"), Some("True"));
    })
    .await;
}
