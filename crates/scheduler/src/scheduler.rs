//! The `Scheduler`: informers feed the cache and the queue, one loop schedules pods one at a
//! time, and binding runs on its own task per pod.

use std::sync::Arc;

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::kube_core::params::{Patch, PatchParams};
use capstan_api::{Api, Client};
use capstan_controller::events::EventRecorder;
use capstan_watch::{Delta, InformerFactory, ObjectKey};

use crate::cache::{Cache, Snapshot};
use crate::framework::{
    pod_key, BindPlugin, CycleState, Framework, PermitDecision, Plugin, QueuedPodInfo, Registry,
    SchedulerPlugin, Status, DEFAULT_SCHEDULER_NAME,
};
use crate::queue::{ClusterEvent, SchedulingQueue};
use crate::schedule::{schedule_pod, ScheduleError};

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
    pub fn registry(client: Arc<dyn Client>) -> Registry {
        let binder = Arc::new(DefaultBinder::new(client));
        let mut r = Registry::new();
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
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Status::success(),
            Err(e) => Status::error(format!("binding pod {ns}/{name}: {e}")),
        }
    }
}

/// The default scheduler: a registry and profile (with [`DefaultBinder`]) built into a
/// [`Framework`].
pub fn default_framework(client: Arc<dyn Client>) -> crate::Result<Framework> {
    let mut registry = crate::plugins::default_registry();
    registry.merge(DefaultBinder::registry(client))?;
    let profile = crate::plugins::default_profile()
        .with_plugin(crate::framework::PluginConfig::new(DEFAULT_BINDER));
    Framework::new(&registry, &profile)
}

/// Schedules the pending pods whose `spec.schedulerName` is the framework's profile name.
pub struct Scheduler {
    framework: Arc<Framework>,
    cache: Arc<Cache>,
    queue: Arc<SchedulingQueue>,
    recorder: EventRecorder,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("profile", &self.framework.profile_name())
            .finish()
    }
}

fn is_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Scheduler {
    /// A scheduler running `framework`, recording Events with `recorder`.
    pub fn new(framework: Framework, recorder: EventRecorder) -> Self {
        let queue = SchedulingQueue::new(framework.queue_sort().cloned());
        Scheduler {
            framework: Arc::new(framework),
            cache: Arc::new(Cache::new()),
            queue: Arc::new(queue),
            recorder,
        }
    }

    /// The scheduler's cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The scheduling queue.
    pub fn queue(&self) -> &Arc<SchedulingQueue> {
        &self.queue
    }

    fn responsible_for(&self, pod: &Pod) -> bool {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(DEFAULT_SCHEDULER_NAME);
        name == self.framework.profile_name()
    }

    fn on_pod(&self, delta: Delta<Pod>) {
        match delta {
            Delta::Added(pod) | Delta::Updated { new: pod, .. } => {
                if is_bound(&pod) {
                    self.queue.delete(&pod_key(&pod));
                    if is_terminal(&pod) {
                        self.cache.remove_pod(&pod_key(&pod));
                        self.queue
                            .move_all_to_active_or_backoff(ClusterEvent::PodDelete);
                    } else {
                        self.cache.add_pod(pod);
                    }
                } else if pod.metadata.deletion_timestamp.is_none()
                    && self.responsible_for(&pod)
                    && !is_terminal(&pod)
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
                self.cache
                    .remove_node(node.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }

    /// Runs until the returned future is dropped: follows Pods and Nodes through `informers`,
    /// waits for both caches, then schedules.
    pub async fn run(self, informers: &InformerFactory) {
        let this = Arc::new(self);
        let pods = informers.informer::<Pod>();
        let nodes = informers.informer::<Node>();
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
                        Some(p) if !is_bound(&p) => {}
                        _ => {
                            this.queue.done(&pod_key(&info.pod));
                            continue;
                        }
                    }
                    this.schedule_one(info, &mut snapshot, &mut next_start);
                    // Let the feeds and binding tasks run between pods.
                    tokio::task::yield_now().await;
                }
            }
        };
        let guard = CloseOnDrop(this.queue.clone());
        futures::future::join(feeds, schedule).await;
        drop(guard);
    }

    fn schedule_one(
        self: &Arc<Self>,
        info: QueuedPodInfo,
        snapshot: &mut Snapshot,
        next_start: &mut usize,
    ) {
        let fw = &self.framework;
        let pod = info.pod.clone();
        let key = pod_key(&pod);
        self.cache.update_snapshot(snapshot);
        let mut state = CycleState::new();
        let host = match schedule_pod(fw, &mut state, &pod, snapshot, next_start) {
            Ok(r) => r.suggested_host,
            Err(e) => {
                let unschedulable = matches!(e, ScheduleError::Unschedulable(_));
                self.recorder
                    .warning(pod.as_ref(), "FailedScheduling", e.to_string());
                self.queue.requeue(info, unschedulable);
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
            self.fail(&mut state, info, &host, s);
            return;
        }
        match fw.run_permit(&mut state, &pod, &host) {
            PermitDecision::Allow => {}
            PermitDecision::Deny(s) => {
                self.fail(&mut state, info, &host, s);
                return;
            }
            PermitDecision::Wait(_) => {
                let s = Status::error("waiting Permit plugins are not supported yet");
                self.fail(&mut state, info, &host, s);
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            let fw = this.framework.clone();
            let mut s = fw.run_pre_bind(&state, &pod, &host).await;
            if s.is_success() {
                s = fw.run_bind(&state, &pod, &host).await;
            }
            if !s.is_success() {
                this.fail(&mut state, info, &host, s);
                return;
            }
            this.cache.finish_binding(&key);
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
    fn fail(&self, state: &mut CycleState, info: QueuedPodInfo, host: &str, s: Status) {
        self.framework.run_unreserve(state, &info.pod, host);
        self.cache.forget_pod(&pod_key(&info.pod));
        self.queue
            .move_all_to_active_or_backoff(ClusterEvent::AssumedPodForget);
        self.recorder
            .warning(info.pod.as_ref(), "FailedScheduling", s.to_string());
        self.queue.requeue(info, false);
    }
}

struct CloseOnDrop(Arc<SchedulingQueue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}
