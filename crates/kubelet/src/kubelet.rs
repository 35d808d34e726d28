//! The [`Kubelet`]: its builder, its main loop and the handle of a running one.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::health::HealthEndpoints;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::{Api, Client};
use capstan_controller::events::EventRecorder;
use capstan_net::{Attachment, NetworkPlugin};
use capstan_runtime::{self as rt, Clock, ContainerRuntime, SystemClock};
use capstan_watch::{Delta, ReflectorOptions, SharedInformer, Watch};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::KubeletConfig;
use crate::error::{KubeletError, Result};
use crate::metrics::{KubeletCheck, KubeletCollector, Stats, RELIST_PERIOD};
use crate::node::NodeAgent;
use crate::pod_worker::{
    wait_until, Context, PodWorker, POD_NAMESPACE_LABEL, POD_NAME_LABEL, POD_UID_LABEL,
};
use crate::prober::{NetworkProber, Prober};
use crate::server::{PodView, ServerParts};

/// The node agent; see the [crate docs](crate). Build with [`Kubelet::builder`], run with
/// [`Kubelet::start`].
pub struct Kubelet {
    config: KubeletConfig,
    client: Arc<dyn Client>,
    runtime: Arc<dyn ContainerRuntime>,
    network: Arc<dyn NetworkPlugin>,
    prober: Arc<dyn Prober>,
    clock: Arc<dyn Clock>,
    events: Option<EventRecorder>,
    /// The API's listener, bound by `build` when the configuration asks for one.
    server: Option<std::net::TcpListener>,
    tokens: Option<Arc<dyn crate::volumes::TokenSource>>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("config", &self.config)
            .field("network", &self.network.name())
            .finish()
    }
}

/// Builds a [`Kubelet`]: the configuration, the API client, the runtime and the network are
/// required; the prober ([`NetworkProber`]), the clock ([`SystemClock`]) and the event
/// recorder (none) are optional.
pub struct KubeletBuilder {
    config: KubeletConfig,
    client: Option<Arc<dyn Client>>,
    runtime: Option<Arc<dyn ContainerRuntime>>,
    network: Option<Arc<dyn NetworkPlugin>>,
    prober: Arc<dyn Prober>,
    clock: Arc<dyn Clock>,
    events: Option<EventRecorder>,
    tokens: Option<Arc<dyn crate::volumes::TokenSource>>,
    server_listener: Option<std::net::TcpListener>,
}

impl std::fmt::Debug for KubeletBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KubeletBuilder {
    /// The API client the kubelet watches and writes through.
    pub fn client(mut self, client: Arc<dyn Client>) -> Self {
        self.client = Some(client);
        self
    }

    /// The node's container runtime.
    pub fn runtime(mut self, runtime: Arc<dyn ContainerRuntime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The node's network plugin.
    pub fn network(mut self, network: Arc<dyn NetworkPlugin>) -> Self {
        self.network = Some(network);
        self
    }

    /// How HTTP and TCP probes reach Pods.
    pub fn prober(mut self, prober: Arc<dyn Prober>) -> Self {
        self.prober = prober;
        self
    }

    /// The clock for heartbeats, back-offs and probe timing (share the runtime's in tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where Events go; the kubelet sets the host to its node name.
    pub fn events(mut self, recorder: EventRecorder) -> Self {
        self.events = Some(recorder);
        self
    }

    /// Where service account tokens for projected volumes come from (default: the API
    /// server's `serviceaccounts/token` through the kubelet's client). Used only with a
    /// [`root_dir`](KubeletConfig::root_dir).
    pub fn tokens(mut self, source: Arc<dyn crate::volumes::TokenSource>) -> Self {
        self.tokens = Some(source);
        self
    }

    /// Serves the HTTP API on `listener`, bound by the caller (inside the node's network
    /// namespace, say), instead of binding [`KubeletConfig::server_listen`]. The Node
    /// reports the listener's port.
    pub fn server_listener(mut self, listener: std::net::TcpListener) -> Self {
        self.server_listener = Some(listener);
        self
    }

    /// The kubelet. [`KubeletError::InvalidConfig`] if the configuration is invalid or a
    /// required part is missing; [`KubeletError::Serve`] if the HTTP API's address
    /// ([`KubeletConfig::server_listen`]) cannot be bound (it is bound here, served by
    /// [`Kubelet::start`]).
    pub fn build(self) -> Result<Kubelet> {
        self.config.validate()?;
        let missing = |what: &str| KubeletError::InvalidConfig(format!("no {what} was given"));
        let server = match (self.server_listener, self.config.server_listen) {
            (Some(listener), _) => {
                listener
                    .set_nonblocking(true)
                    .map_err(|source| KubeletError::Serve {
                        address: listener
                            .local_addr()
                            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
                        source,
                    })?;
                Some(listener)
            }
            (None, Some(address)) => Some(
                crate::server::bind(address)
                    .map_err(|source| KubeletError::Serve { address, source })?,
            ),
            (None, None) => None,
        };
        Ok(Kubelet {
            server,
            client: self.client.ok_or_else(|| missing("API client"))?,
            runtime: self.runtime.ok_or_else(|| missing("container runtime"))?,
            network: self.network.ok_or_else(|| missing("network plugin"))?,
            events: self
                .events
                .map(|e| e.with_host(self.config.node_name.clone())),
            config: self.config,
            prober: self.prober,
            clock: self.clock,
            tokens: self.tokens,
        })
    }
}

/// What a running kubelet shares with its handle.
#[derive(Debug, Default)]
struct Shared {
    workers: usize,
    synced: bool,
}

/// Counters of a running kubelet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KubeletMetrics {
    /// Pods with a worker.
    pub pod_workers: usize,
    /// Pod syncs finished (successful or not) since the start.
    pub pod_syncs: u64,
}

