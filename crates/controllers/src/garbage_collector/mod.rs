//! The garbage collector: Kubernetes' `pkg/controller/garbagecollector`, over the [`Client`].
//!
//! Objects name their owners in `metadata.ownerReferences` (by apiVersion, kind, name and,
//! decisively, uid). The garbage collector deletes objects whose owners are all gone, and
//! carries out the three propagation policies of a delete:
//!
//! - **Background** (the owner is deleted at once): every dependent whose owners are all
//!   absent is deleted, with Background propagation itself (or with the policy its own
//!   `orphan`/`foregroundDeletion` finalizer asks for), so a cascade proceeds level by level.
//!   A dependent that still has an owner only loses the dangling references.
//! - **Foreground** (the owner keeps a `deletionTimestamp` and the `foregroundDeletion`
//!   finalizer): its dependents are deleted, those with dependents of their own in Foreground
//!   (so it recurses), the others in Background. Once no dependent with
//!   `blockOwnerDeletion: true` is left, the finalizer is removed and the owner goes.
//! - **Orphan** (the owner keeps a `deletionTimestamp` and the `orphan` finalizer): the
//!   references to it are removed from every dependent, then the finalizer, and the owner
//!   goes; the dependents stay.
//!
//! # How it works
//!
//! As in Kubernetes, three parts:
//!
//! ```text
//!  monitors (one list+watch per kind) ──events──> graph builder ──uids──> attemptToDelete ──> workers
//!                                                  uid → node            attemptToOrphan  ──> workers
//!                                       ▲ virtual delete events (owner verified absent) ◄──────┘
//! ```
//!
//! - **Monitors** list and watch every kind given to [`GarbageCollector::new`] through
//!   [`Client::list`] and [`Client::watch`] on dynamic objects (the GC needs metadata only),
//!   resume dropped watches, relist on 410, and turn what they see into graph events
//!   (added, updated with the previous state, deleted).
//! - **Custom resource discovery** (with [`GarbageCollector::discover_custom_resources`], as
//!   the controller manager runs it) watches `CustomResourceDefinition`s while running, as
//!   kube-controller-manager resyncs its monitors from discovery: every `Established` CRD
//!   gets one monitor for its kind (through its storage version, or its first served one),
//!   started when it becomes established and stopped when the CRD is deleted. A kind whose
//!   CRD was deleted is *retired*: its instances were all deleted with the CRD, so its
//!   objects leave the graph and references to it count as absent owners.
//! - **The graph builder** applies those events, one at a time, to the ownership graph: uid →
//!   node (identity, owners by uid, dependents). An owner referenced but never seen is a
//!   *virtual* node, queued for verification. A deleted node queues its dependents (and its
//!   owners that wait for their dependents); an object that starts waiting for orphaning or
//!   for its dependents queues what that policy needs.
//! - **Workers** (a bounded pool per queue, [`GarbageCollector::workers`]) take uids from
//!   capstan-watch's [`WorkQueue`]s, so a uid is never processed twice at once. Failures are
//!   retried with per-uid exponential backoff.
//!
//! # Contracts
//!
//! - **Never acts on the cache alone.** Before deleting or patching an object the worker
//!   reads it live ([`Client::get`]) and checks its uid; an owner counts as absent only when
//!   a live read of its kind, namespace and name is `NotFound` or returns another uid
//!   (remembered in a small absent-owner cache, as Kubernetes does). So an owner deleted and
//!   recreated under the same name with a new uid still gets the old uid's dependents
//!   collected, and never the new one's, however far the watches lag. Deletes carry a uid
//!   precondition; patches carry the object's resourceVersion and are retried on conflict.
//! - **Level-based.** Everything is derived from what exists: a collector started after a
//!   crash (or another one) rebuilds the graph from its lists and finishes what was under
//!   way: dependents of absent owners, owners waiting in Foreground or for orphaning.
//! - **Invalid references are ignored with a warning**: a cluster-scoped object cannot be
//!   owned by a namespaced kind (it is never collected through that reference); a namespaced
//!   owner is looked up in its dependent's namespace only, so an owner in another namespace
//!   counts as absent. References to kinds the collector does not monitor are retried with
//!   backoff (the kind may be served later), never treated as absent, unless the kind is
//!   retired (its CRD was deleted while the collector watched).
//! - **Startup and shutdown.** Workers start once every kind's first list has been applied
//!   to the graph, the kinds of the CRDs established at startup included (or after
//!   [`GarbageCollector::sync_timeout`], with a warning); kinds discovered later are
//!   monitored without pausing the workers. On shutdown
//!   workers take no new uid, the operations in flight finish, then monitors stop and
//!   [`GarbageCollector::run`] returns.
//! - Like Kubernetes' collector, the graph may lag the API: a dependent created while its
//!   owner is being orphaned or deleted in Foreground, and not yet seen, is not waited for.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_api::{Client, ResourceInfo};
//! use capstan_controllers::garbage_collector::GarbageCollector;
//!
//! async fn run(client: Arc<dyn Client>, custom: Vec<ResourceInfo>) {
//!     let gc = GarbageCollector::new(client, ResourceInfo::builtins().chain(custom))
//!         .discover_custom_resources();
//!     let handle = gc.handle();
//!     let task = tokio::spawn(gc.run(async { /* e.g. tokio::signal::ctrl_c() */ }));
//!     handle.wait_for_sync().await;
//!     task.await.unwrap();
//! }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy, WatchParams,
};
use capstan_api::kube_core::{DynamicObject, WatchEvent};
use capstan_api::{Client, Error, ResourceInfo};
use capstan_watch::{Backoff, WorkQueue};
use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use capstan_controller::retry::retry_on_error;
use capstan_controller::runtime::ControllerError;
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::context::{BuiltinController, ControllerContext, StopSignal};

