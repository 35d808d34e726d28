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
//!   template (through the shared [`pod_for`](crate::util::pod_for)) in slow-start batches,
//!   at most [`MAX_POD_CREATE_DELETE_PER_SYNC`] per sync, with `generateName: <job>-`, the
//!   controlling ownerReference, Kubernetes' labels ([`labels`]) and the tracking finalizer.
//!   Extra active Pods (parallelism lowered, completions reached, `suspend`) are deleted in
//!   the shared deletion order ([`pods_to_delete`](crate::util::pods_to_delete)). [`Expectations`](crate::util::Expectations) hold the Job back until
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
//! use capstan_controllers::job::{self, COMPONENT};
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! async fn run(client: Arc<dyn Client>, stop: tokio::sync::oneshot::Receiver<()>) {
//!     let factory = Arc::new(InformerFactory::new(client.clone(), ReflectorOptions::default()));
//!     let events = EventBroadcaster::new(client.clone(), EventOptions::default());
//!     let controller = job::controller(client, factory, events.recorder(COMPONENT));
//!     controller.run(async { let _ = stop.await; }).await.unwrap();
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

use capstan_controller::events::{Clock, EventRecorder};
use capstan_controller::runtime::{
    add_controller_index, controlled_or_orphans, controller_owner_key, Action, Context, Controller,
    ControllerError, ManagedController, Reconciler,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::context::{BuiltinController, ControllerContext, StopSignal};
use crate::util::{pod_for, pods_to_delete, Expectations};

mod reconciler;
#[cfg(test)]
mod tests;

pub use reconciler::*;

/// The finalizer that keeps a Job's Pod until the controller has counted it.
pub const JOB_TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

/// The most Pods one sync creates or deletes (Kubernetes' `MaxPodCreateDeletePerSync`).
pub const MAX_POD_CREATE_DELETE_PER_SYNC: usize = 500;

/// The first failure backoff (Kubernetes' `DefaultJobPodFailureBackOff`).
pub const DEFAULT_FAILURE_BACKOFF: Duration = Duration::from_secs(10);

/// The longest failure backoff.
pub const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(6 * 60);

/// Kubernetes' name for the controller: what `--controllers` lists.
pub const NAME: &str = "job-controller";

/// The component name the controller's Events report (`source.component`).
pub const COMPONENT: &str = NAME;

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
// The controller
// ---------------------------------------------------------------------------------------

/// The Job controller: a [`Controller`] for Jobs that owns Pods, run with a
/// [`JobReconciler`]. See the [module docs](self). Build it with [`controller`]; set a clock
/// with [`map_reconciler`](ManagedController::map_reconciler) and
/// [`JobReconciler::with_clock`]; tune its workers (Kubernetes' `--concurrent-job-syncs`)
/// with [`concurrency`](ManagedController::concurrency).
pub type JobController = ManagedController<Job, JobReconciler>;

/// A controller writing through `client`, with the Job and Pod informers of `factory`
/// and Events from `recorder` (whose component is usually [`COMPONENT`]).
///
/// # Panics
///
/// Outside a tokio runtime: the factory starts the informers at once.
pub fn controller(
    client: Arc<dyn Client>,
    factory: Arc<InformerFactory>,
    recorder: EventRecorder,
) -> JobController {
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
    ManagedController::new(controller, reconciler)
}

impl BuiltinController for JobController {
    const NAME: &'static str = NAME;
    const ALIASES: &'static [&'static str] = &["job"];

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
