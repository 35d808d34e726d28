//! One node's agents over any [`Client`]: the kubelet (with its runtime and pod network) and
//! the service proxy, as a Kubernetes node runs kubelet and kube-proxy.
//!
//! The pod network follows the Node's `spec.podCIDR`, which the controller manager's node
//! IPAM controller assigns after the kubelet registers the Node: [`PodCidrNetwork`] reports
//! the network unavailable (so the Node is not Ready and the scheduler leaves it alone) until
//! the CIDR is there, then builds the real plugin over it, as a CNI config written by a
//! network daemon would appear on a Kubernetes node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::health::HealthEndpoints;
use capstan_api::k8s_openapi::api::core::v1::Node;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_kubelet::{Kubelet, KubeletConfig, RunningKubelet};
use capstan_net::proxy::fake::FakeProxyBackend;
use capstan_net::proxy::iptables::{IptablesBackend, IptablesConfig, Masquerade};
use capstan_net::proxy::ipvs::{IpvsBackend, IpvsConfig};
use capstan_net::proxy::nftables::{NftablesBackend, NftablesConfig};
use capstan_net::proxy::{Proxier, ProxierMetrics, ProxierOptions, ProxyBackend, ProxyRulesSynced};
use capstan_net::routes::{host_gw_routes, NodeAddressing, RouteSync};
use capstan_net::{AttachResult, Attachment, NetError, NetworkPlugin};
use capstan_runtime::ContainerRuntime;
use capstan_watch::{ExponentialDelay, InformerFactory, ReflectorOptions, SharedInformer};
use ipnet::IpNet;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::control_plane::Component;
use crate::observability::{bind_optional, ComponentEndpoint};
use crate::options::{NetworkOption, ProxyMode, RuntimeOption};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The kubelet refused its configuration or parts.
    #[error("kubelet: {0}")]
    Kubelet(#[from] capstan_kubelet::KubeletError),
    /// The container runtime could not be reached or built.
    #[error("container runtime: {0}")]
    Runtime(#[from] capstan_runtime::RuntimeError),
    /// The proxy backend cannot run here (e.g. IPVS without the kernel module).
    #[error("service proxy: {0}")]
    Proxy(#[from] capstan_net::proxy::ProxyError),
    /// The choice needs a cargo feature this build lacks.
    #[error(transparent)]
    Option(#[from] crate::options::OptionError),
    /// An image to preload could not be read.
    #[error("reading the image {path}: {source}")]
    Image {
        /// The tarball.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// The kubelet API's TLS material (`--tls-cert-file`, `--client-ca-file`) could not be
    /// read or used.
    #[error("kubelet TLS: {0}")]
    Tls(std::io::Error),
    /// The kubelet's API listener could not be bound in the node's network namespace.
    #[error("serving the kubelet API on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
    /// The metrics and health listener (`--metrics-listen`) could not be bound.
    #[error("serving metrics on {address}: {source}")]
    Metrics {
        /// The address.
        address: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
}

/// What one node runs and how.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The Node's name.
    pub name: String,
    /// Its `InternalIP`, the Pods' `hostIP`.
    pub internal_ip: String,
    /// The container runtime.
    pub runtime: RuntimeOption,
    /// The pod network.
    pub network: NetworkOption,
    /// The service proxy's dataplane.
    pub proxy: ProxyMode,
    /// The network namespace the node's dataplane lives in (`ip netns` name), for CNI and the
    /// iptables/nftables/ipvs proxies; `None` for the process's own.
    pub netns: Option<String>,
    /// Where the CNI plugin binaries are (`--cni-bin-dir`).
    pub cni_bin_dir: PathBuf,
    /// Where the node keeps state (CNI cache, host-local leases, runtime state).
    pub state_dir: PathBuf,
    /// The cluster's pod CIDR, for the proxy's masquerade rule.
    pub cluster_cidr: Option<IpNet>,
    /// The kubelet's heartbeat (Lease renewal and condition check).
    pub heartbeat_interval: Duration,
    /// How often the proxy may sync at most, and must at least.
    pub proxier: ProxierOptions,
    /// Masquerade all traffic to cluster IPs (kube-proxy's `--masquerade-all`), so replies
    /// come back through this node even from a backend on the client's own bridge.
    pub masquerade_all: bool,
    /// OCI image tarballs the kubelet imports into its runtime before it starts (no registry
    /// is reachable here).
    pub preload_images: Vec<PathBuf>,
    /// Where the kubelet serves `/metrics` and its health (`--metrics-listen`); `None`
    /// serves nothing.
    pub kubelet_metrics_listen: Option<SocketAddr>,
    /// Where the proxy serves `/metrics` and its health; `None` serves nothing.
    pub proxy_metrics_listen: Option<SocketAddr>,
    /// Where the kubelet serves its API (logs, exec, attach, port-forward, stats; port 0
    /// picks a free port), authenticating and authorizing callers through the API server
    /// (`TokenReview`, `SubjectAccessReview`); `None` serves nothing.
    pub kubelet_listen: Option<SocketAddr>,
    /// Serve the kubelet's API over HTTPS (feature `tls`); `None`: plain HTTP.
    pub kubelet_https: Option<KubeletHttps>,
}

/// The kubelet API's HTTPS, as the kubelet's flags give it (feature `tls`).
#[derive(Clone, Debug, Default)]
pub struct KubeletHttps {
    /// The serving certificate chain and key, PEM (`--tls-cert-file`,
    /// `--tls-private-key-file`). `None`: a self-signed one for the node's name and
    /// addresses, kept in `<state dir>/kubelet/pki` and reused, as the kubelet's `--cert-dir`.
    pub certificate: Option<(PathBuf, PathBuf)>,
    /// The CA bundle whose client certificates authenticate callers as their CN and O groups
    /// (`--client-ca-file`); bearer tokens keep working beside them.
    pub client_ca: Option<PathBuf>,
}

impl NodeOptions {
    /// A node named `name` on the fake runtime, fake network and fake proxy.
    pub fn fake(name: impl Into<String>, internal_ip: impl Into<String>) -> Self {
        let name = name.into();
        NodeOptions {
            state_dir: std::env::temp_dir().join(format!("capstan-node-{name}")),
            name,
            internal_ip: internal_ip.into(),
            runtime: RuntimeOption::Fake,
            network: NetworkOption::Fake,
            proxy: ProxyMode::Fake,
            netns: None,
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            cluster_cidr: Some("10.244.0.0/16".parse().expect("a valid CIDR")),
            heartbeat_interval: Duration::from_secs(10),
            proxier: ProxierOptions {
                min_sync_period: Duration::from_millis(100),
                ..ProxierOptions::default()
            },
            masquerade_all: false,
            preload_images: Vec::new(),
            kubelet_metrics_listen: None,
            proxy_metrics_listen: None,
            kubelet_listen: None,
            kubelet_https: None,
        }
    }
}

/// A node's running kubelet: the agent, and the pod network it was given.
pub struct NodeKubelet {
    name: String,
    kubelet: RunningKubelet,
    network: Arc<PodCidrNetwork>,
    endpoint: Option<ComponentEndpoint>,
    _events: EventBroadcaster,
}

impl std::fmt::Debug for NodeKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKubelet")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NodeKubelet {
    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod CIDR the network runs on, once the Node has one.
    pub fn pod_cidr(&self) -> Option<IpNet> {
        self.network.cidr()
    }

    /// Whether the kubelet's last heartbeat found the runtime and the network healthy.
    pub fn is_ready(&self) -> bool {
        self.kubelet.is_ready()
    }

    /// Where the kubelet's API listens, when it serves one.
    pub fn server_address(&self) -> Option<SocketAddr> {
        self.kubelet.server_address()
    }

    /// The kubelet's `/metrics` and health listener, when it has one.
    pub fn endpoint(&self) -> Option<&ComponentEndpoint> {
        self.endpoint.as_ref()
    }

    /// Stops the kubelet at once; containers keep running, as when a kubelet dies, and a
    /// kubelet started later re-adopts them.
    pub fn stop(self) {
        self.kubelet.stop();
    }
}

/// `config` serving HTTPS as `https` asks.
///
/// Errors: unreadable or unusable material ([`NodeError::Tls`]), or a build without the
/// `tls` feature.
#[cfg(feature = "tls")]
fn with_https(
    config: KubeletConfig,
    https: &KubeletHttps,
    state_dir: &std::path::Path,
) -> Result<KubeletConfig, NodeError> {
    use capstan_kubelet::server::KubeletTls;
    let mut tls = match &https.certificate {
        Some((cert, key)) => KubeletTls::from_pem_files(cert, key).map_err(NodeError::Tls)?,
        None => KubeletTls::self_signed_in(state_dir.join("kubelet").join("pki")),
    };
    if let Some(ca) = &https.client_ca {
        tls = tls.with_client_ca_file(ca).map_err(NodeError::Tls)?;
    }
    Ok(config.server_tls(tls))
}

/// Without the `tls` feature, HTTPS is refused.
///
/// Errors: always, naming the feature.
#[cfg(not(feature = "tls"))]
fn with_https(
    _config: KubeletConfig,
    https: &KubeletHttps,
    _state_dir: &std::path::Path,
) -> Result<KubeletConfig, NodeError> {
    Err(crate::options::OptionError::NotBuilt {
        flag: if https.certificate.is_some() {
            "--tls-cert-file"
        } else {
            "--client-ca-file"
        },
        backend: "the kubelet API over HTTPS",
        feature: "tls",
    }
    .into())
}

/// Starts a node's kubelet through `client`, with the runtime and pod network of `options`.
///
/// Errors: the runtime cannot be reached (containerd down) or is not in this build, or the
/// kubelet refuses its configuration.
pub async fn start_kubelet(
    client: Arc<dyn Client>,
    options: &NodeOptions,
) -> Result<NodeKubelet, NodeError> {
    let runtime = runtime(options).await?;
    for path in &options.preload_images {
        let archive = std::fs::read(path).map_err(|source| NodeError::Image {
            path: path.clone(),
            source,
        })?;
        for image in runtime.import_image(archive.into()).await? {
            tracing::info!(node = %options.name, image = ?image.repo_tags, "image imported");
        }
    }
    let network = Arc::new(PodCidrNetwork::new(
        client.clone(),
        options.name.clone(),
        network_builder(options),
    ));
    let events = EventBroadcaster::new(client.clone(), EventOptions::default());
    // Pods' volumes (service account tokens, ConfigMaps, ...) go under the node's state.
    let mut config = KubeletConfig::new(options.name.clone())
        .internal_ip(options.internal_ip.clone())
        .heartbeat_interval(options.heartbeat_interval)
        .root_dir(options.state_dir.join("kubelet"));
    // With a node namespace, the API listens there, on the node's own address; else the
    // kubelet binds it in the process's namespace.
    let mut listener = None;
    match (options.kubelet_listen, &options.netns) {
        (Some(listen), Some(netns)) => {
            listener = Some(capstan_net::netns::bind_tcp(netns, listen).await.map_err(
                |source| NodeError::Listen {
                    address: listen,
                    source,
                },
            )?);
        }
        (Some(listen), None) => config = config.server_listen(listen),
        (None, _) => {}
    }
    if let Some(https) = &options.kubelet_https {
        config = with_https(config, https, &options.state_dir)?;
    }
    let mut builder = Kubelet::builder(config);
    if let Some(listener) = listener {
        builder = builder.server_listener(listener);
    }
    let kubelet = builder
        .client(client)
        .runtime(runtime)
        .network(network.clone())
        .events(events.recorder("kubelet").with_host(options.name.clone()))
        .build()?
        .start();
    let endpoint = bind_optional(
        &format!("kubelet/{}", options.name),
        options.kubelet_metrics_listen,
        &kubelet.health(),
        |registry| kubelet.register_metrics(registry),
        |address, source| NodeError::Metrics { address, source },
    )?;
    Ok(NodeKubelet {
        name: options.name.clone(),
        kubelet,
        network,
        endpoint,
        _events: events,
    })
}

/// A node's running service proxy.
pub struct NodeProxy {
    component: Component,
    backend: Arc<dyn ProxyBackend>,
    fake: Option<Arc<FakeProxyBackend>>,
}

impl std::fmt::Debug for NodeProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeProxy")
            .field("component", &self.component.name())
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

impl NodeProxy {
    /// The fake backend's recorded state, with `--proxy fake`.
    pub fn fake(&self) -> Option<&Arc<FakeProxyBackend>> {
        self.fake.as_ref()
    }

    /// Whether the proxy's task has ended.
    pub fn is_finished(&self) -> bool {
        self.component.is_finished()
    }

    /// The proxy's `/metrics` and health listener, when it has one.
    pub fn endpoint(&self) -> Option<&ComponentEndpoint> {
        self.component.endpoint()
    }

    /// Stops syncing; the dataplane stays as it is, so traffic keeps flowing (kube-proxy's
    /// behaviour on restart). With `clean_up`, the backend's rules are removed too.
    pub async fn stop(self, clean_up: bool) {
        self.component.stop(Duration::from_secs(5)).await;
        if clean_up {
            if let Err(error) = self.backend.cleanup().await {
                tracing::warn!(%error, "removing the proxy's rules");
            }
        }
    }
}

/// Starts a node's service proxy through `client`, programming the dataplane of `options`.
///
/// Errors: the backend cannot run here (IPVS without the kernel module).
pub fn start_proxy(client: Arc<dyn Client>, options: &NodeOptions) -> Result<NodeProxy, NodeError> {
    let (backend, fake) = proxy_backend(options)?;
    let metrics = Arc::new(ProxierMetrics::default());
    let proxier = Proxier::new(
        Arc::new(InformerFactory::new(client, ReflectorOptions::default())),
        backend.clone(),
        options.proxier.clone(),
    )
    .with_metrics(metrics.clone());
    let name = format!("kube-proxy/{}", options.name);
    let endpoint = bind_optional(
        &name,
        options.proxy_metrics_listen,
        &HealthEndpoints::new().readyz(ProxyRulesSynced(metrics.clone())),
        |registry| metrics.register(registry),
        |address, source| NodeError::Metrics { address, source },
    )?;
    let component = Component::spawn(name, |stop| async move {
        if let Err(error) = proxier.run(stop.wait()).await {
            tracing::error!(%error, "the service proxy stopped");
        }
    })
    .with_endpoint(endpoint);
    Ok(NodeProxy {
        component,
        backend,
        fake,
    })
}

/// Starts the node's host-gw route agent: every other Node's pod CIDR is routed via that
/// Node's InternalIP in the node's network namespace, re-synced when Nodes change and every
/// 30 s. Only routes it made are ever removed (see `capstan_net::routes`).
pub fn start_routes(client: Arc<dyn Client>, options: &NodeOptions) -> Component {
    let mut sync = RouteSync::new();
    if let Some(netns) = &options.netns {
        sync = sync.in_netns(netns.clone());
    }
    let node = options.name.clone();
    Component::spawn(format!("host-gw/{node}"), move |stop| async move {
        let nodes = SharedInformer::<Node>::spawn(
            Arc::new(Api::<Node>::all(client)),
            ReflectorOptions::default(),
        );
        let mut changes = nodes.subscribe();
        let stopped = stop.clone().wait();
        tokio::pin!(stopped);
        loop {
            nodes.wait_for_sync().await;
            let addressing: Vec<NodeAddressing> = nodes
                .cache()
                .list()
                .iter()
                .filter_map(|n| node_addressing(n))
                .collect();
            let wanted = host_gw_routes(&node, &addressing);
            match sync.sync(&wanted).await {
                Ok(report) if !report.replaced.is_empty() || !report.removed.is_empty() => {
                    tracing::info!(%node, ?report, "host-gw routes synced");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%node, %error, "syncing host-gw routes"),
            }
            tokio::select! {
                () = &mut stopped => return,
                _ = changes.recv() => {
                    // Coalesce a burst of Node changes into one sync.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while changes.try_recv().is_ok() {}
                }
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    })
}

fn node_addressing(node: &Node) -> Option<NodeAddressing> {
    let node_ip = node
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()?;
    Some(NodeAddressing {
        name: node.metadata.name.clone()?,
        node_ip,
        pod_cidr: node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse().ok()),
    })
}

/// A running node: its kubelet and its proxy, each with its own client.
#[derive(Debug)]
pub struct RunningNode {
    kubelet: NodeKubelet,
    proxy: NodeProxy,
}

impl RunningNode {
    /// The Node's name.
    pub fn name(&self) -> &str {
        self.kubelet.name()
    }

    /// The kubelet.
    pub fn kubelet(&self) -> &NodeKubelet {
        &self.kubelet
    }

    /// The proxy.
    pub fn proxy(&self) -> &NodeProxy {
        &self.proxy
    }

    /// Stops the kubelet (its containers keep running, as when a kubelet dies) and the proxy
    /// (the dataplane stays). Heartbeats stop, so the node goes NotReady.
    pub async fn stop(self) {
        self.kubelet.stop();
        self.proxy.stop(false).await;
    }
}

/// Starts a node's kubelet and proxy, each through a client from `connect`.
///
/// Errors: as [`start_kubelet`] and [`start_proxy`]; nothing keeps running then.
pub async fn start_node(
    client: Arc<dyn Client>,
    proxy_client: Arc<dyn Client>,
    options: &NodeOptions,
) -> Result<RunningNode, NodeError> {
    let proxy = start_proxy(proxy_client, options)?;
    let kubelet = match start_kubelet(client, options).await {
        Ok(kubelet) => kubelet,
        Err(error) => {
            proxy.stop(false).await;
            return Err(error);
        }
    };
    Ok(RunningNode { kubelet, proxy })
}

async fn runtime(options: &NodeOptions) -> Result<Arc<dyn ContainerRuntime>, NodeError> {
    match &options.runtime {
        RuntimeOption::Fake => Ok(Arc::new(
            capstan_runtime::fake::FakeRuntime::builder()
                .node_name(options.name.clone())
                .clock(capstan_runtime::SystemClock)
                .allow_unknown_pulls(true)
                .run_commands(true)
                .build(),
        )),
        #[cfg(feature = "containerd")]
        RuntimeOption::Containerd(socket) => {
            let mut config = capstan_runtime::containerd::ContainerdConfig::new(socket);
            config.state_dir = options.state_dir.join("containerd");
            config.namespace = format!("capstan-{}", options.name);
            Ok(Arc::new(
                capstan_runtime::containerd::ContainerdRuntime::connect(config).await?,
            ))
        }
        #[cfg(not(feature = "containerd"))]
        RuntimeOption::Containerd(_) => Err(crate::options::OptionError::NotBuilt {
            flag: "--runtime",
            backend: "containerd",
            feature: "containerd",
        }
        .into()),
    }
}

type NetworkBuilder = Box<dyn Fn(IpNet) -> Result<Arc<dyn NetworkPlugin>, NetError> + Send + Sync>;

fn network_builder(options: &NodeOptions) -> NetworkBuilder {
    match options.network {
        NetworkOption::Fake => {
            let state = options.state_dir.join("fake-network.json");
            Box::new(move |cidr| {
                let _ = std::fs::create_dir_all(state.parent().expect("a state directory"));
                Ok(Arc::new(capstan_net::fake::FakeNetwork::with_state_file(
                    cidr,
                    state.clone(),
                )?))
            })
        }
        NetworkOption::Cni => {
            let (dir, bin, netns) = (
                options.state_dir.clone(),
                options.cni_bin_dir.clone(),
                options.netns.clone(),
            );
            Box::new(move |cidr| {
                let config = capstan_net::cni::NetworkConfig::from_value(bridge_conflist(
                    cidr,
                    &dir.join("ipam"),
                ))?;
                let mut builder = capstan_net::cni::CniNetwork::builder(config)
                    .plugin_dirs([bin.clone()])
                    .cache_dir(dir.join("cni-cache"))
                    .timeout(Duration::from_secs(20));
                if let Some(netns) = &netns {
                    builder = builder.node_netns(netns.clone());
                }
                Ok(Arc::new(builder.build()))
            })
        }
    }
}

/// The node's CNI config: a `bridge` (`cni0`, the gateway at the CIDR's first address) with
/// `host-local` addresses from the node's pod CIDR, then `portmap`, as the seeds' nodes have.
pub fn bridge_conflist(cidr: IpNet, ipam_dir: &std::path::Path) -> serde_json::Value {
    serde_json::json!({
        "name": "capstan",
        "cniVersion": "1.0.0",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": cidr.trunc().to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
}

/// The backend the proxier drives, and the same backend as a fake when it is one.
type ProxyBackends = (Arc<dyn ProxyBackend>, Option<Arc<FakeProxyBackend>>);

fn proxy_backend(options: &NodeOptions) -> Result<ProxyBackends, NodeError> {
    let cluster_cidr = match options.cluster_cidr {
        Some(IpNet::V4(v4)) => Some(v4),
        _ => None,
    };
    Ok(match options.proxy {
        ProxyMode::Fake => {
            let fake = Arc::new(FakeProxyBackend::new());
            (fake.clone(), Some(fake))
        }
        ProxyMode::Iptables => (
            Arc::new(IptablesBackend::new(IptablesConfig {
                netns: options.netns.clone(),
                masquerade: Masquerade {
                    all: options.masquerade_all,
                    cluster_cidr,
                },
                ..IptablesConfig::default()
            })),
            None,
        ),
        ProxyMode::Nftables => (
            Arc::new(NftablesBackend::new(NftablesConfig {
                netns: options.netns.clone(),
                cluster_cidr,
                ..NftablesConfig::default()
            })),
            None,
        ),
        ProxyMode::Ipvs => (
            Arc::new(IpvsBackend::new(IpvsConfig {
                netns: options.netns.clone(),
                node_ips: options.internal_ip.parse().into_iter().collect(),
                ..IpvsConfig::default()
            })?),
            None,
        ),
    })
}

/// A [`NetworkPlugin`] over the Node's pod CIDR: unavailable until the Node has
/// `spec.podCIDR`, then the plugin its builder makes for that CIDR. The CIDR is read once it
/// appears (Kubernetes makes it immutable) by a task polling the Node, which ends then.
pub struct PodCidrNetwork {
    node: String,
    /// The pod CIDR and the plugin built for it, once both exist.
    inner: Arc<OnceCell<(IpNet, Arc<dyn NetworkPlugin>)>>,
    failure: Arc<Mutex<Option<String>>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PodCidrNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodCidrNetwork")
            .field("node", &self.node)
            .field("cidr", &self.cidr())
            .finish_non_exhaustive()
    }
}

impl PodCidrNetwork {
    /// Starts looking for `node`'s pod CIDR through `client`; `build` makes the plugin for it.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(
        client: Arc<dyn Client>,
        node: String,
        build: impl Fn(IpNet) -> Result<Arc<dyn NetworkPlugin>, NetError> + Send + Sync + 'static,
    ) -> Self {
        let inner: Arc<OnceCell<(IpNet, Arc<dyn NetworkPlugin>)>> = Arc::default();
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let watcher = {
            let (inner, failure, node) = (inner.clone(), failure.clone(), node.clone());
            tokio::spawn(async move {
                let nodes: Api<Node> = Api::all(client);
                // 100 ms doubling to 2 s between reads.
                let waits =
                    ExponentialDelay::new(Duration::from_millis(100), Duration::from_secs(2));
                let mut reads = 0_u32;
                loop {
                    let assigned = match nodes.get_opt(&node).await {
                        Ok(found) => found
                            .and_then(|n| n.spec)
                            .and_then(|s| s.pod_cidr)
                            .map(|text| text.parse::<IpNet>().map_err(|e| (text, e))),
                        Err(error) => {
                            tracing::debug!(%node, %error, "reading the Node for its pod CIDR");
                            None
                        }
                    };
                    match assigned {
                        Some(Ok(assigned)) => match build(assigned) {
                            Ok(plugin) => {
                                let _ = inner.set((assigned, plugin));
                                tracing::info!(%node, %assigned, "pod network configured");
                                return;
                            }
                            Err(error) => {
                                *failure.lock() =
                                    Some(format!("building the network for {assigned}: {error}"));
                            }
                        },
                        Some(Err((text, error))) => {
                            *failure.lock() = Some(format!("spec.podCIDR {text:?}: {error}"));
                        }
                        None => {}
                    }
                    tokio::time::sleep(waits.delay(reads)).await;
                    reads = reads.saturating_add(1);
                }
            })
        };
        PodCidrNetwork {
            node,
            inner,
            failure,
            watcher,
        }
    }

    /// The pod CIDR, once assigned and the plugin built.
    pub fn cidr(&self) -> Option<IpNet> {
        self.inner.get().map(|(cidr, _)| *cidr)
    }

    fn plugin(&self) -> Result<&Arc<dyn NetworkPlugin>, NetError> {
        self.inner.get().map(|(_, plugin)| plugin).ok_or_else(|| {
            NetError::Unavailable(match &*self.failure.lock() {
                Some(failure) => failure.clone(),
                None => format!("node {} has no pod CIDR yet", self.node),
            })
        })
    }
}

impl Drop for PodCidrNetwork {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

#[async_trait]
impl NetworkPlugin for PodCidrNetwork {
    fn name(&self) -> &str {
        self.inner
            .get()
            .map_or("pod-cidr", |(_, plugin)| plugin.name())
    }

    async fn add(&self, attachment: &Attachment) -> capstan_net::Result<AttachResult> {
        self.plugin()?.add(attachment).await
    }

    async fn del(&self, attachment: &Attachment) -> capstan_net::Result<()> {
        // Nothing can have been added before the plugin existed.
        match self.inner.get() {
            Some((_, plugin)) => plugin.del(attachment).await,
            None => Ok(()),
        }
    }

    async fn check(&self, attachment: &Attachment) -> capstan_net::Result<()> {
        self.plugin()?.check(attachment).await
    }

    async fn status(&self) -> capstan_net::Result<()> {
        self.plugin()?.status().await
    }
}
