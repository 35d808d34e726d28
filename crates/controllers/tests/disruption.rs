//! The disruption controller end to end, beside the Deployment and ReplicaSet controllers,
//! over the in-process registry on the memory store, with the fake scheduler and kubelet of
//! `capstan_controller::testing`: budgets' statuses follow their Pods, evictions through the
//! registry's eviction subresource spend and recover disruptions, and failures are recorded
//! as Kubernetes' Events and the `SyncFailed` condition.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::compat::Maybe;
use capstan_api::k8s_openapi::api::apps::v1::Deployment;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use capstan_api::kube_core::params::{ListParams, PostParams};
use capstan_api::testing::{eventually, within};
use capstan_api::{Api, Client};
use capstan_apiserver::registry::{EvictionError, Registry};
use capstan_controller::testing::{EventLog, FakeKubelet, FakeScheduler, KubeletOptions};
use capstan_controllers::manager::{ControllerManager, ControllerSelection};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(60);
const NS: &str = "default";

struct Harness {
    registry: Arc<Registry>,
    client: Arc<dyn Client>,
    events: EventLog,
    _stop: oneshot::Sender<()>,
    _scheduler: FakeScheduler,
    _kubelet: FakeKubelet,
}

async fn start() -> Harness {
    let registry = capstan_apiserver::testing::registry();
    let client: Arc<dyn Client> = registry.clone();
    capstan_apiserver::testing::create_namespace(&*client, NS).await;
    let nodes = vec!["node-1".to_string(), "node-2".to_string()];
    let scheduler = FakeScheduler::start(client.clone(), nodes.clone());
    let kubelet = FakeKubelet::start(client.clone(), nodes, KubeletOptions::default());
    let events = EventLog::record(client.clone());
    let selection: ControllerSelection = "replicaset,deployment,disruption".parse().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        ControllerManager::new(client.clone())
            .with_builtins()
            .controllers(selection)
            .run(async move {
                let _ = stopped.await;
            }),
    );
    Harness {
        registry,
        client,
        events,
        _stop: stop,
        _scheduler: scheduler,
        _kubelet: kubelet,
    }
}

async fn deployment(client: &Arc<dyn Client>, name: &str, replicas: i32) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } },
                  "template": { "metadata": { "labels": { "app": name } },
                                "spec": { "containers": [{ "name": "c", "image": "nginx" }] } } }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
}

async fn budget(client: &Arc<dyn Client>, name: &str, app: &str, spec: Value) {
    let mut spec = spec;
    spec["selector"] = json!({ "matchLabels": { "app": app } });
    let pdb: PodDisruptionBudget =
        serde_json::from_value(json!({ "metadata": { "name": name }, "spec": spec })).unwrap();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
}

/// The budget's status as JSON (`null` when none).
async fn status_of(client: &Arc<dyn Client>, name: &str) -> Value {
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap();
    serde_json::to_value(pdb).unwrap()["status"].clone()
}

/// Waits until the budget's status has these figures (expected, desired, current,
/// allowed) and was computed for its generation.
async fn wait_for_figures(client: &Arc<dyn Client>, name: &str, figures: (i64, i64, i64, i64)) {
    let what = format!("budget {name} with (expected, desired, current, allowed) = {figures:?}");
    eventually(LIMIT, &what, || async {
        let status = status_of(client, name).await;
        let found = (
            status["expectedPods"].as_i64().unwrap_or(0),
            status["desiredHealthy"].as_i64().unwrap_or(0),
            status["currentHealthy"].as_i64().unwrap_or(0),
            status["disruptionsAllowed"].as_i64().unwrap_or(0),
        );
        found == figures && status["observedGeneration"].as_i64() == Some(1)
    })
    .await;
}

