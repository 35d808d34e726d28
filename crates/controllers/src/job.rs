//! The Job controller: Kubernetes' `pkg/controller/job`, over the [`Client`].
//!
//! A Job runs Pods made from `spec.template` until `spec.completions` (default 1) of them
//! have succeeded, at most `spec.parallelism` (default 1) at a time, and gives up after
//! `spec.backoffLimit` (default 6) failures or `spec.activeDeadlineSeconds`. The controller,
//! a [`Reconciler`] run by the [runtime](capstan_controller::runtime) with Jobs as primary kind and Pods
//! as children, does it as Kubernetes does (the `NonIndexed` completion mode):
//!
//! - **Creating.** While fewer than `min(parallelism, completions - succeeded)` Pods are
//!   active (neither finished nor being deleted), the difference is created from the
//!   template (through the ReplicaSet controller's
//!   [`pod_from_template`](crate::replicaset::pod_from_template)) in slow-start batches,
//!   at most [`MAX_POD_CREATE_DELETE_PER_SYNC`] per sync, with `generateName: <job>-`, the
//!   controlling ownerReference, Kubernetes' labels ([`labels`]) and the tracking finalizer.
//!   Extra active Pods (parallelism lowered, completions reached, `suspend`) are deleted in
//!   the ReplicaSet controller's deletion order. [`Expectations`] hold the Job back until
//!   the Pod informer has seen the creates and deletes. Without `completions` (a work
//!   queue), no Pod is added once one succeeded, and the Job completes when one succeeded
//!   and none is active.
//! - **Failure backoff.** After failures, new Pods wait 10 s, doubling per failure since
//!   the last success, capped at 6 minutes ([`failure_backoff`]), counted from when the
//!   controller saw the last failure (kept in memory, as Kubernetes' backoff store).
//! - **Counting** with the [`JOB_TRACKING_FINALIZER`] on every Pod, as Kubernetes does since
//!   1.26: a finished Pod (`Succeeded`; `Failed`, or being deleted without having
//!   succeeded) still holding the finalizer is first added to
//!   `status.uncountedTerminatedPods` (written before anything else), then its finalizer is
//!   removed, then its uid moves to `status.succeeded` or `status.failed`. A Pod deleted by
//!   someone else therefore stays until it is counted, and a controller that stops between
//!   two steps loses nothing: the uids in `uncountedTerminatedPods` are counted once their
//!   Pods are gone or released. Finalizer removals not yet seen by the Pod informer are
//!   remembered, so a lagging cache never counts a Pod twice; every status write carries the
//!   Job's `resourceVersion`, so a stale Job gives 409 and a retry, never a lost count.
//! - **Finishing.** `failed > backoffLimit` (or, with `restartPolicy: OnFailure`, container
//!   restarts of active Pods reaching it) fails the Job with reason `BackoffLimitExceeded`
//!   ("Job has reached the specified backoff limit"); running longer than
//!   `activeDeadlineSeconds` since `status.startTime` fails it with `DeadlineExceeded` ("Job
//!   was active longer than specified deadline"). A failing Job deletes its active Pods,
//!   which count as failed. `succeeded >= completions` with no active Pod completes it. The
//!   `Complete` or `Failed` condition (and `completionTime` on success) is written once every
//!   finished Pod is counted; a finished Job only has its Pods' tracking finalizers removed.
//! - **Status** (status subresource, only when it changed): `startTime` (first sync),
//!   `active`, `ready`, `succeeded`, `failed`, `uncountedTerminatedPods`, `conditions`,
//!   `completionTime`.
//! - **Events**, with Kubernetes' reasons: `SuccessfulCreate` (`Created pod: <name>`),
//!   `SuccessfulDelete` (`Deleted pod: <name>`), `Completed` (`Job completed`), and the
//!   warnings `FailedCreate`, `FailedDelete`, `BackoffLimitExceeded`, `DeadlineExceeded`.
//!
//! Not implemented: the `Indexed` completion mode (such Jobs run as `NonIndexed`), Pod
//! failure and success policies, `podReplacementPolicy: Failed` (terminating Pods are
//! replaced at once, Kubernetes' default `TerminatingOrFailed`), the `Suspended` condition,
//! `ttlSecondsAfterFinished`, and adoption of orphan Pods: a Job's Pods are those whose
//! controlling ownerReference is the Job.
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_api::Client;
//! use capstan_controller::events::{EventBroadcaster, EventOptions};
//! use capstan_controllers::job::{JobController, COMPONENT};
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! async fn run(client: Arc<dyn Client>, stop: tokio::sync::oneshot::Receiver<()>) {
//!     let factory = Arc::new(InformerFactory::new(client.clone(), ReflectorOptions::default()));
//!     let events = EventBroadcaster::new(client.clone(), EventOptions::default());
//!     let controller = JobController::new(client, factory, events.recorder(COMPONENT));
//!     controller.run(async { let _ = stop.await; }).await.unwrap();
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods,
};
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use capstan_api::kube_core::ObjectMeta;
use capstan_api::{Api, Client, Error};
use capstan_watch::{Cache, Delta, InformerFactory, ObjectKey, SharedInformer};
use parking_lot::Mutex;
use tokio::sync::mpsc;

