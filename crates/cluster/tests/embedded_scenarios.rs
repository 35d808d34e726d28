//! The seeds' scenarios end to end on the embedded cluster: the API server over HTTP, the
//! controller manager and scheduler with leader election, and kubelets and proxies on the
//! fake runtime, network and proxy backend, every component with its own HTTP client.
//!
//! The scenarios themselves (`common/mod.rs`) assert on objects and Events read through the
//! API as kubectl would; `real_cluster.rs` runs the same ones on real parts. Needs the seed
//! manifests in the repository's `examples/manifests`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_cluster::embedded::{ClusterConfig, EmbeddedCluster};
use capstan_cluster::node::RunningNode;
use capstan_controller::leader::LeaderElectionConfig;
use capstan_store::Range;
use common::Scenario;
use futures::FutureExt;
use tokio::sync::Mutex;

const TIMEOUT: Duration = Duration::from_secs(150);

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Test {
    cluster: Arc<Mutex<EmbeddedCluster>>,
    scenario: Scenario,
    _dir: TempDir,
}

async fn start(nodes: usize, configure: impl FnOnce(&mut ClusterConfig)) -> Test {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("capstan-e2e-{nonce}"));
    std::fs::create_dir_all(&dir).unwrap();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = ClusterConfig::fake(listen, dir.join("kubeconfig"), nodes);
    config.state_dir = dir.join("nodes");
    configure(&mut config);
    let cluster = EmbeddedCluster::start(config)
        .await
        .expect("the cluster starts");
    cluster
        .wait_until_ready(Duration::from_secs(60))
        .await
        .expect("the nodes become Ready");
    let client = cluster.client();
    Test {
        cluster: Arc::new(Mutex::new(cluster)),
        scenario: Scenario { client },
        _dir: TempDir(dir),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newkubia_scaled_from_five_to_three_gives_the_seeds_event_chain() {
    tokio::time::timeout(TIMEOUT, async {
        let test = start(3, |_| {}).await;
        common::newkubia_five_to_three(&test.scenario).await;
    })
    .await
    .expect("the scenario finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nginx_deployment_makes_a_replicaset_and_a_pod_with_their_events_and_keys() {
    tokio::time::timeout(TIMEOUT, async {
        let test = start(2, |_| {}).await;
        let (rs, pod) = common::nginx_deployment(&test.scenario).await;
        // The keys as `etcdctl get /registry --prefix --keys-only` lists them.
        let keys: Vec<String> = test
            .cluster
            .lock()
            .await
            .registry()
            .store()
            .range(Range::prefix("/registry/"))
            .await
            .unwrap()
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect();
        common::assert_registry_keys(&keys, &rs, &pod);
    })
    .await
    .expect("the scenario finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_name_skips_the_scheduler_and_a_node_selector_waits_for_the_label() {
    tokio::time::timeout(TIMEOUT, async {
        let test = start(3, |_| {}).await;
        common::node_name_and_selector(&test.scenario).await;
    })
    .await
    .expect("the scenario finishes in time");
}

/// The endpoints the fake proxy of `node` programs for Service `web` (only ready ones are).
fn proxied_endpoints(node: &RunningNode) -> BTreeSet<String> {
    node.proxy()
        .fake()
        .expect("the fake proxy backend")
        .state()
        .services
        .iter()
        .filter(|(port, _)| port.name == "web")
        .flat_map(|(_, service)| service.endpoints.iter())
        .map(|endpoint| endpoint.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_keeps_its_bounds_rolls_back_and_the_service_follows() {
    tokio::time::timeout(TIMEOUT, async {
        let test = start(3, |_| {}).await;
        let cluster = test.cluster.clone();
        // Every node's proxy programs exactly the Pods' addresses.
        common::rolling_update(&test.scenario, move |pods: Vec<Pod>| {
            let cluster = cluster.clone();
            async move {
                let expected: BTreeSet<String> = pods
                    .iter()
                    .map(|p| {
                        format!(
                            "{}:8080",
                            p.status.as_ref().unwrap().pod_ip.as_ref().unwrap()
                        )
                    })
                    .collect();
                loop {
                    let cluster = cluster.lock().await;
                    if cluster
                        .nodes()
                        .values()
                        .all(|node| proxied_endpoints(node) == expected)
                    {
                        return;
                    }
                    drop(cluster);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            .boxed()
        })
        .await;
    })
    .await
    .expect("the scenario finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_goes_not_ready_and_its_pods_are_replaced_elsewhere() {
    tokio::time::timeout(TIMEOUT, async {
        let test = start(3, |_| {}).await;
        let cluster = test.cluster.clone();
        common::lost_node(&test.scenario, move |node| {
            async move {
                assert!(cluster.lock().await.stop_node(&node).await);
            }
            .boxed()
        })
        .await;
    })
    .await
    .expect("the scenario finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_controller_manager_and_scheduler_take_over_without_duplicate_pods() {
    tokio::time::timeout(TIMEOUT, async {
        let test = start(3, |config| {
            config.control_plane_replicas = 2;
            config.leader_election = LeaderElectionConfig::default()
                .lease_duration(Duration::from_secs(3))
                .renew_deadline(Duration::from_secs(2))
                .retry_period(Duration::from_millis(500));
        })
        .await;
        let cluster = test.cluster.clone();
        common::leader_failover(&test.scenario, move |manager, scheduler| {
            async move {
                let replica = |identity: &str| -> usize {
                    identity
                        .trim_start_matches("replica-")
                        .parse()
                        .expect("an embedded replica's identity")
                };
                let mut cluster = cluster.lock().await;
                assert!(cluster.kill_controller_manager(replica(&manager)));
                assert!(cluster.kill_scheduler(replica(&scheduler)));
            }
            .boxed()
        })
        .await;
    })
    .await
    .expect("the scenario finishes in time");
}
