//! The whole cluster in one process: the API server on loopback, controller-manager and
//! scheduler replicas with leader election, and N nodes (kubelet and service proxy). Every
//! component but the API server talks to it over HTTP with its own client, exactly as the
//! separate processes of `capstan` do; only the wiring is in-process.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_api::ext::NodeExt;
use capstan_api::k8s_openapi::api::core::v1::Node;
use capstan_api::kube_core::params::ListParams;
use capstan_api::{Api, Client};
use capstan_controller::leader::LeaderElectionConfig;
use capstan_controllers::manager::ControllerSelection;

use crate::apiserver::{connect, serve, ApiServerConfig, ApiServerError, RunningApiServer};
use crate::control_plane::{
    start_controller_manager, start_scheduler, Component, ControlPlaneError, ControlPlaneOptions,
};
use crate::dns::{start_cluster_dns, ClusterDnsError, ClusterDnsOptions, RunningClusterDns};
use crate::node::{start_node, NodeError, NodeOptions, RunningNode};
use crate::options::{NetworkOption, ProxyMode, RuntimeOption};

/// Why the cluster did not start or settle.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server.
    #[error(transparent)]
    ApiServer(#[from] ApiServerError),
    /// The controller manager or the scheduler.
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    /// Cluster DNS.
    #[error(transparent)]
    Dns(#[from] ClusterDnsError),
    /// A node.
    #[error("node {node}: {source}")]
    Node {
        /// The node's name.
        node: String,
        /// Why.
        source: NodeError,
    },
    /// The nodes did not all become Ready in time.
    #[error("nodes not Ready after {waited:?}: {not_ready:?}")]
    NotReady {
        /// How long it waited.
        waited: Duration,
        /// The nodes still not Ready.
        not_ready: Vec<String>,
    },
}

/// What to run.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The API server.
    pub apiserver: ApiServerConfig,
    /// Where the kubeconfig goes.
    pub kubeconfig: PathBuf,
    /// How many nodes, named `node01`, `node02`, ...
    pub nodes: usize,
    /// The nodes' container runtime.
    pub runtime: RuntimeOption,
    /// The nodes' pod network.
    pub network: NetworkOption,
    /// The nodes' service proxy.
    pub proxy: ProxyMode,
    /// How many replicas of the controller manager and of the scheduler (one leads).
    pub control_plane_replicas: usize,
    /// Their Lease timing.
    pub leader_election: LeaderElectionConfig,
    /// The kubelets' heartbeat.
    pub heartbeat_interval: Duration,
    /// Where nodes keep state.
    pub state_dir: PathBuf,
    /// The schedulers' `KubeSchedulerConfiguration` (`--scheduler-config`); `None` is the
    /// default profile.
    pub scheduler_config: Option<Arc<capstan_scheduler::config::KubeSchedulerConfiguration>>,
    /// The address every component but the API server serves its `/metrics` and health on,
    /// each on a free port; `None` serves nothing. Default: loopback.
    pub metrics_listen: Option<IpAddr>,
    /// Where cluster DNS answers (UDP and TCP); `None` runs no DNS. Default: loopback, a free
    /// port.
    pub dns_listen: Option<SocketAddr>,
    /// The controllers the controller managers run (`--controllers`; see
    /// [`ControlPlaneOptions::controllers`]). Default: every one.
    pub controllers: ControllerSelection,
}

impl ClusterConfig {
    /// `nodes` nodes on the fakes, one replica of each control-plane component, the API
    /// server on `listen` with the in-memory store and the kubeconfig at `kubeconfig`.
    pub fn fake(listen: SocketAddr, kubeconfig: impl Into<PathBuf>, nodes: usize) -> Self {
        ClusterConfig {
            apiserver: ApiServerConfig::new(listen),
            kubeconfig: kubeconfig.into(),
            nodes,
            runtime: RuntimeOption::Fake,
            network: NetworkOption::Fake,
            proxy: ProxyMode::Fake,
            control_plane_replicas: 1,
            leader_election: LeaderElectionConfig::default().release_on_cancel(true),
            heartbeat_interval: Duration::from_secs(2),
            state_dir: std::env::temp_dir().join(format!("capstan-cluster-{}", std::process::id())),
            scheduler_config: None,
            metrics_listen: Some(IpAddr::from([127, 0, 0, 1])),
            dns_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            controllers: ControllerSelection::all(),
        }
    }

    /// The name of node `index` (from 0): `node01`, `node02`, ...
    pub fn node_name(index: usize) -> String {
        format!("node{:02}", index + 1)
    }
}

