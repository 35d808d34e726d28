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
//! use capstan_controllers::deployment::DeploymentController;
//! use capstan_controller::events::{EventBroadcaster, EventOptions};
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! async fn run(client: Arc<dyn Client>) {
//!     let factory = Arc::new(InformerFactory::new(client.clone(), ReflectorOptions::default()));
//!     let events = EventBroadcaster::new(client.clone(), EventOptions::default());
//!     let controller = DeploymentController::new(client, factory, events.recorder("deployment-controller"));
//!     // Any future ends it: a Ctrl-C signal, a lost leader election, a test's trigger.
//!     controller.run(std::future::pending()).await.unwrap();
//! }
//! ```

use capstan_api::compat::{self, Maybe};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
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
    Reconciler,
};

pub mod util;

use util::{
    actual_count, by_creation, by_revision, calculate_status, deployment_complete,
    deployment_progressing, deployment_timed_out, find_active_or_latest, find_new_replica_set,
    get_condition, is_active, is_paused, is_rolling_update, is_saturated, max_revision, max_surge,
    max_unavailable, new_condition, new_rs_new_replicas, progress_deadline, remove_condition,
    replicas, rs_actual, rs_available, rs_replicas, set_condition, set_deployment_revision,
    set_new_replica_set_annotations, set_replicas_annotations,
};

