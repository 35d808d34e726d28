//! The disruption controller: Kubernetes' `pkg/controller/disruption`, over the [`Client`].
//!
//! It keeps the status of every PodDisruptionBudget current, which is what the API server's
//! `pods/eviction` subresource reads before it lets a Pod go (`kubectl drain`). A
//! [`Reconciler`] with PodDisruptionBudgets as primary kind; a Pod change syncs the budgets
//! of its namespace whose selector matches it. For each budget:
//!
//! - **Pods**: those of its namespace its selector matches (a missing selector matches
//!   nothing, an empty one everything). None: a `NoPods` Event (`No matching pods found`).
//! - **Expectations** ([`status::expectation`]): with an integer `minAvailable`,
//!   `expectedPods` is the number of Pods and `desiredHealthy` that integer. With a
//!   percentage `minAvailable`, or with `maxUnavailable`, `expectedPods` is the summed scale
//!   (`spec.replicas`) of the Pods' controllers, found as Kubernetes finds them: a
//!   ReplicationController, a Deployment through its ReplicaSet, a ReplicaSet no Deployment
//!   controls, a StatefulSet (matched by uid, from the informer caches); percentages round
//!   up, and `desiredHealthy` is `expectedPods - maxUnavailable` (at least 0) or the scaled
//!   `minAvailable`. Pods without a controller are reported with an `UnmanagedPods` Warning;
//!   a Pod whose controller cannot be found fails the sync
//!   (`CalculateExpectedPodCountFailed`).
//! - **Disrupted Pods**: entries the eviction subresource put in `status.disruptedPods` stay
//!   while their Pod exists, is not being deleted and the entry is younger than
//!   [`DELETION_TIMEOUT`] (2 minutes); the budget is synced again when the first one
//!   expires, and an expired one gets a `NotDeleted` Warning on its Pod.
//! - **Health**: `currentHealthy` counts the Ready Pods neither being deleted nor in
//!   `disruptedPods`; `disruptionsAllowed = currentHealthy - desiredHealthy` (at least 0, and
//!   0 when no Pod is expected).
//! - **Status**: written (status subresource, with the budget's `resourceVersion`, so a
//!   stale cache gives 409 and a retry) only when something changed, with
//!   `observedGeneration` and the `DisruptionAllowed` condition (`SufficientPods` or
//!   `InsufficientPods`). A failed sync (other than a conflict) writes the fail-safe status
//!   instead: no disruption allowed, condition `False` with reason `SyncFailed` and the error.
//!
//! - **Stale conditions**: a Pod the eviction subresource marked with the `DisruptionTarget`
//!   condition but that is still not being deleted [`STALE_POD_DISRUPTION_TIMEOUT`] (2
//!   minutes) later gets the condition back to `False` (checked every
//!   [`STALE_CHECK_PERIOD`]; conditions the kubelet set, `TerminationByKubelet`, and
//!   finished Pods are left alone).
//!
//! Not implemented: custom scalable controllers (the `scale` subresource of other kinds;
//! their Pods fail the sync as having no controller).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::compat::Maybe;
use capstan_api::ext::MetaExt;
use capstan_api::k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use capstan_api::k8s_openapi::api::core::v1::{Pod, ReplicationController};
use capstan_api::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::PostParams;
use capstan_api::selector::{self, label_selector_from};
use capstan_api::{Api, Client, Error};
use capstan_controller::events::{Clock, EventRecorder};
use capstan_controller::runtime::{
    Action, Context, Controller, ControllerError, ManagedController, Reconciler,
};
use capstan_watch::{Cache, InformerFactory, ObjectKey, NAMESPACE_INDEX};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::context::{BuiltinController, ControllerContext, StopSignal};
use crate::util::controller_ref;

mod stale;
pub mod status;
#[cfg(test)]
mod tests;

pub use stale::{STALE_CHECK_PERIOD, STALE_POD_DISRUPTION_TIMEOUT};

pub use status::{DELETION_TIMEOUT, DISRUPTION_ALLOWED};

/// Kubernetes' name for the controller: what `--controllers` lists.
pub const NAME: &str = "disruption-controller";

/// The component name the controller's Events report (`source.component`).
pub const COMPONENT: &str = NAME;

/// Event and condition reasons, as Kubernetes spells them.
pub mod reasons {
    /// No Pod matches the budget (`No matching pods found`, Normal), or they could not be
    /// listed (Warning).
    pub const NO_PODS: &str = "NoPods";
    /// The Pods' controllers could not be found or scaled (Warning).
    pub const CALCULATE_EXPECTED_POD_COUNT_FAILED: &str = "CalculateExpectedPodCountFailed";
    /// Selected Pods have no controller (Warning).
    pub const UNMANAGED_PODS: &str = "UnmanagedPods";
    /// An evicted Pod was not deleted in time (Warning, on the Pod).
    pub const NOT_DELETED: &str = "NotDeleted";
    /// `DisruptionAllowed` is `True`.
    pub const SUFFICIENT_PODS: &str = "SufficientPods";
    /// `DisruptionAllowed` is `False`: not enough healthy Pods.
    pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
    /// `DisruptionAllowed` is `False`: the status could not be computed.
    pub const SYNC_FAILED: &str = "SyncFailed";
}