mod discovery;
mod graph;
mod monitor;
#[cfg(test)]
mod tests;
mod worker;

use discovery::*;
use graph::*;
use monitor::*;
use worker::*;

/// Kubernetes' name for the controller: what `--controllers` lists.
pub const NAME: &str = "garbage-collector-controller";

/// The finalizer that makes the garbage collector orphan an object's dependents.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that makes the garbage collector delete an object's dependents first.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Default number of workers per queue, as kube-controller-manager's `--concurrent-gc-syncs`.
pub const DEFAULT_WORKERS: usize = 20;
/// How many absent owners are remembered, as Kubernetes' absent-owner cache.
const ABSENT_OWNER_CACHE_SIZE: usize = 500;
/// Objects per list page.
const PAGE_SIZE: u32 = 500;
/// How long one watch may stay open before it is renewed.
const WATCH_TIMEOUT_SECONDS: u32 = 290;
/// How many times a read-modify-write is retried on a conflict within one attempt.
const MAX_CONFLICT_RETRIES: u32 = 8;

// ---------------------------------------------------------------------------------------------
// public API

/// Kubernetes' garbage collector; see the [module docs](self).
pub struct GarbageCollector {
    shared: Arc<Shared>,
    resources: Vec<ResourceInfo>,
    changes: mpsc::UnboundedReceiver<GraphEvent>,
    workers: usize,
    sync_timeout: Duration,
    discover_custom_resources: bool,
}

impl fmt::Debug for GarbageCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GarbageCollector")
            .field("kinds", &self.resources.len())
            .field("workers", &self.workers)
            .field("sync_timeout", &self.sync_timeout)
            .field("discover_custom_resources", &self.discover_custom_resources)
            .finish_non_exhaustive()
    }
}

impl GarbageCollector {
    /// A collector over `client` that monitors every kind in `resources` (typically
    /// [`ResourceInfo::builtins`] plus the custom kinds served) and resolves owner references
    /// against them. Duplicates (same group and kind) are ignored. Nothing runs until
    /// [`run`](Self::run).
    pub fn new(client: Arc<dyn Client>, resources: impl IntoIterator<Item = ResourceInfo>) -> Self {
        let mut kinds = HashMap::new();
        let mut monitored = Vec::new();
        for resource in resources {
            let key = group_kind(&resource);
            if kinds.contains_key(&key) {
                continue;
            }
            kinds.insert(key, resource.clone());
            monitored.push(resource);
        }
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let (synced, _) = watch::channel(false);
        GarbageCollector {
            shared: Arc::new(Shared {
                client,
                kinds: RwLock::new(kinds),
                retired: Mutex::new(HashSet::new()),
                monitors: Mutex::new(HashMap::new()),
                graph: Mutex::new(Graph::default()),
                absent: Mutex::new(AbsentOwners::default()),
                attempt_to_delete: WorkQueue::new(),
                attempt_to_orphan: WorkQueue::new(),
                changes: changes_tx,
                synced,
                counters: Counters::default(),
            }),
            resources: monitored,
            changes,
            workers: DEFAULT_WORKERS,
            sync_timeout: Duration::from_secs(60),
            discover_custom_resources: false,
        }
    }

