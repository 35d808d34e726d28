//! The `Scheduler`: informers feed the cache and the queue, one loop schedules pods one at a
//! time, and binding runs on its own task per pod.

use capstan_api::kube_core::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::ext::{MetaExt, PodExt};
use capstan_api::k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use capstan_api::kube_core::params::{Patch, PatchParams, PostParams};
use capstan_api::{Api, Client};
use capstan_controller::events::EventRecorder;
use capstan_controller::leader::{LeaderElector, RunOutcome};
use capstan_watch::{Delta, InformerFactory, InformerSyncCheck, ObjectKey, ReflectorOptions};

use crate::cache::{Cache, Snapshot};
use crate::framework::{
    pod_key, BindPlugin, CycleState, Framework, PermitDecision, Plugin, PluginRegistry,
    QueuedPodInfo, SchedulerPlugin, Status, DEFAULT_SCHEDULER_NAME,
};
use crate::metrics::SchedulerMetrics;
use crate::queue::{ClusterEvent, SchedulingQueue};
use crate::schedule::{schedule_pod, ScheduleError};
use crate::waiting::WaitingPods;

/// The default binder's name.
pub const DEFAULT_BINDER: &str = "DefaultBinder";

/// Binds through the `Client`. The API has no `pods/binding` subresource yet, so the bind is
/// a JSON merge patch of `spec.nodeName` carrying the pod's `resourceVersion` (a conditional
/// write: a pod changed since it was read gives 409, and the pod is retried).
#[derive(Clone)]
pub struct DefaultBinder {
    client: Arc<dyn Client>,
}

impl std::fmt::Debug for DefaultBinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DefaultBinder")
    }
}

impl DefaultBinder {
    /// A binder writing through `client`.
    pub fn new(client: Arc<dyn Client>) -> Self {
        DefaultBinder { client }
    }

    /// A registry holding only this binder, to merge into the default registry.
    pub fn registry(client: Arc<dyn Client>) -> PluginRegistry {
        let binder = Arc::new(DefaultBinder::new(client));
        let mut r = PluginRegistry::new();
        r.register(DEFAULT_BINDER, move |_| {
            Ok(Plugin::builder(binder.clone()).bind().build())
        })
        .expect("empty registry");
        r
    }
}

impl SchedulerPlugin for DefaultBinder {
    fn name(&self) -> &str {
        DEFAULT_BINDER
    }
}

#[async_trait]
impl BindPlugin for DefaultBinder {
    async fn bind(&self, _: &CycleState, pod: &Pod, node_name: &str) -> Status {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "spec": {"nodeName": node_name},
        });
        let name = pod.name_str();
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Status::success(),
            Err(e) => Status::error(format!("binding pod {ns}/{name}: {e}")),
        }
    }
}

/// The default scheduler: a registry and profile (with [`DefaultBinder`] and
/// [`DefaultPreemption`](crate::plugins::DefaultPreemption), both writing through `client`)
/// built into a [`Framework`].
pub fn default_framework(
    client: Arc<dyn Client>,
    recorder: EventRecorder,
) -> crate::Result<Framework> {
    let registry = in_tree_registry(client, recorder);
    let profile = crate::plugins::default_profile()
        .with_plugin(crate::framework::PluginConfig::new(
            crate::plugins::DEFAULT_PREEMPTION,
        ))
        .with_plugin(crate::framework::PluginConfig::new(DEFAULT_BINDER));
    Framework::new(&registry, &profile)
}

/// Every in-tree plugin: [`default_registry`](crate::plugins::default_registry) plus
/// [`DefaultBinder`] and [`DefaultPreemption`](crate::plugins::DefaultPreemption), both
/// writing through `client` (kube-scheduler's in-tree registry). Merge your own plugins into
/// it to enable them from a profile or a
/// [`KubeSchedulerConfiguration`](crate::config::KubeSchedulerConfiguration).
pub fn in_tree_registry(client: Arc<dyn Client>, recorder: EventRecorder) -> PluginRegistry {
    let mut registry = crate::plugins::default_registry();
    registry
        .merge(DefaultBinder::registry(client.clone()))
        .expect("DefaultBinder is not a default plugin");
    registry
        .merge(crate::plugins::DefaultPreemption::registry(
            client, recorder,
        ))
        .expect("DefaultPreemption is not a default plugin");
    registry
}