#[cfg(test)]
use crate::daemonset::controlled_by;
use crate::replicaset::{pod_for, pods_to_delete, Expectations};
use capstan_controller::events::{Clock, EventRecorder};
use capstan_controller::runtime::{
    add_controller_index, controlled_or_orphans, controller_owner_key, Action, Context, Controller,
    ControllerError, Reconciler,
};

/// The finalizer that keeps a Job's Pod until the controller has counted it.
pub const JOB_TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

/// The most Pods one sync creates or deletes (Kubernetes' `MaxPodCreateDeletePerSync`).
pub const MAX_POD_CREATE_DELETE_PER_SYNC: usize = 500;

/// The first failure backoff (Kubernetes' `DefaultJobPodFailureBackOff`).
pub const DEFAULT_FAILURE_BACKOFF: Duration = Duration::from_secs(10);

/// The longest failure backoff.
pub const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(6 * 60);

/// The component name the controller's Events report (`source.component`).
pub const COMPONENT: &str = "job-controller";

/// The labels Kubernetes puts on a Job's Pods. kube-apiserver adds them to the Job's template
/// (and generates the selector from them); Capstan's registry does not, so the controller sets
/// them on each Pod it creates.
pub mod labels {
    /// The Job's uid.
    pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
    /// The Job's name.
    pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
    /// The Job's uid (legacy key).
    pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";
    /// The Job's name (legacy key).
    pub const LEGACY_JOB_NAME: &str = "job-name";
}

/// Event and condition reasons, as Kubernetes spells them.
pub mod reasons {
    /// A Pod was created: `Created pod: <name>`.
    pub const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
    /// A Pod could not be created: `Error creating: <error>` (Warning).
    pub const FAILED_CREATE: &str = "FailedCreate";
    /// A Pod was deleted: `Deleted pod: <name>`.
    pub const SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
    /// A Pod could not be deleted: `Error deleting: <error>` (Warning).
    pub const FAILED_DELETE: &str = "FailedDelete";
    /// The Job completed: `Job completed`.
    pub const COMPLETED: &str = "Completed";
    /// Too many failures (Warning, and the `Failed` condition's reason).
    pub const BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
    /// Past `activeDeadlineSeconds` (Warning, and the `Failed` condition's reason).
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
}

/// How long new Pods wait after `failures` failures since the last success: none for 0, then
/// 10 s doubling per failure, at most 6 minutes ([`ExponentialDelay`]'s step `failures - 1`).
///
/// [`ExponentialDelay`]: capstan_watch::ExponentialDelay
pub fn failure_backoff(failures: u32) -> Duration {
    const DELAYS: capstan_watch::ExponentialDelay =
        capstan_watch::ExponentialDelay::new(DEFAULT_FAILURE_BACKOFF, MAX_FAILURE_BACKOFF);
    match failures {
        0 => Duration::ZERO,
        failures => DELAYS.delay(failures - 1),
    }
}

