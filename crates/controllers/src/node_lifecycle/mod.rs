//! The node lifecycle controller: Kubernetes' `pkg/controller/nodelifecycle` with its
//! NoExecute taint manager (`pkg/controller/tainteviction`), over the [`Client`].
//!
//! One task watches Nodes, Pods and the Node `Lease`s and does four jobs:
//!
//! - **Node health.** A node's heartbeat is its `Lease` in [`NODE_LEASE_NAMESPACE`] (named
//!   after the node; a later `spec.renewTime`) and, as a fallback, a new
//!   `lastHeartbeatTime` of its `Ready` condition. The controller keeps, per node, *when it
//!   observed* the last heartbeat, on its own monotonic clock: remote timestamps are only
//!   compared with each other, never with the controller's clock, as Kubernetes' probe
//!   timestamps do. A node first seen counts as heard from at that moment. Every
//!   [`node_monitor_period`](NodeLifecycleOptions::node_monitor_period) (5 s) the
//!   controller checks every node; one not heard from for
//!   [`node_monitor_grace_period`](NodeLifecycleOptions::node_monitor_grace_period) (40 s;
//!   [`node_startup_grace_period`](NodeLifecycleOptions::node_startup_grace_period), 60 s,
//!   while it has never posted a `Ready` condition) gets its `Ready`, `MemoryPressure`,
//!   `DiskPressure` and `PIDPressure` conditions set to `Unknown`, reason `NodeStatusUnknown`,
//!   message `Kubelet stopped posting node status.` (`NodeStatusNeverUpdated` /
//!   `Kubelet never posted node status.` for a missing condition), through the status
//!   subresource. `lastHeartbeatTime` is kept, so that write is not a heartbeat. When the
//!   controller turns a `Ready: True` node not ready it records `NodeNotReady` on the Node
//!   (`Node <name> status is now: NodeNotReady`). The controller never sets `Ready: True`:
//!   the kubelet does when it comes back.
//! - **Taints.** The NoSchedule taints follow the conditions, as Kubernetes'
//!   `doNoScheduleTaintingPass`: `node.kubernetes.io/not-ready` (Ready False),
//!   `unreachable` (Ready Unknown), `memory-pressure`, `disk-pressure`, `pid-pressure`,
//!   `network-unavailable` (condition True) and `unschedulable` (`spec.unschedulable`). The
//!   NoExecute taints, with `timeAdded`, are `not-ready` for Ready False and `unreachable` for
//!   Ready Unknown, swapped into one another at once, and removed when the node is Ready.
//!   Adding one goes through a per-zone token bucket ([`eviction_rate`](NodeLifecycleOptions::eviction_rate),
//!   0.1 nodes/s, burst 1), slowed in a partially disrupted zone and stopped entirely, with
//!   every such taint removed, when every zone is fully disrupted (no Ready node at all: the
//!   controller, not the nodes, is probably cut off), as Kubernetes' `handleDisruption`.
//!   Taints are written as a merge patch of `spec.taints` carrying the Node's
//!   resourceVersion, so a stale cache gives 409 and a retry on the next pass; taints of
//!   other keys are kept.
//! - **Taint-based eviction.** A Pod on a node with NoExecute taints (any, not only the
//!   controller's) is evicted at once unless its tolerations tolerate every such taint; a
//!   tolerated taint with `tolerationSeconds` delays the eviction until the taint's
//!   `timeAdded` plus the smallest such number of seconds (a toleration without seconds
//!   tolerates forever). Kubernetes' taint manager counts from when it observed the taint;
//!   counting from `timeAdded` gives the same answer and survives a controller restart. An
//!   eviction records `TaintManagerEviction` (`Marking for deletion Pod <ns>/<name>`) on the
//!   Pod, adds the `DisruptionTarget` condition (reason `DeletionByTaintManager`) and
//!   deletes the Pod with its default grace period.
//!
//!   **Not done here:** Kubernetes' `DefaultTolerationSeconds` admission plugin adds
//!   `not-ready:NoExecute` and `unreachable:NoExecute` tolerations of 300 s to every Pod
//!   that has none, so Pods normally survive five minutes of node trouble. Capstan's
//!   registry does not have that plugin yet, so a Pod without tolerations is evicted as
//!   soon as the taint lands; add the tolerations to your Pods to get Kubernetes' grace.
//! - **Pods of unhealthy nodes.** When a node is not Ready, its Pods' `Ready` condition is
//!   set to `False` once per episode (Kubernetes' `MarkPodsNotReady`, with a `NodeNotReady`
//!   Warning on each Pod). A Pod being deleted (`deletionTimestamp`) on a node that is not
//!   Ready would wait for a kubelet that is gone, so the controller force-deletes it
//!   (grace period 0, uid precondition) once the grace period it was given
//!   (`deletionGracePeriodSeconds`) has passed, counted on the controller's clock from when
//!   it first saw the Pod terminating there. Kubernetes' PodGC does this only for nodes with
//!   the `out-of-service` taint; here it is done for every node that is not Ready, because
//!   nothing else would ever finish those deletions.
//!
//! Events also mark nodes joining and leaving the controller's view: `RegisteredNode`
//! (`Registered Node <name> in Controller`) and `RemovingNode`.
//!
//! Wall-clock times written to objects (`timeAdded`, `lastTransitionTime`) come from
//! [`NodeLifecycleOptions::clock`]; under tokio's paused clock in tests, use
//! [`tokio_wall_clock`] so they move with virtual time.
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_api::Client;
//! use capstan_controller::events::{EventBroadcaster, EventOptions};
//! use capstan_controllers::node_lifecycle::{NodeLifecycleController, NodeLifecycleOptions, COMPONENT};
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! async fn run(client: Arc<dyn Client>, stop: tokio::sync::oneshot::Receiver<()>) {
//!     let factory = Arc::new(InformerFactory::new(client.clone(), ReflectorOptions::default()));
//!     let events = EventBroadcaster::new(client.clone(), EventOptions::default());
//!     let controller = NodeLifecycleController::new(
//!         client,
//!         factory,
//!         events.recorder(COMPONENT),
//!         NodeLifecycleOptions::default(),
//!     );
//!     controller.run(async { let _ = stop.await; }).await.unwrap();
//! }
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::ext::{NodeExt, PodExt, TolerationExt};
use capstan_api::k8s_openapi::api::coordination::v1::Lease;
use capstan_api::k8s_openapi::api::core::v1::{
    Node, NodeCondition, Pod, PodCondition, Taint, Toleration,
};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use capstan_api::k8s_openapi::jiff::{SignedDuration, Timestamp};
use capstan_api::kube_core::params::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use capstan_api::{Api, Client, Error};
use capstan_watch::{Delta, InformerFactory, ObjectKey, SharedInformer};
use tokio::time::Instant;

use capstan_controller::events::{Clock, EventRecorder};
use capstan_controller::runtime::ControllerError;
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::context::{BuiltinController, ControllerContext, StopSignal};

mod eviction;
mod health;
mod helpers;
#[cfg(test)]
mod tests;
mod zones;

pub use helpers::*;
pub use zones::*;

/// Kubernetes' name for the controller: what `--controllers` lists.
pub const NAME: &str = "node-lifecycle-controller";

/// The component name the controller's Events report (`source.component`), as Kubernetes'.
pub const COMPONENT: &str = "node-controller";

/// The namespace of the Node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The Pod cache index of `spec.nodeName` this controller adds to the shared Pod informer.
pub const NODE_NAME_INDEX: &str = "spec.nodeName";

/// Kubernetes' default `--node-monitor-period`.
pub const DEFAULT_NODE_MONITOR_PERIOD: Duration = Duration::from_secs(5);
/// Kubernetes' default `--node-monitor-grace-period`.
pub const DEFAULT_NODE_MONITOR_GRACE_PERIOD: Duration = Duration::from_secs(40);
/// Kubernetes' default `--node-startup-grace-period`.
pub const DEFAULT_NODE_STARTUP_GRACE_PERIOD: Duration = Duration::from_secs(60);

/// The taint keys the controller manages.
pub mod taints {
    /// Ready is Unknown: the node stopped heartbeating.
    pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
    /// Ready is False: the kubelet reports the node not ready.
    pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
    /// MemoryPressure is True.
    pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
    /// DiskPressure is True.
    pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
    /// PIDPressure is True.
    pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
    /// NetworkUnavailable is True.
    pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
    /// `spec.unschedulable` is set (cordoned).
    pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
    /// The `NoExecute` effect: running Pods that do not tolerate it are evicted.
    pub const NO_EXECUTE: &str = "NoExecute";
    /// The `NoSchedule` effect: no new Pods that do not tolerate it.
    pub const NO_SCHEDULE: &str = "NoSchedule";
}

/// Event reasons and condition reasons, as Kubernetes spells them.
pub mod reasons {
    /// On the Node, when the controller turns it not ready: `Node <name> status is now:
    /// NodeNotReady`. Also a Warning on each of its Pods marked not ready: `Node is not ready`.
    pub const NODE_NOT_READY: &str = "NodeNotReady";
    /// On a Pod the taint manager deletes: `Marking for deletion Pod <ns>/<name>`.
    pub const TAINT_MANAGER_EVICTION: &str = "TaintManagerEviction";
    /// On a Node the controller starts watching: `Registered Node <name> in Controller`.
    pub const REGISTERED_NODE: &str = "RegisteredNode";
    /// On a Node that disappeared: `Removing Node <name> from Controller`.
    pub const REMOVING_NODE: &str = "RemovingNode";
    /// Condition reason of a condition the controller set to Unknown.
    pub const NODE_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
    /// Condition reason of a condition the kubelet never posted.
    pub const NODE_STATUS_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
    /// Reason of the `DisruptionTarget` Pod condition set before an eviction.
    pub const DELETION_BY_TAINT_MANAGER: &str = "DeletionByTaintManager";
}

/// The message of a condition the controller set to Unknown.
pub const NODE_STATUS_UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
/// The message of a condition the kubelet never posted.
pub const NODE_STATUS_NEVER_UPDATED_MESSAGE: &str = "Kubelet never posted node status.";

const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const LEGACY_ZONE_LABEL: &str = "failure-domain.beta.kubernetes.io/zone";
const LEGACY_REGION_LABEL: &str = "failure-domain.beta.kubernetes.io/region";

/// A wall clock that moves with tokio's clock: the system time when first called (per
/// clock), plus tokio's elapsed time since. Under tokio's paused clock (tests) it advances
/// with virtual time; in production it is the wall clock without later NTP steps.
pub fn tokio_wall_clock() -> impl Fn() -> Timestamp + Send + Sync + 'static {
    let base = (Timestamp::now(), Instant::now());
    move || {
        let elapsed = SignedDuration::try_from(base.1.elapsed()).unwrap_or(SignedDuration::MAX);
        base.0.checked_add(elapsed).unwrap_or(Timestamp::MAX)
    }
}

