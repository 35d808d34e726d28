//! Everything a controller test needs, behind one import: a fake cluster in one line, the
//! fakes it is made of, an event log to assert on, and time limits.
//!
//! [`FakeCluster`] runs in process: the API server's registry over the in-memory store, the
//! built-in controllers (Deployment, ReplicaSet, garbage collector, ...), Nodes that renew
//! their Leases, a scheduler that binds Pods round-robin, a kubelet that reports them
//! `Running`, and an [`EventLog`] of every Event. Your controller talks to
//! [`FakeCluster::client`] as it would to a real API server.
//!
//! ```
//! use std::time::Duration;
//! use capstan::api::{k8s_openapi::api::core::v1::ConfigMap, kube_core::params::PostParams, Api};
//! use capstan::testing::{within, FakeCluster};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! within(Duration::from_secs(30), async {
//!     let cluster = FakeCluster::start().await;
//!     let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
//!     let mut settings = ConfigMap::default();
//!     settings.metadata.name = Some("settings".into());
//!     config_maps.create(&PostParams::default(), &settings).await.unwrap();
//! })
//! .await;
//! # });
//! ```

use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Node;
use capstan_api::{Api, Client, ResourceInfo};
use capstan_apiserver::apiextensions::{serve_custom_resources, CustomResourceController};
use capstan_apiserver::registry::Registry;
use capstan_controller::events::{EventBroadcaster, EventOptions, EventRecorder};
use capstan_controllers::manager::{ControllerManager, ManagerError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use capstan_api::testing::{eventually, eventually_some, within, within_named, POLL_INTERVAL};
pub use capstan_apiserver::testing::{client, create_namespace, registry};
pub use capstan_controller::testing::{
    EventLog, FakeKubelet, FakeNodes, FakeScheduler, KubeletOptions, ObjectHistory,
};

/// A cluster for kube-rs code in one line (feature `kube`): a new registry over its own
/// in-memory store, and a `kube::Client` served by it in process, without a socket
/// (`capstan::apiserver::kube_bridge::client`). Keep the registry to serve kinds of your own
/// or to build more clients; for the built-in controllers, the fake scheduler and kubelets
/// too, start a [`FakeCluster`] and bridge its [`registry`](FakeCluster::registry).
///
/// # Panics
///
/// Outside a tokio runtime.
#[cfg(feature = "kube")]
pub fn kube_cluster() -> (Arc<Registry>, capstan_apiserver::kube_bridge::kube::Client) {
    let registry = registry();
    let client = capstan_apiserver::kube_bridge::client(registry.clone());
    (registry, client)
}

/// How long [`FakeClusterBuilder::start`] waits for its Nodes to be registered.
const NODES_REGISTERED_LIMIT: Duration = Duration::from_secs(10);

/// The controller manager's task and the signal that stops it.
type ManagerTask = (
    oneshot::Sender<()>,
    JoinHandle<Result<capstan_controller::leader::RunOutcome, ManagerError>>,
);

/// A whole cluster in process, for tests; see the [module docs](self).
///
/// Dropping it stops everything at once (the tasks are aborted);
/// [`shutdown`](FakeCluster::shutdown) stops the controllers gracefully and reports their
/// failures.
pub struct FakeCluster {
    registry: Arc<Registry>,
    /// Serves the CustomResourceDefinitions created in the cluster, as the API server does.
    _custom_resources: CustomResourceController,
    client: Arc<dyn Client>,
    nodes: Vec<String>,
    events: EventLog,
    broadcaster: EventBroadcaster,
    manager: Option<ManagerTask>,
    _node_heartbeats: Option<FakeNodes>,
    _scheduler: Option<FakeScheduler>,
    _kubelet: Option<FakeKubelet>,
}

impl std::fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCluster")
            .field("nodes", &self.nodes)
            .field("builtin_controllers", &self.manager.is_some())
            .finish_non_exhaustive()
    }
}

impl FakeCluster {
    /// The default cluster: the built-in controllers and two Nodes, `node-1` and `node-2`,
    /// with the fake scheduler and kubelet. Returns once the Nodes are registered.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or when the Nodes are not registered within 10 s.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A cluster to configure before [starting](FakeClusterBuilder::start) it.
    pub fn builder() -> FakeClusterBuilder {
        FakeClusterBuilder {
            nodes: vec!["node-1".into(), "node-2".into()],
            builtin_controllers: true,
            kubelet: KubeletOptions::default(),
            kinds: Vec::new(),
        }
    }

    /// The API, as your controller sees it.
    pub fn client(&self) -> Arc<dyn Client> {
        self.client.clone()
    }

    /// The registry serving the API, to [register](Registry::register) more kinds.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The names of the fake Nodes.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Every Event written since the cluster started.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// An event recorder for a component of your own (`website-controller`), writing to this
    /// cluster; its Events show in [`events`](FakeCluster::events).
    pub fn recorder(&self, component: impl Into<String>) -> EventRecorder {
        self.broadcaster.recorder(component)
    }

    /// Stops the built-in controllers gracefully (reconciles in flight finish), writes the
    /// Events recorded so far, then stops the rest.
    ///
    /// Errors: the controller manager's, when a built-in controller failed.
    ///
    /// # Panics
    ///
    /// When the controller manager's task panicked.
    pub async fn shutdown(mut self) -> Result<(), ManagerError> {
        if let Some((stop, task)) = self.manager.take() {
            let _ = stop.send(());
            task.await.expect("the controller manager panicked")?;
        }
        self.broadcaster.flush().await;
        Ok(())
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        if let Some((_, task)) = self.manager.take() {
            task.abort();
        }
    }
}