    /// Also monitors the kinds of every `Established` `CustomResourceDefinition` while
    /// running, following CRD changes through the client: a kind is monitored from when its
    /// CRD is established until the CRD is deleted (see the [module docs](self)). Kinds given
    /// to [`new`](Self::new) keep their monitor whatever CRDs say.
    #[must_use]
    pub fn discover_custom_resources(mut self) -> Self {
        self.discover_custom_resources = true;
        self
    }

    /// Sets how many workers serve each queue (delete and orphan); at least 1. Default:
    /// [`DEFAULT_WORKERS`].
    #[must_use]
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Sets how long workers wait for every kind's first list before starting anyway (with a
    /// warning). Default: 60 s.
    #[must_use]
    pub fn sync_timeout(mut self, timeout: Duration) -> Self {
        self.sync_timeout = timeout;
        self
    }

    /// Reports the two work queues in `metrics` as Kubernetes names them:
    /// `garbage_collector_attempt_to_delete` and `garbage_collector_attempt_to_orphan`.
    #[must_use]
    pub fn queue_metrics(self, metrics: &capstan_watch::WorkQueueMetrics) -> Self {
        self.shared
            .attempt_to_delete
            .register_metrics("garbage_collector_attempt_to_delete", metrics);
        self.shared
            .attempt_to_orphan
            .register_metrics("garbage_collector_attempt_to_orphan", metrics);
        self
    }

    /// A handle to observe the collector (sync, graph, metrics), valid before, during and
    /// after [`run`](Self::run).
    pub fn handle(&self) -> GarbageCollectorHandle {
        GarbageCollectorHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs until `shutdown` completes: starts the monitors and the graph builder, waits for
    /// the graph to sync, then runs the workers. On shutdown, no new work is taken, the
    /// operations in flight finish, and it returns.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let GarbageCollector {
            shared,
            resources,
            changes,
            workers,
            sync_timeout,
            discover_custom_resources,
        } = self;
        let mut background: Vec<JoinHandle<()>> = Vec::new();
        let monitors = resources.len();
        let mut awaited: HashSet<SyncKey> = HashSet::new();
        let mut fixed_kinds = HashSet::new();
        for resource in resources {
            let key = group_kind(&resource);
            awaited.insert(SyncKey::Kind(key.clone()));
            fixed_kinds.insert(key);
            shared.spawn_monitor(resource);
        }
        if discover_custom_resources {
            awaited.insert(SyncKey::CustomResourceDiscovery);
            background.push(tokio::spawn(discover_custom_kinds(
                shared.clone(),
                fixed_kinds,
            )));
        }
        background.push(tokio::spawn(graph_builder(
            shared.clone(),
            changes,
            awaited,
        )));

        let mut shutdown = std::pin::pin!(shutdown);
        let mut synced = shared.synced.subscribe();
        tokio::select! {
            () = &mut shutdown => {
                // Discovery first, so that it starts no monitor after they are taken.
                abort_all(background).await;
                abort_all(shared.take_monitors()).await;
                return;
            }
            synced = tokio::time::timeout(sync_timeout, async move {
                synced.wait_for(|s| *s).await.is_ok()
            }) => {
                if synced.is_err() {
                    tracing::warn!(
                        "garbage collector: not every kind synced within {sync_timeout:?}; \
                         starting the workers anyway"
                    );
                }
            }
        }
        tracing::info!(
            kinds = monitors,
            "garbage collector: graph synced, starting workers"
        );

        let (stop_tx, stop) = watch::channel(false);
        let mut pool = Vec::new();
        for _ in 0..workers {
            pool.push(tokio::spawn(delete_worker(shared.clone(), stop.clone())));
            pool.push(tokio::spawn(orphan_worker(shared.clone(), stop.clone())));
        }
        shutdown.await;
        tracing::info!("garbage collector: shutting down");
        stop_tx.send_replace(true);
        shared.attempt_to_delete.shut_down();
        shared.attempt_to_orphan.shut_down();
        for worker in pool {
            if let Err(error) = worker.await {
                tracing::error!(%error, "garbage collector: worker failed");
            }
        }
        abort_all(background).await;
        abort_all(shared.take_monitors()).await;
    }
}

