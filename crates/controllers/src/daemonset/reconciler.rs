//! The DaemonSet reconciler: one sync of a DaemonSet (which Nodes need a Pod, which Pods go,
//! the rolling update) and its status.

use super::*;
use capstan_api::ext::MetaExt;
use capstan_api::kube_core::ResourceExt;

// ---------------------------------------------------------------------------------------
// The reconciler
// ---------------------------------------------------------------------------------------

/// What the [`DaemonSetReconciler`] fails with: an API error, after which the runtime
/// retries the DaemonSet with backoff.
pub type DaemonSetError = Error;

/// Syncs one DaemonSet; see the [module docs](self). Built by [`DaemonSetController`].
pub struct DaemonSetReconciler {
    pub(super) client: Arc<dyn Client>,
    pub(super) pods: Cache<Pod>,
    pub(super) nodes: Cache<Node>,
    pub(super) recorder: EventRecorder,
    pub(super) expectations: Arc<Expectations>,
    pub(super) clock: Clock,
    /// (DaemonSet uid, Node, message) of the FailedPlacement events already recorded.
    pub(super) placement_warnings: Mutex<HashSet<(String, String, String)>>,
}

impl std::fmt::Debug for DaemonSetReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonSetReconciler")
            .field("expectations", &self.expectations)
            .finish_non_exhaustive()
    }
}

/// What one sync decided to do.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) create_on: Vec<String>,
    pub(super) delete: Vec<Arc<Pod>>,
}

impl DaemonSetReconciler {
    /// A reconciler reading Pods (to which it adds the controller-uid index) and Nodes from
    /// the caches and writing through `client`.
    pub fn new(
        client: Arc<dyn Client>,
        pods: Cache<Pod>,
        nodes: Cache<Node>,
        recorder: EventRecorder,
        expectations: Arc<Expectations>,
    ) -> Self {
        add_controller_index(&pods);
        DaemonSetReconciler {
            client,
            pods,
            nodes,
            recorder,
            expectations,
            clock: Arc::new(Timestamp::now),
            placement_warnings: Mutex::new(HashSet::new()),
        }
    }

    /// Reads the time (for `minReadySeconds`) from `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The expectations this reconciler keeps.
    pub fn expectations(&self) -> &Arc<Expectations> {
        &self.expectations
    }