/// A running kubelet. Dropping it (or [`RunningKubelet::stop`]) stops the agent at once, as
/// if its process died: containers keep running and a new kubelet adopts them.
#[derive(Debug)]
pub struct RunningKubelet {
    task: JoinHandle<()>,
    shared: Arc<Mutex<Shared>>,
    syncs: Arc<AtomicU64>,
    node_name: String,
    stats: Arc<Stats>,
    server: Option<(SocketAddr, JoinHandle<()>)>,
}

impl RunningKubelet {
    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Where the kubelet's HTTP API listens (the bound address, with the port picked when
    /// the configuration asked for port 0); `None` when it serves none.
    pub fn server_address(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|(address, _)| *address)
    }

    /// The kubelet's counters now.
    pub fn metrics(&self) -> KubeletMetrics {
        KubeletMetrics {
            pod_workers: self.shared.lock().workers,
            pod_syncs: self.syncs.load(Ordering::Relaxed),
        }
    }

    /// Whether the Node is registered, the Pod cache synced and leftovers cleaned up.
    pub fn is_ready(&self) -> bool {
        self.shared.lock().synced
    }

    /// Registers the kubelet's Prometheus series (`kubelet_running_pods`,
    /// `kubelet_running_containers`, `kubelet_pod_start_duration_seconds`, ...; see
    /// [`metrics`](crate::metrics)) into `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(KubeletCollector(self.stats.clone())));
    }

    /// Pods with a ready sandbox at the runtime's last relist (`kubelet_running_pods`).
    pub fn running_pods(&self) -> u64 {
        self.stats.running_pods()
    }

    /// The kubelet's health checks: `syncloop` on `/livez` (its main loop runs) and
    /// `registered` on `/readyz` (its Node is registered and its Pods listed), after `ping`.
    pub fn health(&self) -> HealthEndpoints {
        HealthEndpoints::new()
            .livez(KubeletCheck {
                name: "syncloop",
                stats: self.stats.clone(),
            })
            .readyz(KubeletCheck {
                name: "registered",
                stats: self.stats.clone(),
            })
    }

    /// Stops the agent (its tasks end; the runtime is left as it is).
    pub fn stop(self) {}
}

impl Drop for RunningKubelet {
    fn drop(&mut self) {
        self.task.abort();
        if let Some((_, server)) = &self.server {
            server.abort();
        }
    }
}

impl Kubelet {
    /// A builder for a kubelet with `config`.
    pub fn builder(config: KubeletConfig) -> KubeletBuilder {
        KubeletBuilder {
            config,
            client: None,
            runtime: None,
            network: None,
            prober: Arc::new(NetworkProber),
            clock: Arc::new(SystemClock),
            events: None,
            tokens: None,
            server_listener: None,
        }
    }