/// Settings of the [`NodeLifecycleController`]; the defaults are Kubernetes'.
#[derive(Clone)]
pub struct NodeLifecycleOptions {
    /// How often every node's health is checked (`--node-monitor-period`, 5 s).
    pub node_monitor_period: Duration,
    /// How long a node may go without heartbeat before it is Unknown
    /// (`--node-monitor-grace-period`, 40 s).
    pub node_monitor_grace_period: Duration,
    /// The same for a node that never posted a `Ready` condition
    /// (`--node-startup-grace-period`, 60 s).
    pub node_startup_grace_period: Duration,
    /// Nodes per second that may get a NoExecute taint in a healthy zone
    /// (`--node-eviction-rate`, 0.1).
    pub eviction_rate: f64,
    /// The same in a partially disrupted zone larger than
    /// [`large_cluster_threshold`](Self::large_cluster_threshold)
    /// (`--secondary-node-eviction-rate`, 0.01); smaller such zones get none.
    pub secondary_eviction_rate: f64,
    /// Nodes in a zone above which it counts as large (`--large-cluster-size-threshold`, 50).
    pub large_cluster_threshold: usize,
    /// Share of not-ready nodes (with more than two) from which a zone is partially disrupted
    /// (`--unhealthy-zone-threshold`, 0.55).
    pub unhealthy_zone_threshold: f64,
    clock: Clock,
}

