//! The control plane's components over any [`Client`]: the controller manager (every built-in
//! controller plus node IPAM, or those its `--controllers` list enables) and the scheduler (the default profile), each standing for
//! leader election on its Lease in `kube-system`, as kube-controller-manager and
//! kube-scheduler do. Run two replicas of each and one leads; stop the leader and the other
//! takes over once the Lease expires (at once, when the leader released it on a clean stop).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::health::HealthEndpoints;
use capstan_api::k8s_openapi::api::coordination::v1::Lease;
use capstan_api::{Api, Client};
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::leader::{LeaderElectionConfig, LeaderElector, RunOutcome};
use capstan_controllers::manager::{ControllerManager, ControllerSelection, SelectionError};
use capstan_net::ipam::controller::{NodeIpamController, COMPONENT as NODE_IPAM};
use capstan_net::ipam::ClusterCidr;
use capstan_scheduler::config::{ConfigError, KubeSchedulerConfiguration};
use capstan_scheduler::metrics::SchedulerMetrics;
use capstan_scheduler::{default_framework, in_tree_registry, Scheduler};
use capstan_watch::{
    InformerFactory, InformerMetrics, InformerSyncCheck, ReflectorOptions, WorkQueueMetrics,
};
use ipnet::IpNet;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::observability::{bind_optional, ComponentEndpoint};

