//! The Deployment controller: Kubernetes' `pkg/controller/deployment`, over the [`Client`].
//!
//! A Deployment asks for `spec.replicas` Pods from `spec.template`, rolled out through
//! ReplicaSets it owns. The controller, a [`Reconciler`] run by the [runtime](capstan_controller::runtime)
//! with the Deployment as primary kind, ReplicaSets as children and Pods watched (for
//! Recreate), does what Kubernetes' `syncDeployment` does:
//!
//! - **Claiming.** The ReplicaSets of the Deployment's namespace are claimed as Kubernetes'
//!   `ControllerRefManager` does: a controlled one that no longer matches the selector is
//!   released, an orphan that matches is adopted (after re-reading the Deployment, never
//!   for one being deleted or replaced).
//! - **The new ReplicaSet** is the one whose template equals the Deployment's, ignoring the
//!   `pod-template-hash` label ([`POD_TEMPLATE_HASH_LABEL`]). When none does, it is created
//!   as `<deployment>-<hash>`, the hash ([`util::pod_template_hash`]: FNV-1a 32 of the
//!   template's canonical JSON and `status.collisionCount`, in Kubernetes' safe alphabet)
//!   added to its name, selector and template labels. A name taken by another template is a
//!   hash collision: `status.collisionCount` is raised and the next sync hashes again.
//! - **Revisions.** The new ReplicaSet gets `deployment.kubernetes.io/revision` = the highest
//!   old revision + 1, and the Deployment the same. A template equal to an old ReplicaSet's
//!   (`kubectl rollout undo`, which patches the template back) makes that ReplicaSet the new
//!   one again: it gets the next revision, its former one appended to
//!   `deployment.kubernetes.io/revision-history`.
//! - **Rollouts.** `Recreate` scales every old ReplicaSet to 0, waits until none of their
//!   Pods is left (terminating ones included), then creates or scales up the new one.
//!   `RollingUpdate` scales the new ReplicaSet up by what `maxSurge` allows and the old ones
//!   down by what `maxUnavailable` allows (Kubernetes' `reconcileNewReplicaSet`,
//!   `cleanupUnhealthyReplicas`, `scaleDownOldReplicaSetsForRollingUpdate`), counting as
//!   available the ReplicaSets' `status.availableReplicas` (Pods ready for
//!   `minReadySeconds`). Two guards make the bounds hold at every instant even when the
//!   ReplicaSet controller has not yet acted on a resize: a ReplicaSet counts as
//!   `max(spec, status.replicas)` Pods toward the surge, and as `min(spec, available)`
//!   available Pods. Kubernetes counts `spec` and `available` alone.
//! - **Scaling.** When `spec.replicas` changes (a ReplicaSet's
//!   `deployment.kubernetes.io/desired-replicas` differs), or while paused, the only active
//!   ReplicaSet is resized directly; mid-rollout the difference is shared by the active
//!   ReplicaSets in proportion to their size, using `deployment.kubernetes.io/max-replicas`
//!   ([`util::proportional_sizes`]).
//! - **Pause.** `spec.paused` stops rollouts (no new ReplicaSet) but not scaling; the
//!   `Progressing` condition says `DeploymentPaused`, then `DeploymentResumed`.
//! - **Cleanup.** Once a rollout is complete (and while paused), old ReplicaSets scaled to 0
//!   beyond `revisionHistoryLimit` are deleted, lowest revision first.
//! - **Status and conditions**, written through the status subresource when they change:
//!   `replicas`, `updatedReplicas`, `readyReplicas`, `availableReplicas`,
//!   `unavailableReplicas`, `observedGeneration`, `collisionCount`; `Available`
//!   (`MinimumReplicasAvailable` / `MinimumReplicasUnavailable`), `Progressing`
//!   (`NewReplicaSetCreated`, `FoundNewReplicaSet`, `ReplicaSetUpdated`,
//!   `NewReplicaSetAvailable`, `ProgressDeadlineExceeded` once `progressDeadlineSeconds`
//!   pass without progress) and the ReplicaSets' `ReplicaFailure`, with Kubernetes' messages.
//!   A rollout without progress is looked at again when its deadline would pass.
//! - **Events**: `ScalingReplicaSet` (`Scaled up replica set web-7d4b9c from 0 to 3`,
//!   `Scaled down replica set ... from 5 to 3`), and the warnings `SelectingAll` and
//!   `ReplicaSetCreateError`.
//!
//! Kubernetes writes the Deployment's revision annotation through the status endpoint; here
//! the status subresource writes status only, so the annotation is a metadata patch (which
//! does not move `generation`). The deprecated `rollbackTo` of `extensions/v1beta1` is not
//! supported.
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_api::Client;
//! use capstan_controllers::deployment;
//! use capstan_controller::events::{EventBroadcaster, EventOptions};
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! async fn run(client: Arc<dyn Client>) {
//!     let factory = Arc::new(InformerFactory::new(client.clone(), ReflectorOptions::default()));
//!     let events = EventBroadcaster::new(client.clone(), EventOptions::default());
//!     let controller = deployment::controller(client, factory, events.recorder(deployment::NAME));
//!     // Any future ends it: a Ctrl-C signal, a lost leader election, a test's trigger.
//!     controller.run(std::future::pending()).await.unwrap();
//! }
//! ```

use capstan_api::compat::{self, Maybe};
use capstan_api::ext::MetaExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::{DeleteParams, Patch, PatchParams, PostParams};
use capstan_api::kube_core::{ObjectMeta, Selector};
use capstan_api::{label_selector_from, selector, Api, Client, Error};
use capstan_watch::{Cache, InformerFactory, ObjectKey, NAMESPACE_INDEX};

use capstan_controller::events::EventRecorder;
use capstan_controller::runtime::{
    controller_owner_key, controller_reference, Action, Context, Controller, ControllerError,
    ManagedController, Reconciler,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::context::{BuiltinController, ControllerContext, StopSignal};

pub mod util;

use util::{
    actual_count, by_creation, by_revision, calculate_status, deployment_complete,
    deployment_progressing, deployment_timed_out, find_active_or_latest, find_new_replica_set,
    get_condition, is_active, is_paused, is_rolling_update, is_saturated, max_revision, max_surge,
    max_unavailable, new_condition, new_rs_new_replicas, progress_deadline, remove_condition,
    replicas, rs_actual, rs_available, rs_replicas, set_condition, set_deployment_revision,
    set_new_replica_set_annotations, set_replicas_annotations,
};

mod progress;
mod recreate;
mod rolling;
mod sync;

/// The label that tells the ReplicaSets (and Pods) of one template apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Kubernetes' name for the controller: what `--controllers` lists.
pub const NAME: &str = "deployment-controller";

/// The component name the controller's Events report (`source.component`).
pub const COMPONENT: &str = NAME;

/// The annotations the controller keeps, as Kubernetes spells them.
pub mod annotations {
    /// The revision of a Deployment and of each of its ReplicaSets.
    pub const REVISION: &str = "deployment.kubernetes.io/revision";
    /// Earlier revisions of a ReplicaSet that was rolled back to, comma-separated.
    pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
    /// The Deployment's `spec.replicas` when the ReplicaSet was last sized.
    pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
    /// The Deployment's `spec.replicas + maxSurge` when the ReplicaSet was last sized.
    pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
}

/// Condition reasons and Event reasons, as Kubernetes spells them.
pub mod reasons {
    /// `Available: True`.
    pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// `Available: False`.
    pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
    /// `Progressing: True`: the new ReplicaSet was created.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// `Progressing: True`: an existing ReplicaSet matches the template.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// `Progressing: True`: the rollout made progress.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// `Progressing: True`: the rollout is complete.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// `Progressing: False`: no progress within `progressDeadlineSeconds`.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// `Progressing: Unknown`: the Deployment is paused.
    pub const PAUSED: &str = "DeploymentPaused";
    /// `Progressing: Unknown`: the Deployment was resumed.
    pub const RESUMED: &str = "DeploymentResumed";
    /// `Progressing: False` and a Warning Event: the new ReplicaSet could not be created.
    pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
    /// The Event of every resize of a ReplicaSet.
    pub const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";
    /// The Warning Event of a Deployment with an empty selector.
    pub const SELECTING_ALL: &str = "SelectingAll";
}

/// The wall clock conditions are stamped with and deadlines measured against.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What the [`DeploymentReconciler`] fails with: an API error, after which the runtime
/// retries the Deployment with backoff.
pub type DeploymentError = Error;

fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn is_empty_selector(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// The ReplicaSets of one Deployment, split as Kubernetes' `getAllReplicaSetsAndSyncRevision`
/// splits them.
struct Split {
    new_rs: Option<ReplicaSet>,
    /// Every other ReplicaSet, active or not.
    old: Vec<ReplicaSet>,
}

impl Split {
    fn all(&self) -> Vec<&ReplicaSet> {
        self.old.iter().chain(self.new_rs.as_ref()).collect()
    }
}

/// Syncs one Deployment; see the [module docs](self). Built by [`DeploymentController`];
/// public so tests can drive it with [`Context::new`].
pub struct DeploymentReconciler {
    client: Arc<dyn Client>,
    replica_sets: Cache<ReplicaSet>,
    pods: Cache<Pod>,
    recorder: EventRecorder,
    clock: Clock,
}

impl std::fmt::Debug for DeploymentReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentReconciler")
            .finish_non_exhaustive()
    }
}

impl DeploymentReconciler {
    /// A reconciler reading ReplicaSets and Pods from the caches and writing through `client`.
    pub fn new(
        client: Arc<dyn Client>,
        replica_sets: Cache<ReplicaSet>,
        pods: Cache<Pod>,
        recorder: EventRecorder,
    ) -> Self {
        DeploymentReconciler {
            client,
            replica_sets,
            pods,
            recorder,
            clock: Arc::new(Timestamp::now),
        }
    }

    /// Uses `clock` instead of the system's wall clock for conditions and deadlines.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    fn rs_api(&self, namespace: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn deployment_api(&self, d: &Deployment) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), d.namespace_str())
    }
}

