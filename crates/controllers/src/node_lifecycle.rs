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
// Pure helpers
// ---------------------------------------------------------------------------------------

/// The status of the Node's `Ready` condition (`True`, `False`, `Unknown`), if posted.
pub fn node_ready_status(node: &Node) -> Option<&str> {
    node.condition("Ready").map(|c| c.status.as_str())
}

/// When a Pod must leave a node with the given NoExecute taints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Some taint is not tolerated.
    Now,
    /// Every taint is tolerated, the earliest tolerance ends then.
    At(Timestamp),
    /// Every taint is tolerated forever.
    Never,
}

/// When a Pod with `tolerations` must be evicted from a node with `taints` (NoExecute only;
/// others are ignored). A taint's tolerance ends at `start(taint)` (normally its
/// `timeAdded`) plus the smallest `tolerationSeconds` among the tolerations matching it
/// (negative counts as 0); with none of them giving seconds, it lasts forever.
pub fn eviction_time(
    tolerations: &[Toleration],
    taints: &[Taint],
    start: impl Fn(&Taint) -> Timestamp,
) -> Eviction {
    let mut earliest: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == taints::NO_EXECUTE) {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| t.tolerates(taint)).collect();
        if matching.is_empty() {
            return Eviction::Now;
        }
        let Some(seconds) = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .map(|s| s.max(0))
            .min()
        else {
            continue;
        };
        let end = start(taint)
            .checked_add(SignedDuration::from_secs(seconds))
            .unwrap_or(Timestamp::MAX);
        earliest = Some(earliest.map_or(end, |e| e.min(end)));
    }
    earliest.map_or(Eviction::Never, Eviction::At)
}

/// The NoSchedule taint keys a node's conditions and spec call for, as Kubernetes'
/// `doNoScheduleTaintingPass`.
pub fn no_schedule_taint_keys(node: &Node) -> BTreeSet<&'static str> {
    let mut keys = BTreeSet::new();
    match node_ready_status(node) {
        Some("False") => {
            keys.insert(taints::NOT_READY);
        }
        Some("Unknown") => {
            keys.insert(taints::UNREACHABLE);
        }
        _ => {}
    }
    for (condition, key) in [
        ("MemoryPressure", taints::MEMORY_PRESSURE),
        ("DiskPressure", taints::DISK_PRESSURE),
        ("PIDPressure", taints::PID_PRESSURE),
        ("NetworkUnavailable", taints::NETWORK_UNAVAILABLE),
    ] {
        if node
            .condition(condition)
            .is_some_and(|c| c.status == "True")
        {
            keys.insert(key);
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        keys.insert(taints::UNSCHEDULABLE);
    }
    keys
}

const MANAGED_NO_SCHEDULE: [&str; 7] = [
    taints::NOT_READY,
    taints::UNREACHABLE,
    taints::MEMORY_PRESSURE,
    taints::DISK_PRESSURE,
    taints::PID_PRESSURE,
    taints::NETWORK_UNAVAILABLE,
    taints::UNSCHEDULABLE,
];
const MANAGED_NO_EXECUTE: [&str; 2] = [taints::NOT_READY, taints::UNREACHABLE];

fn is_managed(taint: &Taint) -> bool {
    (taint.effect == taints::NO_SCHEDULE && MANAGED_NO_SCHEDULE.contains(&taint.key.as_str()))
        || (taint.effect == taints::NO_EXECUTE && MANAGED_NO_EXECUTE.contains(&taint.key.as_str()))
}

fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    node.taints()
        .iter()
        .any(|t| t.key == key && t.effect == effect)
}

/// Kubernetes' zone key: region and zone labels, `""` for neither.
fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |key: &str, legacy: &str| {
        labels
            .and_then(|l| l.get(key).or_else(|| l.get(legacy)))
            .cloned()
            .unwrap_or_default()
    };
    let region = get(REGION_LABEL, LEGACY_REGION_LABEL);
    let zone = get(ZONE_LABEL, LEGACY_ZONE_LABEL);
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\x00:{zone}")
    }
}

fn name_of<K: capstan_api::Resource>(object: &K) -> String {
    object.meta().name.clone().unwrap_or_default()
}