impl Default for NodeLifecycleOptions {
    fn default() -> Self {
        NodeLifecycleOptions {
            node_monitor_period: DEFAULT_NODE_MONITOR_PERIOD,
            node_monitor_grace_period: DEFAULT_NODE_MONITOR_GRACE_PERIOD,
            node_startup_grace_period: DEFAULT_NODE_STARTUP_GRACE_PERIOD,
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            large_cluster_threshold: 50,
            unhealthy_zone_threshold: 0.55,
            clock: Arc::new(Timestamp::now),
        }
    }
}

impl fmt::Debug for NodeLifecycleOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeLifecycleOptions")
            .field("node_monitor_period", &self.node_monitor_period)
            .field("node_monitor_grace_period", &self.node_monitor_grace_period)
            .field("node_startup_grace_period", &self.node_startup_grace_period)
            .field("eviction_rate", &self.eviction_rate)
            .field("secondary_eviction_rate", &self.secondary_eviction_rate)
            .field("large_cluster_threshold", &self.large_cluster_threshold)
            .field("unhealthy_zone_threshold", &self.unhealthy_zone_threshold)
            .finish_non_exhaustive()
    }
}

impl NodeLifecycleOptions {
    /// Sets [`node_monitor_period`](Self::node_monitor_period) (at least 1 ms).
    pub fn node_monitor_period(mut self, period: Duration) -> Self {
        self.node_monitor_period = period.max(Duration::from_millis(1));
        self
    }