/// Replaces the ReplicaSet of `updated`'s uid in `split` with `updated`.
fn replace(split: &mut Split, updated: ReplicaSet) {
    let uid = updated.metadata.uid.clone();
    if split
        .new_rs
        .as_ref()
        .is_some_and(|rs| rs.metadata.uid == uid)
    {
        split.new_rs = Some(updated);
        return;
    }
    if let Some(slot) = split.old.iter_mut().find(|rs| rs.metadata.uid == uid) {
        *slot = updated;
    }
}

/// Kubernetes' `oldPodsRunning`: whether any old ReplicaSet still reports Pods, or any Pod
/// not of the new ReplicaSet is not finished (terminating ones count).
fn old_pods_running(
    new_rs: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    pod_map: &HashMap<String, Vec<Arc<Pod>>>,
) -> bool {
    if actual_count(old) > 0 {
        return true;
    }
    let new_uid = new_rs.and_then(|rs| rs.metadata.uid.as_deref());
    pod_map.iter().any(|(uid, pods)| {
        Some(uid.as_str()) != new_uid
            && pods.iter().any(|pod| {
                !matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
            })
    })
}

/// Kubernetes' `getReplicaFailures`: the new ReplicaSet's `ReplicaFailure`, else any
/// other's, as a Deployment condition.
fn replica_failure(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| compat::text(&c.type_) == "ReplicaFailure")
            .map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.clone(),
                last_update_time: c.last_transition_time.clone(),
            })
    };
    new_rs
        .and_then(failure)
        .or_else(|| all.iter().find_map(|rs| failure(rs)))
}

