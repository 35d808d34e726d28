//! One Pod's worker: the task that makes the runtime match the Pod, serialized per Pod.
//!
//! Each sync reads the runtime's state for the Pod (its sandbox and containers, found by the
//! labels the kubelet put on them, so a restarted kubelet adopts what runs), then takes the
//! next steps: run the sandbox and attach its network, run the init containers in order, start
//! the app containers, restart exited ones as the restart policy says (with the crash-loop
//! back-off), run the probes, and write the status when it changed. A deleted Pod is stopped
//! gracefully and then deleted for good.
//!
//! The worker's files: this one holds the shared [`Context`], the [`PodWorker`] and its run
//! loop; the worker's steps are split by area into `sandbox`, `containers`, `probes`, `sync`
//! and `termination`.

mod containers;
mod probes;
mod sandbox;
mod sync;
mod termination;

use capstan_api::ext::MetaExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use capstan_api::k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use capstan_api::{Api, Client};
use capstan_controller::events::EventRecorder;
use capstan_net::NetworkPlugin;
use capstan_runtime::{self as rt, Clock, ContainerRuntime};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::prober::Prober;
use crate::time::system_time;

/// Label on sandboxes and containers: the Pod's uid.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label on sandboxes and containers: the Pod's name.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label on sandboxes and containers: the Pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label on containers: the container's name in the Pod spec.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// Label on containers: a hash of the container's spec; a running container whose hash no
/// longer matches the Pod is replaced.
pub const CONTAINER_HASH_LABEL: &str = "io.kubernetes.container.hash";