/// A running cluster. Dropping it aborts everything; [`shutdown`](Self::shutdown) stops it
/// cleanly (Leases released, proxies stopped).
pub struct EmbeddedCluster {
    apiserver: RunningApiServer,
    client: Arc<dyn Client>,
    kubeconfig: PathBuf,
    controller_managers: Vec<Option<Component>>,
    schedulers: Vec<Option<Component>>,
    nodes: BTreeMap<String, RunningNode>,
    dns: Option<RunningClusterDns>,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("url", &self.url())
            .field("nodes", &self.nodes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl EmbeddedCluster {
    /// Starts the API server, writes the kubeconfig, then starts the control plane and the
    /// nodes, each with its own client built from that kubeconfig.
    ///
    /// Errors: the first part that fails; what started before is stopped.
    pub async fn start(config: ClusterConfig) -> Result<EmbeddedCluster, ClusterError> {
        let apiserver = serve(&config.apiserver).await?;
        apiserver.write_kubeconfig(&config.kubeconfig)?;
        let client = connect(&config.kubeconfig)?;
        let metrics_listen = config.metrics_listen.map(|ip| SocketAddr::new(ip, 0));
        let mut controller_managers = Vec::new();
        let mut schedulers = Vec::new();
        for replica in 0..config.control_plane_replicas.max(1) {
            let mut options = ControlPlaneOptions::new(format!("replica-{replica}"));
            options.leader_election = config.leader_election.clone();
            options.metrics_listen = metrics_listen;
            options.scheduler_config = config.scheduler_config.clone();
            options.controllers = config.controllers.clone();
            options.root_ca = apiserver
                .certificate_authority()
                .map(|ca| Arc::new(ca.to_vec()));
            controller_managers.push(Some(start_controller_manager(
                connect(&config.kubeconfig)?,
                &options,
            )?));
            schedulers.push(Some(start_scheduler(
                connect(&config.kubeconfig)?,
                &options,
            )?));
        }
        let mut nodes = BTreeMap::new();
        for index in 0..config.nodes {
            let name = ClusterConfig::node_name(index);
            let mut options = NodeOptions::fake(name.clone(), node_ip(index));
            options.runtime = config.runtime.clone();
            options.network = config.network.clone();
            options.proxy = config.proxy;
            options.heartbeat_interval = config.heartbeat_interval;
            options.state_dir = config.state_dir.join(&name);
            options.kubelet_metrics_listen = metrics_listen;
            options.proxy_metrics_listen = metrics_listen;
            options.kubelet_listen = options
                .internal_ip
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 0));
            let node = start_node(
                connect(&config.kubeconfig)?,
                connect(&config.kubeconfig)?,
                &options,
            )
            .await
            .map_err(|source| ClusterError::Node {
                node: name.clone(),
                source,
            })?;
            nodes.insert(name, node);
        }
        let dns = match config.dns_listen {
            Some(listen) => {
                let mut options = ClusterDnsOptions::new(listen);
                options.metrics_listen = metrics_listen;
                Some(start_cluster_dns(connect(&config.kubeconfig)?, &options).await?)
            }
            None => None,
        };
        Ok(EmbeddedCluster {
            apiserver,
            client,
            kubeconfig: config.kubeconfig,
            controller_managers,
            schedulers,
            nodes,
            dns,
        })
    }

    /// Cluster DNS, when it runs.
    pub fn dns(&self) -> Option<&RunningClusterDns> {
        self.dns.as_ref()
    }

    /// Where every running component serves `/metrics`, as `(component, URL)`: the API server
    /// (`kube-apiserver`, on its own port, behind authorization), then each controller
    /// manager, scheduler, kubelet and proxy, and cluster DNS (`coredns`), on their own
    /// listeners.
    pub fn metrics_endpoints(&self) -> Vec<(String, String)> {
        let mut endpoints = vec![(
            "kube-apiserver".to_string(),
            format!("{}/metrics", self.url()),
        )];
        let components = self
            .controller_managers
            .iter()
            .chain(&self.schedulers)
            .flatten()
            .filter_map(Component::endpoint);
        let nodes = self.nodes.values().flat_map(|node| {
            [node.kubelet().endpoint(), node.proxy().endpoint()]
                .into_iter()
                .flatten()
        });
        let dns = self.dns.iter().filter_map(RunningClusterDns::endpoint);
        for endpoint in components.chain(nodes).chain(dns) {
            endpoints.push((endpoint.component().to_string(), endpoint.metrics_url()));
        }
        endpoints
    }