    /// Starts the agent on the current tokio runtime: registers the Node (retrying until it
    /// succeeds), heartbeats, cleans up sandboxes of Pods that no longer exist, and runs a
    /// worker per Pod bound to the node.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(mut self) -> RunningKubelet {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let syncs = Arc::new(AtomicU64::new(0));
        let node_name = self.config.node_name.clone();
        let stats = Arc::new(Stats::new(node_name.clone()));
        let pods = Arc::new(PodView::default());
        let server = self.server.take().and_then(|listener| {
            let address = listener.local_addr().ok()?;
            let parts = ServerParts {
                node_name: node_name.clone(),
                client: self.client.clone(),
                runtime: self.runtime.clone(),
                clock: self.clock.clone(),
                pods: pods.clone(),
                auth: self.config.server_auth.clone(),
                #[cfg(feature = "tls")]
                tls: self.config.server_tls.clone().map(|tls| {
                    let hosts = self.config.addresses.iter().map(|a| a.address.clone());
                    (tls, hosts.collect())
                }),
            };
            match crate::server::spawn(listener, parts) {
                Ok(task) => Some((address, task)),
                Err(error) => {
                    tracing::warn!(%error, %address, "kubelet: serving the kubelet API failed");
                    None
                }
            }
        });
        let port = server.as_ref().map(|(address, _)| address.port());
        let task = tokio::spawn(self.run(shared.clone(), syncs.clone(), stats.clone(), pods, port));
        RunningKubelet {
            task,
            shared,
            syncs,
            node_name,
            stats,
            server,
        }
    }

    async fn run(
        self,
        shared: Arc<Mutex<Shared>>,
        syncs: Arc<AtomicU64>,
        stats: Arc<Stats>,
        pods: Arc<PodView>,
        kubelet_port: Option<u16>,
    ) {
        // `syncloop` fails once this loop ends, however it ends.
        struct Alive(Arc<Stats>);
        impl Drop for Alive {
            fn drop(&mut self) {
                self.0.alive.store(false, Ordering::Relaxed);
            }
        }
        let _alive = Alive(stats.clone());
        let retry = Duration::from_millis(500);
        let mut agent = NodeAgent::new(
            self.config.clone(),
            self.client.clone(),
            self.runtime.clone(),
            self.network.clone(),
            self.clock.clone(),
        )
        .kubelet_port(kubelet_port);
        while let Err(error) = agent.register().await {
            tracing::warn!(node = %self.config.node_name, %error, "kubelet: registering the node failed; retrying");
            tokio::time::sleep(retry).await;
        }
        let mut tasks: JoinSet<Option<String>> = JoinSet::new();
        let (clock, interval) = (self.clock.clone(), self.config.heartbeat_interval);
        tasks.spawn(async move {
            let (_keep, mut never) = watch::channel(());
            loop {
                // Measured from the start, so a clock move during the heartbeat is not lost.
                let next = clock.now() + interval;
                if let Err(error) = agent.heartbeat().await {
                    tracing::warn!(%error, "kubelet: heartbeat failed");
                }
                wait_until(clock.as_ref(), next, &mut never).await;
            }
        });

        let runtime_name = loop {
            match self.runtime.version().await {
                Ok(version) => break version.runtime_name,
                Err(error) => {
                    tracing::warn!(%error, "kubelet: the container runtime is not available; waiting");
                    tokio::time::sleep(retry).await;
                }
            }
        };
        let ctx = Arc::new(Context {
            node_name: self.config.node_name.clone(),
            host_ip: self.config.host_ip().map(str::to_string),
            client: self.client.clone(),
            runtime: self.runtime.clone(),
            network: self.network.clone(),
            prober: self.prober.clone(),
            clock: self.clock.clone(),
            events: self.events.clone(),
            sync_period: self.config.sync_period,
            runtime_name,
            syncs,
            stats: stats.clone(),
            volumes: self.config.root_dir.clone().map(|root| {
                Arc::new(crate::volumes::VolumeManager::new(
                    root,
                    self.client.clone(),
                    Some(self.tokens.clone().unwrap_or_else(|| {
                        Arc::new(crate::volumes::ApiTokenSource::new(self.client.clone()))
                    })),
                ))
            }),
            service_env: Arc::new(crate::service_env::MasterServiceEnv::new(
                self.client.clone(),
            )),
            admission: Arc::new(crate::admission::Admission::new(&self.config)),
        });
        // The PLEG's relist, for the running pods and containers gauges.
        {
            let (runtime, clock, stats) = (self.runtime.clone(), self.clock.clone(), stats.clone());
            tasks.spawn(async move {
                let (_keep, mut never) = watch::channel(());
                loop {
                    let next = clock.now() + RELIST_PERIOD;
                    if let Err(error) = stats.relist(runtime.as_ref()).await {
                        tracing::debug!(%error, "kubelet: relisting the runtime failed");
                    }
                    wait_until(clock.as_ref(), next, &mut never).await;
                }
            });
        }
        let source: Arc<dyn Watch<Pod>> = Arc::new(Api::<Pod>::all(self.client.clone()));
        let informer = SharedInformer::spawn(
            source,
            ReflectorOptions {
                field_selector: Some(format!("spec.nodeName={}", ctx.node_name)),
                ..ReflectorOptions::default()
            },
        );
        pods.set(informer.cache().clone());
        informer.wait_for_sync().await;
        let live: HashSet<String> = informer
            .cache()
            .list()
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        while let Err(error) = clean_up_orphans(&ctx, &live).await {
            tracing::warn!(%error, "kubelet: cleaning up sandboxes of deleted pods failed; retrying");
            tokio::time::sleep(retry).await;
        }
        shared.lock().synced = true;
        stats.ready.store(true, Ordering::Relaxed);

        let mut deltas = informer.subscribe();
        let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
        let mut done: HashSet<String> = HashSet::new();
        loop {
            tokio::select! {
                delta = deltas.recv() => {
                    let Some(delta) = delta else { return };
                    let (pod, deleted) = match &delta {
                        Delta::Added(pod) | Delta::Updated { new: pod, .. } => (pod.clone(), false),
                        Delta::Deleted(pod) => (pod.clone(), true),
                    };
                    let Some(uid) = pod.metadata.uid.clone() else { continue };
                    if deleted {
                        done.remove(&uid);
                        ctx.admission.release(&uid);
                        if let Some(worker) = workers.remove(&uid) {
                            worker.send_replace(None);
                        }
                    } else if let Some(worker) = workers.get(&uid) {
                        // A terminal Pod's requests no longer count against the node.
                        if matches!(
                            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        ) {
                            ctx.admission.release(&uid);
                        }
                        worker.send_replace(Some(pod));
                    } else if !done.contains(&uid) {
                        let (tx, rx) = watch::channel(Some(pod.clone()));
                        let mut worker = PodWorker::new(ctx.clone(), pod.clone());
                        // Admission: a Pod that does not fit is rejected, never started.
                        if let Err(rejection) = ctx.admission.admit(&pod) {
                            if let Some(events) = &ctx.events {
                                events.warning(&*pod, rejection.reason(), rejection.to_string());
                            }
                            worker = worker.rejected(rejection);
                        }
                        tasks.spawn(async move {
                            worker.run(rx).await;
                            Some(uid.clone())
                        });
                        workers.insert(pod_uid(&delta), tx);
                    }
                }
                Some(finished) = tasks.join_next() => {
                    if let Ok(Some(uid)) = finished {
                        ctx.admission.release(&uid);
                        if workers.remove(&uid).is_some() {
                            done.insert(uid);
                        }
                    }
                }
            }
            shared.lock().workers = workers.len();
        }
    }
}