/// FNV-1a (64 bits) of the container's canonical JSON, in hex.
fn spec_hash(container: &Container) -> String {
    let json = serde_json::to_vec(container).unwrap_or_default();
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// What every pod worker of one kubelet shares.
pub(crate) struct Context {
    pub(crate) node_name: String,
    pub(crate) host_ip: Option<String>,
    pub(crate) client: Arc<dyn Client>,
    pub(crate) runtime: Arc<dyn ContainerRuntime>,
    pub(crate) network: Arc<dyn NetworkPlugin>,
    pub(crate) prober: Arc<dyn Prober>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events: Option<EventRecorder>,
    pub(crate) sync_period: Duration,
    pub(crate) runtime_name: String,
    /// Pod syncs done so far (for metrics).
    pub(crate) syncs: Arc<AtomicU64>,
    /// The kubelet's metrics.
    pub(crate) stats: Arc<crate::metrics::Stats>,
    /// Pods' volumes (`None`: the kubelet has no root directory and mounts nothing).
    pub(crate) volumes: Option<Arc<crate::volumes::VolumeManager>>,
    /// The `kubernetes` Service's variables every container gets.
    pub(crate) service_env: Arc<crate::service_env::MasterServiceEnv>,
    /// The node's allocatable resources and the admitted Pods' requests.
    pub(crate) admission: Arc<crate::admission::Admission>,
}

impl Context {
    fn normal(&self, pod: &Pod, reason: &str, message: String) {
        if let Some(events) = &self.events {
            events.normal(pod, reason, message);
        }
    }

    fn warning(&self, pod: &Pod, reason: &str, message: String) {
        if let Some(events) = &self.events {
            events.warning(pod, reason, message);
        }
    }
}

/// Waits until the clock reaches `deadline` or the Pod changes; false once the sender is
/// gone.
pub(crate) async fn wait_until<T>(
    clock: &dyn Clock,
    deadline: SystemTime,
    updates: &mut watch::Receiver<T>,
) -> bool {
    loop {
        let tick = clock.tick();
        if clock.now() >= deadline {
            return true;
        }
        tokio::select! {
            changed = updates.changed() => return changed.is_ok(),
            _ = tick => {}
        }
    }
}

#[derive(Debug, Clone)]
struct Sandbox {
    id: String,
    config: rt::PodSandboxConfig,
    netns: String,
    ips: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    fn label(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct ProbeState {
    last_run: Option<SystemTime>,
    successes: u32,
    failures: u32,
    passed: Option<bool>,
}

/// One Pod's worker. Owned by its task; see the [module docs](self).
pub(crate) struct PodWorker {
    ctx: Arc<Context>,
    pod: Arc<Pod>,
    sandbox: Option<Sandbox>,
    restarts: Backoff,
    pulls: Backoff,
    pull_failures: HashMap<String, (SystemTime, String)>,
    probes: HashMap<(String, ProbeKind), ProbeState>,
    /// Containers killed by a failed probe, to be started again whatever their exit code.
    kill_restarts: HashSet<String>,
    last_status: Option<PodStatus>,
    start_time: Option<SystemTime>,
    finished: bool,
    /// When this worker first saw the Pod, until it is reported running
    /// (`kubelet_pod_start_duration_seconds`).
    seen_at: Option<SystemTime>,
    /// Where the Pod's volumes are, once set up.
    volumes: Option<crate::volumes::PodVolumes>,
    /// Why admission refused the Pod, until its `Failed` status is written.
    rejection: Option<crate::admission::AdmissionError>,
}

fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.name_str(),
        pod.namespace_str(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// A duration as Go prints one in Kubernetes' messages (`0s`, `512ms`, `1.5s`).
fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else {
        format!("{d:?}")
    }
}

fn seconds(value: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(0) as u64)
}

impl PodWorker {
    pub(crate) fn new(ctx: Arc<Context>, pod: Arc<Pod>) -> Self {
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(system_time);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let finished = matches!(phase, Some("Succeeded" | "Failed"));
        // A pod that already ran (adopted after a restart) is not timed.
        let seen_at = matches!(phase, None | Some("Pending")).then(|| ctx.clock.now());
        PodWorker {
            last_status: pod.status.clone(),
            ctx,
            pod,
            sandbox: None,
            restarts: Backoff::default(),
            pulls: Backoff::default(),
            pull_failures: HashMap::new(),
            probes: HashMap::new(),
            kill_restarts: HashSet::new(),
            start_time,
            finished,
            seen_at,
            volumes: None,
            rejection: None,
        }
    }

    /// Marks the Pod as rejected by admission: its first sync writes the `Failed` status
    /// and nothing is ever started for it.
    pub(crate) fn rejected(mut self, rejection: crate::admission::AdmissionError) -> Self {
        self.rejection = Some(rejection);
        self
    }

    fn uid(&self) -> String {
        self.pod.metadata.uid.clone().unwrap_or_default()
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(
            self.ctx.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    /// Runs until the Pod is gone: syncs on every change of the Pod, on its deadlines and
    /// every sync period. `None` on the channel means the Pod was deleted from the API.
    pub(crate) async fn run(mut self, mut updates: watch::Receiver<Option<Arc<Pod>>>) {
        let clock = self.ctx.clock.clone();
        loop {
            let current = updates.borrow_and_update().clone();
            let next = match current {
                None => match self.terminate(true).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(pod = %pod_label(&self.pod), %error, "kubelet: cleaning up a deleted pod failed; retrying");
                        clock.now() + self.ctx.sync_period
                    }
                },
                Some(pod) => {
                    self.pod = pod;
                    if self.pod.metadata.deletion_timestamp.is_some() {
                        match self.terminate(false).await {
                            Ok(()) => return,
                            Err(error) => {
                                tracing::warn!(pod = %pod_label(&self.pod), %error, "kubelet: stopping a pod failed; retrying");
                                clock.now() + self.ctx.sync_period
                            }
                        }
                    } else {
                        let result = self.sync().await;
                        self.ctx.syncs.fetch_add(1, Ordering::Relaxed);
                        match result {
                            Ok(next) => next,
                            Err(error) => {
                                tracing::debug!(pod = %pod_label(&self.pod), %error, "kubelet: pod sync failed; retrying");
                                clock.now() + self.ctx.sync_period
                            }
                        }
                    }
                }
            };
            // Wait for the deadline or a change that matters: a status write (ours) does not
            // call for a sync.
            loop {
                if !wait_until(clock.as_ref(), next, &mut updates).await {
                    return;
                }
                if clock.now() >= next {
                    break;
                }
                let changed = match &*updates.borrow() {
                    None => true,
                    Some(pod) => {
                        pod.spec != self.pod.spec
                            || pod.metadata.deletion_timestamp
                                != self.pod.metadata.deletion_timestamp
                    }
                };
                if changed {
                    break;
                }
                if let Some(pod) = updates.borrow_and_update().clone() {
                    self.pod = pod;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_hash_changes_with_its_image_only() {
        let mut a = Container {
            name: "web".into(),
            image: Some("web:1".into()),
            ..Container::default()
        };
        let first = spec_hash(&a);
        assert_eq!(spec_hash(&a.clone()), first);
        a.image = Some("web:2".into());
        assert_ne!(spec_hash(&a), first);
    }

    #[test]
    fn durations_print_as_kubernetes_messages_print_them() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(512)), "512ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    }
}