/// The `Complete` or `Failed` condition that is `True` on `job`, if it finished.
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == JOB_TRACKING_FINALIZER)
}

/// Whether `pod` counts as a failure: `Failed`, or deleted before it succeeded (Kubernetes'
/// `isPodFailed` under the default `podReplacementPolicy`).
pub fn is_pod_failed(pod: &Pod) -> bool {
    pod.phase() == "Failed" || (pod.is_terminating() && pod.phase() != "Succeeded")
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn millis_between(from: Timestamp, to: Timestamp) -> i128 {
    to.duration_since(from).as_millis()
}

/// The Pod `job` creates: its template (through the ReplicaSet controller's
/// [`pod_for`]), owned by the Job, with Kubernetes' [`labels`] and the
/// [`JOB_TRACKING_FINALIZER`].
pub fn job_pod(job: &Job) -> Pod {
    let mut template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let pod_labels = meta.labels.get_or_insert_with(BTreeMap::new);
    for (key, value) in [
        (labels::CONTROLLER_UID, &uid),
        (labels::JOB_NAME, &name),
        (labels::LEGACY_CONTROLLER_UID, &uid),
        (labels::LEGACY_JOB_NAME, &name),
    ] {
        pod_labels
            .entry(key.to_string())
            .or_insert_with(|| value.clone());
    }
    let finalizers = meta.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == JOB_TRACKING_FINALIZER) {
        finalizers.push(JOB_TRACKING_FINALIZER.into());
    }
    pod_for(job, template)
}