/// Why a sync failed; the runtime retries it with backoff.
pub type DisruptionError = Error;

/// The informer caches a sync reads.
#[derive(Clone)]
struct Caches {
    pods: Cache<Pod>,
    replica_sets: Cache<ReplicaSet>,
    deployments: Cache<Deployment>,
    stateful_sets: Cache<StatefulSet>,
    replication_controllers: Cache<ReplicationController>,
}

/// The disruption controller's [`Reconciler`]; see the [module docs](self).
pub struct DisruptionReconciler {
    client: Arc<dyn Client>,
    caches: Caches,
    recorder: EventRecorder,
    clock: SharedClock,
}

/// The reconciler's clock, shared with the stale-condition companion so that
/// [`DisruptionReconciler::with_clock`] moves both.
type SharedClock = Arc<parking_lot::RwLock<Clock>>;

fn now(clock: &SharedClock) -> Timestamp {
    let clock = clock.read().clone();
    clock()
}

impl std::fmt::Debug for DisruptionReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisruptionReconciler")
            .finish_non_exhaustive()
    }
}

impl DisruptionReconciler {
    /// Reads time from `clock` instead of the system clock (disrupted Pods' expiry,
    /// condition transition times).
    #[must_use]
    pub fn with_clock(self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        *self.clock.write() = Arc::new(clock);
        self
    }

    /// The Pods `pdb` selects, from the Pod cache.
    fn pods_of(&self, pdb: &PodDisruptionBudget) -> Result<Vec<Arc<Pod>>, String> {
        let Some(label_selector) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            return Ok(Vec::new());
        };
        let selector = label_selector_from(label_selector).map_err(|e| e.to_string())?;
        let mut pods: Vec<Arc<Pod>> = self
            .caches
            .pods
            .by_index(NAMESPACE_INDEX, pdb.namespace_str())
            .into_iter()
            .filter(|pod| selector::matches(&selector, pod.metadata.labels.as_ref()))
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    /// Kubernetes' `getExpectedScale`: the summed scale of the Pods' controllers, each
    /// counted once, and the names of the Pods without one.
    fn expected_scale(&self, pods: &[&Pod]) -> Result<(i32, Vec<String>), String> {
        let mut scales: BTreeMap<String, i32> = BTreeMap::new();
        let mut unmanaged = Vec::new();
        for pod in pods {
            let Some(owner) = controller_ref(&pod.metadata) else {
                unmanaged.push(pod.name_str().to_string());
                continue;
            };
            if scales.contains_key(&owner.uid) {
                continue;
            }
            match self.controller_scale(owner, pod.namespace_str()) {
                Some((uid, scale)) => {
                    scales.insert(uid, scale);
                }
                None => return Err(format!("found no controllers for pod {:?}", pod.name_str())),
            }
        }
        Ok((scales.values().sum(), unmanaged))
    }

    /// Kubernetes' finders, in order: ReplicationController, Deployment (through its
    /// ReplicaSet), ReplicaSet (not controlled by a Deployment), StatefulSet. The
    /// controller's uid and `spec.replicas`.
    fn controller_scale(&self, owner: &OwnerReference, namespace: &str) -> Option<(String, i32)> {
        let key = ObjectKey::namespaced(namespace, owner.name.clone());
        let group = owner
            .api_version
            .split('/')
            .rev()
            .nth(1)
            .unwrap_or_default();
        let uid_matches = |uid: &Option<String>| uid.as_deref() == Some(owner.uid.as_str());
        match (owner.kind.as_str(), group) {
            ("ReplicationController", "") => {
                let rc = self.caches.replication_controllers.get(&key)?;
                uid_matches(&rc.metadata.uid).then(|| {
                    let replicas = rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    (owner.uid.clone(), replicas)
                })
            }
            ("ReplicaSet", "apps" | "extensions") => {
                let rs = self.caches.replica_sets.get(&key)?;
                if !uid_matches(&rs.metadata.uid) {
                    return None;
                }
                match controller_ref(&rs.metadata) {
                    Some(parent) if parent.kind == "Deployment" => {
                        let key = ObjectKey::namespaced(namespace, parent.name.clone());
                        let deployment = self.caches.deployments.get(&key)?;
                        (deployment.metadata.uid.as_deref() == Some(parent.uid.as_str())).then(
                            || {
                                let replicas =
                                    deployment.spec.opt().and_then(|s| s.replicas).unwrap_or(1);
                                (parent.uid.clone(), replicas)
                            },
                        )
                    }
                    // Kubernetes skips a ReplicaSet another kind controls, then finds nothing.
                    Some(_) => None,
                    None => {
                        let replicas = rs.spec.opt().and_then(|s| s.replicas).unwrap_or(1);
                        Some((owner.uid.clone(), replicas))
                    }
                }
            }
            ("StatefulSet", "apps") => {
                let set = self.caches.stateful_sets.get(&key)?;
                uid_matches(&set.metadata.uid).then(|| {
                    let replicas = set.spec.opt().and_then(|s| s.replicas).unwrap_or(1);
                    (owner.uid.clone(), replicas)
                })
            }
            _ => None,
        }
    }

