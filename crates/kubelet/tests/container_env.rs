//! Containers configured from the API: environment variables from a ConfigMap, a Secret and
//! the downward API, `$(VAR)` references in `env`, `command` and `args`, and a container held
//! back with `CreateContainerConfigError` until the ConfigMap it needs exists.

mod support;

use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use capstan_api::kube_core::params::PostParams;
use capstan_api::Api;
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_runtime::fake::{FakeRuntime, ImageBehaviour};
use capstan_runtime::{ContainerFilter, ContainerRuntime, ExecRequest};
use parking_lot::Mutex;
use serde_json::json;
use support::*;

/// A node whose fake runtime runs the containers' command lines (so `command` and `args` are
/// observable), with a kubelet started.
async fn node_running_commands() -> Node {
    let client = capstan_apiserver::testing::client();
    let clock = capstan_runtime::FakeClock::new();
    let fake = FakeRuntime::builder()
        .node_name(NODE)
        .clock(clock.clone())
        .image("app", ImageBehaviour::new())
        .run_commands(true)
        .build();
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

fn waiting(pod: &Pod, name: &str) -> Option<(String, String)> {
    let waiting = container(pod, name)?.state.as_ref()?.waiting.clone()?;
    Some((
        waiting.reason.unwrap_or_default(),
        waiting.message.unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_waits_for_its_config_map_then_runs_with_its_configuration() {
    within(LIMIT, async {
        let node = node_running_commands().await;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "creds", "namespace": NS},
            "stringData": {"password": "s3cret"},
            "data": {"password": "czNjcmV0"},
        }))
        .unwrap();
        Api::<Secret>::namespaced(node.client.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await
            .expect("secret created");
        node.create(json!({
            "metadata": {"name": "env-pod", "namespace": NS},
            "spec": {"nodeName": NODE, "containers": [{
                "name": "app", "image": "app",
                "command": ["sh", "-c"],
                "args": ["echo '$(GREETING) from $(POD_NAME), $$(KEPT)' > /tmp/out; sleep 3600"],
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
                "env": [
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "GREETING", "value": "hello $(MODE)"},
                ],
            }]},
        }))
        .await;

        // No ConfigMap yet: the container is held back with Kubernetes' reason and message.
        let message = "configmap \"settings\" not found";
        let pod = node
            .wait_pod("env-pod", "CreateContainerConfigError", |p| {
                waiting(p, "app").is_some_and(|(reason, _)| reason == "CreateContainerConfigError")
            })
            .await;
        assert_eq!(waiting(&pod, "app").unwrap().1, message);
        assert_eq!(phase(&pod), "Pending");
        assert!(
            node.has_event("Failed", &format!("Error: {message}")).await,
            "{:?}",
            node.events().await
        );
        assert!(node
            .fake
            .list_containers(ContainerFilter::all())
            .await
            .unwrap()
            .is_empty());

        // Once it exists, a later sync starts the container.
        let config_map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "settings", "namespace": NS},
            "data": {"mode": "fast"},
        }))
        .unwrap();
        Api::<ConfigMap>::namespaced(node.client.clone(), NS)
            .create(&PostParams::default(), &config_map)
            .await
            .expect("config map created");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let pod = loop {
            node.advance(1).await;
            let pod = node.get("env-pod").await.expect("the pod");
            if phase(&pod) == "Running" {
                break pod;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never Running: {:#?}",
                pod.status
            );
        };
        let pod_ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();

        let containers = node
            .fake
            .list_containers(ContainerFilter::all())
            .await
            .unwrap();
        assert_eq!(containers.len(), 1);
        let id = containers[0].id.clone();
        let env = node
            .fake
            .exec_sync(ExecRequest::new(&id, ["env"]))
            .await
            .expect("env runs");
        let env = String::from_utf8_lossy(&env.stdout).into_owned();
        for line in [
            "MODE=fast".to_string(),
            "CFG_mode=fast".to_string(),
            "PASSWORD=s3cret".to_string(),
            "POD_NAME=env-pod".to_string(),
            format!("POD_IP={pod_ip}"),
            "GREETING=hello fast".to_string(),
        ] {
            assert!(env.lines().any(|l| l == line), "{line} in\n{env}");
        }
        // `args` were expanded (the escaped reference kept) before the shell ran them.
        let mut out = None;
        for _ in 0..200 {
            if let Ok(file) = node.fake.read_file(&id, "/tmp/out") {
                out = Some(String::from_utf8_lossy(&file).into_owned());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(out.as_deref(), Some("hello fast from env-pod, $(KEPT)\n"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_holds_the_container_back_and_an_optional_one_does_not() {
    within(LIMIT, async {
        let node = Node::start(vec![("app", ImageBehaviour::new())]).await;
        let config_map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "settings", "namespace": NS},
            "data": {"mode": "fast"},
        }))
        .unwrap();
        Api::<ConfigMap>::namespaced(node.client.clone(), NS)
            .create(&PostParams::default(), &config_map)
            .await
            .expect("config map created");
        let key_ref = |key: &str, optional: bool| {
            json!({"name": "X", "valueFrom": {"configMapKeyRef":
                {"name": "settings", "key": key, "optional": optional}}})
        };
        node.create(pod(
            "strict",
            &[],
            json!({"containers": [{"name": "app", "image": "app", "env": [key_ref("level", false)]}]}),
        ))
        .await;
        node.create(pod(
            "lenient",
            &[],
            json!({"containers": [{"name": "app", "image": "app", "env": [key_ref("level", true)]}]}),
        ))
        .await;
        let strict = node
            .wait_pod("strict", "CreateContainerConfigError", |p| waiting(p, "app").is_some_and(|(r, _)| r == "CreateContainerConfigError"))
            .await;
        assert_eq!(
            waiting(&strict, "app").unwrap().1,
            format!("couldn't find key level in ConfigMap {NS}/settings")
        );
        node.wait_pod("lenient", "Running", |p| phase(p) == "Running")
            .await;
    })
    .await;
}