    /// Kubernetes' `podsShouldBeOnNode` for every Node, plus the Pods of vanished Nodes.
    pub(super) fn plan_manage(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        node_to_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    ) -> Plan {
        let mut plan = Plan::default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        for node in nodes {
            let name = node.name_any();
            let placement = node_should_run_daemon_pod(node, ds);
            let pods = node_to_pods
                .get(&name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let warning_key = |message: &str| (uid.clone(), name.clone(), message.to_string());
            match &placement.untolerated_taint {
                Some(taint) if pods.is_empty() => {
                    let message = format!(
                        "failed to place pod on {name:?}: node(s) had untolerated taint {{{}: {}}}",
                        taint.key,
                        taint.value.as_deref().unwrap_or_default()
                    );
                    if self.placement_warnings.lock().insert(warning_key(&message)) {
                        self.recorder
                            .warning(ds, reasons::FAILED_PLACEMENT, message);
                    }
                }
                _ => self
                    .placement_warnings
                    .lock()
                    .retain(|(u, n, _)| !(u == &uid && n == &name)),
            }
            if placement.should_run && pods.is_empty() {
                plan.create_on.push(name);
            } else if placement.should_continue_running {
                let mut running: Vec<&Arc<Pod>> = Vec::new();
                for pod in pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                {
                    if pod.phase() == "Failed" {
                        self.recorder.warning(
                            ds,
                            reasons::FAILED_DAEMON_POD,
                            format!(
                                "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                                pod.namespace_str(),
                                pod.name_str()
                            ),
                        );
                        plan.delete.push(pod.clone());
                    } else {
                        running.push(pod);
                    }
                }
                // More than one: keep the oldest (the first created, running before not).
                running.sort_by(|a, b| {
                    created_at(a)
                        .cmp(&created_at(b))
                        .then_with(|| b.is_ready().cmp(&a.is_ready()))
                        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
                });
                plan.delete.extend(running.into_iter().skip(1).cloned());
            } else {
                plan.delete.extend(
                    pods.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .cloned(),
                );
            }
        }
        // Pods bound to Nodes that no longer exist.
        let known: HashSet<&str> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        for (node, pods) in node_to_pods {
            if !known.contains(node.as_str()) {
                plan.delete.extend(
                    pods.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .cloned(),
                );
            }
        }
        plan.create_on.truncate(BURST_REPLICAS);
        plan.delete.truncate(BURST_REPLICAS);
        plan
    }

    /// Kubernetes' `rollingUpdate` without surge: the old Pods to delete now.
    pub(super) fn plan_rolling_update(
        &self,
        ds: &DaemonSet,
        hash: &str,
        desired: usize,
        node_to_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    ) -> Vec<Arc<Pod>> {
        let max_unavailable = max_unavailable(ds, desired);
        let min_ready = ds.spec.opt().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = (self.clock)();
        let mut unavailable = 0usize;
        let mut replace_now: Vec<Arc<Pod>> = Vec::new();
        let mut candidates: Vec<Arc<Pod>> = Vec::new();
        for pods in node_to_pods.values() {
            let (mut new_pod, mut old_pod, mut ok) = (None, None, true);
            for pod in pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
            {
                let slot = if pod_hash(pod) == Some(hash) {
                    &mut new_pod
                } else {
                    &mut old_pod
                };
                if slot.is_some() {
                    ok = false;
                }
                *slot = Some(pod.clone());
            }
            if !ok {
                unavailable += 1;
                continue;
            }
            match (new_pod, old_pod) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new_pod), None) => {
                    if !is_pod_available(&new_pod, min_ready, now) {
                        unavailable += 1;
                    }
                }
                (None, Some(old_pod)) => {
                    if !is_pod_available(&old_pod, min_ready, now) {
                        replace_now.push(old_pod);
                    } else if unavailable < max_unavailable {
                        candidates.push(old_pod);
                    }
                }
            }
        }
        let room = max_unavailable
            .saturating_sub(unavailable)
            .min(candidates.len());
        replace_now.extend(candidates.into_iter().take(room));
        replace_now.truncate(BURST_REPLICAS);
        replace_now
    }

    /// Kubernetes' `syncNodes`: creates (slow start) and deletes, with expectations.
    pub(super) async fn sync_nodes(
        &self,
        key: &ObjectKey,
        ds: &DaemonSet,
        hash: &str,
        plan: Plan,
    ) -> Result<(), Error> {
        let namespace = ds.namespace_str();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.expectations.expect(
            key,
            plan.create_on.len(),
            plan.delete.iter().map(|p| ObjectKey::of(p.as_ref())),
        );
        let mut first_error = None;
        let mut remaining: &[String] = &plan.create_on;
        let mut batch = 1usize;
        while !remaining.is_empty() {
            let (now, later) = remaining.split_at(batch.min(remaining.len()));
            remaining = later;
            let results = futures::future::join_all(now.iter().map(|node| {
                let api = &api;
                async move {
                    let pod = daemon_pod(ds, node, hash);
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(pod) => {
                            let name = pod.metadata.name.unwrap_or_default();
                            self.recorder.normal(
                                ds,
                                reasons::SUCCESSFUL_CREATE,
                                format!("Created pod: {name}"),
                            );
                            Ok(())
                        }
                        Err(error) => {
                            self.recorder.warning(
                                ds,
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
            if let Some(error) = results.into_iter().find_map(Result::err) {
                // The creations never attempted will never be observed either.
                for _ in 0..remaining.len() {
                    self.expectations.creation_observed(key);
                }
                first_error = Some(error);
                break;
            }
            batch *= 2;
        }
        let results = futures::future::join_all(plan.delete.iter().map(|pod| {
            let api = &api;
            async move {
                let name = pod.name_any();
                let params = DeleteParams {
                    preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => {
                        self.recorder.normal(
                            ds,
                            reasons::SUCCESSFUL_DELETE,
                            format!("Deleted pod: {name}"),
                        );
                        Ok(())
                    }
                    Err(error) => {
                        self.expectations
                            .deletion_observed(key, &ObjectKey::of(pod.as_ref()));
                        if error.is_not_found() {
                            return Ok(());
                        }
                        self.recorder.warning(
                            ds,
                            reasons::FAILED_DELETE,
                            format!("Error deleting: {error}"),
                        );
                        Err(error)
                    }
                }
            }
        }))
        .await;
        match first_error.or_else(|| results.into_iter().find_map(Result::err)) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Kubernetes' `updateDaemonSetStatus`, computed.
    pub(super) fn calculate_status(
        &self,
        ds: &DaemonSet,
        hash: &str,
        nodes: &[Arc<Node>],
        node_to_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    ) -> DaemonSetStatus {
        let min_ready = ds.spec.opt().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = (self.clock)();
        let mut status = DaemonSetStatus {
            observed_generation: ds.metadata.generation,
            ..ds.status.clone().unwrap_or_default()
        };
        let (mut desired, mut current, mut misscheduled, mut ready, mut available, mut updated) =
            (0, 0, 0, 0, 0, 0);
        for node in nodes {
            let name = node.name_str();
            let mut pods: Vec<&Arc<Pod>> = node_to_pods.get(name).into_iter().flatten().collect();
            let placement = node_should_run_daemon_pod(node, ds);
            if placement.should_run {
                desired += 1;
                if pods.is_empty() {
                    continue;
                }
                current += 1;
                pods.sort_by_key(|p| created_at(p));
                let pod = pods[0];
                if pod.is_ready() {
                    ready += 1;
                    if is_pod_available(pod, min_ready, now) {
                        available += 1;
                    }
                }
                if pod_hash(pod) == Some(hash) {
                    updated += 1;
                }
            } else if !pods.is_empty() {
                misscheduled += 1;
            }
        }
        status.desired_number_scheduled = desired;
        status.current_number_scheduled = current;
        status.number_misscheduled = misscheduled;
        status.number_ready = ready;
        status.number_available = Some(available);
        status.number_unavailable = Some(desired - available);
        status.updated_number_scheduled = Some(updated);
        status
    }

    pub(super) async fn update_status(
        &self,
        ds: &DaemonSet,
        status: DaemonSetStatus,
    ) -> Result<(), Error> {
        if ds.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let namespace = ds.namespace_str();
        let api = Api::<DaemonSet>::namespaced(self.client.clone(), namespace);
        let mut current = ds.clone();
        current.status = Some(status);
        match api.update_status(&PostParams::default(), &current).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => Ok(()),
            // A conflict means the cache was stale: the next sync (queued by the change, or
            // this error's backoff) computes again from fresh state.
            Err(error) => Err(error),
        }
    }
}

#[async_trait]
impl Reconciler<DaemonSet> for DaemonSetReconciler {
    type Error = DaemonSetError;

    async fn reconcile(&self, ds: Arc<DaemonSet>, ctx: &Context) -> Result<Action, Error> {
        let key = ctx.key().clone();
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let namespace = ds.namespace().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let template = ds
            .spec
            .opt()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let hash = template_hash(&template);
        // Expectations before the caches, as Kubernetes reads them.
        let needs_sync = self.expectations.satisfied(&key);
        let mut nodes = self.nodes.list();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut node_to_pods: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        // Only its own Pods (DaemonSets adopt none), from the controller-uid index.
        for pod in controlled_or_orphans(&self.pods, &namespace, &uid, false) {
            // A deleted Pod that has also finished no longer occupies its Node.
            let finished = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            if finished && pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(node) = target_node(&pod) {
                node_to_pods.entry(node).or_default().push(pod);
            }
        }

        let mut sync_error = None;
        if needs_sync {
            let mut plan = self.plan_manage(&ds, &nodes, &node_to_pods);
            if plan.create_on.is_empty() && plan.delete.is_empty() && is_rolling_update(&ds) {
                let desired = nodes
                    .iter()
                    .filter(|n| node_should_run_daemon_pod(n, &ds).should_run)
                    .count();
                plan.delete = self.plan_rolling_update(&ds, &hash, desired, &node_to_pods);
            }
            if !plan.create_on.is_empty() || !plan.delete.is_empty() {
                tracing::debug!(
                    daemonset = %key,
                    create = plan.create_on.len(),
                    delete = plan.delete.len(),
                    "syncing nodes"
                );
                sync_error = self.sync_nodes(&key, &ds, &hash, plan).await.err();
            }
        }
        let status = self.calculate_status(&ds, &hash, &nodes, &node_to_pods);
        let waiting_for_availability =
            status.number_ready > status.number_available.unwrap_or_default();
        self.update_status(&ds, status).await?;
        if let Some(error) = sync_error {
            return Err(error);
        }
        let min_ready = ds.spec.opt().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        if min_ready > 0 && waiting_for_availability {
            return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
        }
        if let Some(expiry) = self.expectations.expires_in(&key) {
            return Ok(Action::requeue(expiry + Duration::from_millis(1)));
        }
        Ok(Action::await_change())
    }
}