    async fn write_status(&self, pdb: &PodDisruptionBudget) -> Result<(), Error> {
        Api::<PodDisruptionBudget>::namespaced(self.client.clone(), pdb.namespace_str())
            .update_status(&PostParams::default(), pdb)
            .await
            .map(|_| ())
    }

    /// Kubernetes' `trySync`: the status, and when to look again. Errors are strings for the
    /// fail-safe status, or an API error from the write.
    async fn try_sync(&self, pdb: &PodDisruptionBudget) -> Result<Option<Duration>, SyncFailure> {
        let pods = match self.pods_of(pdb) {
            Ok(pods) => pods,
            Err(error) => {
                self.recorder.warning(
                    pdb,
                    reasons::NO_PODS,
                    format!("Failed to get pods: {error}"),
                );
                return Err(SyncFailure::Compute(error));
            }
        };
        if pods.is_empty() {
            self.recorder
                .normal(pdb, reasons::NO_PODS, "No matching pods found");
        }
        let pods: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
        let expectation = match status::expectation(pdb, pods.len(), || self.expected_scale(&pods))
        {
            Ok(expectation) => expectation,
            Err(error) => {
                self.recorder.warning(
                    pdb,
                    reasons::CALCULATE_EXPECTED_POD_COUNT_FAILED,
                    format!("Failed to calculate the number of expected pods: {error}"),
                );
                return Err(SyncFailure::Compute(error));
            }
        };
        if !expectation.unmanaged.is_empty() {
            let selector = pdb
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .map(selector_text)
                .unwrap_or_default();
            self.recorder.warning(
                pdb,
                reasons::UNMANAGED_PODS,
                format!(
                    "Pods selected by this PodDisruptionBudget (selector: {selector}) were found \
                     to be unmanaged. As a result, the status of the PDB cannot be calculated \
                     correctly, which may result in undefined behavior. To account for these \
                     pods please set \".spec.minAvailable\" field of the PDB to an integer value."
                ),
            );
        }
        let now = now(&self.clock);
        let disrupted = status::disrupted_pods(pdb, &pods, now);
        for name in &disrupted.expired {
            if let Some(pod) = pods.iter().find(|p| p.name_str() == name) {
                self.recorder.warning(
                    *pod,
                    reasons::NOT_DELETED,
                    format!(
                        "Pod was expected by PDB {}/{} to be deleted but it wasn't",
                        pdb.namespace_str(),
                        pdb.name_str()
                    ),
                );
            }
        }
        let figures = status::Figures {
            current_healthy: status::count_healthy(&pods, &disrupted.kept, now),
            desired_healthy: expectation.desired_healthy,
            expected: expectation.expected,
        };
        if let Some(updated) = status::updated_status(pdb, &figures, disrupted.kept, now) {
            self.write_status(&updated)
                .await
                .map_err(SyncFailure::Write)?;
        }
        Ok(disrupted.recheck.map(|at| {
            let wait = now.duration_until(at);
            Duration::try_from(wait).unwrap_or(Duration::ZERO) + Duration::from_millis(10)
        }))
    }
}

/// How a sync failed.
enum SyncFailure {
    /// The status could not be computed: written as the fail-safe status.
    Compute(String),
    /// Writing the status failed.
    Write(Error),
}

/// A label selector as Kubernetes prints a `*metav1.LabelSelector` in the `UnmanagedPods`
/// message (close to Go's `%v` of the struct).
fn selector_text(selector: &LabelSelector) -> String {
    let labels: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    format!("&LabelSelector{{MatchLabels:map[string]string{{{},}},MatchExpressions:[]LabelSelectorRequirement{{}},}}", labels.join(","))
}

#[async_trait]
impl Reconciler<PodDisruptionBudget> for DisruptionReconciler {
    type Error = DisruptionError;

