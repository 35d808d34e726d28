//! The Job reconciler: one sync of a Job (counting finished Pods through the tracking
//! finalizer, creating and deleting Pods, backoff, deadline, conditions and status), and
//! the in-memory state it keeps between syncs (pending finalizer removals, failure backoff).

use super::*;
use capstan_api::ext::MetaExt;
use capstan_api::kube_core::ResourceExt;
use capstan_controller::events::EventType;

// ---------------------------------------------------------------------------------------
// In-memory state
// ---------------------------------------------------------------------------------------

/// Finalizer removals sent but not yet seen by the Pod informer (Kubernetes'
/// `finalizerExpectations`), by Pod uid.
#[derive(Debug, Default)]
pub(super) struct PendingRemovals(Mutex<HashSet<String>>);

impl PendingRemovals {
    pub(super) fn observe(&self, delta: &Delta<Pod>) {
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
pub(super) struct BackoffRecord {
    pub(super) failures_after_last_success: u32,
    pub(super) last_failure: Option<Timestamp>,
    pub(super) seen: HashSet<String>,
}

// ---------------------------------------------------------------------------------------
// The reconciler
// ---------------------------------------------------------------------------------------

/// What the [`JobReconciler`] fails with: an API error, after which the runtime retries the
/// Job with backoff.
pub type JobError = Error;

/// Syncs one Job; see the [module docs](self). Built by [`JobController`].
pub struct JobReconciler {
    pub(super) client: Arc<dyn Client>,
    pub(super) pods: Cache<Pod>,
    pub(super) recorder: EventRecorder,
    pub(super) expectations: Arc<Expectations>,
    pub(super) removals: Arc<PendingRemovals>,
    pub(super) backoff: Mutex<HashMap<ObjectKey, BackoffRecord>>,
    pub(super) clock: Clock,
}

impl std::fmt::Debug for JobReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobReconciler")
            .field("expectations", &self.expectations)
            .finish_non_exhaustive()
    }
}

impl JobReconciler {
    pub(super) fn new(
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

    /// Reads the time (for `activeDeadlineSeconds`, conditions and the failure backoff) from
    /// `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The expectations, for inspection.
    pub fn expectations(&self) -> &Arc<Expectations> {
        &self.expectations
    }

    pub(super) fn pod_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Removes the tracking finalizer from `pod` (re-reading it after a conflict). The uid
    /// is remembered as pending until the informer shows the removal.
    pub(super) async fn remove_finalizer(&self, pod: &Pod) -> Result<(), Error> {
        let uid = uid_of(pod);
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
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
    pub(super) async fn remove_finalizers(
        &self,
        pods: &[Arc<Pod>],
    ) -> (HashSet<String>, Option<Error>) {
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
    pub(super) async fn delete_pods(
        &self,
        key: &ObjectKey,
        job: &Job,
        pods: &[Arc<Pod>],
    ) -> (usize, HashSet<String>, Option<Error>) {
        let namespace = job.namespace_str();
        let api = self.pod_api(namespace);
        self.expectations
            .expect(key, 0, pods.iter().map(|p| ObjectKey::of(p.as_ref())));
        let results = futures::future::join_all(pods.iter().map(|pod| {
            let api = &api;
            async move {
                let name = pod.name_any();
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
    pub(super) async fn create_pods(
        &self,
        key: &ObjectKey,
        job: &Job,
        count: usize,
    ) -> (usize, Option<Error>) {
        let namespace = job.namespace_str();
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
    pub(super) fn note_finished(
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
    pub(super) fn backoff_remaining(&self, key: &ObjectKey, now: Timestamp) -> Option<Duration> {
        let records = self.backoff.lock();
        let record = records.get(key)?;
        let last = record.last_failure?;
        let wait = failure_backoff(record.failures_after_last_success).as_millis() as i128;
        let left = wait - millis_between(last, now);
        (left > 0).then(|| Duration::from_millis(left as u64))
    }

    pub(super) async fn write_status(&self, job: &Job, status: JobStatus) -> Result<Job, Error> {
        let namespace = job.namespace_str();
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
        let namespace = job.namespace().unwrap_or_default();
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
        let mut finished_event = None;
        if let Some(condition) =
            finished.filter(|_| uncounted_succeeded.is_empty() && uncounted_failed.is_empty())
        {
            if condition.type_ == "Complete" {
                status.completion_time = Some(Time(now));
                finished_event = Some((
                    EventType::Normal,
                    reasons::COMPLETED.to_string(),
                    "Job completed".to_string(),
                ));
            } else {
                status.active = Some(0);
                finished_event = Some((
                    EventType::Warning,
                    condition.reason.clone().unwrap_or_default(),
                    condition.message.clone().unwrap_or_default(),
                ));
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
        // Only once the finish is written, as Kubernetes' `recordJobFinished`: a write that
        // conflicts is retried, and must not record the finish again.
        if let Some((type_, reason, message)) = finished_event {
            self.recorder.event(&*job, type_, reason, message);
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