#[async_trait]
impl Reconciler<Deployment> for DeploymentReconciler {
    type Error = DeploymentError;

    async fn reconcile(&self, d: Arc<Deployment>, ctx: &Context) -> Result<Action, Error> {
        let mut d = (*d).clone();
        let Some(spec) = d.spec.clone().into_opt() else {
            return Ok(Action::await_change());
        };
        if is_empty_selector(&spec.selector) {
            self.recorder.warning(
                &d,
                reasons::SELECTING_ALL,
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            let observed = d
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if observed < d.metadata.generation.unwrap_or(0) {
                d.status
                    .get_or_insert_with(DeploymentStatus::default)
                    .observed_generation = d.metadata.generation;
                self.persist(&mut d, false).await?;
            }
            return Ok(Action::await_change());
        }
        let selector = match label_selector_from(&spec.selector) {
            Ok(selector) => selector,
            Err(error) => {
                tracing::warn!(deployment = %ctx.key(), %error, "invalid selector");
                return Ok(Action::await_change());
            }
        };
        let mut rs_list = self.claim_replica_sets(&d, &selector).await?;

        if d.metadata.deletion_timestamp.is_some() {
            // Kubernetes' `syncStatusOnly`.
            let split = self
                .split_and_sync_revision(&mut d, &mut rs_list, false)
                .await?;
            let status = calculate_status(&split.all(), split.new_rs.as_ref(), &d, self.now());
            if d.status.as_ref() != Some(&status) {
                d.status = Some(status);
                self.persist(&mut d, false).await?;
            }
            return Ok(Action::await_change());
        }
        self.check_paused_conditions(&mut d).await?;
        if is_paused(&d) {
            return self.sync(&mut d, &mut rs_list).await;
        }
        if self.is_scaling_event(&mut d, &mut rs_list).await? {
            return self.sync(&mut d, &mut rs_list).await;
        }
        if is_rolling_update(&d) {
            self.rollout_rolling(&mut d, &mut rs_list).await
        } else {
            // Only Recreate reads the Pods (a scan of the namespace), so only it builds the map.
            let pod_map = self.pod_map(&d, &selector, &rs_list);
            self.rollout_recreate(&mut d, &mut rs_list, &pod_map).await
        }
    }
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

/// The Deployment controller: a [`Controller`] for Deployments that owns ReplicaSets and
/// watches Pods, run with a [`DeploymentReconciler`]. See the [module docs](self). Build it
/// with [`controller`]; set a clock with [`map_reconciler`](ManagedController::map_reconciler)
/// and [`DeploymentReconciler::with_clock`]; tune its workers (Kubernetes'
/// `--concurrent-deployment-syncs`) with [`concurrency`](ManagedController::concurrency).
pub type DeploymentController = ManagedController<Deployment, DeploymentReconciler>;

/// The Deployments of `namespace` whose selector matches `labels` (an empty selector
/// matches nothing here).
fn matching_deployments(
    deployments: &Cache<Deployment>,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Vec<ObjectKey> {
    deployments
        .by_index(NAMESPACE_INDEX, namespace)
        .iter()
        .filter(|d| {
            d.spec.opt().is_some_and(|s| {
                !is_empty_selector(&s.selector)
                    && label_selector_from(&s.selector)
                        .is_ok_and(|sel| selector::matches(&sel, labels))
            })
        })
        .map(|d| ObjectKey::of(d.as_ref()))
        .collect()
}

/// A controller writing through `client`, with the Deployment, ReplicaSet and Pod
/// informers of `factory` and Events from `recorder` (whose component is usually
/// [`COMPONENT`]).
///
/// # Panics
///
/// Outside a tokio runtime: the factory starts the informers at once.
pub fn controller(
    client: Arc<dyn Client>,
    factory: Arc<InformerFactory>,
    recorder: EventRecorder,
) -> DeploymentController {
    let rs_informer = factory.informer::<ReplicaSet>();
    let pod_informer = factory.informer::<Pod>();
    let controller = Controller::<Deployment>::new(factory).named(COMPONENT);
    let deployments = controller.cache().clone();
    let replica_sets = rs_informer.cache().clone();

    // A ReplicaSet triggers its controlling Deployment or, an orphan, every Deployment
    // that would adopt it.
    let for_rs = deployments.clone();
    let controller = controller.watches_informer(rs_informer, move |rs: &ReplicaSet| {
        if let Some(owner) = controller_owner_key::<Deployment, ReplicaSet>(rs) {
            return vec![owner];
        }
        if controller_ref(&rs.metadata).is_some() {
            return Vec::new();
        }
        let namespace = rs.namespace_str();
        matching_deployments(&for_rs, namespace, rs.metadata.labels.as_ref())
    });
    // A Pod matters to Recreate Deployments, which wait for old Pods to be gone.
    let rs_cache = replica_sets.clone();
    let for_pods = deployments;
    let controller = controller.watches_informer(pod_informer.clone(), move |pod: &Pod| {
        let Some(owner) = controller_owner_key::<ReplicaSet, Pod>(pod) else {
            return Vec::new();
        };
        let Some(rs) = rs_cache.get(&owner) else {
            return Vec::new();
        };
        controller_owner_key::<Deployment, ReplicaSet>(&rs)
            .filter(|key| for_pods.get(key).is_some_and(|d| !is_rolling_update(&d)))
            .into_iter()
            .collect::<Vec<_>>()
    });
    let reconciler =
        DeploymentReconciler::new(client, replica_sets, pod_informer.cache().clone(), recorder);
    ManagedController::new(controller, reconciler)
}

impl BuiltinController for DeploymentController {
    const NAME: &'static str = NAME;
    const ALIASES: &'static [&'static str] = &["deployment"];

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
