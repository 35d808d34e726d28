//! The ReplicaSet controller: Kubernetes' `pkg/controller/replicaset`, over the [`Client`].
//!
//! A ReplicaSet asks for `spec.replicas` Pods made from `spec.template` and matching
//! `spec.selector`. The controller, a [`Reconciler`] run by the [runtime](capstan_controller::runtime)
//! with the ReplicaSet as primary kind and Pods as children, closes the gap:
//!
//! - **Claiming.** The Pods of the ReplicaSet's namespace are claimed as Kubernetes'
//!   `ControllerRefManager` does: a Pod controlled by the ReplicaSet (its `controller: true`
//!   ownerReference carries the ReplicaSet's uid) stays owned while it matches the selector
//!   and is *released* (the reference removed) when it no longer does; an orphan Pod (no
//!   controlling reference) matching the selector is *adopted* (a reference with
//!   `controller: true, blockOwnerDeletion: true` added). Nothing is adopted or released
//!   while the ReplicaSet is being deleted. Both are patches carrying the Pod's
//!   `resourceVersion`, so a stale cache gives 409 and a retry, never a lost write.
//! - **Inactive Pods** (phase `Succeeded` or `Failed`, or with a `deletionTimestamp`) are
//!   not replicas: they are neither counted nor claimed.
//! - **Creating.** Missing Pods are created from the template with `generateName:
//!   <replicaset>-` (the API appends five random characters), the template's labels,
//!   annotations and finalizers, and the controlling ownerReference, in *slow-start
//!   batches* of 1, 2, 4, 8, ... Pods: the first failure ends the sync, so a quota or a bad
//!   template costs one failed request, not hundreds. At most [`BURST_REPLICAS`] (500) Pods
//!   are created or deleted per sync.
//! - **Deleting.** Surplus Pods are deleted in Kubernetes' `ActivePodsWithRanks` order
//!   ([`compare_for_deletion`]): unscheduled first, then Pending, Unknown, Running; not ready
//!   before ready; more Pods on the same node first; ready for less time first; more
//!   restarts first; newer first.
//! - **Expectations.** After issuing creates and deletes, the controller does not act on that
//!   ReplicaSet again until the Pod informer has observed every one of them, or
//!   [`EXPECTATIONS_TTL`] (5 minutes) has passed ([`Expectations`], Kubernetes'
//!   `UIDTrackingControllerExpectations`). A lagging cache therefore never causes duplicate
//!   Pods. Observations are made on the Pod feed itself, before the ReplicaSet's key is
//!   queued, so a reconcile triggered by a Pod event always sees that event observed.
//! - **Status.** `replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas`
//!   (ready for at least `minReadySeconds`), `observedGeneration` and the `ReplicaFailure`
//!   condition are written through the status subresource, only when they changed.
//! - **Events**, with Kubernetes' reasons and messages: `SuccessfulCreate` (`Created pod:
//!   <name>`), `SuccessfulDelete` (`Deleted pod: <name>`), and the warnings `FailedCreate`
//!   (`Error creating: <error>`) and `FailedDelete` (`Error deleting: <error>`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_api::Client;
//! use capstan_controller::events::{EventBroadcaster, EventOptions};
//! use capstan_controllers::replicaset::ReplicaSetController;
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! async fn run(client: Arc<dyn Client>, stop: tokio::sync::oneshot::Receiver<()>) {
//!     let factory = Arc::new(InformerFactory::new(client.clone(), ReflectorOptions::default()));
//!     let events = EventBroadcaster::new(client.clone(), EventOptions::default());
//!     let controller = ReplicaSetController::new(client, factory, events.recorder("replicaset-controller"));
//!     // Returns once `stop` fires (or its sender is dropped), after the syncs in flight.
//!     controller.run(async { let _ = stop.await; }).await.unwrap();
//! }
//! ```

use capstan_api::compat::{self, Maybe};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use capstan_api::k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::{DeleteParams, Patch, PatchParams, PostParams};
use capstan_api::kube_core::{ObjectMeta, Selector};
use capstan_api::{label_selector_from, selector, Api, Client, Error, Resource};
use capstan_watch::{Cache, Delta, InformerFactory, ObjectKey, SharedInformer, NAMESPACE_INDEX};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use capstan_controller::events::EventRecorder;
use capstan_controller::runtime::{
    add_controller_index, controlled_or_orphans, controller_owner_key, controller_reference,
    Action, Context, Controller, ControllerError, Reconciler,
};

/// The most Pods one sync creates or deletes (Kubernetes' `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// How long unobserved expectations hold a ReplicaSet back (Kubernetes' `ExpectationsTimeout`).
pub const EXPECTATIONS_TTL: Duration = Duration::from_secs(5 * 60);

/// The annotation whose integer value makes a Pod cheaper (lower) or dearer to delete.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The component name the controller's Events report (`source.component`).
pub const COMPONENT: &str = "replicaset-controller";

/// Event reasons, as Kubernetes spells them.
pub mod reasons {
    /// A Pod was created: `Created pod: <name>`.
    pub const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
    /// A Pod could not be created: `Error creating: <error>` (Warning).
    pub const FAILED_CREATE: &str = "FailedCreate";
    /// A Pod was deleted: `Deleted pod: <name>`.
    pub const SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
    /// A Pod could not be deleted: `Error deleting: <error>` (Warning).
    pub const FAILED_DELETE: &str = "FailedDelete";
}

// ---------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Expectation {
    adds: i64,
    deletes: HashSet<ObjectKey>,
    set_at: Instant,
}