    /// Sets [`node_monitor_grace_period`](Self::node_monitor_grace_period).
    pub fn node_monitor_grace_period(mut self, grace: Duration) -> Self {
        self.node_monitor_grace_period = grace;
        self
    }

    /// Sets [`node_startup_grace_period`](Self::node_startup_grace_period).
    pub fn node_startup_grace_period(mut self, grace: Duration) -> Self {
        self.node_startup_grace_period = grace;
        self
    }

    /// Sets [`eviction_rate`](Self::eviction_rate) and
    /// [`secondary_eviction_rate`](Self::secondary_eviction_rate) (nodes per second).
    pub fn eviction_rates(mut self, primary: f64, secondary: f64) -> Self {
        self.eviction_rate = primary.max(0.0);
        self.secondary_eviction_rate = secondary.max(0.0);
        self
    }

    /// Stamps `timeAdded` and condition transition times with `clock` instead of the system
    /// clock; see [`tokio_wall_clock`].
    pub fn clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

/// What the controller last observed of a node's heartbeats.
#[derive(Debug)]
struct NodeHealth {
    /// When a heartbeat was last observed, on the controller's clock.
    probe: Instant,
    /// The `Ready` condition's `lastHeartbeatTime` then (outer `None`: no condition).
    ready_heartbeat: Option<Option<Time>>,
    /// The Lease's `renewTime` then.
    lease_renew: Option<MicroTime>,
}

/// The node lifecycle controller; see the [module docs](self).
pub struct NodeLifecycleController {
    client: Arc<dyn Client>,
    nodes: Arc<SharedInformer<Node>>,
    pods: Arc<SharedInformer<Pod>>,
    leases: Arc<SharedInformer<Lease>>,
    recorder: EventRecorder,
    options: NodeLifecycleOptions,
}

impl fmt::Debug for NodeLifecycleController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeLifecycleController")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl NodeLifecycleController {
    /// A controller writing through `client`, with the Node, Pod and Lease informers of
    /// `factory` (it adds the [`NODE_NAME_INDEX`] to the Pod cache) and Events from
    /// `recorder` (whose component is usually [`COMPONENT`]).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the factory starts the informers at once.
    pub fn new(
        client: Arc<dyn Client>,
        factory: Arc<InformerFactory>,
        recorder: EventRecorder,
        options: NodeLifecycleOptions,
    ) -> Self {
        let pods = factory.informer::<Pod>();
        pods.cache().add_index(NODE_NAME_INDEX, |pod: &Pod| {
            pod.node_name().map(str::to_string).into_iter().collect()
        });
        NodeLifecycleController {
            client,
            nodes: factory.informer::<Node>(),
            pods,
            leases: factory.informer::<Lease>(),
            recorder,
            options,
        }
    }