/// The label that tells the ReplicaSets (and Pods) of one template apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The component name the controller's Events report (`source.component`).
pub const COMPONENT: &str = "deployment-controller";

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
        Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or_default(),
        )
    }

    // -----------------------------------------------------------------------------------
    // Claiming
    // -----------------------------------------------------------------------------------

    /// Kubernetes' `ClaimReplicaSets`: keeps, adopts and releases; returns those now owned.
    async fn claim_replica_sets(
        &self,
        d: &Deployment,
        selector: &Selector,
    ) -> Result<Vec<ReplicaSet>, Error> {
        let uid = d.metadata.uid.as_deref().unwrap_or_default();
        let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
        let deleting = d.metadata.deletion_timestamp.is_some();
        let mut claimed = Vec::new();
        let mut can_adopt: Option<bool> = None;
        let mut first_error = None;
        for rs in self.replica_sets.by_index(NAMESPACE_INDEX, namespace) {
            let matches = selector::matches(selector, rs.metadata.labels.as_ref());
            match controller_ref(&rs.metadata) {
                Some(owner) if owner.uid == uid => {
                    if matches {
                        claimed.push((*rs).clone());
                        continue;
                    }
                    if deleting {
                        continue;
                    }
                    let remaining: Vec<_> = rs
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    if let Err(error) = self.patch_owners(&rs, remaining).await {
                        first_error.get_or_insert(error);
                    }
                }
                Some(_) => {}
                None => {
                    if deleting || !matches || rs.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let allowed = match can_adopt {
                        Some(answer) => answer,
                        None => {
                            let fresh =
                                self.deployment_api(d).get_opt(name_of(&d.metadata)).await?;
                            let answer = fresh.is_some_and(|f| {
                                f.metadata.uid.as_deref() == Some(uid)
                                    && f.metadata.deletion_timestamp.is_none()
                            });
                            can_adopt = Some(answer);
                            answer
                        }
                    };
                    if !allowed {
                        continue;
                    }
                    let mut owners = rs.metadata.owner_references.clone().unwrap_or_default();
                    owners.push(controller_reference(d));
                    match self.patch_owners(&rs, owners).await {
                        Ok(Some(adopted)) => claimed.push(adopted),
                        Ok(None) => {}
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

    /// Sets a ReplicaSet's ownerReferences, guarded by its resourceVersion; `None` if gone.
    async fn patch_owners(
        &self,
        rs: &ReplicaSet,
        owners: Vec<OwnerReference>,
    ) -> Result<Option<ReplicaSet>, Error> {
        let patch = serde_json::json!({"metadata": {
            "ownerReferences": owners,
            "resourceVersion": rs.metadata.resource_version,
        }});
        let api = self.rs_api(rs.metadata.namespace.as_deref().unwrap_or_default());
        match api
            .patch(
                name_of(&rs.metadata),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(rs) => Ok(Some(rs)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Kubernetes' `getPodMapForDeployment`: the Pods (terminating ones too) matching the
    /// selector, by the uid of the claimed ReplicaSet controlling them.
    fn pod_map(
        &self,
        d: &Deployment,
        selector: &Selector,
        rs_list: &[ReplicaSet],
    ) -> HashMap<String, Vec<Arc<Pod>>> {
        let mut map: HashMap<String, Vec<Arc<Pod>>> = rs_list
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .map(|uid| (uid, Vec::new()))
            .collect();
        let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
        for pod in self.pods.by_index(NAMESPACE_INDEX, namespace) {
            if !selector::matches(selector, pod.metadata.labels.as_ref()) {
                continue;
            }
            let Some(owner) = controller_ref(&pod.metadata) else {
                continue;
            };
            if let Some(pods) = map.get_mut(&owner.uid) {
                pods.push(pod);
            }
        }
        map
    }

    // -----------------------------------------------------------------------------------
    // Writes
    // -----------------------------------------------------------------------------------

    /// Writes `d`'s status (and first its revision annotation, if `annotations_changed`),
    /// replacing `d` with what the API returned.
    async fn persist(&self, d: &mut Deployment, annotations_changed: bool) -> Result<(), Error> {
        let api = self.deployment_api(d);
        if annotations_changed {
            let revision = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotations::REVISION))
                .cloned();
            let patch = serde_json::json!({"metadata": {
                "annotations": {annotations::REVISION: revision},
                "resourceVersion": d.metadata.resource_version,
            }});
            let patched = api
                .patch(
                    name_of(&d.metadata),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            d.metadata = patched.metadata;
        }
        let updated = api.update_status(&PostParams::default(), d).await?;
        *d = updated;
        Ok(())
    }

    /// Kubernetes' `scaleReplicaSet`: sets the size and the replica annotations (one update,
    /// guarded by the resourceVersion), recording `ScalingReplicaSet` when the size changed.
    /// Returns whether the size changed and the ReplicaSet as it now is.
    async fn scale_replica_set(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
        new_scale: i32,
        operation: &str,
    ) -> Result<(bool, ReplicaSet), Error> {
        let old_scale = rs_replicas(rs);
        let size_changed = old_scale != new_scale;
        let mut copy = rs.clone();
        let annotations_changed =
            set_replicas_annotations(&mut copy, replicas(d), replicas(d) + max_surge(d));
        if !size_changed && !annotations_changed {
            return Ok((false, copy));
        }
        copy.spec.or_default_mut().replicas = Some(new_scale);
        let updated = self
            .rs_api(rs.metadata.namespace.as_deref().unwrap_or_default())
            .update(&PostParams::default(), &copy)
            .await?;
        if size_changed {
            self.recorder.normal(
                d,
                reasons::SCALING_REPLICA_SET,
                format!(
                    "Scaled {operation} replica set {} from {old_scale} to {new_scale}",
                    name_of(&updated.metadata)
                ),
            );
        }
        Ok((size_changed, updated))
    }

    /// Kubernetes' `scaleReplicaSetAndRecordEvent`.
    async fn scale_and_record(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
        new_scale: i32,
    ) -> Result<(bool, ReplicaSet), Error> {
        let current = rs_replicas(rs);
        if current == new_scale {
            return Ok((false, rs.clone()));
        }
        let operation = if current < new_scale { "up" } else { "down" };
        self.scale_replica_set(d, rs, new_scale, operation).await
    }

    // -----------------------------------------------------------------------------------
    // The new ReplicaSet and revisions
    // -----------------------------------------------------------------------------------

    /// Kubernetes' `getAllReplicaSetsAndSyncRevision`: finds (and with `create`, creates)
    /// the new ReplicaSet, syncing its revision and the Deployment's.
    async fn split_and_sync_revision(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<Split, Error> {
        let new_index = find_new_replica_set(d, rs_list);
        let old: Vec<ReplicaSet> = rs_list
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_index)
            .map(|(_, rs)| rs.clone())
            .collect();
        let new_revision = max_revision(&old) + 1;
        let deadline = progress_deadline(d).is_some();

        if let Some(index) = new_index {
            let mut copy = rs_list[index].clone();
            let annotations_changed =
                set_new_replica_set_annotations(d, &mut copy, new_revision, true);
            let min_ready = d.spec.opt().and_then(|s| s.min_ready_seconds);
            let rs_min_ready = copy.spec.opt().and_then(|s| s.min_ready_seconds);
            if annotations_changed || min_ready.unwrap_or(0) != rs_min_ready.unwrap_or(0) {
                copy.spec.or_default_mut().min_ready_seconds = min_ready;
                let updated = self
                    .rs_api(copy.metadata.namespace.as_deref().unwrap_or_default())
                    .update(&PostParams::default(), &copy)
                    .await?;
                rs_list[index] = updated.clone();
                return Ok(Split {
                    new_rs: Some(updated),
                    old,
                });
            }
            let revision = copy
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotations::REVISION))
                .cloned()
                .unwrap_or_default();
            let annotation_changed = set_deployment_revision(d, &revision);
            let mut status_changed = false;
            let mut status = d.status.clone().unwrap_or_default();
            if deadline && get_condition(&status, "Progressing").is_none() {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        reasons::FOUND_NEW_RS,
                        format!("Found new replica set \"{}\"", name_of(&copy.metadata)),
                        self.now(),
                    ),
                );
                d.status = Some(status);
                status_changed = true;
            }
            if annotation_changed || status_changed {
                self.persist(d, annotation_changed).await?;
            }
            return Ok(Split {
                new_rs: Some(copy),
                old,
            });
        }
        if !create {
            return Ok(Split { new_rs: None, old });
        }

        // Create the new ReplicaSet.
        let spec = d.spec.clone().into_opt().unwrap_or_default();
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::pod_template_hash(&spec.template, collision_count);
        let mut template = spec.template.clone();
        let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        template_meta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let labels = template_meta.labels.clone();
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let namespace = d.metadata.namespace.clone().unwrap_or_default();
        let name = format!("{}-{hash}", name_of(&d.metadata));
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                owner_references: Some(vec![controller_reference(d)]),
                labels,
                ..ObjectMeta::default()
            },
            spec: compat::value(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().chain(Some(&new_rs)).collect();
        let new_replicas = new_rs_new_replicas(d, &all, &new_rs);
        if let Some(spec) = new_rs.spec.opt_mut() {
            spec.replicas = Some(new_replicas);
        }
        set_new_replica_set_annotations(d, &mut new_rs, new_revision, false);

        let mut already_exists = false;
        let created = match self
            .rs_api(&namespace)
            .create(&PostParams::default(), &new_rs)
            .await
        {
            Ok(created) => created,
            Err(error) if error.is_already_exists() => {
                let existing = match self
                    .replica_sets
                    .get(&ObjectKey::namespaced(&namespace, &name))
                {
                    Some(rs) => (*rs).clone(),
                    None => self.rs_api(&namespace).get(&name).await?,
                };
                let ours = controller_ref(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .opt()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::equal_ignore_hash(t, &spec.template));
                if ours && same {
                    already_exists = true;
                    existing
                } else {
                    // A hash collision: hash again with a higher count on the next sync.
                    let mut status = d.status.clone().unwrap_or_default();
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    d.status = Some(status);
                    if self.persist(d, false).await.is_ok() {
                        tracing::info!(deployment = %name_of(&d.metadata), "found a hash collision");
                    }
                    return Err(error);
                }
            }
            Err(error) => {
                let message = format!("Failed to create new replica set \"{name}\": {error}");
                if deadline {
                    let mut status = d.status.clone().unwrap_or_default();
                    set_condition(
                        &mut status,
                        new_condition(
                            "Progressing",
                            "False",
                            reasons::FAILED_RS_CREATE,
                            &message,
                            self.now(),
                        ),
                    );
                    d.status = Some(status);
                    let _ = self.persist(d, false).await;
                }
                self.recorder.warning(d, reasons::FAILED_RS_CREATE, message);
                return Err(error);
            }
        };
        if !already_exists && new_replicas > 0 {
            self.recorder.normal(
                d,
                reasons::SCALING_REPLICA_SET,
                format!("Scaled up replica set {name} from 0 to {new_replicas}"),
            );
        }
        let annotation_changed = set_deployment_revision(d, &new_revision.to_string());
        let mut status_changed = false;
        if !already_exists && deadline {
            let mut status = d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "True",
                    reasons::NEW_RS_CREATED,
                    format!("Created new replica set \"{name}\""),
                    self.now(),
                ),
            );
            d.status = Some(status);
            status_changed = true;
        }
        if annotation_changed || status_changed {
            self.persist(d, annotation_changed).await?;
        }
        rs_list.push(created.clone());
        Ok(Split {
            new_rs: Some(created),
            old,
        })
    }

    // -----------------------------------------------------------------------------------
    // Scaling (sync), pause
    // -----------------------------------------------------------------------------------

    /// Kubernetes' `isScalingEvent`: an active ReplicaSet sized for another `spec.replicas`.
    async fn is_scaling_event(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<bool, Error> {
        let split = self.split_and_sync_revision(d, rs_list, false).await?;
        let desired = replicas(d);
        Ok(split
            .all()
            .into_iter()
            .filter(|rs| is_active(rs))
            .any(|rs| {
                util::int_annotation(rs, annotations::DESIRED_REPLICAS)
                    .is_some_and(|n| n != desired)
            }))
    }

    /// Kubernetes' `scale`: resizes without rolling out.
    async fn scale(&self, d: &Deployment, split: &mut Split) -> Result<(), Error> {
        let desired = replicas(d);
        if let Some(target) = find_active_or_latest(split.new_rs.as_ref(), &split.old) {
            if rs_replicas(&target) == desired {
                return Ok(());
            }
            let (_, updated) = self.scale_and_record(d, &target, desired).await?;
            replace(split, updated);
            return Ok(());
        }
        if is_saturated(d, split.new_rs.as_ref()) {
            for rs in split.old.clone().iter().filter(|rs| is_active(rs)) {
                let (_, updated) = self.scale_and_record(d, rs, 0).await?;
                replace(split, updated);
            }
            return Ok(());
        }
        if is_rolling_update(d) {
            let active: Vec<ReplicaSet> = split
                .all()
                .into_iter()
                .filter(|rs| is_active(rs))
                .cloned()
                .collect();
            let to_add = if desired > 0 {
                desired + max_surge(d)
            } else {
                0
            } - util::replica_count(&active);
            let operation = match to_add {
                n if n > 0 => "up",
                n if n < 0 => "down",
                _ => "",
            };
            let sizes = util::proportional_sizes(d, &active);
            for (name, size) in sizes {
                let Some(rs) = active.iter().find(|rs| name_of(&rs.metadata) == name) else {
                    continue;
                };
                let (_, updated) = self.scale_replica_set(d, rs, size, operation).await?;
                replace(split, updated);
            }
        }
        Ok(())
    }

    /// Kubernetes' `sync`: scaling and, while paused, cleanup, then the status.
    async fn sync(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Action, Error> {
        let mut split = self.split_and_sync_revision(d, rs_list, false).await?;
        self.scale(d, &mut split).await?;
        if is_paused(d) {
            self.cleanup(d, &split.old).await?;
        }
        let status = calculate_status(&split.all(), split.new_rs.as_ref(), d, self.now());
        if d.status.as_ref() != Some(&status) {
            d.status = Some(status);
            self.persist(d, false).await?;
        }
        Ok(Action::await_change())
    }

    /// Kubernetes' `checkPausedConditions`.
    async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<(), Error> {
        if progress_deadline(d).is_none() {
            return Ok(());
        }
        let mut status = d.status.clone().unwrap_or_default();
        let reason = get_condition(&status, "Progressing").and_then(|c| c.reason.clone());
        let paused = is_paused(d);
        let condition = if paused && reason.as_deref() != Some(reasons::PAUSED) {
            new_condition(
                "Progressing",
                "Unknown",
                reasons::PAUSED,
                "Deployment is paused",
                self.now(),
            )
        } else if !paused && reason.as_deref() == Some(reasons::PAUSED) {
            new_condition(
                "Progressing",
                "Unknown",
                reasons::RESUMED,
                "Deployment is resumed",
                self.now(),
            )
        } else {
            return Ok(());
        };
        set_condition(&mut status, condition);
        d.status = Some(status);
        self.persist(d, false).await
    }

    // -----------------------------------------------------------------------------------
    // Rollouts
    // -----------------------------------------------------------------------------------

    /// Kubernetes' `rolloutRolling`.
    async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Action, Error> {
        let mut split = self.split_and_sync_revision(d, rs_list, true).await?;
        if self.reconcile_new_replica_set(d, &mut split).await? {
            return self.sync_rollout_status(d, &split).await;
        }
        if self.reconcile_old_replica_sets(d, &mut split).await? {
            return self.sync_rollout_status(d, &split).await;
        }
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &split.old).await?;
        }
        self.sync_rollout_status(d, &split).await
    }

    /// Kubernetes' `reconcileNewReplicaSet`.
    async fn reconcile_new_replica_set(
        &self,
        d: &Deployment,
        split: &mut Split,
    ) -> Result<bool, Error> {
        let Some(new_rs) = split.new_rs.clone() else {
            return Ok(false);
        };
        let desired = replicas(d);
        let current = rs_replicas(&new_rs);
        let target = if current == desired {
            return Ok(false);
        } else if current > desired {
            desired
        } else {
            new_rs_new_replicas(d, &split.all(), &new_rs)
        };
        let (scaled, updated) = self.scale_and_record(d, &new_rs, target).await?;
        split.new_rs = Some(updated);
        Ok(scaled)
    }

    /// Kubernetes' `reconcileOldReplicaSets`.
    async fn reconcile_old_replica_sets(
        &self,
        d: &Deployment,
        split: &mut Split,
    ) -> Result<bool, Error> {
        let Some(new_rs) = split.new_rs.clone() else {
            return Ok(false);
        };
        let old_pods = util::replica_count(split.old.iter().filter(|rs| is_active(rs)));
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods = util::replica_count(split.all());
        let min_available = replicas(d) - max_unavailable(d);
        let new_unavailable =
            rs_replicas(&new_rs) - rs_available(&new_rs).min(rs_replicas(&new_rs));
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let cleaned = self
            .cleanup_unhealthy_replicas(d, split, max_scaled_down)
            .await?;
        let scaled = self.scale_down_old_for_rolling_update(d, split).await?;
        Ok(cleaned + scaled > 0)
    }

    /// Kubernetes' `cleanupUnhealthyReplicas`: first drops old replicas that are not
    /// available, oldest ReplicaSet first, up to `max_cleanup`.
    async fn cleanup_unhealthy_replicas(
        &self,
        d: &Deployment,
        split: &mut Split,
        max_cleanup: i32,
    ) -> Result<i32, Error> {
        let mut old: Vec<ReplicaSet> = split
            .old
            .iter()
            .filter(|rs| is_active(rs))
            .cloned()
            .collect();
        old.sort_by(by_creation);
        let mut total = 0;
        for rs in old {
            if total >= max_cleanup {
                break;
            }
            let size = rs_replicas(&rs);
            // A ReplicaSet reporting as many available as asked (or more: a resize not yet
            // acted on) has nothing unhealthy to drop.
            if size == 0 || size <= rs_available(&rs) {
                continue;
            }
            let count = (max_cleanup - total).min(size - rs_available(&rs));
            let (_, updated) = self.scale_and_record(d, &rs, size - count).await?;
            replace(split, updated);
            total += count;
        }
        Ok(total)
    }

    /// Kubernetes' `scaleDownOldReplicaSetsForRollingUpdate`: scales old ReplicaSets down,
    /// oldest first, as far as the available Pods above `replicas - maxUnavailable` allow.
    async fn scale_down_old_for_rolling_update(
        &self,
        d: &Deployment,
        split: &mut Split,
    ) -> Result<i32, Error> {
        let min_available = replicas(d) - max_unavailable(d);
        let available: i32 = split
            .all()
            .into_iter()
            .map(|rs| rs_available(rs).min(rs_replicas(rs)))
            .sum();
        if available <= min_available {
            return Ok(0);
        }
        let mut old: Vec<ReplicaSet> = split
            .old
            .iter()
            .filter(|rs| is_active(rs))
            .cloned()
            .collect();
        old.sort_by(by_creation);
        let wanted = available - min_available;
        let mut total = 0;
        for rs in old {
            if total >= wanted {
                break;
            }
            let size = rs_replicas(&rs);
            if size == 0 {
                continue;
            }
            let count = size.min(wanted - total);
            let (_, updated) = self.scale_and_record(d, &rs, size - count).await?;
            replace(split, updated);
            total += count;
        }
        Ok(total)
    }

    /// Kubernetes' `rolloutRecreate`.
    async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        pod_map: &HashMap<String, Vec<Arc<Pod>>>,
    ) -> Result<Action, Error> {
        // No new ReplicaSet yet: never scale up before the old ones are down.
        let mut split = self.split_and_sync_revision(d, rs_list, false).await?;
        let mut scaled_down = false;
        for rs in split.old.clone().iter().filter(|rs| is_active(rs)) {
            let (scaled, updated) = self.scale_and_record(d, rs, 0).await?;
            scaled_down |= scaled;
            replace(&mut split, updated);
        }
        if scaled_down || old_pods_running(split.new_rs.as_ref(), &split.old, pod_map) {
            return self.sync_rollout_status(d, &split).await;
        }
        if split.new_rs.is_none() {
            split = self.split_and_sync_revision(d, rs_list, true).await?;
        }
        if let Some(new_rs) = split.new_rs.clone() {
            let (_, updated) = self.scale_and_record(d, &new_rs, replicas(d)).await?;
            split.new_rs = Some(updated);
        }
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &split.old).await?;
        }
        self.sync_rollout_status(d, &split).await
    }

    /// Kubernetes' `cleanupDeployment`: deletes the oldest ReplicaSets beyond
    /// `revisionHistoryLimit`, if they are down to 0 replicas and settled.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = d.spec.opt().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| by_revision(a, b));
        for rs in cleanable.into_iter().take(diff as usize) {
            let settled = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0)
                >= rs.metadata.generation.unwrap_or(0);
            if rs_actual(rs) != 0 || rs_replicas(rs) != 0 || !settled {
                continue;
            }
            tracing::debug!(replicaset = %name_of(&rs.metadata), "cleaning up an old replica set");
            let params = DeleteParams {
                preconditions: rs.metadata.uid.clone().map(|uid| {
                    capstan_api::kube_core::params::Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }
                }),
                ..DeleteParams::default()
            };
            match self
                .rs_api(rs.metadata.namespace.as_deref().unwrap_or_default())
                .delete(name_of(&rs.metadata), &params)
                .await
            {
                Ok(_) => {}
                Err(error) if error.is_not_found() => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Status
    // -----------------------------------------------------------------------------------

    /// Kubernetes' `syncRolloutStatus`: the status with the `Progressing` estimate and the
    /// ReplicaSets' failures; written if it changed, else the Deployment is looked at again
    /// when its progress deadline would pass.
    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        split: &Split,
    ) -> Result<Action, Error> {
        let now = self.now();
        let all = split.all();
        let new_rs = split.new_rs.as_ref();
        let mut status = calculate_status(&all, new_rs, d, now);
        let deadline = progress_deadline(d);
        if deadline.is_none() {
            remove_condition(&mut status, "Progressing");
        }
        let old_status = d.status.clone().unwrap_or_default();
        let current = get_condition(&old_status, "Progressing").cloned();
        let complete_already = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref())
                == Some(reasons::NEW_RS_AVAILABLE);
        if deadline.is_some() && !complete_already {
            let subject = |what: &str| match new_rs {
                Some(rs) => format!("ReplicaSet \"{}\" {what}", name_of(&rs.metadata)),
                None => format!("Deployment \"{}\" {what}", name_of(&d.metadata)),
            };
            if deployment_complete(d, &status) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        reasons::NEW_RS_AVAILABLE,
                        subject("has successfully progressed."),
                        now,
                    ),
                );
            } else if deployment_progressing(d, &status) {
                let mut condition = new_condition(
                    "Progressing",
                    "True",
                    reasons::RS_UPDATED,
                    subject("is progressing."),
                    now,
                );
                if let Some(current) = &current {
                    if compat::is_true(&current.status) {
                        condition.last_transition_time = current.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, condition);
            } else if deployment_timed_out(d, &status, now) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "False",
                        reasons::TIMED_OUT,
                        subject("has timed out progressing."),
                        now,
                    ),
                );
            }
        }
        match replica_failure(&all, new_rs) {
            Some(failure) => set_condition(&mut status, failure),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if d.status.as_ref() == Some(&status) {
            return Ok(self.requeue_stuck(d, &status, now));
        }
        d.status = Some(status);
        self.persist(d, false).await?;
        Ok(Action::await_change())
    }

    /// Kubernetes' `requeueStuckDeployment`: when to look again at a rollout that made no
    /// progress, so the deadline is noticed.
    fn requeue_stuck(&self, d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> Action {
        let (Some(deadline), Some(current)) = (
            progress_deadline(d),
            d.status
                .as_ref()
                .and_then(|s| get_condition(s, "Progressing")),
        ) else {
            return Action::await_change();
        };
        if deployment_complete(d, status) || current.reason.as_deref() == Some(reasons::TIMED_OUT) {
            return Action::await_change();
        }
        let Some(updated) = current.last_update_time.as_ref() else {
            return Action::await_change();
        };
        let due_ms =
            (updated.0.as_millisecond() + i64::from(deadline) * 1000) - now.as_millisecond();
        if due_ms < 1000 {
            // Almost due: look again shortly (Kubernetes requeues rate-limited).
            return Action::requeue(Duration::from_millis(due_ms.clamp(100, 1000) as u64));
        }
        Action::requeue(Duration::from_millis(due_ms as u64))
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
/// watches Pods, with a [`DeploymentReconciler`]. See the [module docs](self).
pub struct DeploymentController {
    controller: Controller<Deployment>,
    reconciler: DeploymentReconciler,
}

impl std::fmt::Debug for DeploymentController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentController")
            .field("controller", &self.controller)
            .finish_non_exhaustive()
    }
}

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

impl DeploymentController {
    /// A controller writing through `client`, with the Deployment, ReplicaSet and Pod
    /// informers of `factory` and Events from `recorder` (whose component is usually
    /// [`COMPONENT`]).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the factory starts the informers at once.
    pub fn new(
        client: Arc<dyn Client>,
        factory: Arc<InformerFactory>,
        recorder: EventRecorder,
    ) -> Self {
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
            let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
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
        DeploymentController {
            controller,
            reconciler,
        }
    }

    /// Runs at most `workers` syncs at once (Kubernetes' `--concurrent-deployment-syncs`).
    #[must_use]
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.controller = self.controller.concurrency(workers);
        self
    }

    /// Uses `clock` instead of the system's wall clock for conditions and deadlines.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.reconciler = self.reconciler.with_clock(clock);
        self
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