/// Kubernetes' `pastBackoffLimitOnFailure`: with `restartPolicy: OnFailure`, container
/// restarts of running and pending Pods count against the backoff limit.
fn past_backoff_limit_on_failure(spec: &JobSpec, active: &[Arc<Pod>], limit: i32) -> bool {
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i32 = active
        .iter()
        .filter(|p| matches!(p.phase(), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

fn condition(
    type_: &str,
    reason: Option<&str>,
    message: Option<&str>,
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: reason.map(Into::into),
        message: message.map(Into::into),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn uncounted_of(status: &JobStatus) -> (BTreeSet<String>, BTreeSet<String>) {
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    (
        uncounted
            .succeeded
            .unwrap_or_default()
            .into_iter()
            .collect(),
        uncounted.failed.unwrap_or_default().into_iter().collect(),
    )
}

fn uncounted_status(
    succeeded: &BTreeSet<String>,
    failed: &BTreeSet<String>,
) -> Option<UncountedTerminatedPods> {
    if succeeded.is_empty() && failed.is_empty() {
        return None;
    }
    let list = |set: &BTreeSet<String>| (!set.is_empty()).then(|| set.iter().cloned().collect());
    Some(UncountedTerminatedPods {
        succeeded: list(succeeded),
        failed: list(failed),
    })
}

// ---------------------------------------------------------------------------------------
// In-memory state
// ---------------------------------------------------------------------------------------

/// Finalizer removals sent but not yet seen by the Pod informer (Kubernetes'
/// `finalizerExpectations`), by Pod uid.
#[derive(Debug, Default)]
struct PendingRemovals(Mutex<HashSet<String>>);

impl PendingRemovals {
    fn observe(&self, delta: &Delta<Pod>) {
        match delta {
            Delta::Added(pod) | Delta::Updated { new: pod, .. } => {
                if !has_tracking_finalizer(pod) {
                    self.0.lock().remove(&uid_of(pod));
                }
            }
            Delta::Deleted(pod) => {
                self.0.lock().remove(&uid_of(pod));
            }
        }
    }
}

/// Failures since the last success, for the backoff between Pod creations.
#[derive(Debug, Default)]
struct BackoffRecord {
    failures_after_last_success: u32,
    last_failure: Option<Timestamp>,
    seen: HashSet<String>,
}

// ---------------------------------------------------------------------------------------
// The reconciler
// ---------------------------------------------------------------------------------------

/// What the [`JobReconciler`] fails with: an API error, after which the runtime retries the
/// Job with backoff.
pub type JobError = Error;

/// Syncs one Job; see the [module docs](self). Built by [`JobController`].
pub struct JobReconciler {
    client: Arc<dyn Client>,
    pods: Cache<Pod>,
    recorder: EventRecorder,
    expectations: Arc<Expectations>,
    removals: Arc<PendingRemovals>,
    backoff: Mutex<HashMap<ObjectKey, BackoffRecord>>,
    clock: Clock,
}

impl std::fmt::Debug for JobReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobReconciler")
            .field("expectations", &self.expectations)
            .finish_non_exhaustive()
    }
}

impl JobReconciler {
    fn new(
        client: Arc<dyn Client>,
        pods: Cache<Pod>,
        recorder: EventRecorder,
        expectations: Arc<Expectations>,
        removals: Arc<PendingRemovals>,
    ) -> Self {
        add_controller_index(&pods);
        JobReconciler {
            client,
            pods,
            recorder,
            expectations,
            removals,
            backoff: Mutex::new(HashMap::new()),
            clock: Arc::new(Timestamp::now),
        }
    }

    fn pod_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Removes the tracking finalizer from `pod` (re-reading it after a conflict). The uid
    /// is remembered as pending until the informer shows the removal.
    async fn remove_finalizer(&self, pod: &Pod) -> Result<(), Error> {
        let uid = uid_of(pod);
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api = self.pod_api(&namespace);
        self.removals.0.lock().insert(uid.clone());
        let mut current = pod.clone();
        let mut result = Ok(());
        for attempt in 0..3 {
            if !has_tracking_finalizer(&current) {
                result = Ok(());
                break;
            }
            let rest: Vec<&String> = current
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != JOB_TRACKING_FINALIZER)
                .collect();
            let patch = serde_json::json!({"metadata": {
                "finalizers": rest,
                "resourceVersion": current.metadata.resource_version,
            }});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    result = Ok(());
                    break;
                }
                Err(error) if error.is_not_found() => {
                    result = Ok(());
                    break;
                }
                Err(error) if error.is_conflict() && attempt < 2 => {
                    match api.get_opt(&name).await? {
                        Some(fresh) if fresh.metadata.uid.as_deref() == Some(uid.as_str()) => {
                            current = fresh
                        }
                        _ => {
                            result = Ok(());
                            break;
                        }
                    }
                }
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        if result.is_err() {
            self.removals.0.lock().remove(&uid);
        }
        result
    }

    /// Removes the tracking finalizers of `pods`; returns the uids now free of it and the
    /// first error.
    async fn remove_finalizers(&self, pods: &[Arc<Pod>]) -> (HashSet<String>, Option<Error>) {
        let results =
            futures::future::join_all(pods.iter().map(|pod| self.remove_finalizer(pod))).await;
        let mut removed = HashSet::new();
        let mut first_error = None;
        for (pod, result) in pods.iter().zip(results) {
            match result {
                Ok(()) => {
                    removed.insert(uid_of(pod));
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        (removed, first_error)
    }

    /// Kubernetes' `deleteJobPods`: for each Pod, removes its tracking finalizer, then
    /// deletes it. Returns how many were deleted, the uids freed of the finalizer, and the
    /// first error.
    async fn delete_pods(
        &self,
        key: &ObjectKey,
        job: &Job,
        pods: &[Arc<Pod>],
    ) -> (usize, HashSet<String>, Option<Error>) {
        let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
        let api = self.pod_api(namespace);
        self.expectations
            .expect(key, 0, pods.iter().map(|p| ObjectKey::of(p.as_ref())));
        let results = futures::future::join_all(pods.iter().map(|pod| {
            let api = &api;
            async move {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let outcome = async {
                    self.remove_finalizer(pod).await?;
                    let params = DeleteParams {
                        preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
                            uid: Some(uid),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    api.delete(&name, &params).await.map(|_| ())
                }
                .await;
                match outcome {
                    Ok(()) => {
                        self.recorder.normal(
                            job,
                            reasons::SUCCESSFUL_DELETE,
                            format!("Deleted pod: {name}"),
                        );
                        Ok(true)
                    }
                    Err(error) => {
                        self.expectations
                            .deletion_observed(key, &ObjectKey::of(pod.as_ref()));
                        if error.is_not_found() {
                            return Ok(false);
                        }
                        self.recorder.warning(
                            job,
                            reasons::FAILED_DELETE,
                            format!("Error deleting: {error}"),
                        );
                        Err(error)
                    }
                }
            }
        }))
        .await;
        let mut deleted = 0;
        let mut freed = HashSet::new();
        let mut first_error = None;
        for (pod, result) in pods.iter().zip(results) {
            match result {
                Ok(gone) => {
                    deleted += usize::from(gone);
                    freed.insert(uid_of(pod));
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        (deleted, freed, first_error)
    }

    /// Creates `count` Pods in slow-start batches; returns how many were created and the
    /// first error.
    async fn create_pods(
        &self,
        key: &ObjectKey,
        job: &Job,
        count: usize,
    ) -> (usize, Option<Error>) {
        let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
        let api = self.pod_api(namespace);
        let template = job_pod(job);
        self.expectations.expect(key, count, []);
        let mut remaining = count;
        let mut created = 0;
        let mut batch = 1usize.min(remaining);
        while batch > 0 {
            let results = futures::future::join_all((0..batch).map(|_| {
                let (api, template) = (&api, &template);
                async move {
                    match api.create(&PostParams::default(), template).await {
                        Ok(pod) => {
                            let name = pod.metadata.name.unwrap_or_default();
                            self.recorder.normal(
                                job,
                                reasons::SUCCESSFUL_CREATE,
                                format!("Created pod: {name}"),
                            );
                            Ok(())
                        }
                        Err(error) => {
                            self.recorder.warning(
                                job,
                                reasons::FAILED_CREATE,
                                format!("Error creating: {error}"),
                            );
                            self.expectations.creation_observed(key);
                            Err(error)
                        }
                    }
                }
            }))
            .await;
            remaining -= batch;
            let mut first_error = None;
            for result in results {
                match result {
                    Ok(()) => created += 1,
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            if first_error.is_some() {
                for _ in 0..remaining {
                    self.expectations.creation_observed(key);
                }
                return (created, first_error);
            }
            batch = (2 * batch).min(remaining);
        }
        (created, None)
    }

    /// Notes newly counted finished Pods in the Job's backoff record.
    fn note_finished(
        &self,
        key: &ObjectKey,
        successes: &[String],
        failures: &[String],
        now: Timestamp,
    ) {
        let mut records = self.backoff.lock();
        let record = records.entry(key.clone()).or_default();
        if successes.iter().any(|uid| record.seen.insert(uid.clone())) {
            record.failures_after_last_success = 0;
        }
        for uid in failures {
            if record.seen.insert(uid.clone()) {
                record.failures_after_last_success += 1;
                record.last_failure = Some(now);
            }
        }
    }

    /// How long new Pods of the Job must still wait after its recent failures.
    fn backoff_remaining(&self, key: &ObjectKey, now: Timestamp) -> Option<Duration> {
        let records = self.backoff.lock();
        let record = records.get(key)?;
        let last = record.last_failure?;
        let wait = failure_backoff(record.failures_after_last_success).as_millis() as i128;
        let left = wait - millis_between(last, now);
        (left > 0).then(|| Duration::from_millis(left as u64))
    }

    async fn write_status(&self, job: &Job, status: JobStatus) -> Result<Job, Error> {
        let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
        let api = Api::<Job>::namespaced(self.client.clone(), namespace);
        let mut next = job.clone();
        next.status = Some(status);
        // With the Job's resourceVersion: a stale cache gives 409 and the sync is retried
        // from fresh state, so counts are never applied twice.
        api.update_status(&PostParams::default(), &next).await
    }
}

#[async_trait]
impl Reconciler<Job> for JobReconciler {
    type Error = JobError;

    async fn reconcile(&self, job: Arc<Job>, ctx: &Context) -> Result<Action, Error> {
        let key = ctx.key().clone();
        let namespace = job.metadata.namespace.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let now = (self.clock)();
        // Expectations before the cache, as Kubernetes reads them.
        let satisfied = self.expectations.satisfied(&key);
        // Only its own Pods (Jobs adopt none), from the controller-uid index.
        let pods: Vec<Arc<Pod>> = controlled_or_orphans(&self.pods, &namespace, &uid, false);

        if finished_condition(&job).is_some() {
            // A finished Job keeps no tracking finalizers.
            let leftovers: Vec<Arc<Pod>> = pods
                .iter()
                .filter(|p| has_tracking_finalizer(p))
                .cloned()
                .collect();
            let (_, error) = self.remove_finalizers(&leftovers).await;
            self.backoff.lock().remove(&key);
            return match error {
                Some(error) => Err(error),
                None => Ok(Action::await_change()),
            };
        }

        let spec = job.spec.clone().unwrap_or_default();
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0);
        let suspended = spec.suspend == Some(true);
        let old = job.status.clone().unwrap_or_default();
        let mut status = old.clone();
        if status.start_time.is_none() && !suspended {
            status.start_time = Some(Time(now));
        }
        let pending: HashSet<String> = self.removals.0.lock().clone();
        let tracked = |pod: &Pod| has_tracking_finalizer(pod) && !pending.contains(&uid_of(pod));

        // 1. Pods newly finished (still holding the finalizer) join the uncounted ones.
        let (mut uncounted_succeeded, mut uncounted_failed) = uncounted_of(&old);
        let (mut new_successes, mut new_failures) = (Vec::new(), Vec::new());
        for pod in pods.iter().filter(|p| tracked(p)) {
            let pod_uid = uid_of(pod);
            if pod.phase() == "Succeeded" {
                if !uncounted_failed.contains(&pod_uid)
                    && uncounted_succeeded.insert(pod_uid.clone())
                {
                    new_successes.push(pod_uid);
                }
            } else if is_pod_failed(pod)
                && !uncounted_succeeded.contains(&pod_uid)
                && uncounted_failed.insert(pod_uid.clone())
            {
                new_failures.push(pod_uid);
            }
        }
        self.note_finished(&key, &new_successes, &new_failures, now);
        let active_pods: Vec<Arc<Pod>> = pods.iter().filter(|p| p.is_active()).cloned().collect();
        let mut active = active_pods.len();
        let succeeded = old.succeeded.unwrap_or(0) + uncounted_succeeded.len() as i32;
        let failed = old.failed.unwrap_or(0) + uncounted_failed.len() as i32;

        // 2. Has the Job failed?
        let deadline_left = spec.active_deadline_seconds.and_then(|seconds| {
            let start = status.start_time.as_ref()?.0;
            (!suspended).then(|| i128::from(seconds) * 1000 - millis_between(start, now))
        });
        let mut finished = if failed > backoff_limit
            || past_backoff_limit_on_failure(&spec, &active_pods, backoff_limit)
        {
            Some(condition(
                "Failed",
                Some(reasons::BACKOFF_LIMIT_EXCEEDED),
                Some("Job has reached the specified backoff limit"),
                now,
            ))
        } else if deadline_left.is_some_and(|left| left <= 0) {
            Some(condition(
                "Failed",
                Some(reasons::DEADLINE_EXCEEDED),
                Some("Job was active longer than specified deadline"),
                now,
            ))
        } else {
            None
        };
        if finished.is_some() {
            // Every Pod still running counts as failed once the Job has failed.
            for pod in active_pods.iter().filter(|p| tracked(p)) {
                let pod_uid = uid_of(pod);
                if !uncounted_succeeded.contains(&pod_uid) {
                    uncounted_failed.insert(pod_uid);
                }
            }
        }

        // 3. Record the uncounted Pods before acting on them.
        status.uncounted_terminated_pods =
            uncounted_status(&uncounted_succeeded, &uncounted_failed);
        let mut current = (*job).clone();
        if status.uncounted_terminated_pods != old.uncounted_terminated_pods
            || status.start_time != old.start_time
        {
            current = self.write_status(&current, status.clone()).await?;
        }

        // 4. Act: delete everything on failure, else create or delete the difference.
        let mut freed: HashSet<String> = HashSet::new();
        let mut first_error = None;
        let mut wait: Option<Duration> = None;
        if finished.is_some() {
            let (deleted, unfinalized, error) = self.delete_pods(&key, &job, &active_pods).await;
            active -= deleted;
            freed.extend(unfinalized);
            first_error = error;
        } else if satisfied && job.metadata.deletion_timestamp.is_none() {
            let want = if suspended {
                0
            } else {
                match spec.completions {
                    None if succeeded > 0 => active,
                    None => parallelism as usize,
                    Some(completions) => (completions - succeeded).clamp(0, parallelism) as usize,
                }
            };
            if active > want {
                let excess = (active - want).min(MAX_POD_CREATE_DELETE_PER_SYNC);
                let victims = pods_to_delete(&active_pods, &active_pods, excess);
                let (deleted, unfinalized, error) = self.delete_pods(&key, &job, &victims).await;
                active -= deleted;
                freed.extend(unfinalized);
                first_error = error;
            } else if active < want {
                match self.backoff_remaining(&key, now) {
                    Some(left) => wait = Some(left),
                    None => {
                        let count = (want - active).min(MAX_POD_CREATE_DELETE_PER_SYNC);
                        let (created, error) = self.create_pods(&key, &job, count).await;
                        active += created;
                        first_error = error;
                    }
                }
            }
            let complete = match spec.completions {
                None => succeeded > 0 && active == 0,
                Some(completions) => succeeded >= completions && active == 0,
            };
            if complete {
                finished = Some(condition("Complete", None, None, now));
            }
        }

        // 5. Remove the finalizers of the uncounted Pods, then count them.
        let to_free: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| tracked(p) && !freed.contains(&uid_of(p)))
            .filter(|p| {
                let pod_uid = uid_of(p);
                uncounted_succeeded.contains(&pod_uid) || uncounted_failed.contains(&pod_uid)
            })
            .cloned()
            .collect();
        let (removed, error) = self.remove_finalizers(&to_free).await;
        freed.extend(removed);
        if first_error.is_none() {
            first_error = error;
        }
        let held: HashSet<String> = pods
            .iter()
            .filter(|p| tracked(p) && !freed.contains(&uid_of(p)))
            .map(|p| uid_of(p))
            .collect();
        let before = (uncounted_succeeded.len(), uncounted_failed.len());
        uncounted_succeeded.retain(|pod_uid| held.contains(pod_uid));
        uncounted_failed.retain(|pod_uid| held.contains(pod_uid));
        status.succeeded =
            Some(old.succeeded.unwrap_or(0) + (before.0 - uncounted_succeeded.len()) as i32);
        status.failed = Some(old.failed.unwrap_or(0) + (before.1 - uncounted_failed.len()) as i32);
        status.uncounted_terminated_pods =
            uncounted_status(&uncounted_succeeded, &uncounted_failed);
        status.active = Some(active as i32);
        status.ready = Some(
            active_pods
                .iter()
                .filter(|p| p.is_ready())
                .count()
                .min(active) as i32,
        );

        // 6. Finish once every finished Pod is counted.
        let mut done = false;
        if let Some(condition) =
            finished.filter(|_| uncounted_succeeded.is_empty() && uncounted_failed.is_empty())
        {
            if condition.type_ == "Complete" {
                status.completion_time = Some(Time(now));
                self.recorder
                    .normal(&*job, reasons::COMPLETED, "Job completed");
            } else {
                status.active = Some(0);
                self.recorder.warning(
                    &*job,
                    condition.reason.clone().unwrap_or_default(),
                    condition.message.clone().unwrap_or_default(),
                );
            }
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition);
            done = true;
        }
        if current.status.clone().unwrap_or_default() != status {
            self.write_status(&current, status).await?;
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        if done {
            self.backoff.lock().remove(&key);
            self.expectations.forget(&key);
            return Ok(Action::await_change());
        }
        let mut next: Option<Duration> = wait;
        if let Some(left) = deadline_left.filter(|left| *left > 0) {
            let left = Duration::from_millis(left as u64);
            next = Some(next.map_or(left, |n| n.min(left)));
        }
        if let Some(expiry) = self.expectations.expires_in(&key) {
            let expiry = expiry + Duration::from_millis(1);
            next = Some(next.map_or(expiry, |n| n.min(expiry)));
        }
        Ok(next.map_or_else(Action::await_change, Action::requeue))
    }
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

/// The Job controller: a [`Controller`] for Jobs that owns Pods, with a [`JobReconciler`].
/// See the [module docs](self).
pub struct JobController {
    controller: Controller<Job>,
    reconciler: JobReconciler,
}

impl std::fmt::Debug for JobController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobController")
            .field("controller", &self.controller)
            .finish_non_exhaustive()
    }
}

impl JobController {
    /// A controller writing through `client`, with the Job and Pod informers of `factory`
    /// and Events from `recorder` (whose component is usually [`COMPONENT`]).
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
        let removals = Arc::new(PendingRemovals::default());
        let pod_informer: Arc<SharedInformer<Pod>> = factory.informer::<Pod>();
        let controller = Controller::<Job>::new(factory).named(COMPONENT);
        // As in the ReplicaSet controller: observations ride on their own subscription,
        // drained on the Pod feed right before it queues keys.
        let observations: Mutex<mpsc::UnboundedReceiver<Delta<Pod>>> =
            Mutex::new(pod_informer.subscribe());
        let (observer, removal_observer) = (expectations.clone(), removals.clone());
        let controller = controller.watches_informer(pod_informer.clone(), move |pod: &Pod| {
            {
                let mut observations = observations.lock();
                while let Ok(delta) = observations.try_recv() {
                    observer.observe::<Job>(&delta);
                    removal_observer.observe(&delta);
                }
            }
            controller_owner_key::<Job, Pod>(pod)
        });
        let reconciler = JobReconciler::new(
            client,
            pod_informer.cache().clone(),
            recorder,
            expectations,
            removals,
        );
        JobController {
            controller,
            reconciler,
        }
    }

    /// Reads the time (for `startTime`, `completionTime`, conditions, the deadline and the
    /// failure backoff) from `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.reconciler.clock = Arc::new(clock);
        self
    }

    /// Runs at most `workers` syncs at once (Kubernetes' `--concurrent-job-syncs`).
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
    use capstan_api::k8s_openapi::api::core::v1::PodStatus;

    #[test]
    fn failure_backoff_starts_at_ten_seconds_doubles_and_caps_at_six_minutes() {
        assert_eq!(failure_backoff(0), Duration::ZERO);
        assert_eq!(failure_backoff(1), Duration::from_secs(10));
        assert_eq!(failure_backoff(2), Duration::from_secs(20));
        assert_eq!(failure_backoff(5), Duration::from_secs(160));
        assert_eq!(failure_backoff(6), Duration::from_secs(320));
        assert_eq!(failure_backoff(7), MAX_FAILURE_BACKOFF);
        assert_eq!(failure_backoff(200), MAX_FAILURE_BACKOFF);
    }

    #[test]
    fn job_pods_carry_the_tracking_finalizer_labels_and_owner() {
        let job = Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("default".into()),
                uid: Some("uid-pi".into()),
                ..ObjectMeta::default()
            },
            ..Job::default()
        };
        let pod = job_pod(&job);
        assert!(has_tracking_finalizer(&pod));
        assert!(controlled_by(&pod, "uid-pi"));
        let pod_labels = pod.metadata.labels.unwrap();
        assert_eq!(pod_labels[labels::JOB_NAME], "pi");
        assert_eq!(pod_labels[labels::CONTROLLER_UID], "uid-pi");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-"));
    }

    #[test]
    fn a_pod_deleted_before_it_succeeded_counts_as_failed() {
        let mut pod = Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert!(!is_pod_failed(&pod));
        pod.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(is_pod_failed(&pod));
        pod.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!is_pod_failed(&pod));
    }
}