    /// Runs until `shutdown` completes (the write in flight finishes first). Waits for the
    /// Node, Pod and Lease caches to sync before acting. Currently always returns `Ok(())`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControllerError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let synced = async {
            self.nodes.wait_for_sync().await;
            self.pods.wait_for_sync().await;
            self.leases.wait_for_sync().await;
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = synced => {}
        }
        let mut node_deltas = self.nodes.subscribe();
        let mut pod_deltas = self.pods.subscribe();
        let mut lease_deltas = self.leases.subscribe();
        let mut state = State::default();
        let mut ticker = tokio::time::interval(self.options.node_monitor_period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wake: Option<Instant> = None;
        loop {
            let mut monitor = false;
            // A full pass on the ticker and timers; only the nodes named by a change
            // otherwise, so a Pod's update costs its node's Pods, not the cluster's.
            let mut scope = PassScope::Nodes(BTreeSet::new());
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                _ = ticker.tick() => { monitor = true; scope = PassScope::All; }
                Some(delta) = node_deltas.recv() => {
                    self.on_node(&mut state, &delta);
                    scope.add(name_of(delta.object().as_ref()));
                    while let Ok(delta) = node_deltas.try_recv() {
                        self.on_node(&mut state, &delta);
                        scope.add(name_of(delta.object().as_ref()));
                    }
                }
                Some(delta) = lease_deltas.recv() => {
                    self.on_lease(&mut state, delta.object());
                    while let Ok(delta) = lease_deltas.try_recv() {
                        self.on_lease(&mut state, delta.object());
                    }
                }
                Some(delta) = pod_deltas.recv() => {
                    scope.add_pod(delta.object());
                    while let Ok(delta) = pod_deltas.try_recv() {
                        scope.add_pod(delta.object());
                    }
                }
                _ = sleep_until(wake) => { scope = PassScope::All; }
            }
            if monitor {
                self.monitor(&mut state).await;
            }
            match scope {
                PassScope::All => wake = self.taint_manager_pass(&mut state, None).await,
                PassScope::Nodes(nodes) if !nodes.is_empty() => {
                    // Keep the earlier timer: it covers nodes this pass does not visit.
                    if let Some(at) = self.taint_manager_pass(&mut state, Some(&nodes)).await {
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                    }
                }
                PassScope::Nodes(_) => {}
            }
        }
    }
}

/// When a NoExecute taint's tolerations start counting: its `timeAdded`, which the API keeps
/// to the second only; when the controller saw the taint within that second (it added it,
/// typically), the precise moment it saw it, so `tolerationSeconds` is never cut short. A
/// taint without `timeAdded` counts from when the controller first saw it.
fn taint_start(taint: &Taint, seen: Timestamp) -> Timestamp {
    match &taint.time_added {
        Some(added)
            if seen >= added.0 && seen.duration_since(added.0) < SignedDuration::from_secs(1) =>
        {
            seen
        }
        Some(added) => added.0,
        None => seen,
    }
}

/// Whether the Lease was renewed since `saved`: a later `renewTime` (or a first one).
fn renewed(saved: Option<&MicroTime>, observed: Option<&MicroTime>) -> bool {
    match (saved, observed) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(saved), Some(observed)) => saved.0 < observed.0,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Which nodes a taint manager pass visits.
enum PassScope {
    All,
    Nodes(BTreeSet<String>),
}

impl PassScope {
    fn add(&mut self, node: String) {
        if let PassScope::Nodes(nodes) = self {
            nodes.insert(node);
        }
    }

    /// The node of a changed Pod, if it is bound to one.
    fn add_pod(&mut self, pod: &Pod) {
        if let Some(node) = pod.node_name() {
            self.add(node.to_string());
        }
    }
}

#[derive(Default)]
struct State {
    health: HashMap<String, NodeHealth>,
    zones: HashMap<String, (ZoneState, TokenBucket)>,
    all_disrupted: bool,
    /// Pods seen terminating on a node that is not Ready, by uid: since when.
    terminating: HashMap<String, Instant>,
    /// Pods marked not ready in the current not-ready episode of their node, by uid.
    marked_not_ready: HashSet<String>,
    /// Pods evicted whose deletion the cache may not show yet, by uid.
    evicted: HashSet<String>,
    /// NoExecute taints: when first seen (node, key, value).
    taint_seen: HashMap<(String, String, Option<String>), Timestamp>,
}

impl BuiltinController for NodeLifecycleController {
    const NAME: &'static str = NAME;
    const ALIASES: &'static [&'static str] = &["nodelifecycle"];

    /// A controller with the context's [`NodeLifecycleOptions`](crate::context::ControllerOptions::node_lifecycle).
    fn from_context(ctx: &ControllerContext) -> Self {
        NodeLifecycleController::new(
            ctx.client.clone(),
            ctx.factory.clone(),
            ctx.recorder.clone(),
            ctx.options.node_lifecycle.clone(),
        )
    }

    fn run_until(self, shutdown: StopSignal) -> BoxFuture<'static, Result<(), ControllerError>> {
        self.run(shutdown).boxed()
    }
}
