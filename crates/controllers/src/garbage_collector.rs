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
//!   counts as absent. References to kinds the collector was not given are retried with
//!   backoff (the kind may be registered later), never treated as absent.
//! - **Startup and shutdown.** Workers start once every kind's first list has been applied
//!   to the graph (or after [`GarbageCollector::sync_timeout`], with a warning). On shutdown
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
//!     let gc = GarbageCollector::new(client, ResourceInfo::builtins().chain(custom));
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
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use capstan_controller::retry::retry_on_error;

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
}

impl fmt::Debug for GarbageCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GarbageCollector")
            .field("kinds", &self.resources.len())
            .field("workers", &self.workers)
            .field("sync_timeout", &self.sync_timeout)
            .finish_non_exhaustive()
    }
}

impl GarbageCollector {
    /// A collector over `client` that monitors every kind in `resources` (typically
    /// [`ResourceInfo::builtins`] plus the custom kinds served) and resolves owner references
    /// against them. Duplicates (same group and kind) are ignored. Nothing runs until
    /// [`run`](Self::run).
    pub fn new(client: Arc<dyn Client>, resources: impl IntoIterator<Item = ResourceInfo>) -> Self {
        let mut mapper = HashMap::new();
        let mut monitored = Vec::new();
        for resource in resources {
            let key = (resource.group().to_string(), resource.kind().to_string());
            if mapper.contains_key(&key) {
                continue;
            }
            mapper.insert(key, resource.clone());
            monitored.push(resource);
        }
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let (synced, _) = watch::channel(false);
        GarbageCollector {
            shared: Arc::new(Shared {
                client,
                mapper,
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
        }
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
        } = self;
        let mut background: Vec<JoinHandle<()>> = Vec::new();
        let monitors = resources.len();
        for resource in resources {
            background.push(tokio::spawn(monitor(
                shared.client.clone(),
                resource,
                shared.changes.clone(),
            )));
        }
        background.push(tokio::spawn(graph_builder(
            shared.clone(),
            changes,
            monitors,
        )));

        let mut shutdown = std::pin::pin!(shutdown);
        let mut synced = shared.synced.subscribe();
        tokio::select! {
            () = &mut shutdown => {
                abort_all(background).await;
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

// ---------------------------------------------------------------------------------------------
// shared state

struct Shared {
    client: Arc<dyn Client>,
    /// (group, kind) → the kind, for owner references.
    mapper: HashMap<(String, String), ResourceInfo>,
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

impl Shared {
    fn resource_for(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        self.mapper
            .get(&(group_of(api_version).to_string(), kind.to_string()))
    }

    /// Where the owner named by `reference` lives, as seen from `dependent`: a namespaced
    /// owner in the dependent's namespace, a cluster-scoped one nowhere. An unknown kind is
    /// assumed namespaced, as Kubernetes' virtual nodes are.
    fn owner_identity(&self, dependent: &Identity, reference: &OwnerReference) -> Identity {
        let namespaced = self
            .resource_for(&reference.api_version, &reference.kind)
            .is_none_or(ResourceInfo::namespaced);
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

// ---------------------------------------------------------------------------------------------
// graph

/// What the graph needs of an object.
#[derive(Clone, Debug)]
struct Meta {
    identity: Identity,
    deleting: bool,
    finalizers: Vec<String>,
    owners: Vec<OwnerReference>,
}

impl Meta {
    fn of(resource: &ResourceInfo, object: &DynamicObject) -> Option<Meta> {
        let metadata = &object.metadata;
        Some(Meta {
            identity: Identity {
                api_version: resource.api_version(),
                kind: resource.kind().to_string(),
                namespace: metadata.namespace.clone().filter(|_| resource.namespaced()),
                name: metadata.name.clone()?,
                uid: metadata.uid.clone()?,
            },
            deleting: metadata.deletion_timestamp.is_some(),
            finalizers: metadata.finalizers.clone().unwrap_or_default(),
            owners: metadata.owner_references.clone().unwrap_or_default(),
        })
    }

    fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }

    fn waits_for_orphaning(&self) -> bool {
        self.deleting && self.has_finalizer(ORPHAN_FINALIZER)
    }

    fn waits_for_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND_FINALIZER)
    }
}

enum GraphEvent {
    /// Added (`old: None`) or updated.
    Upsert { old: Option<Meta>, new: Meta },
    /// Deleted, as a watch saw it.
    Delete(Meta),
    /// A worker verified that nothing with this identity exists.
    VirtualDelete(Identity),
    /// One monitor applied its first list.
    Synced,
}

#[derive(Clone, Debug)]
struct Node {
    identity: Identity,
    owners: Vec<OwnerReference>,
    dependents: HashSet<String>,
    /// Seen through a watch; `false` for a virtual node (only referenced as an owner).
    observed: bool,
    being_deleted: bool,
    deleting_dependents: bool,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
}

/// Applies graph events in order; see the [module docs](self).
async fn graph_builder(
    shared: Arc<Shared>,
    mut changes: mpsc::UnboundedReceiver<GraphEvent>,
    monitors: usize,
) {
    let mut synced = 0;
    if monitors == 0 {
        shared.synced.send_replace(true);
    }
    while let Some(event) = changes.recv().await {
        let mut graph = shared.graph.lock();
        match event {
            GraphEvent::Synced => {
                synced += 1;
                if synced == monitors {
                    shared.synced.send_replace(true);
                }
            }
            GraphEvent::Upsert { old, new } => upsert(&shared, &mut graph, old.as_ref(), &new),
            GraphEvent::Delete(meta) => {
                if graph.nodes.contains_key(&meta.identity.uid) {
                    remove_node(
                        &shared,
                        &mut graph,
                        &meta.identity.uid,
                        Some(&meta.identity),
                    );
                }
            }
            GraphEvent::VirtualDelete(identity) => virtual_delete(&shared, &mut graph, identity),
        }
    }
}

fn upsert(shared: &Shared, graph: &mut Graph, old: Option<&Meta>, new: &Meta) {
    let uid = new.identity.uid.clone();
    let Some(existing) = graph.nodes.get(&uid) else {
        graph.nodes.insert(
            uid.clone(),
            Node {
                identity: new.identity.clone(),
                owners: new.owners.clone(),
                dependents: HashSet::new(),
                observed: true,
                being_deleted: new.deleting,
                deleting_dependents: false,
            },
        );
        add_dependent_to_owners(shared, graph, &uid, &new.owners);
        process_transitions(shared, graph, old, new);
        return;
    };

    if !existing.observed {
        // A virtual node, now seen: dependents that name it otherwise must be verified.
        if !existing.identity.same_coordinates(&new.identity) {
            let dependents: Vec<String> = existing.dependents.iter().cloned().collect();
            let (_, nonmatching) = partition_dependents(shared, graph, &dependents, &new.identity);
            for dependent in nonmatching {
                if let Some(node) = graph.nodes.get(&dependent) {
                    if new.identity.namespace.is_some()
                        && node.identity.namespace != new.identity.namespace
                    {
                        tracing::warn!(
                            dependent = %node.identity,
                            owner = %new.identity,
                            "garbage collector: OwnerRefInvalidNamespace: the owner is in \
                             another namespace than its dependent; the reference counts as \
                             absent"
                        );
                    }
                }
                shared.attempt_to_delete.add(dependent);
            }
        }
    }
    let node = graph.nodes.get_mut(&uid).expect("checked above");
    node.identity = new.identity.clone();
    node.observed = true;
    if new.deleting {
        node.being_deleted = true;
    }
    let (added, removed, changed) = references_diffs(&node.owners, &new.owners);
    if !(added.is_empty() && removed.is_empty() && changed.is_empty()) {
        node.owners = new.owners.clone();
        add_unblocked_owners_to_delete_queue(shared, graph, &removed, &changed);
        add_dependent_to_owners(shared, graph, &uid, &added);
        for reference in &removed {
            if let Some(owner) = graph.nodes.get_mut(&reference.uid) {
                owner.dependents.remove(&uid);
            }
        }
    }
    process_transitions(shared, graph, old, new);
}

/// Links `uid` under each of `owners`, creating (and queueing for verification) virtual
/// nodes for owners never seen. A reference that disagrees with the owner's known
/// coordinates queues the dependent for verification.
fn add_dependent_to_owners(
    shared: &Shared,
    graph: &mut Graph,
    uid: &str,
    owners: &[OwnerReference],
) {
    let Some(dependent) = graph.nodes.get(uid).map(|n| n.identity.clone()) else {
        return;
    };
    let mut potentially_invalid = false;
    for reference in owners {
        let expected = shared.owner_identity(&dependent, reference);
        match graph.nodes.get_mut(&reference.uid) {
            None => {
                let mut node = Node {
                    identity: expected,
                    owners: Vec::new(),
                    dependents: HashSet::new(),
                    observed: false,
                    being_deleted: false,
                    deleting_dependents: false,
                };
                node.dependents.insert(uid.to_string());
                graph.nodes.insert(reference.uid.clone(), node);
                shared.attempt_to_delete.add(reference.uid.clone());
            }
            Some(owner) => {
                owner.dependents.insert(uid.to_string());
                if !owner.identity.same_coordinates(&expected) {
                    if owner.observed
                        && owner.identity.namespace.is_some()
                        && owner.identity.namespace != dependent.namespace
                    {
                        tracing::warn!(
                            %dependent,
                            owner = %owner.identity,
                            "garbage collector: OwnerRefInvalidNamespace: the owner is in \
                             another namespace than its dependent; the reference counts as \
                             absent"
                        );
                    }
                    potentially_invalid = true;
                }
            }
        }
    }
    if potentially_invalid {
        shared.attempt_to_delete.add(uid.to_string());
    }
}

/// An owner waiting for its blocking dependents gets another look when one of them stops
/// blocking it (reference removed, or `blockOwnerDeletion` turned off).
fn add_unblocked_owners_to_delete_queue(
    shared: &Shared,
    graph: &Graph,
    removed: &[OwnerReference],
    changed: &[(OwnerReference, OwnerReference)],
) {
    let unblocked = removed
        .iter()
        .filter(|r| r.block_owner_deletion == Some(true))
        .chain(
            changed
                .iter()
                .filter(|(old, new)| {
                    old.block_owner_deletion == Some(true) && new.block_owner_deletion != Some(true)
                })
                .map(|(old, _)| old),
        );
    for reference in unblocked {
        if graph
            .nodes
            .get(&reference.uid)
            .is_some_and(|owner| owner.deleting_dependents)
        {
            shared.attempt_to_delete.add(reference.uid.clone());
        }
    }
}

type ReferenceDiffs = (
    Vec<OwnerReference>,
    Vec<OwnerReference>,
    Vec<(OwnerReference, OwnerReference)>,
);

/// Owner references added, removed and changed, matched by uid.
fn references_diffs(old: &[OwnerReference], new: &[OwnerReference]) -> ReferenceDiffs {
    let old_by_uid: HashMap<&str, &OwnerReference> =
        old.iter().map(|r| (r.uid.as_str(), r)).collect();
    let new_uids: HashSet<&str> = new.iter().map(|r| r.uid.as_str()).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for reference in new {
        match old_by_uid.get(reference.uid.as_str()) {
            None => added.push(reference.clone()),
            Some(previous) if *previous != reference => {
                changed.push(((*previous).clone(), reference.clone()));
            }
            Some(_) => {}
        }
    }
    let removed = old
        .iter()
        .filter(|r| !new_uids.contains(r.uid.as_str()))
        .cloned()
        .collect();
    (added, removed, changed)
}

/// Queues what a policy needs when an object starts waiting for it: the owner for orphaning,
/// or (Foreground) its dependents and itself.
fn process_transitions(shared: &Shared, graph: &mut Graph, old: Option<&Meta>, new: &Meta) {
    let uid = &new.identity.uid;
    if new.waits_for_orphaning() && !old.is_some_and(Meta::waits_for_orphaning) {
        tracing::debug!(owner = %new.identity, "garbage collector: orphaning dependents");
        shared.attempt_to_orphan.add(uid.clone());
        return;
    }
    if new.waits_for_dependents() && !old.is_some_and(Meta::waits_for_dependents) {
        let Some(node) = graph.nodes.get_mut(uid) else {
            return;
        };
        tracing::debug!(owner = %new.identity, "garbage collector: deleting dependents first");
        node.deleting_dependents = true;
        for dependent in &node.dependents {
            shared.attempt_to_delete.add(dependent.clone());
        }
        shared.attempt_to_delete.add(uid.clone());
    }
}

/// Dependents of `dependents` whose reference to `identity.uid` names `identity`'s
/// coordinates, and those whose reference names others.
fn partition_dependents(
    shared: &Shared,
    graph: &Graph,
    dependents: &[String],
    identity: &Identity,
) -> (Vec<String>, Vec<String>) {
    let mut matching = Vec::new();
    let mut nonmatching = Vec::new();
    for uid in dependents {
        let Some(node) = graph.nodes.get(uid) else {
            continue;
        };
        let mut matches = false;
        let mut mismatches = false;
        for reference in node.owners.iter().filter(|r| r.uid == identity.uid) {
            if shared
                .owner_identity(&node.identity, reference)
                .same_coordinates(identity)
            {
                matches = true;
            } else {
                mismatches = true;
            }
        }
        if matches {
            matching.push(uid.clone());
        }
        if mismatches {
            nonmatching.push(uid.clone());
        }
    }
    (matching, nonmatching)
}

/// Removes `uid` from the graph, queueing its dependents (their owner is gone) and its owners
/// that wait for their dependents.
fn remove_node(shared: &Shared, graph: &mut Graph, uid: &str, deleted: Option<&Identity>) {
    let Some(node) = graph.nodes.remove(uid) else {
        return;
    };
    for reference in &node.owners {
        if let Some(owner) = graph.nodes.get_mut(&reference.uid) {
            owner.dependents.remove(uid);
        }
    }
    if !node.dependents.is_empty() {
        shared
            .absent
            .lock()
            .add(deleted.cloned().unwrap_or_else(|| node.identity.clone()));
    }
    for dependent in &node.dependents {
        shared.attempt_to_delete.add(dependent.clone());
    }
    for reference in &node.owners {
        if graph
            .nodes
            .get(&reference.uid)
            .is_some_and(|owner| owner.deleting_dependents)
        {
            shared.attempt_to_delete.add(reference.uid.clone());
        }
    }
}

/// A worker found nothing at `deleted`'s coordinates (NotFound, or another uid there).
fn virtual_delete(shared: &Shared, graph: &mut Graph, deleted: Identity) {
    let Some(existing) = graph.nodes.get(&deleted.uid) else {
        return;
    };
    let dependents: Vec<String> = existing.dependents.iter().cloned().collect();
    let (matching, nonmatching) = partition_dependents(shared, graph, &dependents, &deleted);
    if existing.observed {
        if !existing.identity.same_coordinates(&deleted) {
            // Seen elsewhere: only the dependents that name these coordinates lost an owner.
            if !matching.is_empty() {
                shared.absent.lock().add(deleted);
                for dependent in matching {
                    shared.attempt_to_delete.add(dependent);
                }
            }
            return;
        }
        remove_node(shared, graph, &deleted.uid, Some(&deleted));
        return;
    }
    if nonmatching.is_empty() {
        remove_node(shared, graph, &deleted.uid, Some(&deleted));
        return;
    }
    // Dependents disagree on where this owner is: keep the virtual node for them.
    if !matching.is_empty() {
        shared.absent.lock().add(deleted.clone());
        for dependent in matching {
            shared.attempt_to_delete.add(dependent);
        }
    }
    if existing.identity.same_coordinates(&deleted) {
        // Try the coordinates another dependent names next.
        let replacement = nonmatching.iter().find_map(|uid| {
            let node = graph.nodes.get(uid)?;
            node.owners
                .iter()
                .filter(|r| r.uid == deleted.uid)
                .map(|r| shared.owner_identity(&node.identity, r))
                .find(|identity| !identity.same_coordinates(&deleted))
        });
        if let Some(replacement) = replacement {
            if let Some(node) = graph.nodes.get_mut(&deleted.uid) {
                node.identity = replacement;
            }
            shared
                .attempt_to_delete
                .add_rate_limited(deleted.uid.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// monitors

/// Lists and watches one kind forever, sending graph events; the first complete list is
/// followed by [`GraphEvent::Synced`].
async fn monitor(
    client: Arc<dyn Client>,
    resource: ResourceInfo,
    changes: mpsc::UnboundedSender<GraphEvent>,
) {
    let mut known: HashMap<(Option<String>, String), Meta> = HashMap::new();
    let mut backoff = Backoff::default();
    let mut version: Option<String> = None;
    let mut synced = false;
    let send = |event: GraphEvent| {
        let _ = changes.send(event);
    };
    loop {
        let resource_version = match version.take() {
            Some(version) => version,
            None => match list_all(&*client, &resource).await {
                Ok((objects, resource_version)) => {
                    let mut seen = HashSet::new();
                    for object in &objects {
                        if let Some(meta) = Meta::of(&resource, object) {
                            seen.insert(key_of(&meta));
                            apply_upsert(&mut known, meta, &send);
                        }
                    }
                    let gone: Vec<_> = known
                        .keys()
                        .filter(|key| !seen.contains(*key))
                        .cloned()
                        .collect();
                    for key in gone {
                        if let Some(meta) = known.remove(&key) {
                            send(GraphEvent::Delete(meta));
                        }
                    }
                    if !synced {
                        synced = true;
                        send(GraphEvent::Synced);
                    }
                    resource_version
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        kind = resource.kind(),
                        %error,
                        "garbage collector: list failed, retrying in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            },
        };
        let params = WatchParams {
            bookmarks: true,
            timeout: Some(WATCH_TIMEOUT_SECONDS),
            ..WatchParams::default()
        };
        let mut current = resource_version.clone();
        let outcome = match client
            .watch(&resource, None, &params, &resource_version)
            .await
        {
            Err(error) => Err(error),
            Ok(mut events) => {
                let mut seen = 0usize;
                let mut failure = None;
                while let Some(event) = events.next().await {
                    seen += 1;
                    let object_version = match event {
                        Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => {
                            if let Some(meta) = Meta::of(&resource, &object) {
                                apply_upsert(&mut known, meta, &send);
                            }
                            object.metadata.resource_version
                        }
                        Ok(WatchEvent::Deleted(object)) => {
                            if let Some(meta) = Meta::of(&resource, &object) {
                                known.remove(&key_of(&meta));
                                send(GraphEvent::Delete(meta));
                            }
                            object.metadata.resource_version
                        }
                        Ok(WatchEvent::Bookmark(bookmark)) => {
                            Some(bookmark.metadata.resource_version)
                        }
                        Ok(WatchEvent::Error(status)) => {
                            failure = Some(Error::from_status(*status));
                            break;
                        }
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    };
                    if let Some(v) = object_version.filter(|v| !v.is_empty()) {
                        current = v;
                    }
                }
                match failure {
                    Some(error) => Err(error),
                    None => Ok(seen),
                }
            }
        };
        match outcome {
            Ok(seen) => {
                if seen == 0 {
                    // A stream that ends at once would make us spin.
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                version = Some(current);
            }
            Err(error) if error.is_gone() || matches!(error, Error::Expired { .. }) => {
                tracing::info!(
                    kind = resource.kind(),
                    "garbage collector: watch history gone, relisting"
                );
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    kind = resource.kind(),
                    %error,
                    "garbage collector: watch failed, resuming in {delay:?}"
                );
                tokio::time::sleep(delay).await;
                version = Some(current);
            }
        }
    }
}

fn key_of(meta: &Meta) -> (Option<String>, String) {
    (meta.identity.namespace.clone(), meta.identity.name.clone())
}

/// Records `meta` and sends an add or update; an object replaced under the same name (a new
/// uid) is sent as the old one's delete, then an add.
fn apply_upsert(
    known: &mut HashMap<(Option<String>, String), Meta>,
    meta: Meta,
    send: &impl Fn(GraphEvent),
) {
    let old = known.insert(key_of(&meta), meta.clone());
    match old {
        Some(old) if old.identity.uid != meta.identity.uid => {
            send(GraphEvent::Delete(old));
            send(GraphEvent::Upsert {
                old: None,
                new: meta,
            });
        }
        old => send(GraphEvent::Upsert { old, new: meta }),
    }
}

async fn list_all(
    client: &dyn Client,
    resource: &ResourceInfo,
) -> Result<(Vec<DynamicObject>, String), Error> {
    let mut params = ListParams {
        limit: Some(PAGE_SIZE),
        ..ListParams::default()
    };
    let mut objects = Vec::new();
    loop {
        let page = client.list(resource, None, &params).await?;
        objects.extend(page.items);
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(token) => params.continue_token = Some(token),
            None => return Ok((objects, page.metadata.resource_version.unwrap_or_default())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// workers

/// Why an attempt failed; every failure is retried with backoff.
#[derive(Debug)]
enum Failure {
    Api(Error),
    /// An owner reference (or a virtual node) names a kind the collector was not given.
    UnknownKind(String),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Api(error)
    }
}

impl Failure {
    /// A 409 Conflict: the object changed since it was read.
    fn is_conflict(&self) -> bool {
        matches!(self, Failure::Api(error) if error.is_conflict())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Api(error) => error.fmt(f),
            Failure::UnknownKind(kind) => write!(f, "no monitored kind matches {kind}"),
        }
    }
}

enum Outcome {
    Forget,
    Requeue,
}

async fn delete_worker(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    work(
        &shared,
        &shared.attempt_to_delete,
        stop,
        "delete",
        |s, uid| Box::pin(attempt_to_delete(s, uid)),
    )
    .await;
}

async fn orphan_worker(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    work(
        &shared,
        &shared.attempt_to_orphan,
        stop,
        "orphan",
        |s, uid| Box::pin(attempt_to_orphan(s, uid)),
    )
    .await;
}

type Attempt<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Outcome, Failure>> + Send + 'a>>;

async fn work(
    shared: &Shared,
    queue: &WorkQueue<String>,
    mut stop: watch::Receiver<bool>,
    name: &'static str,
    attempt: for<'a> fn(&'a Shared, &'a str) -> Attempt<'a>,
) {
    loop {
        let uid = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            uid = queue.get() => match uid {
                Some(uid) => uid,
                None => return,
            },
        };
        if *stop.borrow() {
            return;
        }
        match attempt(shared, uid.key()).await {
            Ok(Outcome::Forget) => queue.forget(uid.key()),
            Ok(Outcome::Requeue) => queue.add_rate_limited(uid.key().clone()),
            Err(failure) => {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                match &failure {
                    Failure::UnknownKind(_) => tracing::debug!(
                        uid = uid.key().as_str(),
                        "garbage collector: {name}: {failure}; retrying"
                    ),
                    Failure::Api(_) => tracing::warn!(
                        uid = uid.key().as_str(),
                        "garbage collector: {name}: {failure}; retrying"
                    ),
                }
                queue.add_rate_limited(uid.key().clone());
            }
        }
    }
}

fn requeue_if_unobserved(shared: &Shared, uid: &str) -> Outcome {
    // A virtual node that exists but was not seen yet: look again until the watch shows it,
    // or a node added and removed during a watch gap would stay forever (issue 56121).
    match shared.graph.lock().nodes.get(uid) {
        Some(node) if !node.observed => Outcome::Requeue,
        _ => Outcome::Forget,
    }
}

fn resource_of<'a>(shared: &'a Shared, identity: &Identity) -> Result<&'a ResourceInfo, Failure> {
    shared
        .resource_for(&identity.api_version, &identity.kind)
        .ok_or_else(|| Failure::UnknownKind(format!("{}/{}", identity.api_version, identity.kind)))
}

/// Reads `identity` live: `None` when nothing with its uid is at its coordinates.
async fn get_live(
    shared: &Shared,
    resource: &ResourceInfo,
    identity: &Identity,
) -> Result<Option<DynamicObject>, Error> {
    if resource.namespaced() && identity.namespace.is_none() {
        // A namespaced kind named from a cluster-scoped object: it cannot be found.
        return Ok(None);
    }
    let namespace = identity
        .namespace
        .as_deref()
        .filter(|_| resource.namespaced());
    match shared.client.get(resource, namespace, &identity.name).await {
        Ok(object) if object.metadata.uid.as_deref() == Some(identity.uid.as_str()) => {
            Ok(Some(object))
        }
        Ok(_) => Ok(None),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

/// Kubernetes' `attemptToDeleteItem`: decides, from live reads, whether the object `uid`
/// must go, lose references, or wait.
async fn attempt_to_delete(shared: &Shared, uid: &str) -> Result<Outcome, Failure> {
    let Some(item) = shared.graph.lock().nodes.get(uid).cloned() else {
        return Ok(Outcome::Forget);
    };
    // Being deleted is a one-way trip: its dependents are handled once it is gone.
    if item.being_deleted && !item.deleting_dependents {
        return Ok(Outcome::Forget);
    }
    let resource = resource_of(shared, &item.identity)?;
    let Some(latest) = get_live(shared, resource, &item.identity).await? else {
        shared.enqueue_virtual_delete(item.identity.clone());
        return Ok(Outcome::Forget);
    };
    if item.deleting_dependents {
        process_deleting_dependents(shared, &item, resource).await?;
        return Ok(requeue_if_unobserved(shared, uid));
    }
    let references = latest.metadata.owner_references.clone().unwrap_or_default();
    if references.is_empty() {
        return Ok(requeue_if_unobserved(shared, uid));
    }
    let Some(classes) = classify_references(shared, &item.identity, &references).await? else {
        // Invalid for good (a cluster-scoped object owned by a namespaced kind): leave it.
        return Ok(Outcome::Forget);
    };
    if !classes.solid.is_empty() {
        if classes.dangling.is_empty() && classes.waiting.is_empty() {
            return Ok(requeue_if_unobserved(shared, uid));
        }
        // Waiting owners are dropped too, or they would wait for this object forever.
        let drop: HashSet<String> = classes
            .dangling
            .iter()
            .chain(&classes.waiting)
            .map(|r| r.uid.clone())
            .collect();
        tracing::debug!(
            item = %item.identity,
            "garbage collector: removing references to absent or deleting owners"
        );
        patch_owner_references(shared, resource, &item.identity, |references| {
            let before = references.len();
            references.retain(|r| !drop.contains(&r.uid));
            references.len() != before
        })
        .await?;
    } else if !classes.waiting.is_empty() && !item.dependents.is_empty() {
        let cycle = {
            let graph = shared.graph.lock();
            item.dependents.iter().any(|d| {
                graph
                    .nodes
                    .get(d)
                    .is_some_and(|dependent| dependent.deleting_dependents)
            })
        };
        if cycle {
            // A dependent waits for us while we wait for it: stop blocking our owners.
            tracing::info!(
                item = %item.identity,
                "garbage collector: possible cycle; unblocking this object's owner references"
            );
            patch_owner_references(shared, resource, &item.identity, |references| {
                let mut changed = false;
                for reference in references.iter_mut() {
                    if reference.block_owner_deletion == Some(true) {
                        reference.block_owner_deletion = Some(false);
                        changed = true;
                    }
                }
                changed
            })
            .await?;
        }
        // An owner waits for us and we have dependents: delete them first.
        delete_object(
            shared,
            resource,
            &item.identity,
            PropagationPolicy::Foreground,
        )
        .await?;
    } else {
        // No owner left: collect it, honouring a policy its finalizers already ask for.
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        let policy = if finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
            PropagationPolicy::Orphan
        } else if finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        delete_object(shared, resource, &item.identity, policy).await?;
    }
    Ok(requeue_if_unobserved(shared, uid))
}

struct Classes {
    /// Owners that exist and are not waiting for their dependents.
    solid: Vec<OwnerReference>,
    /// Owners verified absent.
    dangling: Vec<OwnerReference>,
    /// Owners being deleted in Foreground.
    waiting: Vec<OwnerReference>,
}

/// Sorts `references` by what their owners are, reading each live (unless known absent).
/// `None` when a reference can never be valid.
async fn classify_references(
    shared: &Shared,
    item: &Identity,
    references: &[OwnerReference],
) -> Result<Option<Classes>, Failure> {
    let mut classes = Classes {
        solid: Vec::new(),
        dangling: Vec::new(),
        waiting: Vec::new(),
    };
    for reference in references {
        let resource = shared
            .resource_for(&reference.api_version, &reference.kind)
            .ok_or_else(|| {
                Failure::UnknownKind(format!("{}/{}", reference.api_version, reference.kind))
            })?;
        if resource.namespaced() && item.namespace.is_none() {
            tracing::warn!(
                %item,
                owner_kind = reference.kind.as_str(),
                owner = reference.name.as_str(),
                "garbage collector: a cluster-scoped object cannot be owned by a namespaced \
                 kind; ignoring it"
            );
            return Ok(None);
        }
        let owner = shared.owner_identity(item, reference);
        if shared.absent.lock().contains(&owner) {
            classes.dangling.push(reference.clone());
            continue;
        }
        match get_live(shared, resource, &owner).await? {
            None => {
                shared.absent.lock().add(owner);
                classes.dangling.push(reference.clone());
            }
            Some(live) => {
                let waits = live.metadata.deletion_timestamp.is_some()
                    && live
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == FOREGROUND_FINALIZER);
                if waits {
                    classes.waiting.push(reference.clone());
                } else {
                    classes.solid.push(reference.clone());
                }
            }
        }
    }
    Ok(Some(classes))
}

/// An owner deleted in Foreground: queues its blocking dependents, and once none is left
/// removes its `foregroundDeletion` finalizer.
async fn process_deleting_dependents(
    shared: &Shared,
    item: &Node,
    resource: &ResourceInfo,
) -> Result<(), Failure> {
    let blocking: Vec<(String, bool)> = {
        let graph = shared.graph.lock();
        item.dependents
            .iter()
            .filter_map(|uid| graph.nodes.get(uid).map(|node| (uid, node)))
            .filter(|(_, node)| {
                node.owners
                    .iter()
                    .any(|r| r.uid == item.identity.uid && r.block_owner_deletion == Some(true))
            })
            .map(|(uid, node)| (uid.clone(), node.deleting_dependents))
            .collect()
    };
    if blocking.is_empty() {
        tracing::debug!(
            owner = %item.identity,
            "garbage collector: no blocking dependent left; removing {FOREGROUND_FINALIZER}"
        );
        remove_finalizer(shared, resource, &item.identity, FOREGROUND_FINALIZER).await?;
        return Ok(());
    }
    for (uid, deleting_dependents) in blocking {
        if !deleting_dependents {
            shared.attempt_to_delete.add(uid);
        }
    }
    Ok(())
}

/// Kubernetes' `attemptToOrphanWorker`: strips the references to the owner `uid` from its
/// dependents, then its `orphan` finalizer.
async fn attempt_to_orphan(shared: &Shared, uid: &str) -> Result<Outcome, Failure> {
    let Some(owner) = shared.graph.lock().nodes.get(uid).cloned() else {
        return Ok(Outcome::Forget);
    };
    let resource = resource_of(shared, &owner.identity)?;
    match get_live(shared, resource, &owner.identity).await? {
        Some(live)
            if live.metadata.deletion_timestamp.is_some()
                && live
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == ORPHAN_FINALIZER) => {}
        // Gone, replaced, or no longer asking for orphaning: nothing to do.
        _ => return Ok(Outcome::Forget),
    }
    let dependents: Vec<Identity> = {
        let graph = shared.graph.lock();
        owner
            .dependents
            .iter()
            .filter_map(|d| graph.nodes.get(d).map(|n| n.identity.clone()))
            .collect()
    };
    let results: Vec<Result<(), Failure>> = futures::stream::iter(dependents)
        .map(|dependent| async move {
            let resource = resource_of(shared, &dependent)?;
            patch_owner_references(shared, resource, &dependent, |references| {
                let before = references.len();
                references.retain(|r| r.uid != uid);
                references.len() != before
            })
            .await
        })
        .buffer_unordered(8)
        .collect()
        .await;
    if let Some(failure) = results.into_iter().find_map(Result::err) {
        return Err(failure);
    }
    remove_finalizer(shared, resource, &owner.identity, ORPHAN_FINALIZER).await?;
    Ok(Outcome::Forget)
}

/// Deletes `identity` (only that uid) with `policy`; NotFound is success.
async fn delete_object(
    shared: &Shared,
    resource: &ResourceInfo,
    identity: &Identity,
    policy: PropagationPolicy,
) -> Result<(), Failure> {
    tracing::debug!(item = %identity, ?policy, "garbage collector: deleting");
    let params = DeleteParams {
        propagation_policy: Some(policy),
        preconditions: Some(Preconditions {
            uid: Some(identity.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let namespace = identity
        .namespace
        .as_deref()
        .filter(|_| resource.namespaced());
    match shared
        .client
        .delete(resource, namespace, &identity.name, &params)
        .await
    {
        Ok(_) => {
            shared.counters.deletes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(error) if error.is_not_found() => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Read-modify-write of `identity`'s owner references with its resourceVersion, retried on
/// conflict. `edit` returns whether it changed anything. Done (Ok) when the object is gone or
/// replaced.
async fn patch_owner_references(
    shared: &Shared,
    resource: &ResourceInfo,
    identity: &Identity,
    edit: impl Fn(&mut Vec<OwnerReference>) -> bool,
) -> Result<(), Failure> {
    let namespace = identity
        .namespace
        .as_deref()
        .filter(|_| resource.namespaced());
    retry_on_error(MAX_CONFLICT_RETRIES, Failure::is_conflict, |_| async {
        let Some(latest) = get_live(shared, resource, identity).await? else {
            return Ok(());
        };
        let mut references = latest.metadata.owner_references.clone().unwrap_or_default();
        if !edit(&mut references) {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": {
                "ownerReferences": references,
                "resourceVersion": latest.metadata.resource_version,
            }
        });
        match shared
            .client
            .patch(
                resource,
                namespace,
                &identity.name,
                &Patch::Merge(patch),
                &PatchParams::default(),
            )
            .await
        {
            Ok(_) => {
                shared
                    .counters
                    .references_removed
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error.into()),
        }
    })
    .await
}

/// Removes `finalizer` from `identity` with its resourceVersion, retried on conflict. Done
/// (Ok) when the object is gone, replaced, or without the finalizer.
async fn remove_finalizer(
    shared: &Shared,
    resource: &ResourceInfo,
    identity: &Identity,
    finalizer: &str,
) -> Result<(), Failure> {
    let namespace = identity
        .namespace
        .as_deref()
        .filter(|_| resource.namespaced());
    retry_on_error(MAX_CONFLICT_RETRIES, Failure::is_conflict, |_| async {
        let Some(latest) = get_live(shared, resource, identity).await? else {
            return Ok(());
        };
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
        let patch = serde_json::json!({
            "metadata": {
                "finalizers": kept,
                "resourceVersion": latest.metadata.resource_version,
            }
        });
        match shared
            .client
            .patch(
                resource,
                namespace,
                &identity.name,
                &Patch::Merge(patch),
                &PatchParams::default(),
            )
            .await
        {
            Ok(_) => {
                shared
                    .counters
                    .finalizers_removed
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error.into()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(uid: &str, block: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("cm-{uid}"),
            uid: uid.into(),
            controller: None,
            block_owner_deletion: block,
        }
    }

    #[test]
    fn reference_diffs_match_owners_by_uid() {
        let old = [reference("a", None), reference("b", Some(true))];
        let new = [reference("b", Some(false)), reference("c", None)];
        let (added, removed, changed) = references_diffs(&old, &new);
        assert_eq!(added, [reference("c", None)]);
        assert_eq!(removed, [reference("a", None)]);
        assert_eq!(
            changed,
            [(reference("b", Some(true)), reference("b", Some(false)))]
        );
    }

    #[test]
    fn groups_come_from_the_api_version() {
        assert_eq!(group_of("v1"), "");
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("example.com/v1beta1"), "example.com");
    }

    #[test]
    fn the_absent_owner_cache_forgets_the_oldest_first() {
        let mut absent = AbsentOwners::default();
        let identity = |uid: usize| Identity {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("default".into()),
            name: "cm".into(),
            uid: uid.to_string(),
        };
        for uid in 0..=ABSENT_OWNER_CACHE_SIZE {
            absent.add(identity(uid));
        }
        assert!(!absent.contains(&identity(0)));
        assert!(absent.contains(&identity(1)));
        assert!(absent.contains(&identity(ABSENT_OWNER_CACHE_SIZE)));
    }
}