/// What a controller is waiting to see in its informer before it acts on an owner again:
/// Kubernetes' `UIDTrackingControllerExpectations`. Creations are counted; deletions are
/// tracked by Pod key, so observing the same deletion twice (the `deletionTimestamp`
/// update, then the delete) counts once.
///
/// An owner whose record is absent, fully observed, or older than the TTL is *satisfied*:
/// the controller may act on it.
#[derive(Debug)]
pub struct Expectations {
    ttl: Duration,
    records: Mutex<HashMap<ObjectKey, Expectation>>,
}

impl Default for Expectations {
    fn default() -> Self {
        Self::new(EXPECTATIONS_TTL)
    }
}

impl Expectations {
    /// Empty expectations expiring after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Expectations {
            ttl,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the controller may act on `owner`: nothing pending, or the record expired.
    pub fn satisfied(&self, owner: &ObjectKey) -> bool {
        match self.records.lock().get(owner) {
            None => true,
            Some(record) => {
                (record.adds <= 0 && record.deletes.is_empty())
                    || record.set_at.elapsed() > self.ttl
            }
        }
    }

    /// When the pending record of `owner` expires, if it is pending.
    pub fn expires_in(&self, owner: &ObjectKey) -> Option<Duration> {
        let records = self.records.lock();
        let record = records.get(owner)?;
        if record.adds <= 0 && record.deletes.is_empty() {
            return None;
        }
        Some(self.ttl.saturating_sub(record.set_at.elapsed()))
    }

    /// Expects `adds` creations and the deletion of `deletes`, replacing any earlier record.
    pub fn expect(
        &self,
        owner: &ObjectKey,
        adds: usize,
        deletes: impl IntoIterator<Item = ObjectKey>,
    ) {
        self.records.lock().insert(
            owner.clone(),
            Expectation {
                adds: adds as i64,
                deletes: deletes.into_iter().collect(),
                set_at: Instant::now(),
            },
        );
    }

    /// One creation for `owner` was observed (or will never happen: it failed).
    pub fn creation_observed(&self, owner: &ObjectKey) {
        if let Some(record) = self.records.lock().get_mut(owner) {
            record.adds -= 1;
        }
    }

    /// The deletion of `pod` for `owner` was observed (or will never be: it failed).
    pub fn deletion_observed(&self, owner: &ObjectKey, pod: &ObjectKey) {
        if let Some(record) = self.records.lock().get_mut(owner) {
            record.deletes.remove(pod);
        }
    }

    /// Forgets `owner` (it was deleted).
    pub fn forget(&self, owner: &ObjectKey) {
        self.records.lock().remove(owner);
    }

    /// The creations and deletions still pending for `owner`.
    pub fn pending(&self, owner: &ObjectKey) -> (i64, usize) {
        self.records
            .lock()
            .get(owner)
            .map_or((0, 0), |r| (r.adds.max(0), r.deletes.len()))
    }