fn pod_uid(delta: &Delta<Pod>) -> String {
    delta.object().metadata.uid.clone().unwrap_or_default()
}

/// Stops and removes the sandboxes (detaching their network) of Pods that no longer exist.
async fn clean_up_orphans(ctx: &Context, live: &HashSet<String>) -> Result<()> {
    let sandboxes = ctx
        .runtime
        .list_pod_sandboxes(rt::PodSandboxFilter::all())
        .await
        .map_err(|e| KubeletError::runtime("listing sandboxes", e))?;
    for sandbox in sandboxes {
        let Some(uid) = sandbox.labels.get(POD_UID_LABEL) else {
            continue; // not ours
        };
        if live.contains(uid) {
            continue;
        }
        let netns = match ctx.runtime.pod_sandbox_status(&sandbox.id).await {
            Ok(status) => status.network_namespace_path,
            Err(error) if error.is_not_found() => continue,
            Err(error) => return Err(KubeletError::runtime("reading a sandbox's status", error)),
        };
        let host_network = matches!(
            ctx.runtime
                .pod_sandbox_status(&sandbox.id)
                .await
                .map(|s| s.namespace_options.network),
            Ok(rt::NamespaceMode::Node)
        );
        if !host_network {
            let attachment = Attachment::new(&sandbox.id, netns).pod(
                sandbox
                    .labels
                    .get(POD_NAMESPACE_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                sandbox
                    .labels
                    .get(POD_NAME_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                uid.clone(),
            );
            ctx.network
                .del(&attachment)
                .await
                .map_err(|e| KubeletError::network("detaching an orphaned sandbox", e))?;
        }
        ctx.runtime
            .stop_pod_sandbox(&sandbox.id)
            .await
            .map_err(|e| KubeletError::runtime("stopping an orphaned sandbox", e))?;
        ctx.runtime
            .remove_pod_sandbox(&sandbox.id)
            .await
            .map_err(|e| KubeletError::runtime("removing an orphaned sandbox", e))?;
    }
    // The volume directories of Pods that no longer exist (the kubelet's
    // `cleanupOrphanedPodDirs`).
    if let Some(volumes) = &ctx.volumes {
        for uid in volumes.pod_uids() {
            if !live.contains(&uid) {
                volumes.tear_down(&uid);
            }
        }
    }
    Ok(())
}