async fn abort_all(tasks: Vec<JoinHandle<()>>) {
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Observes a [`GarbageCollector`]: whether its graph has synced, what the graph holds, and
/// what it did. Cheap to clone.
#[derive(Clone)]
pub struct GarbageCollectorHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for GarbageCollectorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GarbageCollectorHandle")
            .field("synced", &self.is_synced())
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl GarbageCollectorHandle {
    /// Whether every kind's first list has been applied to the graph.
    pub fn is_synced(&self) -> bool {
        *self.shared.synced.borrow()
    }

    /// Waits until [`is_synced`](Self::is_synced).
    pub async fn wait_for_sync(&self) {
        let mut synced = self.shared.synced.subscribe();
        // The sender lives in `shared`, which this handle keeps alive.
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Whether the graph holds a node for `uid`, observed or virtual (Kubernetes'
    /// `GraphHasUID`).
    pub fn graph_has_uid(&self, uid: &str) -> bool {
        self.shared.graph.lock().nodes.contains_key(uid)
    }

    /// Whether the graph has seen the object `uid` through a watch (not only as someone's
    /// owner).
    pub fn has_observed(&self, uid: &str) -> bool {
        self.shared
            .graph
            .lock()
            .nodes
            .get(uid)
            .is_some_and(|n| n.observed)
    }

    /// The kinds monitored now (given ones and discovered ones), sorted by group and kind.
    pub fn monitored_kinds(&self) -> Vec<ResourceInfo> {
        let mut kinds: Vec<ResourceInfo> = self.shared.kinds.read().values().cloned().collect();
        kinds.sort_by(|a, b| (a.group(), a.kind()).cmp(&(b.group(), b.kind())));
        kinds
    }

    /// Whether the kind `kind` of `group` is monitored now.
    pub fn is_monitoring(&self, group: &str, kind: &str) -> bool {
        self.shared
            .kinds
            .read()
            .contains_key(&(group.to_string(), kind.to_string()))
    }

    /// The uids of the objects the graph knows as dependents of `uid`, sorted.
    pub fn dependents(&self, uid: &str) -> Vec<String> {
        let graph = self.shared.graph.lock();
        let mut dependents: Vec<String> = graph
            .nodes
            .get(uid)
            .map(|n| n.dependents.iter().cloned().collect())
            .unwrap_or_default();
        dependents.sort();
        dependents
    }

    /// A snapshot of what the collector did so far.
    pub fn metrics(&self) -> GarbageCollectorMetrics {
        let c = &self.shared.counters;
        GarbageCollectorMetrics {
            graph_nodes: self.shared.graph.lock().nodes.len(),
            deletes: c.deletes.load(Ordering::Relaxed),
            references_removed: c.references_removed.load(Ordering::Relaxed),
            finalizers_removed: c.finalizers_removed.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            delete_queue_depth: self.shared.attempt_to_delete.len(),
            orphan_queue_depth: self.shared.attempt_to_orphan.len(),
        }
    }
}

/// What a garbage collector did; see [`GarbageCollectorHandle::metrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GarbageCollectorMetrics {
    /// Nodes in the ownership graph, virtual ones included.
    pub graph_nodes: usize,
    /// Deletes issued (dependents collected, or deleted in Foreground).
    pub deletes: u64,
    /// Objects patched to drop (or unblock) owner references.
    pub references_removed: u64,
    /// `orphan` and `foregroundDeletion` finalizers removed.
    pub finalizers_removed: u64,
    /// Failed attempts, retried with backoff.
    pub errors: u64,
    /// uids waiting in the delete queue.
    pub delete_queue_depth: usize,
    /// uids waiting in the orphan queue.
    pub orphan_queue_depth: usize,
}

impl BuiltinController for GarbageCollector {
    const NAME: &'static str = NAME;
    const ALIASES: &'static [&'static str] = &["garbagecollector"];

    /// A collector over every built-in kind and every custom kind served while it runs (each
    /// can own or be owned), reporting its queues in the factory's work-queue metrics when it
    /// has them.
    fn from_context(ctx: &ControllerContext) -> Self {
        let collector = GarbageCollector::new(ctx.client.clone(), ResourceInfo::builtins())
            .discover_custom_resources();
        match ctx.factory.queue_metrics() {
            Some(metrics) => collector.queue_metrics(metrics),
            None => collector,
        }
    }

    fn run_until(self, shutdown: StopSignal) -> BoxFuture<'static, Result<(), ControllerError>> {
        async move {
            self.run(shutdown).await;
            Ok(())
        }
        .boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// shared state

struct Shared {
    client: Arc<dyn Client>,
    /// (group, kind) → the kind monitored, for owner references.
    kinds: RwLock<HashMap<GroupKind, ResourceInfo>>,
    /// Custom kinds whose CRD was deleted while the collector watched, and not served since.
    retired: Mutex<HashSet<GroupKind>>,
    /// The running monitor of each monitored kind.
    monitors: Mutex<HashMap<GroupKind, JoinHandle<()>>>,
    graph: Mutex<Graph>,
    absent: Mutex<AbsentOwners>,
    attempt_to_delete: WorkQueue<String>,
    attempt_to_orphan: WorkQueue<String>,
    changes: mpsc::UnboundedSender<GraphEvent>,
    synced: watch::Sender<bool>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    deletes: AtomicU64,
    references_removed: AtomicU64,
    finalizers_removed: AtomicU64,
    errors: AtomicU64,
}

/// Why the collector has no monitored kind for an apiVersion and a kind.
#[derive(Debug, PartialEq, Eq)]
enum UnmonitoredKind {
    /// Its CRD was deleted: no object of it exists.
    Retired,
    /// Never monitored, or not any more: maybe later.
    Unknown,
}

impl Shared {
    fn resource_for(&self, api_version: &str, kind: &str) -> Option<ResourceInfo> {
        self.kinds
            .read()
            .get(&(group_of(api_version).to_string(), kind.to_string()))
            .cloned()
    }

    /// The monitored kind of `api_version`'s group named `kind`, read through the version
    /// its monitor uses.
    fn lookup_kind(&self, api_version: &str, kind: &str) -> Result<ResourceInfo, UnmonitoredKind> {
        if let Some(resource) = self.resource_for(api_version, kind) {
            return Ok(resource);
        }
        let key = (group_of(api_version).to_string(), kind.to_string());
        if self.retired.lock().contains(&key) {
            Err(UnmonitoredKind::Retired)
        } else {
            Err(UnmonitoredKind::Unknown)
        }
    }

    /// Where the owner named by `reference` lives, as seen from `dependent`: a namespaced
    /// owner in the dependent's namespace, a cluster-scoped one nowhere. An unknown kind is
    /// assumed namespaced, as Kubernetes' virtual nodes are.
    fn owner_identity(&self, dependent: &Identity, reference: &OwnerReference) -> Identity {
        let namespaced = self
            .resource_for(&reference.api_version, &reference.kind)
            .is_none_or(|resource| resource.namespaced());
        Identity {
            api_version: reference.api_version.clone(),
            kind: reference.kind.clone(),
            namespace: if namespaced {
                dependent.namespace.clone()
            } else {
                None
            },
            name: reference.name.clone(),
            uid: reference.uid.clone(),
        }
    }

    fn enqueue_virtual_delete(&self, identity: Identity) {
        // The receiver lives as long as the graph builder; after shutdown nothing listens.
        let _ = self.changes.send(GraphEvent::VirtualDelete(identity));
    }
}

/// Who an object is: its kind's coordinates, where it lives, and its uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Identity {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    uid: String,
}

impl Identity {
    /// The same object: same uid, group, kind, namespace and name (versions may differ).
    fn same_coordinates(&self, other: &Identity) -> bool {
        self.uid == other.uid
            && group_of(&self.api_version) == group_of(&other.api_version)
            && self.kind == other.kind
            && self.namespace == other.namespace
            && self.name == other.name
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{} ({})", self.kind, ns, self.name, self.uid),
            None => write!(f, "{} {} ({})", self.kind, self.name, self.uid),
        }
    }
}

/// A kind's group and name: what identifies it whatever the version.
type GroupKind = (String, String);

fn group_kind(resource: &ResourceInfo) -> GroupKind {
    (resource.group().to_string(), resource.kind().to_string())
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Owners known to be absent, by coordinates; bounded, oldest forgotten first.
#[derive(Default)]
struct AbsentOwners {
    set: HashSet<Identity>,
    order: VecDeque<Identity>,
}

impl AbsentOwners {
    fn add(&mut self, identity: Identity) {
        if self.set.insert(identity.clone()) {
            self.order.push_back(identity);
            while self.order.len() > ABSENT_OWNER_CACHE_SIZE {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, identity: &Identity) -> bool {
        self.set.contains(identity)
    }
}