    /// Applies one Pod informer change for owners of kind `K` (ReplicaSet, DaemonSet, Job),
    /// as Kubernetes' Pod event handlers do.
    pub(crate) fn observe<K: Resource>(&self, delta: &Delta<Pod>) {
        let owner = |pod: &Pod| controller_owner_key::<K, Pod>(pod);
        match delta {
            Delta::Added(pod) => {
                if let Some(owner) = owner(pod) {
                    if pod.metadata.deletion_timestamp.is_some() {
                        self.deletion_observed(&owner, &ObjectKey::of(pod.as_ref()));
                    } else {
                        self.creation_observed(&owner);
                    }
                }
            }
            Delta::Updated { old, new } => {
                if new.metadata.deletion_timestamp.is_some()
                    && old.metadata.deletion_timestamp.is_none()
                {
                    for owner in owner(old).into_iter().chain(owner(new)) {
                        self.deletion_observed(&owner, &ObjectKey::of(new.as_ref()));
                    }
                }
            }
            Delta::Deleted(pod) => {
                if let Some(owner) = owner(pod) {
                    self.deletion_observed(&owner, &ObjectKey::of(pod.as_ref()));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pod predicates and ranking
// ---------------------------------------------------------------------------------------

/// Since when `pod` has been ready, if it is.
fn ready_since(pod: &Pod) -> Option<Timestamp> {
    pod.condition("Ready")
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Whether `pod` has been ready for at least `min_ready_seconds` at `now`.
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !pod.is_ready() {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match ready_since(pod) {
        Some(since) => {
            let ready_for = now.duration_since(since);
            ready_for.as_secs() >= i64::from(min_ready_seconds)
        }
        None => false,
    }
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().map(|c| c.restart_count).max())
        .unwrap_or(0)
}

fn deletion_cost(pod: &Pod) -> i64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Kubernetes' `ActivePodsWithRanks.Less`: `Less` means "delete first". `rank_*` is how many
/// related Pods share each Pod's node (more is deleted first).
pub fn compare_for_deletion(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize) -> Ordering {
    // 1. Unassigned before assigned.
    let (node_a, node_b) = (
        a.node_name().unwrap_or_default(),
        b.node_name().unwrap_or_default(),
    );
    if node_a.is_empty() != node_b.is_empty() {
        return if node_a.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // 2. Pending before Unknown before Running.
    let phase_order = |pod: &Pod| match pod.phase() {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    match phase_order(a).cmp(&phase_order(b)) {
        Ordering::Equal => {}
        other => return other,
    }
    // 3. Not ready before ready.
    match a.is_ready().cmp(&b.is_ready()) {
        Ordering::Equal => {}
        other => return other,
    }
    // 4. Lower deletion cost first.
    match deletion_cost(a).cmp(&deletion_cost(b)) {
        Ordering::Equal => {}
        other => return other,
    }
    // 5. Doubled-up: more Pods on the same node first.
    match rank_b.cmp(&rank_a) {
        Ordering::Equal => {}
        other => return other,
    }
    // 6. Both ready: ready for less time first.
    if let (Some(since_a), Some(since_b)) = (ready_since(a), ready_since(b)) {
        match since_b.cmp(&since_a) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    // 7. More restarts first.
    match max_restarts(b).cmp(&max_restarts(a)) {
        Ordering::Equal => {}
        other => return other,
    }
    // 8. Newer first; an unset creation time counts as newest.
    let created = |pod: &Pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    match (created(a), created(b)) {
        (Some(ca), Some(cb)) => cb.cmp(&ca),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The `count` Pods of `pods` to delete first, ranked against `related` Pods (those that
/// share nodes with them, usually `pods` themselves) as Kubernetes' `getPodsToDelete` does.
pub fn pods_to_delete(pods: &[Arc<Pod>], related: &[Arc<Pod>], count: usize) -> Vec<Arc<Pod>> {
    if count >= pods.len() {
        return pods.to_vec();
    }
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for pod in related.iter().filter(|p| p.is_active()) {
        let node = pod.node_name().unwrap_or_default();
        if !node.is_empty() {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let rank = |pod: &Pod| {
        let node = pod.node_name().unwrap_or_default();
        if node.is_empty() {
            0
        } else {
            per_node.get(node).copied().unwrap_or(0)
        }
    };
    let mut ranked: Vec<(usize, Arc<Pod>)> = pods.iter().map(|p| (rank(p), p.clone())).collect();
    ranked.sort_by(|(ra, a), (rb, b)| compare_for_deletion(a, *ra, b, *rb));
    ranked.into_iter().take(count).map(|(_, p)| p).collect()
}

// ---------------------------------------------------------------------------------------
// The reconciler
// ---------------------------------------------------------------------------------------

/// What the [`ReplicaSetReconciler`] fails with: an API error, after which the runtime
/// retries the ReplicaSet with backoff.
pub type ReplicaSetError = Error;

/// Syncs one ReplicaSet; see the [module docs](self). Built by [`ReplicaSetController`];
/// public so tests can drive it with [`Context::new`].
pub struct ReplicaSetReconciler {
    client: Arc<dyn Client>,
    pods: Cache<Pod>,
    recorder: EventRecorder,
    expectations: Arc<Expectations>,
}

impl std::fmt::Debug for ReplicaSetReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaSetReconciler")
            .field("expectations", &self.expectations)
            .finish_non_exhaustive()
    }
}

fn controller_ref(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The Pod the ReplicaSet's template describes, before the API names it.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .opt()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    pod_for(rs, template)
}

/// The Pod `template` describes, controlled by `owner` (a ReplicaSet, DaemonSet, Job, ...),
/// before the API names it: `generateName` `<owner>-`, the owner's namespace, the template's
/// labels, annotations and finalizers, and the [`controller_reference`] to `owner`.
pub fn pod_for<K: Resource>(owner: &K, template: PodTemplateSpec) -> Pod {
    let meta = template.metadata.unwrap_or_default();
    let owner_meta = owner.meta();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                owner_meta.name.as_deref().unwrap_or_default()
            )),
            namespace: owner_meta.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(owner)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Runs `count` calls of `call` in batches of 1, 2, 4, ..., stopping after the first batch
/// with a failure. Returns how many succeeded and the first error.
async fn slow_start_batch<F, Fut>(count: usize, initial: usize, call: F) -> (usize, Option<Error>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = remaining.min(initial);
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| call())).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(()) => successes += 1,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if first_error.is_some() {
            return (successes, first_error);
        }
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    (successes, None)
}

impl ReplicaSetReconciler {
    /// A reconciler reading Pods from `pods` (to which it adds the controller-uid index) and
    /// writing through `client`.
    pub fn new(
        client: Arc<dyn Client>,
        pods: Cache<Pod>,
        recorder: EventRecorder,
        expectations: Arc<Expectations>,
    ) -> Self {
        add_controller_index(&pods);
        ReplicaSetReconciler {
            client,
            pods,
            recorder,
            expectations,
        }
    }

    /// The expectations this reconciler keeps.
    pub fn expectations(&self) -> &Arc<Expectations> {
        &self.expectations
    }

    fn pod_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Kubernetes' `ClaimPods`: keeps, adopts and releases; returns the Pods now owned.
    async fn claim_pods(
        &self,
        rs: &ReplicaSet,
        selector: &Selector,
        pods: Vec<Arc<Pod>>,
    ) -> Result<Vec<Arc<Pod>>, Error> {
        let uid = rs.metadata.uid.as_deref().unwrap_or_default();
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let deleting = rs.metadata.deletion_timestamp.is_some();
        let mut claimed = Vec::new();
        let mut fresh_checked: Option<bool> = None;
        let mut first_error = None;
        for pod in pods {
            let matches = selector::matches(selector, pod.metadata.labels.as_ref());
            match controller_ref(&pod) {
                Some(owner) if owner.uid == uid => {
                    if matches || deleting {
                        claimed.push(pod);
                        continue;
                    }
                    // Release: drop our reference, keep the others.
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let remaining: Vec<_> = pod
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    let patch = serde_json::json!({"metadata": {
                        "ownerReferences": remaining,
                        "resourceVersion": pod.metadata.resource_version,
                    }});
                    match self
                        .pod_api(namespace)
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => tracing::debug!(pod = %name, "released"),
                        Err(error) if error.is_not_found() => {}
                        Err(error) => {
                            first_error.get_or_insert(error);
                        }
                    }
                }
                Some(_) => {} // Someone else's.
                None => {
                    if !matches || deleting || pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    // Kubernetes re-reads the owner before adopting: never adopt for a
                    // ReplicaSet that was deleted or replaced meanwhile.
                    let can_adopt = match fresh_checked {
                        Some(answer) => answer,
                        None => {
                            let fresh =
                                Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                                    .get_opt(rs.metadata.name.as_deref().unwrap_or_default())
                                    .await?;
                            let answer = fresh.is_some_and(|fresh| {
                                fresh.metadata.uid.as_deref() == Some(uid)
                                    && fresh.metadata.deletion_timestamp.is_none()
                            });
                            fresh_checked = Some(answer);
                            answer
                        }
                    };
                    if !can_adopt {
                        continue;
                    }
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let mut references = pod.metadata.owner_references.clone().unwrap_or_default();
                    references.push(controller_reference(rs));
                    let patch = serde_json::json!({"metadata": {
                        "ownerReferences": references,
                        "resourceVersion": pod.metadata.resource_version,
                    }});
                    match self
                        .pod_api(namespace)
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(adopted) => {
                            tracing::debug!(pod = %name, "adopted");
                            claimed.push(Arc::new(adopted));
                        }
                        Err(error) if error.is_not_found() => {}
                        Err(error) => {
                            first_error.get_or_insert(error);
                        }
                    }
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(claimed),
        }
    }

    /// Kubernetes' `manageReplicas`: creates or deletes the difference, up to the burst.
    async fn manage_replicas(
        &self,
        key: &ObjectKey,
        rs: &ReplicaSet,
        pods: &[Arc<Pod>],
    ) -> Result<(), Error> {
        let wanted = rs.spec.opt().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        if pods.len() < wanted {
            let diff = (wanted - pods.len()).min(BURST_REPLICAS);
            // Expect them all first: the informer may see a Pod before its create returns.
            self.expectations.expect(key, diff, []);
            tracing::debug!(replicaset = %key, need = wanted, creating = diff, "too few replicas");
            let template = pod_from_template(rs);
            let api = self.pod_api(namespace);
            let attempted = std::sync::atomic::AtomicUsize::new(0);
            let (_created, error) = slow_start_batch(diff, 1, || {
                let (api, template) = (&api, &template);
                attempted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    match api.create(&PostParams::default(), template).await {
                        Ok(pod) => {
                            let name = pod.metadata.name.unwrap_or_default();
                            self.recorder.normal(
                                rs,
                                reasons::SUCCESSFUL_CREATE,
                                format!("Created pod: {name}"),
                            );
                            Ok(())
                        }
                        Err(error) => {
                            self.recorder.warning(
                                rs,
                                reasons::FAILED_CREATE,
                                format!("Error creating: {error}"),
                            );
                            // It will never be observed.
                            self.expectations.creation_observed(key);
                            Err(error)
                        }
                    }
                }
            })
            .await;
            if let Some(error) = error {
                // The failed creations were accounted for as they failed; those never
                // attempted will never be observed either.
                let skipped = diff - attempted.load(std::sync::atomic::Ordering::Relaxed);
                for _ in 0..skipped {
                    self.expectations.creation_observed(key);
                }
                return Err(error);
            }
        } else if pods.len() > wanted {
            let diff = (pods.len() - wanted).min(BURST_REPLICAS);
            let victims = pods_to_delete(pods, pods, diff);
            self.expectations
                .expect(key, 0, victims.iter().map(|p| ObjectKey::of(p.as_ref())));
            tracing::debug!(replicaset = %key, need = wanted, deleting = diff, "too many replicas");
            let api = self.pod_api(namespace);
            let results = futures::future::join_all(victims.iter().map(|pod| {
                let api = &api;
                async move {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let params = DeleteParams {
                        preconditions: pod.metadata.uid.clone().map(|uid| {
                            capstan_api::kube_core::params::Preconditions {
                                uid: Some(uid),
                                resource_version: None,
                            }
                        }),
                        ..DeleteParams::default()
                    };
                    match api.delete(&name, &params).await {
                        Ok(_) => {
                            self.recorder.normal(
                                rs,
                                reasons::SUCCESSFUL_DELETE,
                                format!("Deleted pod: {name}"),
                            );
                            Ok(())
                        }
                        Err(error) => {
                            // It will never be observed (or already was).
                            self.expectations
                                .deletion_observed(key, &ObjectKey::of(pod.as_ref()));
                            if error.is_not_found() {
                                return Ok(());
                            }
                            self.recorder.warning(
                                rs,
                                reasons::FAILED_DELETE,
                                format!("Error deleting: {error}"),
                            );
                            Err(error)
                        }
                    }
                }
            }))
            .await;
            if let Some(error) = results.into_iter().find_map(Result::err) {
                return Err(error);
            }
        }
        Ok(())
    }

    /// Kubernetes' `calculateStatus`.
    fn calculate_status(
        rs: &ReplicaSet,
        pods: &[Arc<Pod>],
        manage_error: Option<&Error>,
    ) -> ReplicaSetStatus {
        let template_labels: BTreeMap<String, String> = rs
            .spec
            .opt()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let min_ready = rs.spec.opt().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = Timestamp::now();
        let fully_labeled = pods
            .iter()
            .filter(|pod| {
                let labels = pod.metadata.labels.as_ref();
                template_labels
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .count();
        let ready = pods.iter().filter(|p| p.is_ready()).count();
        let available = pods
            .iter()
            .filter(|p| is_pod_available(p, min_ready, now))
            .count();
        let old = rs.status.clone().unwrap_or_default();
        let mut conditions: Vec<ReplicaSetCondition> = old
            .conditions
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| compat::text(&c.type_) != "ReplicaFailure")
            .collect();
        let old_failure = old
            .conditions
            .iter()
            .flatten()
            .find(|c| compat::text(&c.type_) == "ReplicaFailure")
            .cloned();
        if let Some(error) = manage_error {
            let wanted = rs.spec.opt().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
            let reason = if pods.len() < wanted {
                reasons::FAILED_CREATE
            } else {
                reasons::FAILED_DELETE
            };
            let message = error.to_string();
            let keep_time = old_failure
                .as_ref()
                .filter(|c| {
                    c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(&message)
                })
                .and_then(|c| c.last_transition_time.clone());
            conditions.push(ReplicaSetCondition {
                type_: compat::value(String::from("ReplicaFailure")),
                status: compat::value(String::from("True")),
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: keep_time.or(Some(Time(now))),
            });
        }
        ReplicaSetStatus {
            replicas: pods.len() as i32,
            fully_labeled_replicas: Some(fully_labeled as i32),
            ready_replicas: Some(ready as i32),
            available_replicas: Some(available as i32),
            observed_generation: rs.metadata.generation,
            conditions: if conditions.is_empty() {
                None
            } else {
                Some(conditions)
            },
            ..old
        }
    }

    /// Writes `status` unless it is what `rs` has; on a conflict reads the ReplicaSet again
    /// and retries once, as Kubernetes does.
    async fn update_status(&self, rs: &ReplicaSet, status: ReplicaSetStatus) -> Result<(), Error> {
        let same = |current: &ReplicaSet| {
            let old = current.status.clone().unwrap_or_default();
            let norm = |v: Option<i32>| v.unwrap_or(0);
            old.replicas == status.replicas
                && norm(old.fully_labeled_replicas) == norm(status.fully_labeled_replicas)
                && norm(old.ready_replicas) == norm(status.ready_replicas)
                && norm(old.available_replicas) == norm(status.available_replicas)
                && old.observed_generation == status.observed_generation
                && old.conditions.as_deref().unwrap_or_default()
                    == status.conditions.as_deref().unwrap_or_default()
        };
        if same(rs) {
            return Ok(());
        }
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let api = Api::<ReplicaSet>::namespaced(self.client.clone(), namespace);
        let (api, same, status) = (&api, &same, &status);
        capstan_controller::retry::retry_on_conflict(2, |attempt| async move {
            let mut current = if attempt == 0 {
                rs.clone()
            } else {
                let current = api
                    .get(rs.metadata.name.as_deref().unwrap_or_default())
                    .await?;
                if same(&current) {
                    return Ok(());
                }
                current
            };
            let mut status = status.clone();
            status.observed_generation = current.metadata.generation;
            current.status = Some(status);
            match api.update_status(&PostParams::default(), &current).await {
                Err(error) if error.is_not_found() => Ok(()),
                result => result.map(drop),
            }
        })
        .await
    }
}

#[async_trait]
impl Reconciler<ReplicaSet> for ReplicaSetReconciler {
    type Error = ReplicaSetError;

    async fn reconcile(&self, rs: Arc<ReplicaSet>, ctx: &Context) -> Result<Action, Error> {
        let key = ctx.key().clone();
        let namespace = rs.metadata.namespace.clone().unwrap_or_default();
        let selector = match rs.spec.opt().map(|s| label_selector_from(&s.selector)) {
            Some(Ok(selector)) => selector,
            Some(Err(error)) => {
                // Validation refuses these; nothing to retry until the object changes.
                tracing::warn!(replicaset = %key, %error, "invalid selector");
                return Ok(Action::await_change());
            }
            None => return Ok(Action::await_change()),
        };
        // Read the expectations before the cache, as Kubernetes does: if they are satisfied
        // now, the cache read next already holds every observed change.
        let needs_sync = self.expectations.satisfied(&key);
        // Its own Pods and the namespace's orphans, from the controller-uid index: Pods of
        // other controllers are neither kept nor adopted, so they are not even looked at.
        let uid = rs.metadata.uid.as_deref().unwrap_or_default();
        let active: Vec<Arc<Pod>> = controlled_or_orphans(&self.pods, &namespace, uid, true)
            .into_iter()
            .filter(|pod| pod.is_active())
            .collect();
        let owned = self.claim_pods(&rs, &selector, active).await?;

        let mut manage_error = None;
        if needs_sync && rs.metadata.deletion_timestamp.is_none() {
            if let Err(error) = self.manage_replicas(&key, &rs, &owned).await {
                manage_error = Some(error);
            }
        }
        let status = Self::calculate_status(&rs, &owned, manage_error.as_ref());
        let ready = status.ready_replicas.unwrap_or(0);
        let available = status.available_replicas.unwrap_or(0);
        self.update_status(&rs, status).await?;
        if let Some(error) = manage_error {
            return Err(error);
        }
        let min_ready = rs.spec.opt().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let wanted = rs.spec.opt().and_then(|s| s.replicas).unwrap_or(1);
        if min_ready > 0 && ready == wanted && available != wanted {
            return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
        }
        if let Some(expiry) = self.expectations.expires_in(&key) {
            // Waiting for the informer; look again once the expectations would expire.
            return Ok(Action::requeue(expiry + Duration::from_millis(1)));
        }
        Ok(Action::await_change())
    }
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

/// The ReplicaSet controller: a [`Controller`] for ReplicaSets that owns Pods, with a
/// [`ReplicaSetReconciler`]. See the [module docs](self).
pub struct ReplicaSetController {
    controller: Controller<ReplicaSet>,
    reconciler: ReplicaSetReconciler,
}

impl std::fmt::Debug for ReplicaSetController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaSetController")
            .field("controller", &self.controller)
            .finish_non_exhaustive()
    }
}

impl ReplicaSetController {
    /// A controller writing through `client`, with the ReplicaSet and Pod informers of
    /// `factory` and Events from `recorder` (whose component is usually [`COMPONENT`]).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the factory starts the informers at once.
    pub fn new(
        client: Arc<dyn Client>,
        factory: Arc<InformerFactory>,
        recorder: EventRecorder,
    ) -> Self {
        let expectations = Arc::new(Expectations::default());
        let pod_informer: Arc<SharedInformer<Pod>> = factory.informer::<Pod>();
        let controller = Controller::<ReplicaSet>::new(factory).named(COMPONENT);
        let replica_sets = controller.cache().clone();
        // Observations ride on a subscription of their own, drained on the controller's Pod
        // feed right before it queues keys: the cache notifies every subscriber of a change at
        // once, so when a key is queued for a change, that change (and every earlier one) has
        // been observed.
        let observations: Mutex<mpsc::UnboundedReceiver<Delta<Pod>>> =
            Mutex::new(pod_informer.subscribe());
        let observer = expectations.clone();
        let controller = controller.watches_informer(pod_informer.clone(), move |pod: &Pod| {
            {
                let mut observations = observations.lock();
                while let Ok(delta) = observations.try_recv() {
                    observer.observe::<ReplicaSet>(&delta);
                }
            }
            if let Some(owner) = controller_owner_key::<ReplicaSet, Pod>(pod) {
                return vec![owner];
            }
            if controller_ref(pod).is_some() {
                return Vec::new();
            }
            // An orphan: every ReplicaSet of its namespace that would adopt it.
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            replica_sets
                .by_index(NAMESPACE_INDEX, namespace)
                .iter()
                .filter(|rs| {
                    rs.spec
                        .opt()
                        .and_then(|s| label_selector_from(&s.selector).ok())
                        .is_some_and(|sel| selector::matches(&sel, pod.metadata.labels.as_ref()))
                })
                .map(|rs| ObjectKey::of(rs.as_ref()))
                .collect()
        });
        let reconciler =
            ReplicaSetReconciler::new(client, pod_informer.cache().clone(), recorder, expectations);
        ReplicaSetController {
            controller,
            reconciler,
        }
    }

    /// Runs at most `workers` syncs at once (Kubernetes' `--concurrent-replicaset-syncs`,
    /// 5 by default there; the runtime's default here).
    #[must_use]
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.controller = self.controller.concurrency(workers);
        self
    }

    /// The expectations, for inspection.
    pub fn expectations(&self) -> Arc<Expectations> {
        self.reconciler.expectations.clone()
    }

    /// The underlying runtime controller's metrics.
    pub fn metrics(&self) -> Arc<capstan_controller::runtime::ControllerMetrics> {
        self.controller.metrics()
    }

    /// Runs until `shutdown` completes; syncs in flight then finish and it returns `Ok(())`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControllerError> {
        self.controller
            .graceful_shutdown_on(shutdown)
            .run(self.reconciler)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::k8s_openapi::api::core::v1::{
        ContainerStatus, PodCondition, PodSpec, PodStatus,
    };

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn pod(name: &str, node: &str, phase: &str, ready_since: Option<i64>, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(ts(created))),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready_since.is_some() {
                        "True"
                    } else {
                        "False"
                    }
                    .into(),
                    last_transition_time: ready_since.map(|s| Time(ts(s))),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    fn with_restarts(mut pod: Pod, restarts: i32) -> Pod {
        pod.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            restart_count: restarts,
            ..ContainerStatus::default()
        }]);
        pod
    }

    #[test]
    fn unscheduled_pods_are_deleted_before_scheduled_ones_whatever_their_phase() {
        let pods = vec![
            Arc::new(pod("running", "n1", "Running", Some(0), 0)),
            Arc::new(pod("unscheduled", "", "Running", Some(0), 0)),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["unscheduled"]);
    }

    #[test]
    fn pending_goes_before_unknown_before_running() {
        let pods = vec![
            Arc::new(pod("running", "n1", "Running", None, 0)),
            Arc::new(pod("unknown", "n2", "Unknown", None, 0)),
            Arc::new(pod("pending", "n3", "Pending", None, 0)),
        ];
        assert_eq!(
            names(&pods_to_delete(&pods, &pods, 2)),
            ["pending", "unknown"]
        );
    }

    #[test]
    fn not_ready_pods_go_before_ready_ones() {
        let pods = vec![
            Arc::new(pod("ready", "n1", "Running", Some(0), 100)),
            Arc::new(pod("not-ready", "n2", "Running", None, 0)),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["not-ready"]);
    }

    #[test]
    fn pods_doubled_up_on_a_node_go_before_lone_ones() {
        let pods = vec![
            Arc::new(pod("alone", "n1", "Running", Some(0), 0)),
            Arc::new(pod("crowded-a", "n2", "Running", Some(0), 0)),
            Arc::new(pod("crowded-b", "n2", "Running", Some(0), 0)),
        ];
        let doomed = pods_to_delete(&pods, &pods, 1);
        assert!(names(&doomed)[0].starts_with("crowded"));
    }

    #[test]
    fn among_ready_pods_the_most_recently_ready_goes_first() {
        let pods = vec![
            Arc::new(pod("old-ready", "n1", "Running", Some(10), 0)),
            Arc::new(pod("new-ready", "n2", "Running", Some(50), 0)),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["new-ready"]);
    }

    #[test]
    fn more_restarts_go_first_then_newer_pods() {
        let pods = vec![
            Arc::new(with_restarts(pod("calm", "n1", "Running", Some(0), 0), 0)),
            Arc::new(with_restarts(pod("flappy", "n2", "Running", Some(0), 0), 3)),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["flappy"]);
        let pods = vec![
            Arc::new(pod("older", "n1", "Running", Some(0), 0)),
            Arc::new(pod("newer", "n2", "Running", Some(0), 60)),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["newer"]);
    }

    #[test]
    fn a_lower_deletion_cost_goes_first() {
        let mut cheap = pod("cheap", "n1", "Running", Some(0), 0);
        cheap.metadata.annotations = Some(BTreeMap::from([(
            POD_DELETION_COST.to_string(),
            "-5".to_string(),
        )]));
        let pods = vec![
            Arc::new(pod("normal", "n2", "Running", Some(0), 60)),
            Arc::new(cheap),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["cheap"]);
    }

    #[test]
    fn inactive_pods_are_not_replicas() {
        assert!(pod("a", "n", "Running", None, 0).is_active());
        assert!(!pod("a", "n", "Succeeded", None, 0).is_active());
        assert!(!pod("a", "n", "Failed", None, 0).is_active());
        let mut deleting = pod("a", "n", "Running", None, 0);
        deleting.metadata.deletion_timestamp = Some(Time(ts(0)));
        assert!(!deleting.is_active());
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let ready = pod("a", "n", "Running", Some(0), 0);
        assert!(is_pod_available(&ready, 0, ts(0)));
        assert!(!is_pod_available(&ready, 10, ts(5)));
        assert!(is_pod_available(&ready, 10, ts(10)));
        assert!(!is_pod_available(
            &pod("b", "n", "Running", None, 0),
            0,
            ts(0)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn expectations_hold_until_observed_or_expired() {
        let expectations = Expectations::new(Duration::from_secs(60));
        let rs = ObjectKey::namespaced("ns", "web");
        assert!(expectations.satisfied(&rs));
        expectations.expect(&rs, 2, [ObjectKey::namespaced("ns", "web-a")]);
        assert!(!expectations.satisfied(&rs));
        expectations.creation_observed(&rs);
        expectations.creation_observed(&rs);
        assert!(!expectations.satisfied(&rs));
        expectations.deletion_observed(&rs, &ObjectKey::namespaced("ns", "web-a"));
        expectations.deletion_observed(&rs, &ObjectKey::namespaced("ns", "web-a"));
        assert!(expectations.satisfied(&rs));

        expectations.expect(&rs, 1, []);
        assert!(!expectations.satisfied(&rs));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(expectations.satisfied(&rs));
    }

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_at_the_first_failing_batch() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (ok, error) = slow_start_batch(10, 1, || {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 4 {
                    Err(Error::internal("quota"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        // Batches 1, 2, 4: the fifth call (in the batch of 4) fails, the batch completes.
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 7);
        assert_eq!(ok, 6);
        assert!(error.is_some());
    }
}
