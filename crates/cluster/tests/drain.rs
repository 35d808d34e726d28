//! `kubectl drain` on the embedded cluster: a node running a Deployment's Pods is emptied
//! through the `pods/eviction` subresource while a PodDisruptionBudget holds availability.
//! kubectl retries the evictions the budget refuses (429) until the replacements are Ready
//! on the other node, so the budget's `currentHealthy` never goes below `minAvailable`.
//!
//! Needs `kubectl` on the PATH (Debian's `kubernetes-client`; `scripts/test` installs it when
//! missing).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::apps::v1::Deployment;
use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use capstan_api::kube_core::params::{ListParams, PostParams};
use capstan_api::testing::{eventually, within};
use capstan_api::Api;
use capstan_cluster::embedded::{ClusterConfig, EmbeddedCluster};
use capstan_controller::testing::ObjectHistory;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(240);
const NS: &str = "default";

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `web`'s Pods by node, counting only those not being deleted.
async fn web_pods_by_node(pods: &Api<Pod>) -> BTreeMap<String, Vec<Pod>> {
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in list.items {
        if pod.metadata.deletion_timestamp.is_none() {
            let node = pod.node_name().unwrap_or_default().to_string();
            by_node.entry(node).or_default().push(pod);
        }
    }
    by_node
}

fn healthy(pdb: &PodDisruptionBudget) -> Option<i64> {
    serde_json::to_value(pdb).ok()?["status"]["currentHealthy"].as_i64()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_drain_empties_a_node_without_breaking_the_disruption_budget() {
    within(TIMEOUT, async {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("capstan-drain-{nonce}"));
        std::fs::create_dir_all(&dir).unwrap();
        let _dir = TempDir(dir.clone());
        let mut config =
            ClusterConfig::fake("127.0.0.1:0".parse().unwrap(), dir.join("kubeconfig"), 2);
        config.state_dir = dir.join("nodes");
        let cluster = EmbeddedCluster::start(config)
            .await
            .expect("the cluster starts");
        cluster
            .wait_until_ready(Duration::from_secs(60))
            .await
            .expect("the nodes become Ready");
        let client = cluster.client();
        let pp = PostParams::default();

        let web: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "web" },
            "spec": { "replicas": 3, "selector": { "matchLabels": { "app": "web" } },
                      "template": { "metadata": { "labels": { "app": "web" } },
                                    "spec": {
                                        "topologySpreadConstraints": [{
                                            "maxSkew": 1,
                                            "topologyKey": "kubernetes.io/hostname",
                                            "whenUnsatisfiable": "ScheduleAnyway",
                                            "labelSelector": { "matchLabels": { "app": "web" } } }],
                                        // Replacements are unready for 2 s, so a second
                                        // eviction racing the first is always refused.
                                        "containers": [{ "name": "app", "image": "nginx:1.27",
                                            "readinessProbe": {
                                                "exec": { "command": ["true"] },
                                                "initialDelaySeconds": 2,
                                                "periodSeconds": 1 } }] } } }
        }))
        .unwrap();
        Api::<Deployment>::namespaced(client.clone(), NS)
            .create(&pp, &web)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        eventually(Duration::from_secs(60), "3 Ready web Pods", || async {
            let by_node = web_pods_by_node(&pods).await;
            by_node.values().flatten().filter(|p| p.is_ready()).count() == 3
        })
        .await;
        let by_node = web_pods_by_node(&pods).await;
        assert_eq!(
            by_node.len(),
            2,
            "the Pods are spread on both nodes: {by_node:?}"
        );
        // Drain the node with the most of them.
        let (drained, on_it) = by_node
            .iter()
            .max_by_key(|(_, pods)| pods.len())
            .map(|(node, pods)| (node.clone(), pods.len()))
            .unwrap();
        assert!(on_it >= 1);

        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": { "name": "web" },
            "spec": { "minAvailable": 2, "selector": { "matchLabels": { "app": "web" } } }
        }))
        .unwrap();
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), NS);
        budgets.create(&pp, &pdb).await.unwrap();
        eventually(
            Duration::from_secs(60),
            "the budget allows one disruption",
            || async {
                let pdb = budgets.get("web").await.unwrap();
                let status = serde_json::to_value(&pdb).unwrap()["status"].clone();
                status["currentHealthy"] == 3 && status["disruptionsAllowed"] == 1
            },
        )
        .await;
        // Every revision of the budget from now on.
        let history = ObjectHistory::<PodDisruptionBudget>::record(client.clone());
        tokio::time::timeout(
            Duration::from_secs(10),
            history.wait_until(|state| !state.is_empty()),
        )
        .await
        .expect("the budget's history starts");

        let output = tokio::process::Command::new("kubectl")
            .args([
                "--kubeconfig",
                cluster.kubeconfig().to_str().unwrap(),
                "--cache-dir",
                dir.join("kube-cache").to_str().unwrap(),
                "drain",
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=180s",
                &drained,
            ])
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run kubectl ({e}): install it (Debian's kubernetes-client) or run \
                     scripts/test"
                )
            });
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "kubectl drain failed:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains(&format!("node/{drained} drained")),
            "{stdout}"
        );
        if on_it > 1 {
            // The budget refused at least once, and kubectl waited and retried.
            assert!(
                stderr
                    .contains("Cannot evict pod as it would violate the pod's disruption budget."),
                "{stderr}"
            );
        }

        // The node is cordoned and holds no web Pod; the Deployment is whole elsewhere.
        let node = Api::<Node>::all(client.clone())
            .get(&drained)
            .await
            .unwrap();
        assert_eq!(node.spec.unwrap().unschedulable, Some(true));
        let all = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        assert!(
            all.items
                .iter()
                .all(|p| p.node_name() != Some(drained.as_str())),
            "no web Pod left on {drained}"
        );
        eventually(Duration::from_secs(60), "3 Ready web Pods", || async {
            let by_node = web_pods_by_node(&pods).await;
            by_node.values().flatten().filter(|p| p.is_ready()).count() == 3
                && !by_node.contains_key(&drained)
        })
        .await;
        eventually(
            Duration::from_secs(60),
            "the Deployment's 3 ready replicas",
            || async {
                let web = Api::<Deployment>::namespaced(client.clone(), NS)
                    .get("web")
                    .await
                    .unwrap();
                web.status.and_then(|s| s.ready_replicas) == Some(3)
            },
        )
        .await;

        // The budget never counted fewer than minAvailable healthy Pods.
        let seen: Vec<i64> = history
            .revisions()
            .iter()
            .filter_map(|r| healthy(&r.object))
            .collect();
        assert!(!seen.is_empty());
        assert!(
            seen.iter().all(|&h| h >= 2),
            "currentHealthy went below 2: {seen:?}"
        );
        assert!(seen.contains(&2), "the drain did disrupt: {seen:?}");
        cluster.shutdown().await;
    })
    .await;
}