fn condition(status: &Value) -> (String, String) {
    let condition = &status["conditions"][0];
    (
        condition["status"].as_str().unwrap_or_default().to_string(),
        condition["reason"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn budgets_follow_their_pods_and_the_controllers_scale() {
    within(LIMIT, async {
        let h = start().await;
        deployment(&h.client, "web", 3).await;
        budget(&h.client, "web-min", "web", json!({ "minAvailable": 2 })).await;
        wait_for_figures(&h.client, "web-min", (3, 2, 3, 1)).await;
        let status = status_of(&h.client, "web-min").await;
        assert_eq!(condition(&status), ("True".into(), "SufficientPods".into()));

        // maxUnavailable counts from the Deployment's scale: 3 - ceil(50% of 3) = 1.
        budget(
            &h.client,
            "web-max",
            "web",
            json!({ "maxUnavailable": "50%" }),
        )
        .await;
        wait_for_figures(&h.client, "web-max", (3, 1, 3, 2)).await;
        // A percentage minAvailable rounds up: ceil(80% of 3) = 3, nothing allowed.
        budget(
            &h.client,
            "web-pct",
            "web",
            json!({ "minAvailable": "80%" }),
        )
        .await;
        wait_for_figures(&h.client, "web-pct", (3, 3, 3, 0)).await;
        let status = status_of(&h.client, "web-pct").await;
        assert_eq!(
            condition(&status),
            ("False".into(), "InsufficientPods".into())
        );

        // Scaling the Deployment moves what the budgets expect.
        let deployments = Api::<Deployment>::namespaced(h.client.clone(), NS);
        let mut web = deployments.get("web").await.unwrap();
        web.spec.or_default_mut().replicas = Some(5);
        deployments
            .update(&PostParams::default(), &web)
            .await
            .unwrap();
        wait_for_figures(&h.client, "web-max", (5, 2, 5, 3)).await;
        wait_for_figures(&h.client, "web-min", (5, 2, 5, 3)).await;
    })
    .await;
}

#[tokio::test]
async fn an_eviction_spends_a_disruption_until_the_replacement_is_ready() {
    within(LIMIT, async {
        let h = start().await;
        deployment(&h.client, "web", 3).await;
        budget(&h.client, "web", "web", json!({ "minAvailable": 2 })).await;
        wait_for_figures(&h.client, "web", (3, 2, 3, 1)).await;
        let pods = Api::<Pod>::namespaced(h.client.clone(), NS);
        let list = pods.list(&ListParams::default()).await.unwrap();
        let names: Vec<String> = list
            .items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        let eviction = |name: &str| {
            json!({ "apiVersion": "policy/v1", "kind": "Eviction",
                                            "metadata": { "name": name } })
        };
        h.registry
            .evict(NS, &names[0], &eviction(&names[0]), false)
            .await
            .expect("the first eviction is allowed");
        // The second one right away is refused by the budget the eviction just spent.
        let refused = h
            .registry
            .evict(NS, &names[1], &eviction(&names[1]), false)
            .await
            .unwrap_err();
        assert!(
            matches!(refused, EvictionError::DisruptionBudget { .. }),
            "{refused:?}"
        );
        assert_eq!(refused.code(), 429);
        // The replacement becomes Ready, and the budget allows one again, with the evicted
        // Pod gone from disruptedPods.
        wait_for_figures(&h.client, "web", (3, 2, 3, 1)).await;
        let status = status_of(&h.client, "web").await;
        assert!(status["disruptedPods"].is_null(), "{status}");
        h.registry
            .evict(NS, &names[1], &eviction(&names[1]), false)
            .await
            .expect("allowed again");
    })
    .await;
}

#[tokio::test]
async fn budgets_without_pods_or_controllers_are_reported_with_kubernetes_events() {
    within(LIMIT, async {
        let h = start().await;
        budget(&h.client, "empty", "nothing", json!({ "minAvailable": 1 })).await;
        let event = h.events.wait_for("NoPods", "empty", LIMIT).await;
        assert_eq!(event.message.as_deref(), Some("No matching pods found"));
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        wait_for_figures(&h.client, "empty", (0, 1, 0, 0)).await;

        // A Pod whose controller does not exist: maxUnavailable cannot be computed.
        let orphan: Pod = serde_json::from_value(json!({
            "metadata": { "name": "orphan", "labels": { "app": "orphan" },
                          "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
                              "name": "gone", "uid": "no-such-uid", "controller": true }] },
            "spec": { "containers": [{ "name": "c", "image": "nginx" }] }
        }))
        .unwrap();
        Api::<Pod>::namespaced(h.client.clone(), NS)
            .create(&PostParams::default(), &orphan)
            .await
            .unwrap();
        budget(&h.client, "orphans", "orphan", json!({ "maxUnavailable": 1 })).await;
        let event = h
            .events
            .wait_for("CalculateExpectedPodCountFailed", "orphans", LIMIT)
            .await;
        assert_eq!(
            event.message.as_deref(),
            Some("Failed to calculate the number of expected pods: found no controllers for pod \"orphan\"")
        );
        eventually(LIMIT, "the SyncFailed condition", || async {
            let status = status_of(&h.client, "orphans").await;
            condition(&status) == ("False".into(), "SyncFailed".into())
                && status["disruptionsAllowed"].as_i64().unwrap_or(0) == 0
        })
        .await;

        // A Pod without any controller is unmanaged: a Warning, and nothing expected.
        let lonely: Pod = serde_json::from_value(json!({
            "metadata": { "name": "lonely", "labels": { "app": "lonely" } },
            "spec": { "containers": [{ "name": "c", "image": "nginx" }] }
        }))
        .unwrap();
        Api::<Pod>::namespaced(h.client.clone(), NS)
            .create(&PostParams::default(), &lonely)
            .await
            .unwrap();
        budget(&h.client, "lonely", "lonely", json!({ "maxUnavailable": 1 })).await;
        let event = h.events.wait_for("UnmanagedPods", "lonely", LIMIT).await;
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert!(event
            .message
            .as_deref()
            .unwrap_or_default()
            .starts_with("Pods selected by this PodDisruptionBudget"));
    })
    .await;
}

#[tokio::test]
async fn a_disruption_target_mark_without_a_deletion_is_taken_back_when_stale() {
    within(LIMIT, async {
        let registry = capstan_apiserver::testing::registry();
        let client: Arc<dyn Client> = registry.clone();
        capstan_apiserver::testing::create_namespace(&*client, NS).await;
        // A Pod the eviction subresource marked three minutes ago, never deleted.
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "marked" },
            "spec": { "containers": [{ "name": "c", "image": "nginx" }] }
        }))
        .unwrap();
        let pods = Api::<Pod>::namespaced(client.clone(), NS);
        let mut created = pods.create(&PostParams::default(), &pod).await.unwrap();
        let three_minutes_ago = capstan_api::k8s_openapi::jiff::Timestamp::now()
            - capstan_api::k8s_openapi::jiff::SignedDuration::from_secs(180);
        let mut status = serde_json::to_value(&created).unwrap();
        status["status"] = json!({ "phase": "Running", "conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting",
            "lastTransitionTime": three_minutes_ago.to_string() }] });
        created = serde_json::from_value(status).unwrap();
        pods.update_status(&PostParams::default(), &created)
            .await
            .unwrap();
        let fresh: Pod = serde_json::from_value(json!({
            "metadata": { "name": "fresh" },
            "spec": { "containers": [{ "name": "c", "image": "nginx" }] }
        }))
        .unwrap();
        let fresh = pods.create(&PostParams::default(), &fresh).await.unwrap();
        let mut status = serde_json::to_value(&fresh).unwrap();
        status["status"] = json!({ "phase": "Running", "conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
            "lastTransitionTime": capstan_api::k8s_openapi::jiff::Timestamp::now().to_string() }] });
        pods.update_status(&PostParams::default(), &serde_json::from_value(status).unwrap())
            .await
            .unwrap();

        let factory = Arc::new(capstan_watch::InformerFactory::new(
            client.clone(),
            capstan_watch::ReflectorOptions::default(),
        ));
        let events = capstan_controller::events::EventBroadcaster::new(
            client.clone(),
            capstan_controller::events::EventOptions::default(),
        );
        let controller = capstan_controllers::disruption::controller(
            client.clone(),
            factory,
            events.recorder(capstan_controllers::disruption::COMPONENT),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(controller.run(async move {
            let _ = stopped.await;
        }));
        let target = |pod: &Pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionTarget").cloned())
                .unwrap()
        };
        eventually(LIMIT, "the stale mark back to False", || async {
            target(&pods.get("marked").await.unwrap()).status == "False"
        })
        .await;
        let reset = target(&pods.get("marked").await.unwrap());
        assert_eq!(reset.reason, None);
        // The recent mark is left alone.
        assert_eq!(target(&pods.get("fresh").await.unwrap()).status, "True");
        let _ = stop.send(());
        running.await.unwrap().unwrap();
    })
    .await;
}