/// Schedules the pending pods whose `spec.schedulerName` is one of its profiles' names, each
/// with that profile's framework.
pub struct Scheduler {
    client: Arc<dyn Client>,
    /// One framework per profile; all share the queue (and so the first one's QueueSort).
    frameworks: Vec<Arc<Framework>>,
    cache: Arc<Cache>,
    queue: Arc<SchedulingQueue>,
    waiting: Arc<WaitingPods>,
    metrics: Arc<SchedulerMetrics>,
    recorder: EventRecorder,
    sync_check: Option<InformerSyncCheck>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let profiles: Vec<&str> = self.frameworks.iter().map(|f| f.profile_name()).collect();
        f.debug_struct("Scheduler")
            .field("profiles", &profiles)
            .finish()
    }
}

impl Scheduler {
    /// A scheduler running `framework`, recording Events with `recorder` and writing pods'
    /// `PodScheduled` condition through `client`.
    pub fn new(client: Arc<dyn Client>, framework: Framework, recorder: EventRecorder) -> Self {
        let queue = SchedulingQueue::new(framework.queue_sort().cloned());
        Scheduler {
            client,
            frameworks: vec![Arc::new(framework)],
            cache: Arc::new(Cache::new()),
            queue: Arc::new(queue),
            waiting: Arc::new(WaitingPods::new()),
            metrics: Arc::default(),
            recorder,
            sync_check: None,
        }
    }

    /// A scheduler serving several profiles (kube-scheduler's `profiles`): a pod is scheduled
    /// by the framework whose profile name is its `spec.schedulerName`. They share one queue,
    /// ordered by the first framework's QueueSort plugin (a
    /// [`KubeSchedulerConfiguration`](crate::config::KubeSchedulerConfiguration) checks that
    /// every profile has the same), one cache and one binding loop.
    ///
    /// Errors: [`Error::InvalidProfile`](crate::Error::InvalidProfile) for no framework, or
    /// two with the same profile name.
    pub fn with_profiles(
        client: Arc<dyn Client>,
        frameworks: Vec<Framework>,
        recorder: EventRecorder,
    ) -> crate::Result<Self> {
        let mut frameworks = frameworks.into_iter();
        let first = frameworks
            .next()
            .ok_or_else(|| crate::Error::InvalidProfile("no profile".into()))?;
        let mut scheduler = Scheduler::new(client, first, recorder);
        for framework in frameworks {
            if scheduler
                .frameworks
                .iter()
                .any(|f| f.profile_name() == framework.profile_name())
            {
                return Err(crate::Error::InvalidProfile(format!(
                    "duplicate profile with scheduler name {:?}",
                    framework.profile_name()
                )));
            }
            scheduler.frameworks.push(Arc::new(framework));
        }
        Ok(scheduler)
    }

    /// The scheduler a [`KubeSchedulerConfiguration`](crate::config::KubeSchedulerConfiguration)
    /// describes: its profiles built from `registry` (see
    /// [`frameworks`](crate::config::KubeSchedulerConfiguration::frameworks)), with its
    /// `podInitialBackoffSeconds` and `podMaxBackoffSeconds`. Leader election is the
    /// caller's: [`Scheduler::run_leading`] with the configuration's
    /// [`leader_election`](crate::config::KubeSchedulerConfiguration::leader_election).
    ///
    /// Errors: the configuration's [`ConfigError`](crate::config::ConfigError) when a profile
    /// does not build.
    pub fn from_config(
        client: Arc<dyn Client>,
        config: &crate::config::KubeSchedulerConfiguration,
        registry: &PluginRegistry,
        recorder: EventRecorder,
    ) -> Result<Self, crate::config::ConfigError> {
        let frameworks = config.frameworks(registry)?;
        let (initial, max) = config.pod_backoff();
        let scheduler = Scheduler::with_profiles(client, frameworks, recorder)
            .map_err(crate::config::ConfigError::Build)?;
        Ok(scheduler.with_pod_backoff(initial, max))
    }

    /// Sets the retry backoff of pods that failed an attempt (1 s doubling up to 10 s by
    /// default). Call before [`run`](Self::run).
    pub fn with_pod_backoff(mut self, initial: Duration, max: Duration) -> Self {
        let sort = self.frameworks[0].queue_sort().cloned();
        self.queue = Arc::new(SchedulingQueue::new(sort).with_backoff(initial, max));
        self
    }