/// What a [`FakeCluster`] is made of; [`FakeCluster::builder`] starts with its defaults.
#[derive(Debug)]
pub struct FakeClusterBuilder {
    nodes: Vec<String>,
    builtin_controllers: bool,
    kubelet: KubeletOptions,
    kinds: Vec<ResourceInfo>,
}

impl FakeClusterBuilder {
    /// The fake Nodes, by name (default `node-1`, `node-2`). With none, there is no scheduler
    /// and no kubelet either: Pods stay pending.
    pub fn nodes<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.nodes = names.into_iter().map(Into::into).collect();
        self
    }

    /// No built-in controllers: only what the test starts reconciles.
    pub fn without_builtin_controllers(mut self) -> Self {
        self.builtin_controllers = false;
        self
    }

    /// How the fake kubelet behaves (its `Killing` Events go to the cluster's event log
    /// unless `options.events` is set).
    pub fn kubelet(mut self, options: KubeletOptions) -> Self {
        self.kubelet = options;
        self
    }

    /// Serves a kind of your own (see [`resource!`](capstan_api::resource)) besides the
    /// built-in ones.
    pub fn kind(mut self, kind: ResourceInfo) -> Self {
        self.kinds.push(kind);
        self
    }

    /// Starts the cluster; returns once its Nodes are registered.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or when the Nodes are not registered within 10 s.
    pub async fn start(self) -> FakeCluster {
        let registry = registry();
        for kind in self.kinds {
            registry.register(kind);
        }
        let custom_resources = serve_custom_resources(registry.clone());
        let client: Arc<dyn Client> = registry.clone();
        let events = EventLog::record(client.clone());
        let broadcaster = EventBroadcaster::new(client.clone(), EventOptions::default());
        let manager = self.builtin_controllers.then(|| {
            let (stop, stopped) = oneshot::channel::<()>();
            let manager = ControllerManager::new(client.clone()).with_builtins();
            let task = tokio::spawn(manager.run(async move {
                let _ = stopped.await;
            }));
            (stop, task)
        });
        let (mut node_heartbeats, mut scheduler, mut kubelet) = (None, None, None);
        if !self.nodes.is_empty() {
            let mut options = self.kubelet;
            if options.events.is_none() {
                options.events = Some(broadcaster.recorder("kubelet"));
            }
            node_heartbeats = Some(FakeNodes::start(client.clone(), self.nodes.clone()));
            scheduler = Some(FakeScheduler::start(client.clone(), self.nodes.clone()));
            kubelet = Some(FakeKubelet::start(
                client.clone(),
                self.nodes.clone(),
                options,
            ));
            let node_api: Api<Node> = Api::all(client.clone());
            let expected = self.nodes.len();
            eventually(
                NODES_REGISTERED_LIMIT,
                format!("the fake cluster's {expected} Nodes to be registered"),
                || async {
                    node_api
                        .list(&Default::default())
                        .await
                        .is_ok_and(|nodes| nodes.items.len() >= expected)
                },
            )
            .await;
        }
        FakeCluster {
            registry,
            _custom_resources: custom_resources,
            client,
            nodes: self.nodes,
            events,
            broadcaster,
            manager,
            _node_heartbeats: node_heartbeats,
            _scheduler: scheduler,
            _kubelet: kubelet,
        }
    }
}

#[cfg(test)]
mod tests {
    use capstan_api::k8s_openapi::api::apps::v1::Deployment;
    use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use capstan_api::kube_core::params::{ListParams, PostParams};

    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    fn deployment(name: &str, replicas: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
                },
            },
        }))
        .expect("a valid Deployment")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deployment_of_three_replicas_ends_with_three_running_pods() {
        within(LIMIT, async {
            let cluster = FakeCluster::start().await;
            let deployments: Api<Deployment> = Api::namespaced(cluster.client(), "default");
            deployments
                .create(&PostParams::default(), &deployment("web", 3))
                .await
                .unwrap();

            let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
            eventually(LIMIT, "3 running pods of web", || async {
                let Ok(list) = pods.list(&ListParams::default()).await else {
                    return false;
                };
                let running = list.items.iter().filter(|pod| {
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                });
                running.count() == 3
            })
            .await;
            let scaled = cluster
                .events()
                .wait_for("ScalingReplicaSet", "web", LIMIT)
                .await;
            assert_eq!(scaled.involved_object.kind.as_deref(), Some("Deployment"));
            cluster.shutdown().await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn a_bare_cluster_serves_the_api_and_records_events_of_its_own_components() {
        within(LIMIT, async {
            let cluster = FakeCluster::builder()
                .nodes(Vec::<String>::new())
                .without_builtin_controllers()
                .start()
                .await;
            assert!(cluster.nodes().is_empty());
            let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
            let mut solo = ConfigMap::default();
            solo.metadata.name = Some("solo".into());
            let solo = config_maps
                .create(&PostParams::default(), &solo)
                .await
                .unwrap();

            cluster
                .recorder("my-controller")
                .normal(&solo, "Noticed", "Saw the config map");
            let noticed = cluster.events().wait_for("Noticed", "solo", LIMIT).await;
            assert_eq!(noticed.message.as_deref(), Some("Saw the config map"));
            assert!(format!("{cluster:?}").contains("builtin_controllers: false"));
        })
        .await;
    }
}
