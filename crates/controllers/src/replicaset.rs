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
//!   ([`compare_for_deletion`](crate::util::compare_for_deletion)): unscheduled first, then Pending, Unknown, Running; not ready
//!   before ready; more Pods on the same node first; ready for less time first; more
//!   restarts first; newer first.
//! - **Expectations.** After issuing creates and deletes, the controller does not act on that
//!   ReplicaSet again until the Pod informer has observed every one of them, or
//!   [`EXPECTATIONS_TTL`](crate::util::EXPECTATIONS_TTL) (5 minutes) has passed
//!   ([`Expectations`](crate::util::Expectations), Kubernetes'
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
//! use capstan_controllers::replicaset;
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! async fn run(client: Arc<dyn Client>, stop: tokio::sync::oneshot::Receiver<()>) {
//!     let factory = Arc::new(InformerFactory::new(client.clone(), ReflectorOptions::default()));
//!     let events = EventBroadcaster::new(client.clone(), EventOptions::default());
//!     let controller = replicaset::controller(client, factory, events.recorder(replicaset::NAME));
//!     // Returns once `stop` fires (or its sender is dropped), after the syncs in flight.
//!     controller.run(async { let _ = stop.await; }).await.unwrap();
//! }
//! ```

use capstan_api::compat::{self, Maybe};
use capstan_api::kube_core::ResourceExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::ext::{MetaExt, PodExt};
use capstan_api::k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::{DeleteParams, Patch, PatchParams, PostParams};
use capstan_api::kube_core::Selector;
use capstan_api::{label_selector_from, selector, Api, Client, Error};
use capstan_watch::{Cache, Delta, InformerFactory, ObjectKey, SharedInformer, NAMESPACE_INDEX};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use capstan_controller::events::EventRecorder;
use capstan_controller::runtime::{
    add_controller_index, controlled_or_orphans, controller_owner_key, controller_reference,
    Action, Context, Controller, ControllerError, ManagedController, Reconciler,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::context::{BuiltinController, ControllerContext, StopSignal};
use crate::util::{
    controller_ref, is_pod_available, pod_for, pods_to_delete, slow_start_batch, Expectations,
};

/// The most Pods one sync creates or deletes (Kubernetes' `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// Kubernetes' name for the controller: what `--controllers` lists.
pub const NAME: &str = "replicaset-controller";

/// The component name the controller's Events report (`source.component`).
pub const COMPONENT: &str = NAME;

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

/// The Pod the ReplicaSet's template describes, before the API names it.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .opt()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    pod_for(rs, template)
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
        let namespace = rs.namespace_str();
        let deleting = rs.metadata.deletion_timestamp.is_some();
        let mut claimed = Vec::new();
        let mut fresh_checked: Option<bool> = None;
        let mut first_error = None;
        for pod in pods {
            let matches = selector::matches(selector, pod.metadata.labels.as_ref());
            match controller_ref(&pod.metadata) {
                Some(owner) if owner.uid == uid => {
                    if matches || deleting {
                        claimed.push(pod);
                        continue;
                    }
                    // Release: drop our reference, keep the others.
                    let name = pod.name_any();
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
                                    .get_opt(rs.name_str())
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
                    let name = pod.name_any();
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
        let namespace = rs.namespace_str();
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
                    let name = pod.name_any();
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
        let namespace = rs.namespace_str();
        let api = Api::<ReplicaSet>::namespaced(self.client.clone(), namespace);
        let (api, same, status) = (&api, &same, &status);
        capstan_controller::retry::retry_on_conflict(2, |attempt| async move {
            let mut current = if attempt == 0 {
                rs.clone()
            } else {
                let current = api.get(rs.name_str()).await?;
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
        let namespace = rs.namespace().unwrap_or_default();
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

/// The ReplicaSet controller: a [`Controller`] for ReplicaSets that owns Pods, run with a
/// [`ReplicaSetReconciler`]. See the [module docs](self). Build it with [`controller`]; tune
/// its workers with [`concurrency`](ManagedController::concurrency) (Kubernetes'
/// `--concurrent-replicaset-syncs`) and read its expectations through
/// [`reconciler`](ManagedController::reconciler).
pub type ReplicaSetController = ManagedController<ReplicaSet, ReplicaSetReconciler>;

/// A controller writing through `client`, with the ReplicaSet and Pod informers of
/// `factory` and Events from `recorder` (whose component is usually [`COMPONENT`]).
///
/// # Panics
///
/// Outside a tokio runtime: the factory starts the informers at once.
pub fn controller(
    client: Arc<dyn Client>,
    factory: Arc<InformerFactory>,
    recorder: EventRecorder,
) -> ReplicaSetController {
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
        if controller_ref(&pod.metadata).is_some() {
            return Vec::new();
        }
        // An orphan: every ReplicaSet of its namespace that would adopt it.
        let namespace = pod.namespace_str();
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
    ManagedController::new(controller, reconciler)
}

impl BuiltinController for ReplicaSetController {
    const NAME: &'static str = NAME;
    const ALIASES: &'static [&'static str] = &["replicaset"];

    fn from_context(ctx: &ControllerContext) -> Self {
        controller(
            ctx.client.clone(),
            ctx.factory.clone(),
            ctx.recorder.clone(),
        )
    }

    fn run_until(self, shutdown: StopSignal) -> BoxFuture<'static, Result<(), ControllerError>> {
        self.run(shutdown).boxed()
    }
}
