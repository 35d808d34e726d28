//! A Score plugin of your own in the scheduler's profile, next to the default plugins.
//!
//! ```text
//! cargo run --example scheduler_plugin
//! ```
//!
//! `PreferFastDisks` scores nodes by the `disk` label (`nvme` best, then `ssd`, then
//! anything else). It is registered under its name in a [`PluginRegistry`] merged into the default
//! one, and enabled in the default profile with weight 5, so it outweighs the default
//! spreading scores. The example runs the real scheduler over the in-process API server with
//! three nodes and schedules six Pods: with the plugin they go to the NVMe node while it has
//! room, without it they spread. The tests at the bottom check both.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan::api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan::api::kube_core::params::PostParams;
use capstan::api::{Api, Client};
use capstan::controller::events::{EventBroadcaster, EventOptions};
use capstan::scheduler::framework::{
    CycleState, Framework, NodeInfo, Plugin, PluginConfig, PluginRegistry, SchedulerPlugin,
    ScorePlugin, Status, MAX_NODE_SCORE,
};
use capstan::scheduler::plugins::{default_profile, default_registry, DEFAULT_PREEMPTION};
use capstan::scheduler::{DefaultBinder, Scheduler, DEFAULT_BINDER};
use capstan::watch::{InformerFactory, ReflectorOptions};
use serde_json::json;

/// Prefers nodes with faster disks, by their `disk` label.
#[derive(Debug, Default)]
pub struct PreferFastDisks;

impl PreferFastDisks {
    /// The plugin's name, as profiles spell it.
    pub const NAME: &'static str = "PreferFastDisks";
}

impl SchedulerPlugin for PreferFastDisks {
    fn name(&self) -> &str {
        Self::NAME
    }
}

impl ScorePlugin for PreferFastDisks {
    /// Already in `0..=MAX_NODE_SCORE`, so the default `normalize_score` (none) is kept.
    fn score(&self, _: &CycleState, _: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let disk = node
            .node()
            .and_then(|n| n.metadata.labels.as_ref())
            .and_then(|l| l.get("disk"))
            .map(String::as_str);
        Ok(match disk {
            Some("nvme") => MAX_NODE_SCORE,
            Some("ssd") => MAX_NODE_SCORE / 2,
            _ => 0,
        })
    }
}

/// The default framework plus, when `with_plugin`, `PreferFastDisks` at weight 5.
pub fn framework(
    client: Arc<dyn Client>,
    events: &EventBroadcaster,
    with_plugin: bool,
) -> Framework {
    let mut registry = default_registry();
    registry
        .merge(DefaultBinder::registry(client.clone()))
        .expect("unique names");
    registry
        .merge(capstan::scheduler::plugins::DefaultPreemption::registry(
            client,
            events.recorder("default-scheduler"),
        ))
        .expect("unique names");
    let mut profile = default_profile()
        .with_plugin(PluginConfig::new(DEFAULT_PREEMPTION))
        .with_plugin(PluginConfig::new(DEFAULT_BINDER));
    if with_plugin {
        // A factory per name; it receives the profile's JSON args for the plugin.
        let mut ours = PluginRegistry::new();
        ours.register(PreferFastDisks::NAME, |_args| {
            Ok(Plugin::builder(Arc::new(PreferFastDisks)).score().build())
        })
        .expect("an empty registry");
        registry.merge(ours).expect("unique names");
        profile = profile.with_plugin(PluginConfig::new(PreferFastDisks::NAME).weight(5));
    }
    Framework::new(&registry, &profile).expect("the profile names registered plugins")
}

/// Runs a scheduler over a fresh in-process cluster with three nodes (`disk` = nvme, ssd,
/// hdd), schedules `pods` Pods and returns how many landed on each node.
pub async fn place(pods: usize, with_plugin: bool) -> BTreeMap<String, usize> {
    let client = capstan::apiserver::testing::client();
    let nodes: Api<Node> = Api::cluster(client.clone());
    for (name, disk) in [("fast", "nvme"), ("medium", "ssd"), ("slow", "hdd")] {
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"disk": disk}}}))
                .expect("a valid Node");
        let mut node = nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
        node.status = Some(
            serde_json::from_value(
                json!({"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}),
            )
            .expect("a valid status"),
        );
        nodes
            .update_status(&PostParams::default(), &node)
            .await
            .expect("node status");
    }
    let events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let scheduler = Scheduler::new(
        client.clone(),
        framework(client.clone(), &events, with_plugin),
        events.recorder("default-scheduler"),
    );
    let informers = InformerFactory::new(client.clone(), ReflectorOptions::default());
    let running = tokio::spawn(async move { scheduler.run(&informers).await });

    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..pods {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("web-{i}")},
            "spec": {"containers": [{"name": "web", "image": "nginx",
                "resources": {"requests": {"cpu": "500m"}}}]},
        }))
        .expect("a valid Pod");
        api.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }
    let placed = loop {
        let list = api.list(&Default::default()).await.expect("list pods");
        let placed: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|p| p.spec.and_then(|s| s.node_name))
            .collect();
        if placed.len() == pods {
            break placed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    running.abort();
    let mut per_node = BTreeMap::new();
    for node in placed {
        *per_node.entry(node).or_insert(0) += 1;
    }
    per_node
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("default profile:           {:?}", place(6, false).await);
    println!("with PreferFastDisks (x5): {:?}", place(6, true).await);
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan::testing::within;

    /// Every test's time limit.
    const LIMIT: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn the_custom_plugin_sends_every_pod_to_the_nvme_node_while_it_has_room() {
        let placed = within(LIMIT, place(6, true)).await;
        assert_eq!(placed, BTreeMap::from([("fast".to_string(), 6)]));
    }

    #[tokio::test]
    async fn without_the_plugin_the_default_scores_spread_the_pods() {
        let placed = within(LIMIT, place(6, false)).await;
        assert_eq!(placed.len(), 3, "{placed:?}");
    }

    #[test]
    fn the_plugin_scores_by_disk_label_within_range() {
        let node = |disk: &str| {
            let n: Node = serde_json::from_value(
                json!({"metadata": {"name": "n", "labels": {"disk": disk}}}),
            )
            .unwrap();
            NodeInfo::new(Arc::new(n))
        };
        let pod = Pod::default();
        let score = |disk| {
            PreferFastDisks
                .score(&CycleState::new(), &pod, &node(disk))
                .unwrap()
        };
        assert_eq!(
            [score("nvme"), score("ssd"), score("hdd")],
            [MAX_NODE_SCORE, MAX_NODE_SCORE / 2, 0]
        );
    }
}