    /// The profiles' frameworks, the first one's QueueSort ordering the queue.
    pub fn frameworks(&self) -> impl Iterator<Item = &Framework> {
        self.frameworks.iter().map(|f| f.as_ref())
    }

    /// Attempt counters and latencies.
    pub fn metrics(&self) -> &Arc<SchedulerMetrics> {
        &self.metrics
    }

    /// Records into `metrics` (shared with earlier terms' schedulers, so the series a
    /// component serves continue) instead of metrics of its own.
    pub fn with_metrics(mut self, metrics: Arc<SchedulerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Makes `check` (kube-scheduler's `sched-handler-sync`) fail while this scheduler's Pod
    /// and Node informers have not synced, from [`run`](Self::run) until it ends.
    pub fn with_sync_check(mut self, check: InformerSyncCheck) -> Self {
        self.sync_check = Some(check);
        self
    }

    /// Shares `waiting` with Permit plugins that allow or reject waiting pods later.
    pub fn with_waiting_pods(mut self, waiting: Arc<WaitingPods>) -> Self {
        self.waiting = waiting;
        self
    }

    /// The pods waiting at Permit.
    pub fn waiting_pods(&self) -> &Arc<WaitingPods> {
        &self.waiting
    }

    /// The scheduler's cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The scheduling queue.
    pub fn queue(&self) -> &Arc<SchedulingQueue> {
        &self.queue
    }

    /// Runs one leadership term: waits until `elector` holds its Lease, then runs the
    /// scheduler `build` returns, over fresh informers on `client`, until leadership is lost
    /// or `shutdown` resolves (the scheduler is dropped then: a deposed leader schedules
    /// nothing more; binds already in flight are conditional writes and cannot double-bind).
    ///
    /// Returns how the term ended; after [`RunOutcome::Lost`], call again to stand for the
    /// next term with a new scheduler (its cache must not outlive the term).
    pub async fn run_leading(
        elector: &LeaderElector,
        client: Arc<dyn Client>,
        shutdown: impl std::future::Future<Output = ()>,
        build: impl FnOnce() -> Scheduler,
    ) -> RunOutcome {
        elector
            .run(shutdown, move |_| async move {
                let informers = InformerFactory::new(client, ReflectorOptions::default());
                build().run(&informers).await;
            })
            .await
    }

    /// The framework of the profile named by the pod's `spec.schedulerName`.
    fn framework_for(&self, pod: &Pod) -> Option<&Arc<Framework>> {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(DEFAULT_SCHEDULER_NAME);
        self.frameworks.iter().find(|f| f.profile_name() == name)
    }

    fn responsible_for(&self, pod: &Pod) -> bool {
        self.framework_for(pod).is_some()
    }

    fn on_pod(&self, delta: Delta<Pod>) {
        match delta {
            Delta::Added(pod) | Delta::Updated { new: pod, .. } => {
                if pod.node_name().is_some() {
                    self.queue.delete(&pod_key(&pod));
                    if pod.is_terminal() {
                        self.cache.remove_pod(&pod_key(&pod));
                        self.queue
                            .move_all_to_active_or_backoff(ClusterEvent::PodDelete);
                    } else {
                        self.cache.add_pod(pod);
                    }
                } else if pod.metadata.deletion_timestamp.is_none()
                    && self.responsible_for(&pod)
                    && !pod.is_terminal()
                {
                    self.queue.add(pod);
                }
            }
            Delta::Deleted(pod) => {
                let key = pod_key(&pod);
                self.queue.delete(&key);
                if self.cache.pod_node(&key).is_some() {
                    self.cache.remove_pod(&key);
                    self.queue
                        .move_all_to_active_or_backoff(ClusterEvent::PodDelete);
                }
            }
        }
    }

    fn on_node(&self, delta: Delta<Node>) {
        match delta {
            Delta::Added(node) => {
                self.cache.add_node(node);
                self.queue
                    .move_all_to_active_or_backoff(ClusterEvent::NodeAdd);
            }
            Delta::Updated { new, .. } => {
                self.cache.add_node(new);
                self.queue
                    .move_all_to_active_or_backoff(ClusterEvent::NodeUpdate);
            }
            Delta::Deleted(node) => {
                self.cache.remove_node(node.name_str());
            }
        }
    }

    /// Runs until the returned future is dropped: follows Pods and Nodes through `informers`,
    /// waits for both caches, then schedules.
    pub async fn run(self, informers: &InformerFactory) {
        let this = Arc::new(self);
        let pods = informers.informer::<Pod>();
        let nodes = informers.informer::<Node>();
        this.metrics.watch_queue(&this.queue);
        let _tracking = this.sync_check.as_ref().map(|check| {
            let (pods, nodes) = (pods.cache().clone(), nodes.cache().clone());
            check.track_with(move || {
                let unsynced = [("Pod", pods.is_synced()), ("Node", nodes.is_synced())];
                unsynced
                    .iter()
                    .filter(|(_, synced)| !synced)
                    .map(|(kind, _)| kind.to_string())
                    .collect()
            })
        });
        let mut pod_rx = pods.subscribe();
        let mut node_rx = nodes.subscribe();
        let feeds = {
            let this = this.clone();
            async move {
                loop {
                    tokio::select! {
                        Some(d) = node_rx.recv() => this.on_node(d),
                        Some(d) = pod_rx.recv() => this.on_pod(d),
                        else => break,
                    }
                }
            }
        };
        let schedule = {
            let this = this.clone();
            let pods = pods.clone();
            async move {
                pods.wait_for_sync().await;
                nodes.wait_for_sync().await;
                let mut snapshot = Snapshot::default();
                let mut next_start = 0;
                while let Some(info) = this.queue.pop().await {
                    let key = ObjectKey::of(info.pod.as_ref());
                    // Skip pods deleted or bound since they were queued.
                    match pods.cache().get(&key) {
                        Some(p) if p.node_name().is_none() => {}
                        _ => {
                            this.queue.done(&pod_key(&info.pod));
                            continue;
                        }
                    }
                    this.schedule_one(info, &mut snapshot, &mut next_start)
                        .await;
                    // Let the feeds and binding tasks run between pods.
                    tokio::task::yield_now().await;
                }
            }
        };
        let guard = CloseOnDrop(this.queue.clone());
        futures::future::join(feeds, schedule).await;
        drop(guard);
    }

    async fn schedule_one(
        self: &Arc<Self>,
        info: QueuedPodInfo,
        snapshot: &mut Snapshot,
        next_start: &mut usize,
    ) {
        let pod = info.pod.clone();
        let key = pod_key(&pod);
        let Some(fw) = self.framework_for(&pod).cloned() else {
            self.queue.done(&key);
            return;
        };
        let fw = &fw;
        let started = std::time::Instant::now();
        self.cache.update_snapshot(snapshot);
        let mut state = CycleState::new();
        let result = schedule_pod(fw, &mut state, &pod, snapshot, next_start);
        self.metrics.algorithm(started.elapsed());
        let host = match result {
            Ok(r) => r.suggested_host,
            Err(ScheduleError::Unschedulable(fit)) => {
                self.metrics
                    .unschedulable(fw.profile_name(), started.elapsed());
                let mut message = fit.to_string();
                let mut nominated = None;
                if fw.has_post_filter() {
                    let (r, s) = fw
                        .run_post_filter(snapshot.nodes(), &state, &pod, &fit.node_statuses)
                        .await;
                    if s.is_success() {
                        nominated = r.nominated_node_name;
                    } else {
                        message = format!("{message} preemption: {s}");
                    }
                }
                self.recorder
                    .warning(pod.as_ref(), "FailedScheduling", message.clone());
                self.report_unschedulable(&pod, "Unschedulable", message, nominated);
                self.queue.requeue(info, true);
                return;
            }
            Err(e @ ScheduleError::Error(_)) => {
                self.metrics
                    .error(fw.profile_name(), Some(started.elapsed()));
                self.recorder
                    .warning(pod.as_ref(), "FailedScheduling", e.to_string());
                self.report_unschedulable(&pod, "SchedulerError", e.to_string(), None);
                self.queue.requeue(info, false);
                return;
            }
        };
        let mut assumed = (*pod).clone();
        if let Some(spec) = assumed.spec.as_mut() {
            spec.node_name = Some(host.clone());
        }
        let assumed = Arc::new(assumed);
        if let Err(e) = self.cache.assume_pod(assumed.clone()) {
            self.recorder
                .warning(pod.as_ref(), "FailedScheduling", e.to_string());
            self.queue.requeue(info, false);
            return;
        }
        let s = fw.run_reserve(&mut state, &pod, &host);
        if !s.is_success() {
            self.fail(fw, &mut state, info, &host, s);
            return;
        }
        let wait = match fw.run_permit_naming_waits(&mut state, &pod, &host) {
            (PermitDecision::Allow, _) => None,
            (PermitDecision::Deny(s), _) => {
                self.fail(fw, &mut state, info, &host, s);
                return;
            }
            (PermitDecision::Wait(timeout), plugins) => {
                let names = plugins.join(", ");
                let rx = self.waiting.add(key.clone(), host.clone(), plugins);
                Some((timeout, names, rx))
            }
        };
        let this = self.clone();
        let fw = fw.clone();
        tokio::spawn(async move {
            if let Some((timeout, names, rx)) = wait {
                let outcome = match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(_)) => Status::error("the waiting pod was dropped"),
                    Err(_) => {
                        this.waiting.remove(&key);
                        Status::unschedulable(format!(
                            "rejected due to timeout after waiting {timeout:?} at plugin {names}"
                        ))
                    }
                };
                if !outcome.is_success() {
                    this.fail(&fw, &mut state, info, &host, outcome);
                    return;
                }
            }
            let mut s = fw.run_pre_bind(&state, &pod, &host).await;
            if s.is_success() {
                s = fw.run_bind(&state, &pod, &host).await;
            }
            if !s.is_success() {
                this.fail(&fw, &mut state, info, &host, s);
                return;
            }
            this.cache.finish_binding(&key);
            this.metrics.scheduled(fw.profile_name(), started.elapsed());
            this.recorder.normal(
                pod.as_ref(),
                "Scheduled",
                format!("Successfully assigned {key} to {host}"),
            );
            fw.run_post_bind(&state, &pod, &host).await;
            this.queue.done(&key);
        });
    }
}