    /// A client of the API server (over HTTP, as kubectl).
    pub fn client(&self) -> Arc<dyn Client> {
        self.client.clone()
    }

    /// The API server's registry, for in-process inspection (e.g. the store's keys).
    pub fn registry(&self) -> &Arc<capstan_apiserver::registry::Registry> {
        &self.apiserver.registry
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        self.apiserver.url()
    }

    /// The kubeconfig's path.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The running nodes, by name.
    pub fn nodes(&self) -> &BTreeMap<String, RunningNode> {
        &self.nodes
    }

    /// Waits until every running node is Ready and untainted ([`is_settled`]), up to
    /// `timeout`.
    ///
    /// Errors: [`ClusterError::NotReady`] naming the nodes that are not.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<(), ClusterError> {
        let started = Instant::now();
        let nodes: Api<Node> = Api::all(self.client.clone());
        loop {
            let ready: Vec<String> = nodes
                .list(&ListParams::default())
                .await
                .map(|list| list.items)
                .unwrap_or_default()
                .iter()
                .filter(|node| is_settled(node))
                .filter_map(|node| node.metadata.name.clone())
                .collect();
            let not_ready: Vec<String> = self
                .nodes
                .keys()
                .filter(|name| !ready.contains(name))
                .cloned()
                .collect();
            if not_ready.is_empty() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(ClusterError::NotReady {
                    waited: timeout,
                    not_ready,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops node `name`'s kubelet and proxy, as if the machine died: its Lease stops being
    /// renewed. Returns whether such a node was running.
    pub async fn stop_node(&mut self, name: &str) -> bool {
        match self.nodes.remove(name) {
            Some(node) => {
                node.stop().await;
                true
            }
            None => false,
        }
    }

    /// Stops controller-manager replica `replica` cleanly (it releases its Lease if it
    /// leads). Returns whether it was running.
    pub async fn stop_controller_manager(&mut self, replica: usize) -> bool {
        stop_replica(&mut self.controller_managers, replica).await
    }

    /// Stops scheduler replica `replica` cleanly. Returns whether it was running.
    pub async fn stop_scheduler(&mut self, replica: usize) -> bool {
        stop_replica(&mut self.schedulers, replica).await
    }

    /// Aborts controller-manager replica `replica` without releasing its Lease, as a crash
    /// does: the next leader waits for the Lease to expire. Returns whether it was running.
    pub fn kill_controller_manager(&mut self, replica: usize) -> bool {
        self.controller_managers
            .get_mut(replica)
            .and_then(Option::take)
            .is_some()
    }

    /// Aborts scheduler replica `replica` without releasing its Lease.
    pub fn kill_scheduler(&mut self, replica: usize) -> bool {
        self.schedulers
            .get_mut(replica)
            .and_then(Option::take)
            .is_some()
    }

    /// Stops everything cleanly: nodes, schedulers, controller managers (releasing their
    /// Leases), then the API server.
    pub async fn shutdown(mut self) {
        let grace = Duration::from_secs(5);
        if let Some(dns) = self.dns.take() {
            dns.stop().await;
        }
        for (_, node) in std::mem::take(&mut self.nodes) {
            node.stop().await;
        }
        for component in self
            .schedulers
            .drain(..)
            .chain(self.controller_managers.drain(..))
            .flatten()
        {
            component.stop(grace).await;
        }
    }
}

async fn stop_replica(replicas: &mut [Option<Component>], replica: usize) -> bool {
    match replicas.get_mut(replica).and_then(Option::take) {
        Some(component) => {
            component.stop(Duration::from_secs(5)).await;
            true
        }
        None => false,
    }
}

/// Node `index`'s InternalIP, where its kubelet serves its API: a loopback address of its
/// own, 127.0.1.2, 127.0.1.3, ... (250 per /24: 127.0.2.2 is node 250). Linux routes all of
/// 127.0.0.0/8 to the loopback interface, so each node's address is reachable and distinct.
fn node_ip(index: usize) -> String {
    format!("127.0.{}.{}", 1 + index / 250, index % 250 + 2)
}

/// Whether the Node is Ready and the node lifecycle controller has lifted its condition
/// taints (`node.kubernetes.io/...`), so the scheduler will place Pods on it.
pub fn is_settled(node: &Node) -> bool {
    node.is_ready()
        && !node
            .taints()
            .iter()
            .any(|t| t.key.starts_with("node.kubernetes.io/"))
}
