//! The seed scenarios end to end: the scheduler over the in-process API server.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::kube_core::params::{Patch, PatchParams, PostParams};
use capstan_api::testing::within;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_scheduler::framework::{
    CycleState, Framework, PermitDecision, PermitPlugin, Plugin, PluginConfig, PluginRegistry,
    SchedulerPlugin,
};
use capstan_scheduler::plugins::{default_profile, default_registry};
use capstan_scheduler::waiting::WaitingPods;
use capstan_scheduler::{default_framework, DefaultBinder, Scheduler, DEFAULT_BINDER};
use capstan_watch::{InformerFactory, ReflectorOptions};
use serde_json::json;

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/manifests");

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(30);

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
        Self::start_with(None, Arc::new(WaitingPods::new()))
    }

    /// A cluster whose scheduler also runs `permit` (a registry holding one Permit plugin,
    /// and its name), sharing `waiting` with it.
    fn start_with(permit: Option<(PluginRegistry, &str)>, waiting: Arc<WaitingPods>) -> Self {
        let client = capstan_apiserver::testing::client();
        let events = EventBroadcaster::new(
            client.clone(),
            EventOptions::default().history_capacity(1000),
        );
        let recorder = events.recorder("default-scheduler");
        let framework = match permit {
            None => default_framework(client.clone(), recorder.clone()).unwrap(),
            Some((registry, name)) => {
                let mut r = default_registry();
                r.merge(DefaultBinder::registry(client.clone())).unwrap();
                r.merge(registry).unwrap();
                let profile = default_profile()
                    .with_plugin(PluginConfig::new(name))
                    .with_plugin(PluginConfig::new(DEFAULT_BINDER));
                Framework::new(&r, &profile).unwrap()
            }
        };
        let scheduler =
            Scheduler::new(client.clone(), framework, recorder).with_waiting_pods(waiting);
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
    within(LIMIT, async {
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
    within(LIMIT, async {
        let c = Cluster::start();
        c.add_node("node01", json!({})).await;
        c.add_node("node02", json!({})).await;
        c.pods()
            .create(&PostParams::default(), &manifest("pod-nodeselector.yaml"))
            .await
            .unwrap();
        let message = c.event_with("FailedScheduling", "pod-example").await;
        // As kube-scheduler words it: the fit error, then why preemption cannot help.
        assert_eq!(
            message,
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
        );
        // The pod says so in its PodScheduled condition.
        let pods = c.pods();
        let condition = loop {
            let p = pods.get("pod-example").await.unwrap();
            let found = p
                .status
                .and_then(|s| s.conditions)
                .and_then(|c| c.into_iter().find(|c| c.type_ == "PodScheduled"));
            match found {
                Some(c) => break c,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert_eq!(condition.status, "False");
        assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
        assert_eq!(condition.message.as_deref(), Some(message.as_str()));
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
    within(LIMIT, async {
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
    within(LIMIT, async {
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

/// A pod with `priority` asking for `cpu`, bound to `node` when given.
fn pod_with(name: &str, priority: i32, cpu: &str, node: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "priority": priority,
            "nodeName": node,
            "containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": cpu}}}],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn a_high_priority_pod_preempts_the_fewest_lower_priority_pods() {
    within(LIMIT, async {
        let c = Cluster::start();
        c.add_node("node01", json!({})).await;
        // node01 has 4 CPUs, all taken: two low-priority pods and one of equal priority.
        for (name, priority) in [("low-a", 0), ("low-b", 0), ("peer", 100)] {
            let cpu = if name == "peer" { "2" } else { "1" };
            c.pods()
                .create(
                    &PostParams::default(),
                    &pod_with(name, priority, cpu, Some("node01")),
                )
                .await
                .unwrap();
        }
        c.pods()
            .create(&PostParams::default(), &pod_with("urgent", 100, "1", None))
            .await
            .unwrap();
        let message = c.event_with("FailedScheduling", "urgent").await;
        assert!(
            message.starts_with("0/1 nodes are available: 1 Insufficient cpu."),
            "{message}"
        );
        // One low-priority pod is enough: exactly one is evicted, the equal-priority one never.
        let preempted = loop {
            c.events.flush().await;
            let victims: Vec<String> = c
                .events
                .history()
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("Preempted"))
                .filter_map(|e| e.involved_object.name)
                .collect();
            if !victims.is_empty() {
                break victims;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(preempted.len(), 1, "{preempted:?}");
        let victim = &preempted[0];
        assert!(victim.starts_with("low-"), "{victim}");
        let terminating: Vec<String> = c
            .pods()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .filter_map(|p| p.metadata.name)
            .collect();
        assert_eq!(&terminating, &preempted);
        // The preemptor is nominated to the node while the victim terminates.
        loop {
            let urgent = c.pods().get("urgent").await.unwrap();
            if urgent.status.and_then(|s| s.nominated_node_name).as_deref() == Some("node01") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The victim's kubelet finishes the deletion; then the preemptor lands.
        c.pods()
            .delete(
                victim,
                &capstan_api::kube_core::params::DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(c.node_of("urgent").await, "node01");
        assert!(c
            .pods()
            .get("peer")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none());
    })
    .await
}

#[tokio::test]
async fn a_pod_with_preemption_policy_never_evicts_nobody() {
    within(LIMIT, async {
        let c = Cluster::start();
        c.add_node("node01", json!({})).await;
        c.pods()
            .create(
                &PostParams::default(),
                &pod_with("low", 0, "4", Some("node01")),
            )
            .await
            .unwrap();
        let mut polite = pod_with("polite", 100, "1", None);
        polite.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        c.pods()
            .create(&PostParams::default(), &polite)
            .await
            .unwrap();
        let message = c.event_with("FailedScheduling", "polite").await;
        assert!(
            message.ends_with("preemption: not eligible due to preemptionPolicy=Never."),
            "{message}"
        );
        assert!(c
            .pods()
            .get("low")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none());
    })
    .await
}

/// Holds every pod at Permit for `wait`.
struct Gate {
    wait: Duration,
}

impl SchedulerPlugin for Gate {
    fn name(&self) -> &str {
        "Gate"
    }
}

impl PermitPlugin for Gate {
    fn permit(&self, _: &mut CycleState, _: &Pod, _: &str) -> PermitDecision {
        PermitDecision::Wait(self.wait)
    }
}

fn gate(wait: Duration) -> (PluginRegistry, &'static str) {
    let mut r = PluginRegistry::new();
    let plugin = Arc::new(Gate { wait });
    r.register("Gate", move |_| {
        Ok(Plugin::builder(plugin.clone()).permit().build())
    })
    .unwrap();
    (r, "Gate")
}

#[tokio::test]
async fn a_waiting_pod_is_bound_only_once_its_permit_plugin_allows_it() {
    within(LIMIT, async {
        let waiting = Arc::new(WaitingPods::new());
        let c = Cluster::start_with(Some(gate(Duration::from_secs(60))), waiting.clone());
        c.add_node("node01", json!({})).await;
        c.pods()
            .create(&PostParams::default(), &pod_with("gated", 0, "1", None))
            .await
            .unwrap();
        while waiting.keys().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(waiting.node_of("default/gated").as_deref(), Some("node01"));
        assert_eq!(waiting.pending_plugins("default/gated"), ["Gate"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pod = c.pods().get("gated").await.unwrap();
        assert!(pod.spec.unwrap().node_name.is_none(), "bound while waiting");
        assert!(waiting.allow("default/gated", "Gate"));
        assert_eq!(c.node_of("gated").await, "node01");
    })
    .await
}

#[tokio::test]
async fn a_waiting_pod_is_rejected_when_its_wait_runs_out() {
    within(LIMIT, async {
        let waiting = Arc::new(WaitingPods::new());
        let c = Cluster::start_with(Some(gate(Duration::from_millis(50))), waiting.clone());
        c.add_node("node01", json!({})).await;
        c.pods()
            .create(&PostParams::default(), &pod_with("gated", 0, "1", None))
            .await
            .unwrap();
        let message = c.event_with("FailedScheduling", "gated").await;
        assert_eq!(
            message,
            "rejected due to timeout after waiting 50ms at plugin Gate"
        );
        let pod = c.pods().get("gated").await.unwrap();
        assert!(pod.spec.unwrap().node_name.is_none());
    })
    .await
}