impl Scheduler {
    /// Undoes an assumed pod after Reserve, Permit or binding failed, and retries it.
    fn fail(
        &self,
        fw: &Framework,
        state: &mut CycleState,
        info: QueuedPodInfo,
        host: &str,
        s: Status,
    ) {
        self.metrics.error(fw.profile_name(), None);
        fw.run_unreserve(state, &info.pod, host);
        self.cache.forget_pod(&pod_key(&info.pod));
        self.queue
            .move_all_to_active_or_backoff(ClusterEvent::AssumedPodForget);
        self.recorder
            .warning(info.pod.as_ref(), "FailedScheduling", s.to_string());
        self.report_unschedulable(&info.pod, "SchedulerError", s.to_string(), None);
        self.queue.requeue(info, false);
    }

    /// Sets the pod's `PodScheduled` condition to False with `reason` and `message` (and its
    /// `nominatedNodeName`), as kube-scheduler does, on a task of its own: the scheduling
    /// loop does not wait for the write. Skipped when the condition already says so.
    fn report_unschedulable(
        &self,
        pod: &Pod,
        reason: &'static str,
        message: String,
        nominated: Option<String>,
    ) {
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        if nominated.is_none()
            && current.is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some(reason)
                    && c.message.as_deref() == Some(message.as_str())
            })
        {
            return;
        }
        let client = self.client.clone();
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, &ns);
            // Gone, bound, failed or written: done either way.
            let _ = capstan_controller::retry::retry_on_conflict(5, |_| async {
                let Ok(mut current) = api.get(&name).await else {
                    return Ok(());
                };
                if current.node_name().is_some() {
                    return Ok(());
                }
                let status = current.status.get_or_insert_with(Default::default);
                let conditions = status.conditions.get_or_insert_with(Vec::new);
                let now = capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    capstan_api::k8s_openapi::jiff::Timestamp::now(),
                );
                let condition = PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some(reason.into()),
                    message: Some(message.clone()),
                    last_transition_time: Some(now),
                    ..Default::default()
                };
                match conditions.iter_mut().find(|c| c.type_ == "PodScheduled") {
                    Some(c) if c.status == "False" => {
                        c.reason = condition.reason;
                        c.message = condition.message;
                    }
                    Some(c) => *c = condition,
                    None => conditions.push(condition),
                }
                if let Some(n) = &nominated {
                    status.nominated_node_name = Some(n.clone());
                }
                api.update_status(&PostParams::default(), &current)
                    .await
                    .map(drop)
            })
            .await;
        });
    }
}

struct CloseOnDrop(Arc<SchedulingQueue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}