/// The Lease kube-controller-manager's replicas stand for.
pub const CONTROLLER_MANAGER_LEASE: &str = "kube-controller-manager";
/// The Lease kube-scheduler's replicas stand for.
pub const SCHEDULER_LEASE: &str = "kube-scheduler";
/// The scheduler's name in Events (`source.component`) and in `spec.schedulerName`.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Why a component could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The leader-election settings are invalid (e.g. an empty identity).
    #[error("leader election: {0}")]
    LeaderElection(#[from] capstan_controller::leader::ConfigError),
    /// The cluster CIDR cannot be split into node CIDRs of the given size.
    #[error("cluster CIDR {cidr} with /{mask} node CIDRs: {message}")]
    ClusterCidr {
        /// The cluster CIDR.
        cidr: IpNet,
        /// The node CIDR mask.
        mask: u8,
        /// Why not.
        message: String,
    },
    /// The `--controllers` list names a controller the controller manager does not have.
    #[error("controller manager: {0}")]
    Controllers(#[from] SelectionError),
    /// The scheduler's default profile did not build.
    #[error("scheduler profile: {0}")]
    Scheduler(String),
    /// The scheduler's configuration file (`--config`) does not build its profiles.
    #[error("scheduler configuration: {0}")]
    SchedulerConfig(#[from] ConfigError),
    /// The metrics and health listener (`--metrics-listen`) could not be bound.
    #[error("serving metrics on {address}: {source}")]
    Metrics {
        /// The address.
        address: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
}

/// A running component: a task that stops cleanly when asked.
///
/// Dropping it aborts the task at once (no Lease release, nothing flushed); call
/// [`stop`](Self::stop) for a clean stop.
#[derive(Debug)]
pub struct Component {
    name: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    endpoint: Option<ComponentEndpoint>,
}

impl Component {
    /// Spawns `run`, which gets the stop signal and must return soon after it resolves.
    pub fn spawn<F, Fut>(name: impl Into<String>, run: F) -> Component
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, receiver) = watch::channel(false);
        let task = tokio::spawn(run(StopSignal(receiver)));
        Component {
            name: name.into(),
            stop,
            task: Some(task),
            endpoint: None,
        }
    }

    /// Keeps `endpoint` (its `/metrics` and health listener) serving as long as the component.
    pub fn with_endpoint(mut self, endpoint: Option<ComponentEndpoint>) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Its `/metrics` and health listener, when it has one.
    pub fn endpoint(&self) -> Option<&ComponentEndpoint> {
        self.endpoint.as_ref()
    }

    /// The component's name, e.g. `kube-scheduler/node01`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether its task has ended (stopped, or failed).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Signals the stop and waits up to `grace` for the task to end, then aborts it.
    /// Idempotent.
    pub async fn stop(mut self, grace: Duration) {
        self.stop_in_place(grace).await;
    }

    async fn stop_in_place(&mut self, grace: Duration) {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                tracing::warn!(component = %self.name, "did not stop in {grace:?}; aborted");
                task.abort();
            }
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Resolves once its [`Component`] is asked to stop. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// Waits for the stop.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    /// Whether the stop was asked.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// Settings shared by the controller manager and the scheduler.
#[derive(Clone, Debug)]
pub struct ControlPlaneOptions {
    /// This replica's identity in leader election (`<host>_<uuid>` in Kubernetes).
    pub identity: String,
    /// Lease timing. The default is Kubernetes' (15 s lease, 10 s renew deadline, 2 s retry)
    /// with the Lease released on a clean stop.
    pub leader_election: LeaderElectionConfig,
    /// Pod CIDRs for the Nodes (`--cluster-cidr`); `None` turns node IPAM off.
    pub cluster_cidr: Option<IpNet>,
    /// The size of each Node's pod CIDR (`--node-cidr-mask-size`, 24).
    pub node_cidr_mask: u8,
    /// The scheduler's `KubeSchedulerConfiguration` (`--config`), loaded and validated: its
    /// profiles, backoff, parallelism and leader election (which then replaces
    /// [`leader_election`](Self::leader_election)'s timing and the Lease's name). `None`:
    /// the default profile under [`SCHEDULER_LEASE`].
    pub scheduler_config: Option<Arc<KubeSchedulerConfiguration>>,
    /// Where the component serves `/metrics`, `/healthz`, `/livez` and `/readyz`
    /// (`--metrics-listen`; port 0 picks a free one); `None` serves nothing.
    pub metrics_listen: Option<SocketAddr>,
    /// Which controllers the controller manager runs (`--controllers`, kube-controller-manager's
    /// list: `*` for every controller, `name` to enable one, `-name` to disable one; by
    /// Kubernetes' names such as `replicaset-controller` or `node-ipam-controller`, or their
    /// old aliases). Default `*`.
    pub controllers: ControllerSelection,
    /// The cluster's CA bundle (PEM) the root CA publisher writes into every namespace's
    /// `kube-root-ca.crt` (kube-controller-manager's `--root-ca-file`): the API server's
    /// serving CA over HTTPS. `None`: an empty bundle.
    pub root_ca: Option<Arc<Vec<u8>>>,
}

impl ControlPlaneOptions {
    /// Options for the replica `identity`, with the cluster CIDR 10.244.0.0/16 cut in /24s.
    pub fn new(identity: impl Into<String>) -> Self {
        ControlPlaneOptions {
            identity: identity.into(),
            leader_election: LeaderElectionConfig::default().release_on_cancel(true),
            cluster_cidr: Some("10.244.0.0/16".parse().expect("a valid CIDR")),
            node_cidr_mask: 24,
            scheduler_config: None,
            metrics_listen: None,
            controllers: ControllerSelection::all(),
            root_ca: None,
        }
    }

    /// Binds `component`'s metrics and health listener, if [`metrics_listen`](Self::metrics_listen)
    /// is set.
    fn endpoint(
        &self,
        component: &str,
        health: &HealthEndpoints,
        register: impl FnOnce(&mut prometheus_client::registry::Registry),
    ) -> Result<Option<ComponentEndpoint>, ControlPlaneError> {
        bind_optional(
            component,
            self.metrics_listen,
            health,
            register,
            |address, source| ControlPlaneError::Metrics { address, source },
        )
    }

    fn elector(
        &self,
        client: &Arc<dyn Client>,
        lease: &str,
    ) -> Result<LeaderElector, ControlPlaneError> {
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
        Ok(LeaderElector::new(
            leases,
            lease,
            self.identity.clone(),
            self.leader_election.clone(),
        )?)
    }

    fn cluster_cidr(&self) -> Result<Option<ClusterCidr>, ControlPlaneError> {
        let Some(cidr) = self.cluster_cidr else {
            return Ok(None);
        };
        ClusterCidr::new(cidr, self.node_cidr_mask)
            .map(Some)
            .map_err(|e| ControlPlaneError::ClusterCidr {
                cidr,
                mask: self.node_cidr_mask,
                message: e.to_string(),
            })
    }
}

/// The controller manager's controllers: every built-in one and node IPAM (which starts
/// nothing without a cluster CIDR, as kube-controller-manager without
/// `--allocate-node-cidrs`), restricted to what `selection` enables.
fn controller_manager(
    client: Arc<dyn Client>,
    cidrs: Option<ClusterCidr>,
    selection: ControllerSelection,
) -> ControllerManager {
    ControllerManager::new(client)
        .with_builtins()
        .add_with_aliases(NODE_IPAM, ["nodeipam"], move |ctx| {
            let cidrs = cidrs.clone();
            async move {
                match cidrs {
                    Some(cidrs) => {
                        NodeIpamController::new(ctx.client, ctx.factory, ctx.recorder, &cidrs)
                            .run(ctx.shutdown)
                            .await
                    }
                    None => {
                        tracing::info!("{NODE_IPAM} not started: no cluster CIDR");
                        Ok(())
                    }
                }
            }
        })
        .controllers(selection)
}

/// Starts a controller-manager replica: the controllers [`ControlPlaneOptions::controllers`]
/// enables (by default every built-in controller, plus node IPAM when the options have a
/// cluster CIDR), run only while this replica holds [`CONTROLLER_MANAGER_LEASE`]. After
/// losing the Lease it stands again with fresh informers. A controller failure is logged and
/// the replica stands again after a second.
///
/// Errors: invalid leader-election settings or cluster CIDR, or a `--controllers` list naming
/// an unknown controller ([`ControlPlaneError::Controllers`]); nothing is started then.
pub fn start_controller_manager(
    client: Arc<dyn Client>,
    options: &ControlPlaneOptions,
) -> Result<Component, ControlPlaneError> {
    let elector = options.elector(&client, CONTROLLER_MANAGER_LEASE)?;
    let cidrs = options.cluster_cidr()?;
    let selection = options.controllers.clone();
    let controller_options = capstan_controllers::context::ControllerOptions {
        root_ca: options.root_ca.clone(),
        ..Default::default()
    };
    let enabled = controller_manager(client.clone(), cidrs.clone(), selection.clone())
        .enabled_controller_names()?
        .join(",");
    tracing::info!(controllers = %enabled, "controller manager's controllers");
    let name = format!("{CONTROLLER_MANAGER_LEASE}/{}", options.identity);
    // Every controller's work queue, term after term, and this term's informers' sync.
    let queues = WorkQueueMetrics::new();
    let synced = InformerSyncCheck::new("informer-sync");
    let endpoint = options.endpoint(
        &name,
        &HealthEndpoints::new().readyz(synced.clone()),
        |registry| {
            queues.register(registry);
            InformerMetrics::new().register(registry);
        },
    )?;
    Ok(Component::spawn(name, move |stop| async move {
        loop {
            let manager = controller_manager(client.clone(), cidrs.clone(), selection.clone())
                .options(controller_options.clone())
                .queue_metrics(queues.clone())
                .informer_sync_check(synced.clone())
                .leader_election(elector.clone());
            let stopped = stop.clone();
            match manager.run(stopped.wait()).await {
                Ok(RunOutcome::Lost) => {
                    tracing::info!(identity = %elector.identity(), "controller manager lost its lease");
                }
                Ok(_) => return,
                Err(error) => {
                    tracing::error!(%error, "controller manager failed; standing again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if stop.is_stopped() {
                return;
            }
        }
    })
    .with_endpoint(endpoint))
}

/// The scheduler's metrics, shared by every term's scheduler, its `sched-handler-sync`
/// check, and its metrics and health listener.
fn scheduler_observability(
    options: &ControlPlaneOptions,
    name: &str,
) -> Result<
    (
        Arc<SchedulerMetrics>,
        InformerSyncCheck,
        Option<ComponentEndpoint>,
    ),
    ControlPlaneError,
> {
    let metrics = Arc::new(SchedulerMetrics::default());
    let synced = InformerSyncCheck::new("sched-handler-sync");
    let endpoint = options.endpoint(
        name,
        &HealthEndpoints::new().readyz(synced.clone()),
        |registry| {
            metrics.register(registry);
            InformerMetrics::new().register(registry);
        },
    )?;
    Ok((metrics, synced, endpoint))
}

/// Starts a scheduler replica with the default profile, scheduling only while it holds
/// [`SCHEDULER_LEASE`]; each term gets a fresh scheduler (queue, cache and informers). With
/// [`ControlPlaneOptions::scheduler_config`], the configuration's profiles (built from the
/// in-tree plugins), backoff and leader election instead (without leader election when it
/// says `leaderElect: false`).
///
/// Errors: invalid leader-election settings, or the profiles fail to build (for a
/// configuration: [`ControlPlaneError::SchedulerConfig`] with every field error).
pub fn start_scheduler(
    client: Arc<dyn Client>,
    options: &ControlPlaneOptions,
) -> Result<Component, ControlPlaneError> {
    if let Some(config) = options.scheduler_config.clone() {
        return start_configured_scheduler(client, options, config);
    }
    let elector = options.elector(&client, SCHEDULER_LEASE)?;
    let events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let recorder = events.recorder(SCHEDULER_NAME);
    // Fail now, not in the first term, if the profile cannot build.
    default_framework(client.clone(), recorder.clone())
        .map_err(|e| ControlPlaneError::Scheduler(e.to_string()))?;
    let name = format!("{SCHEDULER_LEASE}/{}", options.identity);
    let (metrics, synced, endpoint) = scheduler_observability(options, &name)?;
    Ok(Component::spawn(name, move |stop| async move {
        let _events = events;
        loop {
            let (client, recorder) = (client.clone(), recorder.clone());
            let (metrics, synced) = (metrics.clone(), synced.clone());
            let outcome =
                Scheduler::run_leading(&elector, client.clone(), stop.clone().wait(), || {
                    let framework = default_framework(client.clone(), recorder.clone())
                        .expect("the default profile built at start");
                    Scheduler::new(client, framework, recorder)
                        .with_metrics(metrics)
                        .with_sync_check(synced)
                })
                .await;
            if outcome != RunOutcome::Lost || stop.is_stopped() {
                return;
            }
            tracing::info!(identity = %elector.identity(), "scheduler lost its lease");
        }
    })
    .with_endpoint(endpoint))
}

/// [`start_scheduler`] with a `KubeSchedulerConfiguration`.
fn start_configured_scheduler(
    client: Arc<dyn Client>,
    options: &ControlPlaneOptions,
    config: Arc<KubeSchedulerConfiguration>,
) -> Result<Component, ControlPlaneError> {
    let events = EventBroadcaster::new(client.clone(), EventOptions::default());
    let recorder = events.recorder(SCHEDULER_NAME);
    let registry = in_tree_registry(client.clone(), recorder.clone());
    // Fail now, not in the first term, if a profile cannot build.
    config.frameworks(&registry)?;
    let (lease, elector) = match config.leader_election() {
        Some(lease) => {
            let leases: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
            let timing = lease
                .config
                .release_on_cancel(options.leader_election.release_on_cancel);
            let elector =
                LeaderElector::new(leases, lease.name.clone(), options.identity.clone(), timing)?;
            (lease.name, Some(elector))
        }
        None => (SCHEDULER_LEASE.to_owned(), None),
    };
    let name = format!("{lease}/{}", options.identity);
    let (metrics, synced, endpoint) = scheduler_observability(options, &name)?;
    Ok(Component::spawn(name, move |stop| async move {
        let _events = events;
        let build = || {
            Scheduler::from_config(client.clone(), &config, &registry, recorder.clone())
                .expect("the configuration built at start")
                .with_metrics(metrics.clone())
                .with_sync_check(synced.clone())
        };
        let Some(elector) = elector else {
            let informers = InformerFactory::new(client.clone(), ReflectorOptions::default());
            tokio::select! {
                () = build().run(&informers) => {}
                () = stop.wait() => {}
            }
            return;
        };
        loop {
            let outcome =
                Scheduler::run_leading(&elector, client.clone(), stop.clone().wait(), build).await;
            if outcome != RunOutcome::Lost || stop.is_stopped() {
                return;
            }
            tracing::info!(identity = %elector.identity(), "scheduler lost its lease");
        }
    })
    .with_endpoint(endpoint))
}
