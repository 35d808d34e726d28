//! The seed scenarios end to end: the scheduler over the in-process API server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::kube_core::params::{Patch, PatchParams, PostParams};
use capstan_api::{Api, Client};
use capstan_apiserver::registry::Registry;
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_scheduler::{default_framework, Scheduler};
use capstan_store::memory::MemoryStore;
use capstan_watch::{InformerFactory, ReflectorOptions};
use serde_json::json;

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/manifests");

async fn within<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("test timed out")
}

fn manifest(name: &str) -> Pod {
    let text = std::fs::read_to_string(format!("{MANIFESTS}/{name}")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

struct Cluster {
    client: Arc<dyn Client>,
    events: EventBroadcaster,
    task: tokio::task::JoinHandle<()>,
}

impl Cluster {
    fn start() -> Self {
        let client: Arc<dyn Client> = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
        let events = EventBroadcaster::new(
            client.clone(),
            EventOptions::default().history_capacity(1000),
        );
        let scheduler = Scheduler::new(
            default_framework(client.clone()).unwrap(),
            events.recorder("default-scheduler"),
        );
        let informers = InformerFactory::new(client.clone(), ReflectorOptions::default());
        let task = tokio::spawn(async move { scheduler.run(&informers).await });
        Cluster {
            client,
            events,
            task,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn add_node(&self, name: &str, labels: serde_json::Value) {
        let nodes: Api<Node> = Api::cluster(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
        }))
        .unwrap();
        let mut created = nodes.create(&PostParams::default(), &node).await.unwrap();
        created.status = Some(
            serde_json::from_value(json!({
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            }))
            .unwrap(),
        );
        nodes
            .update_status(&PostParams::default(), &created)
            .await
            .unwrap();
    }

    async fn node_of(&self, name: &str) -> String {
        loop {
            let pod = self.pods().get(name).await.unwrap();
            if let Some(n) = pod.spec.and_then(|s| s.node_name) {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn event_with(&self, reason: &str, object: &str) -> String {
        loop {
            self.events.flush().await;
            let found = self.events.history().into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object.name.as_deref() == Some(object)
            });
            if let Some(e) = found {
                return e.message.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_pod_with_node_name_bypasses_the_scheduler() {
    within(async {
        let c = Cluster::start();
        c.add_node("node01", json!({})).await;
        c.add_node("node02", json!({})).await;
        c.pods()
            .create(&PostParams::default(), &manifest("pod-nodename.yaml"))
            .await
            .unwrap();
        let mut later = manifest("pod-nodename.yaml");
        later.metadata.name = Some("later".into());
        later.spec.as_mut().unwrap().node_name = None;
        c.pods()
            .create(&PostParams::default(), &later)
            .await
            .unwrap();
        // Once the later pod is scheduled, the first one has been seen and left alone.
        c.event_with("Scheduled", "later").await;
        assert_eq!(c.node_of("pod-example").await, "node01");
        let touched = c
            .events
            .history()
            .into_iter()
            .any(|e| e.involved_object.name.as_deref() == Some("pod-example"));
        assert!(!touched, "the scheduler recorded an event for a bound pod");
    })
    .await
}

#[tokio::test]
async fn a_node_selector_pod_lands_on_node02_once_it_is_labelled() {
    within(async {
        let c = Cluster::start();
        c.add_node("node01", json!({})).await;
        c.add_node("node02", json!({})).await;
        c.pods()
            .create(&PostParams::default(), &manifest("pod-nodeselector.yaml"))
            .await
            .unwrap();
        let message = c.event_with("FailedScheduling", "pod-example").await;
        assert_eq!(
            message,
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        );
        let nodes: Api<Node> = Api::cluster(c.client.clone());
        nodes
            .patch(
                "node02",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"cz": "bob"}}})),
            )
            .await
            .unwrap();
        assert_eq!(c.node_of("pod-example").await, "node02");
        let message = c.event_with("Scheduled", "pod-example").await;
        assert_eq!(
            message,
            "Successfully assigned default/pod-example to node02"
        );
    })
    .await
}

#[tokio::test]
async fn an_unschedulable_pod_is_scheduled_when_a_matching_node_appears() {
    within(async {
        let c = Cluster::start();
        c.add_node("node01", json!({})).await;
        c.pods()
            .create(&PostParams::default(), &manifest("pod-nodeselector.yaml"))
            .await
            .unwrap();
        c.event_with("FailedScheduling", "pod-example").await;
        c.add_node("node03", json!({"cz": "bob"})).await;
        assert_eq!(c.node_of("pod-example").await, "node03");
    })
    .await
}

#[tokio::test]
async fn pending_pods_spread_over_nodes_by_least_allocated() {
    within(async {
        let c = Cluster::start();
        c.add_node("node01", json!({})).await;
        c.add_node("node02", json!({})).await;
        for i in 0..4 {
            let mut p = manifest("pod-nodeselector.yaml");
            p.metadata.name = Some(format!("p{i}"));
            p.spec.as_mut().unwrap().node_selector = None;
            p.spec.as_mut().unwrap().containers[0].resources =
                Some(serde_json::from_value(json!({"requests": {"cpu": "1"}})).unwrap());
            c.pods().create(&PostParams::default(), &p).await.unwrap();
        }
        let mut per_node = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..4 {
            *per_node
                .entry(c.node_of(&format!("p{i}")).await)
                .or_default() += 1;
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2]);
    })
    .await
}