    async fn reconcile(
        &self,
        pdb: Arc<PodDisruptionBudget>,
        _ctx: &Context,
    ) -> Result<Action, Self::Error> {
        match self.try_sync(&pdb).await {
            Ok(Some(recheck)) => Ok(Action::requeue(recheck)),
            Ok(None) => Ok(Action::await_change()),
            // A conflict is retried as is; anything else writes the fail-safe status.
            Err(SyncFailure::Write(error)) if error.is_conflict() => Err(error),
            Err(failure) => {
                let message = match failure {
                    SyncFailure::Compute(message) => message,
                    SyncFailure::Write(error) => error.to_string(),
                };
                let safe = status::fail_safe(&pdb, &message, now(&self.clock));
                if safe.status != pdb.status {
                    self.write_status(&safe).await?;
                }
                Ok(Action::await_change())
            }
        }
    }
}

/// The disruption controller: a [`Controller`] for PodDisruptionBudgets that watches Pods,
/// run with a [`DisruptionReconciler`]. See the [module docs](self). Build it with
/// [`controller`]; set a clock with [`map_reconciler`](ManagedController::map_reconciler)
/// and [`DisruptionReconciler::with_clock`].
pub type DisruptionController = ManagedController<PodDisruptionBudget, DisruptionReconciler>;

/// The budgets of `namespace` whose selector matches `labels`.
fn matching_budgets(
    budgets: &Cache<PodDisruptionBudget>,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Vec<ObjectKey> {
    budgets
        .by_index(NAMESPACE_INDEX, namespace)
        .iter()
        .filter(|pdb| {
            pdb.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|s| label_selector_from(s).ok())
                .is_some_and(|selector| selector::matches(&selector, labels))
        })
        .map(|pdb| ObjectKey::of(pdb.as_ref()))
        .collect()
}

/// A controller writing through `client`, with the PodDisruptionBudget, Pod, ReplicaSet,
/// Deployment, StatefulSet and ReplicationController informers of `factory` and Events
/// from `recorder` (whose component is usually [`COMPONENT`]).
///
/// # Panics
///
/// Outside a tokio runtime: the factory starts the informers at once.
pub fn controller(
    client: Arc<dyn Client>,
    factory: Arc<InformerFactory>,
    recorder: EventRecorder,
) -> DisruptionController {
    let pod_informer = factory.informer::<Pod>();
    let rs_informer = factory.informer::<ReplicaSet>();
    let deployment_informer = factory.informer::<Deployment>();
    let set_informer = factory.informer::<StatefulSet>();
    let rc_informer = factory.informer::<ReplicationController>();
    let caches = Caches {
        pods: pod_informer.cache().clone(),
        replica_sets: rs_informer.cache().clone(),
        deployments: deployment_informer.cache().clone(),
        stateful_sets: set_informer.cache().clone(),
        replication_controllers: rc_informer.cache().clone(),
    };
    let controller = Controller::<PodDisruptionBudget>::new(factory).named(COMPONENT);
    let budgets = controller.cache().clone();
    let for_pods = budgets.clone();
    let controller = controller.watches_informer(pod_informer, move |pod: &Pod| {
        matching_budgets(&for_pods, pod.namespace_str(), pod.metadata.labels.as_ref())
    });
    // A controller's scale is what `maxUnavailable` and percentages count from: a change of
    // one syncs the budgets of its namespace (and the controller waits for these caches
    // before its first sync, as Kubernetes waits for its listers).
    let in_namespace = move |budgets: &Cache<PodDisruptionBudget>, namespace: &str| {
        budgets
            .by_index(NAMESPACE_INDEX, namespace)
            .iter()
            .map(|pdb| ObjectKey::of(pdb.as_ref()))
            .collect::<Vec<_>>()
    };
    let (b1, b2, b3, b4) = (budgets.clone(), budgets.clone(), budgets.clone(), budgets);
    let controller = controller
        .watches_informer(rs_informer, move |o: &ReplicaSet| {
            in_namespace(&b1, o.namespace_str())
        })
        .watches_informer(deployment_informer, move |o: &Deployment| {
            in_namespace(&b2, o.namespace_str())
        })
        .watches_informer(set_informer, move |o: &StatefulSet| {
            in_namespace(&b3, o.namespace_str())
        })
        .watches_informer(rc_informer, move |o: &ReplicationController| {
            in_namespace(&b4, o.namespace_str())
        });
    let clock: SharedClock = Arc::new(parking_lot::RwLock::new(Arc::new(Timestamp::now)));
    let stale = stale::StaleConditions {
        client: client.clone(),
        pods: caches.pods.clone(),
        clock: clock.clone(),
    };
    let reconciler = DisruptionReconciler {
        client,
        caches,
        recorder,
        clock,
    };
    ManagedController::new(controller, reconciler).with_companion(move |handle| stale.run(handle))
}

impl BuiltinController for DisruptionController {
    const NAME: &'static str = NAME;
    const ALIASES: &'static [&'static str] = &["disruption"];

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