fn renew_time(lease: &Lease) -> Option<&MicroTime> {
    lease.spec.as_ref()?.renew_time.as_ref()
}

// ---------------------------------------------------------------------------------------
// Zones
// ---------------------------------------------------------------------------------------

/// A zone's health, as Kubernetes' `ZoneState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    /// Few nodes not ready: taints at the normal rate.
    Normal,
    /// More than two and at least the threshold share not ready: slowed or stopped.
    PartialDisruption,
    /// No node ready.
    FullDisruption,
}

/// The state of a zone with `ready` Ready nodes and `not_ready` others.
pub fn zone_state(ready: usize, not_ready: usize, unhealthy_threshold: f64) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / (not_ready + ready) as f64 >= unhealthy_threshold
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// A token bucket of burst 1, as client-go's `NewTokenBucketRateLimiter(qps, 1)`.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        TokenBucket {
            rate,
            tokens: if rate > 0.0 { 1.0 } else { 0.0 },
            at: Instant::now(),
        }
    }

    fn try_take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(1.0);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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

    fn now(&self) -> Timestamp {
        (self.options.clock)()
    }

    /// Notes a heartbeat carried by a Node change.
    fn on_node(&self, state: &mut State, delta: &Delta<Node>) {
        let node = delta.object();
        let name = name_of(node.as_ref());
        if let Delta::Deleted(_) = delta {
            if state.health.remove(&name).is_some() {
                self.recorder.normal(
                    node.as_ref(),
                    reasons::REMOVING_NODE,
                    format!("Removing Node {name} from Controller"),
                );
            }
            return;
        }
        self.observe(state, node);
    }

    fn on_lease(&self, state: &mut State, lease: &Lease) {
        if lease.metadata.namespace.as_deref() != Some(NODE_LEASE_NAMESPACE) {
            return;
        }
        let name = name_of(lease);
        if let Some(health) = state.health.get_mut(&name) {
            if renewed(health.lease_renew.as_ref(), renew_time(lease)) {
                health.lease_renew = renew_time(lease).cloned();
                health.probe = Instant::now();
            }
        }
    }

    /// Updates the node's heartbeat record from its current state and Lease.
    fn observe(&self, state: &mut State, node: &Node) {
        let name = name_of(node);
        let now = Instant::now();
        let heartbeat = node
            .condition("Ready")
            .map(|c| c.last_heartbeat_time.clone());
        let lease_key = ObjectKey::namespaced(NODE_LEASE_NAMESPACE, name.clone());
        let lease = self.leases.cache().get(&lease_key);
        let lease_renew = lease.as_deref().and_then(renew_time).cloned();
        match state.health.get_mut(&name) {
            None => {
                self.recorder.normal(
                    node,
                    reasons::REGISTERED_NODE,
                    format!("Registered Node {name} in Controller"),
                );
                state.health.insert(
                    name,
                    NodeHealth {
                        probe: now,
                        ready_heartbeat: heartbeat,
                        lease_renew,
                    },
                );
            }
            Some(health) => {
                if health.ready_heartbeat != heartbeat {
                    health.ready_heartbeat = heartbeat;
                    health.probe = now;
                }
                if renewed(health.lease_renew.as_ref(), lease_renew.as_ref()) {
                    health.lease_renew = lease_renew;
                    health.probe = now;
                }
            }
        }
    }

    /// One node monitor pass: health of every node, zone states, then taints.
    async fn monitor(&self, state: &mut State) {
        let mut nodes = self.nodes.cache().list();
        nodes.sort_by_key(|n| name_of(n.as_ref()));
        let mut current = Vec::with_capacity(nodes.len());
        for node in nodes {
            self.observe(state, &node);
            match self.update_health(state, node.clone()).await {
                Ok(node) => current.push(node),
                Err(error) => {
                    tracing::warn!(node = %name_of(node.as_ref()), %error, "node lifecycle: updating node health failed");
                    current.push(node);
                }
            }
        }
        self.handle_disruption(state, &current);
        for node in current {
            if let Err(error) = self.reconcile_taints(state, &node).await {
                tracing::debug!(node = %name_of(node.as_ref()), %error, "node lifecycle: updating taints failed; retrying next pass");
            }
        }
    }

    /// Sets the conditions of a node past its grace period to Unknown; returns the node as
    /// it is now. Retries conflicts on a fresh copy, up to five times.
    async fn update_health(
        &self,
        state: &mut State,
        mut node: Arc<Node>,
    ) -> Result<Arc<Node>, Error> {
        let name = name_of(node.as_ref());
        let api: Api<Node> = Api::all(self.client.clone());
        for _ in 0..5 {
            let Some(health) = state.health.get(&name) else {
                return Ok(node);
            };
            let observed_ready = node_ready_status(&node).map(str::to_string);
            let grace = if observed_ready.is_none() {
                self.options.node_startup_grace_period
            } else {
                self.options.node_monitor_grace_period
            };
            if Instant::now().duration_since(health.probe) <= grace {
                return Ok(node);
            }
            let now = Time(self.now());
            let mut updated = (*node).clone();
            let creation = updated.metadata.creation_timestamp.clone();
            let status = updated.status.get_or_insert_with(Default::default);
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            let mut changed = false;
            for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
                match conditions.iter_mut().find(|c| c.type_ == type_) {
                    None => {
                        conditions.push(NodeCondition {
                            type_: type_.into(),
                            status: "Unknown".into(),
                            reason: Some(reasons::NODE_STATUS_NEVER_UPDATED.into()),
                            message: Some(NODE_STATUS_NEVER_UPDATED_MESSAGE.into()),
                            last_heartbeat_time: creation.clone(),
                            last_transition_time: Some(now.clone()),
                        });
                        changed = true;
                    }
                    Some(condition) if condition.status != "Unknown" => {
                        condition.status = "Unknown".into();
                        condition.reason = Some(reasons::NODE_STATUS_UNKNOWN.into());
                        condition.message = Some(NODE_STATUS_UNKNOWN_MESSAGE.into());
                        condition.last_transition_time = Some(now.clone());
                        changed = true;
                    }
                    Some(_) => {}
                }
            }
            if !changed {
                return Ok(node);
            }
            match api.update_status(&PostParams::default(), &updated).await {
                Ok(written) => {
                    if observed_ready.as_deref() == Some("True") {
                        self.recorder.normal(
                            &written,
                            reasons::NODE_NOT_READY,
                            format!("Node {name} status is now: NodeNotReady"),
                        );
                    }
                    tracing::info!(node = %name, "node lifecycle: node stopped posting status; conditions set to Unknown");
                    return Ok(Arc::new(written));
                }
                Err(error) if error.is_conflict() => {
                    let Some(fresh) = api.get_opt(&name).await? else {
                        return Ok(node);
                    };
                    node = Arc::new(fresh);
                    self.observe(state, &node);
                }
                Err(Error::NotFound { .. }) => return Ok(node),
                Err(error) => return Err(error),
            }
        }
        Ok(node)
    }

    /// Zone states from the nodes' Ready conditions, and the taint limiters that follow.
    fn handle_disruption(&self, state: &mut State, nodes: &[Arc<Node>]) {
        let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
        for node in nodes {
            let entry = counts.entry(zone_of(node)).or_default();
            if node_ready_status(node) == Some("True") {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        let options = &self.options;
        let mut zones = HashMap::new();
        for (zone, (ready, not_ready)) in counts {
            let zone_state = zone_state(ready, not_ready, options.unhealthy_zone_threshold);
            let size = ready + not_ready;
            if state.zones.get(&zone).map(|(s, _)| *s) != Some(zone_state) {
                let rate = match zone_state {
                    ZoneState::Normal | ZoneState::FullDisruption => options.eviction_rate,
                    ZoneState::PartialDisruption if size > options.large_cluster_threshold => {
                        options.secondary_eviction_rate
                    }
                    ZoneState::PartialDisruption => 0.0,
                };
                tracing::info!(zone = %zone, state = ?zone_state, "node lifecycle: zone state");
                zones.insert(zone, (zone_state, TokenBucket::new(rate)));
            } else if let Some(kept) = state.zones.remove(&zone) {
                zones.insert(zone, kept);
            }
        }
        state.zones = zones;
        let all_disrupted = !state.zones.is_empty()
            && state
                .zones
                .values()
                .all(|(s, _)| *s == ZoneState::FullDisruption);
        if all_disrupted != state.all_disrupted {
            tracing::warn!(
                all_disrupted,
                "node lifecycle: every zone fully disrupted: {}",
                if all_disrupted {
                    "no NoExecute tainting until a node is Ready"
                } else {
                    "tainting resumes"
                }
            );
            state.all_disrupted = all_disrupted;
        }
    }

    /// Brings the controller's taints on `node` to what its conditions call for.
    async fn reconcile_taints(&self, state: &mut State, node: &Node) -> Result<(), Error> {
        let name = name_of(node);
        let existing = node.taints();
        let mut wanted: Vec<Taint> = existing
            .iter()
            .filter(|t| !is_managed(t))
            .cloned()
            .collect();
        for key in no_schedule_taint_keys(node) {
            wanted.push(
                existing
                    .iter()
                    .find(|t| t.key == key && t.effect == taints::NO_SCHEDULE)
                    .cloned()
                    .unwrap_or_else(|| Taint {
                        key: key.into(),
                        effect: taints::NO_SCHEDULE.into(),
                        ..Taint::default()
                    }),
            );
        }
        let no_execute = match node_ready_status(node) {
            _ if state.all_disrupted => None,
            Some("False") => Some((taints::NOT_READY, taints::UNREACHABLE)),
            Some("Unknown") => Some((taints::UNREACHABLE, taints::NOT_READY)),
            _ => None,
        };
        if let Some((key, other)) = no_execute {
            if let Some(present) = existing
                .iter()
                .find(|t| t.key == key && t.effect == taints::NO_EXECUTE)
            {
                wanted.push(present.clone());
            } else if has_taint(node, other, taints::NO_EXECUTE)
                || state
                    .zones
                    .get_mut(&zone_of(node))
                    .is_some_and(|(_, bucket)| bucket.try_take())
            {
                // A swap is immediate; a new NoExecute taint waits for the zone's limiter.
                let now = self.now();
                state
                    .taint_seen
                    .insert((name.clone(), key.to_string(), None), now);
                wanted.push(Taint {
                    key: key.into(),
                    effect: taints::NO_EXECUTE.into(),
                    time_added: Some(Time(now)),
                    value: None,
                });
            }
        }
        let key_of = |t: &Taint| (t.key.clone(), t.effect.clone(), t.value.clone());
        let before: BTreeSet<_> = existing.iter().map(key_of).collect();
        let after: BTreeSet<_> = wanted.iter().map(key_of).collect();
        if before == after {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": wanted},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let added: Vec<String> = after
            .difference(&before)
            .map(|(k, e, _)| format!("{k}:{e}"))
            .collect();
        let removed: Vec<String> = before
            .difference(&after)
            .map(|(k, e, _)| format!("{k}:{e}"))
            .collect();
        tracing::info!(node = %name, ?added, ?removed, "node lifecycle: taints updated");
        Ok(())
    }

    /// The taint manager and the care of Pods on unhealthy nodes, over every node (`only` is
    /// `None`) or the named ones; returns when to run again for a pending eviction or
    /// force-deletion. Only a pass over every node forgets the state of Pods and taints it no
    /// longer sees.
    async fn taint_manager_pass(
        &self,
        state: &mut State,
        only: Option<&BTreeSet<String>>,
    ) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut wake_at = |at: Instant| wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        let now = Instant::now();
        let wall = self.now();
        let mut seen_terminating = HashSet::new();
        let mut seen_marked = HashSet::new();
        let mut seen_taints = HashSet::new();
        let mut seen_evicted = HashSet::new();
        let nodes = match only {
            None => {
                let mut nodes = self.nodes.cache().list();
                nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                nodes
            }
            Some(names) => names
                .iter()
                .filter_map(|name| self.nodes.cache().get(&ObjectKey::cluster(name.as_str())))
                .collect(),
        };
        for node in nodes {
            let node_name = name_of(node.as_ref());
            let ready = node_ready_status(&node) == Some("True");
            let no_execute: Vec<Taint> = node
                .taints()
                .iter()
                .filter(|t| t.effect == taints::NO_EXECUTE)
                .cloned()
                .collect();
            for taint in &no_execute {
                let key = (node_name.clone(), taint.key.clone(), taint.value.clone());
                state.taint_seen.entry(key.clone()).or_insert(wall);
                seen_taints.insert(key);
            }
            if ready && no_execute.is_empty() {
                continue;
            }
            let mut pods = self.pods.cache().by_index(NODE_NAME_INDEX, &node_name);
            pods.sort_by(|a, b| {
                (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
                    .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
            });
            for pod in pods {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if pod.metadata.deletion_timestamp.is_some() {
                    if ready {
                        continue;
                    }
                    seen_terminating.insert(uid.clone());
                    let first = *state.terminating.entry(uid).or_insert(now);
                    let grace = pod
                        .metadata
                        .deletion_grace_period_seconds
                        .unwrap_or(0)
                        .max(0);
                    let due = first + Duration::from_secs(grace as u64);
                    if now >= due {
                        self.force_delete(&pod, &node_name).await;
                    } else {
                        wake_at(due);
                    }
                    continue;
                }
                if !ready {
                    seen_marked.insert(uid.clone());
                    if !state.marked_not_ready.contains(&uid) && pod.is_ready() {
                        if self.mark_not_ready(&pod).await {
                            state.marked_not_ready.insert(uid.clone());
                        }
                    } else {
                        state.marked_not_ready.insert(uid.clone());
                    }
                }
                if no_execute.is_empty() {
                    continue;
                }
                let tolerations = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.tolerations.as_deref())
                    .unwrap_or_default();
                let eviction = eviction_time(tolerations, &no_execute, |taint| {
                    let seen = state
                        .taint_seen
                        .get(&(node_name.clone(), taint.key.clone(), taint.value.clone()))
                        .copied()
                        .unwrap_or(wall);
                    taint_start(taint, seen)
                });
                match eviction {
                    Eviction::Never => {}
                    Eviction::At(at) if at > wall => {
                        let left = wall.duration_until(at).unsigned_abs();
                        wake_at(now + left);
                    }
                    // Evicted already; the cache has not seen the deletion yet.
                    Eviction::Now | Eviction::At(_) if state.evicted.contains(&uid) => {
                        seen_evicted.insert(uid);
                    }
                    Eviction::Now | Eviction::At(_) => {
                        if self.evict(&pod).await {
                            state.evicted.insert(uid.clone());
                            seen_evicted.insert(uid);
                        }
                    }
                }
            }
        }
        if only.is_some() {
            return wake;
        }
        state
            .terminating
            .retain(|uid, _| seen_terminating.contains(uid));
        state
            .marked_not_ready
            .retain(|uid| seen_marked.contains(uid));
        state.taint_seen.retain(|key, _| seen_taints.contains(key));
        state.evicted.retain(|uid| seen_evicted.contains(uid));
        wake
    }

    /// Sets a Pod's Ready condition to False (Kubernetes' `MarkPodsNotReady`). Returns whether
    /// it is done (or nothing is left to do).
    async fn mark_not_ready(&self, pod: &Pod) -> bool {
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let mut updated = pod.clone();
        let now = Time(self.now());
        if let Some(conditions) = updated.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            for condition in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                condition.status = "False".into();
                condition.last_transition_time = Some(now.clone());
            }
        }
        match api.update_status(&PostParams::default(), &updated).await {
            Ok(written) => {
                self.recorder
                    .warning(&written, reasons::NODE_NOT_READY, "Node is not ready");
                true
            }
            Err(Error::NotFound { .. }) => true,
            Err(error) => {
                tracing::debug!(pod = %name_of(pod), %error, "node lifecycle: marking pod not ready failed; retrying");
                false
            }
        }
    }

    /// The taint manager's eviction: the Event, the `DisruptionTarget` condition, the delete.
    /// Returns whether the Pod is deleted (or being deleted, or gone).
    async fn evict(&self, pod: &Pod) -> bool {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = name_of(pod);
        self.recorder.normal(
            pod,
            reasons::TAINT_MANAGER_EVICTION,
            format!("Marking for deletion Pod {namespace}/{name}"),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let mut current = pod.clone();
        for _ in 0..3 {
            let now = Time(self.now());
            let status = current.status.get_or_insert_with(Default::default);
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            conditions.retain(|c| c.type_ != "DisruptionTarget");
            conditions.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some(reasons::DELETION_BY_TAINT_MANAGER.into()),
                message: Some("Taint manager: deleting due to NoExecute taint".into()),
                last_transition_time: Some(now),
                ..PodCondition::default()
            });
            match api.update_status(&PostParams::default(), &current).await {
                Err(error) if error.is_conflict() => match api.get_opt(&name).await {
                    Ok(Some(fresh)) if fresh.metadata.uid == pod.metadata.uid => current = fresh,
                    Ok(_) => return true,
                    Err(_) => return false,
                },
                _ => break,
            }
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), "node lifecycle: evicted");
                true
            }
            Err(Error::NotFound { .. }) => true,
            Err(error) if error.is_conflict() => true,
            Err(error) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), %error, "node lifecycle: eviction failed; retrying");
                false
            }
        }
    }

    /// Deletes a terminating Pod of a node that is not Ready for good (grace period 0).
    async fn force_delete(&self, pod: &Pod, node: &str) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = name_of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), %node, "node lifecycle: force-deleted a terminating pod of a node that is not ready")
            }
            Err(error) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), %error, "node lifecycle: force delete failed")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, added: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: taints::NO_EXECUTE.into(),
            time_added: Some(Time(ts(added))),
            value: None,
        }
    }

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn toleration(key: &str, operator: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.to_string()),
            operator: Some(operator.into()),
            toleration_seconds: seconds,
            ..Toleration::default()
        }
    }

    #[test]
    fn tolerations_match_taints_as_kubernetes_matches_them() {
        let unreachable = taint(taints::UNREACHABLE, 0);
        assert!(toleration("", "Exists", None).tolerates(&unreachable));
        assert!(toleration(taints::UNREACHABLE, "Exists", None).tolerates(&unreachable));
        assert!(!toleration(taints::NOT_READY, "Exists", None).tolerates(&unreachable));
        let mut wrong_effect = toleration(taints::UNREACHABLE, "Exists", None);
        wrong_effect.effect = Some("NoSchedule".into());
        assert!(!wrong_effect.tolerates(&unreachable));
        let mut equal = toleration(taints::UNREACHABLE, "Equal", None);
        assert!(equal.tolerates(&unreachable));
        equal.value = Some("x".into());
        assert!(!equal.tolerates(&unreachable));
    }

    #[test]
    fn eviction_waits_for_the_shortest_toleration_of_each_taint() {
        let start = |t: &Taint| t.time_added.as_ref().unwrap().0;
        let taints = [taint(taints::UNREACHABLE, 10), taint(taints::NOT_READY, 0)];
        assert_eq!(eviction_time(&[], &taints, start), Eviction::Now);
        let forever = [toleration("", "Exists", None)];
        assert_eq!(eviction_time(&forever, &taints, start), Eviction::Never);
        let timed = [
            toleration(taints::UNREACHABLE, "Exists", Some(60)),
            toleration(taints::UNREACHABLE, "Exists", Some(30)),
            toleration(taints::NOT_READY, "Exists", Some(100)),
        ];
        assert_eq!(eviction_time(&timed, &taints, start), Eviction::At(ts(40)));
        let negative = [toleration("", "Exists", Some(-5))];
        assert_eq!(
            eviction_time(&negative, &taints, start),
            Eviction::At(ts(0))
        );
        assert_eq!(eviction_time(&[], &[], start), Eviction::Never);
    }

    #[test]
    fn zones_are_disrupted_as_kubernetes_counts_them() {
        assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(1, 1, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(2, 2, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(0, 0, 0.55), ZoneState::Normal);
    }

    #[test]
    fn a_taint_counts_from_the_moment_the_controller_saw_it_within_its_second() {
        let added = taint(taints::UNREACHABLE, 10);
        let precise = ts(10)
            .checked_add(SignedDuration::from_millis(700))
            .unwrap();
        assert_eq!(taint_start(&added, precise), precise);
        assert_eq!(taint_start(&added, ts(12)), ts(10));
        let mut bare = added.clone();
        bare.time_added = None;
        assert_eq!(taint_start(&bare, ts(12)), ts(12));
    }
}
