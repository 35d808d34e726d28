//! One Pod's worker: the task that makes the runtime match the Pod, serialized per Pod.
//!
//! Each sync reads the runtime's state for the Pod (its sandbox and containers, found by the
//! labels the kubelet put on them, so a restarted kubelet adopts what runs), then takes the
//! next steps: run the sandbox and attach its network, run the init containers in order, start
//! the app containers, restart exited ones as the restart policy says (with the crash-loop
//! back-off), run the probes, and write the status when it changed. A deleted Pod is stopped
//! gracefully and then deleted for good.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use capstan_api::k8s_openapi::api::core::v1::{Container, HostIP, Pod, PodIP, PodStatus, Probe};
use capstan_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use capstan_api::kube_core::params::{DeleteParams, PostParams, Preconditions};
use capstan_api::{Api, Client};
use capstan_controller::events::EventRecorder;
use capstan_controller::retry::retry_on_error;
use capstan_net::{Attachment, NetworkPlugin};
use capstan_runtime::{self as rt, Clock, ContainerRuntime};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::error::{KubeletError, Result};
use crate::prober::{HttpGet, ProbeOutcome, Prober};
use crate::status::{self, Observed, RestartPolicy};
use crate::time::{system_time, time};

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
}

fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
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
        }
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

    // --- sandbox -----------------------------------------------------------------------

    async fn sandboxes(&self) -> Result<Vec<rt::PodSandbox>> {
        self.ctx
            .runtime
            .list_pod_sandboxes(rt::PodSandboxFilter::all().label(POD_UID_LABEL, self.uid()))
            .await
            .map_err(|e| KubeletError::runtime("listing the pod's sandboxes", e))
    }

    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    fn attachment(&self, sandbox_id: &str, netns: &str) -> Attachment {
        Attachment::new(sandbox_id, netns).pod(
            self.pod.metadata.namespace.clone().unwrap_or_default(),
            self.pod.metadata.name.clone().unwrap_or_default(),
            self.uid(),
        )
    }

    /// The Pod's Ready sandbox: the one this worker runs, an adopted one, or a new one.
    /// `Ok(None)` when a new sandbox could not be set up yet (reported by an Event).
    async fn ensure_sandbox(&mut self) -> Result<Option<Sandbox>> {
        let runtime = self.ctx.runtime.clone();
        if let Some(current) = &self.sandbox {
            // The common case: one status lookup, no listing.
            match runtime.pod_sandbox_status(&current.id).await {
                Ok(status) if status.state == rt::PodSandboxState::Ready => {
                    return Ok(self.sandbox.clone());
                }
                Ok(_) => {}
                Err(error) if error.is_not_found() => {}
                Err(error) => {
                    return Err(KubeletError::runtime("reading the sandbox's status", error))
                }
            }
            self.sandbox = None;
        }
        let existing = self.sandboxes().await?;
        // Adopt the newest Ready sandbox (a restarted kubelet), clean up the others.
        let ready = existing
            .iter()
            .filter(|s| s.state == rt::PodSandboxState::Ready)
            .max_by_key(|s| (s.metadata.attempt, s.created_at));
        if let Some(found) = ready {
            let status = runtime
                .pod_sandbox_status(&found.id)
                .await
                .map_err(|e| KubeletError::runtime("reading a sandbox's status", e))?;
            let known_ips: Vec<String> = self
                .pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ips.as_ref())
                .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
                .unwrap_or_default();
            let mut config = rt::PodSandboxConfig::new(found.metadata.clone());
            config.labels = found.labels.clone();
            config.annotations = found.annotations.clone();
            let mut sandbox = Sandbox {
                id: found.id.clone(),
                config,
                netns: status.network_namespace_path.clone(),
                ips: known_ips,
            };
            if sandbox.ips.is_empty() && !self.host_network() {
                // The address was never recorded: attach again from scratch.
                let attachment = self.attachment(&sandbox.id, &sandbox.netns);
                let _ = self.ctx.network.del(&attachment).await;
                let result = self
                    .ctx
                    .network
                    .add(&attachment)
                    .await
                    .map_err(|e| KubeletError::network("re-attaching an adopted sandbox", e))?;
                sandbox.ips = result.pod_ips().iter().map(ToString::to_string).collect();
            }
            self.sandbox = Some(sandbox);
            return Ok(self.sandbox.clone());
        }
        let attempt = existing
            .iter()
            .map(|s| s.metadata.attempt + 1)
            .max()
            .unwrap_or(0);
        for old in &existing {
            self.release_sandbox(&old.id).await?;
        }
        self.run_sandbox(attempt).await
    }

    async fn run_sandbox(&mut self, attempt: u32) -> Result<Option<Sandbox>> {
        let pod = self.pod.clone();
        let (name, namespace, uid) = (
            pod.metadata.name.clone().unwrap_or_default(),
            pod.metadata.namespace.clone().unwrap_or_default(),
            self.uid(),
        );
        let mut metadata = rt::PodSandboxMetadata::new(&name, &namespace, &uid);
        metadata.attempt = attempt;
        let mut options = rt::NamespaceOptions::default();
        if self.host_network() {
            options.network = rt::NamespaceMode::Node;
        }
        let config = rt::PodSandboxConfig::new(metadata)
            .label(POD_UID_LABEL, &uid)
            .label(POD_NAME_LABEL, &name)
            .label(POD_NAMESPACE_LABEL, &namespace)
            .log_directory(format!("/var/log/pods/{namespace}_{name}_{uid}"))
            .namespace_options(options);
        let id = match self.ctx.runtime.run_pod_sandbox(config.clone()).await {
            Ok(id) => id,
            Err(error) => {
                self.ctx.warning(
                    &pod,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {error}"),
                );
                return Err(KubeletError::runtime("running the pod sandbox", error));
            }
        };
        let status = self
            .ctx
            .runtime
            .pod_sandbox_status(&id)
            .await
            .map_err(|e| KubeletError::runtime("reading the new sandbox's status", e))?;
        let netns = status.network_namespace_path.clone();
        let ips = if self.host_network() {
            self.ctx.host_ip.clone().into_iter().collect()
        } else {
            match self.ctx.network.add(&self.attachment(&id, &netns)).await {
                Ok(result) => result.pod_ips().iter().map(ToString::to_string).collect(),
                Err(error) => {
                    self.ctx.warning(
                        &pod,
                        "FailedCreatePodSandBox",
                        format!(
                            "Failed to create pod sandbox: failed to set up sandbox container {id:?} network for pod {name:?}: networkPlugin {} failed to set up pod \"{name}_{namespace}\" network: {error}",
                            self.ctx.network.name()
                        ),
                    );
                    let _ = self.ctx.runtime.stop_pod_sandbox(&id).await;
                    let _ = self.ctx.runtime.remove_pod_sandbox(&id).await;
                    return Ok(None);
                }
            }
        };
        let sandbox = Sandbox {
            id,
            config,
            netns,
            ips,
        };
        self.sandbox = Some(sandbox.clone());
        Ok(Some(sandbox))
    }

    /// Detaches, stops and removes a sandbox (and its containers).
    async fn release_sandbox(&self, id: &str) -> Result<()> {
        let netns = match self.ctx.runtime.pod_sandbox_status(id).await {
            Ok(status) => status.network_namespace_path,
            Err(error) if error.is_not_found() => return Ok(()),
            Err(error) => return Err(KubeletError::runtime("reading a sandbox's status", error)),
        };
        if !self.host_network() {
            self.ctx
                .network
                .del(&self.attachment(id, &netns))
                .await
                .map_err(|e| KubeletError::network("detaching a sandbox", e))?;
        }
        self.ctx
            .runtime
            .stop_pod_sandbox(id)
            .await
            .map_err(|e| KubeletError::runtime("stopping a sandbox", e))?;
        self.ctx
            .runtime
            .remove_pod_sandbox(id)
            .await
            .map_err(|e| KubeletError::runtime("removing a sandbox", e))
    }

    // --- containers ----------------------------------------------------------------------

    async fn observe(&self, sandbox: &Sandbox) -> Result<HashMap<String, Observed>> {
        let runtime = &self.ctx.runtime;
        let mut listed = runtime
            .list_containers(rt::ContainerFilter::all().pod_sandbox(&sandbox.id))
            .await
            .map_err(|e| KubeletError::runtime("listing the pod's containers", e))?;
        listed.sort_by_key(|c| std::cmp::Reverse(c.metadata.attempt));
        let mut observed: HashMap<String, Observed> = HashMap::new();
        for container in listed {
            let entry = observed.entry(container.metadata.name.clone()).or_default();
            let slot = if entry.latest.is_none() {
                &mut entry.latest
            } else if entry.previous.is_none() {
                &mut entry.previous
            } else {
                continue;
            };
            match runtime.container_status(&container.id).await {
                Ok(status) => *slot = Some(status),
                Err(error) if error.is_not_found() => {}
                Err(error) => {
                    return Err(KubeletError::runtime("reading a container's status", error))
                }
            }
        }
        Ok(observed)
    }

    /// Ensures the image and creates and starts attempt `attempt` of `container`. On failure
    /// returns the waiting reason and message (and records the Events).
    async fn start_container(
        &mut self,
        sandbox: &Sandbox,
        container: &Container,
        attempt: u32,
        now: SystemTime,
        wake: &mut SystemTime,
    ) -> Option<(String, String)> {
        let pod = self.pod.clone();
        let image = container.image.clone().unwrap_or_default();
        let spec = rt::ImageSpec::new(image.clone());
        let runtime = self.ctx.runtime.clone();
        match runtime.image_status(&spec).await {
            Ok(Some(_)) => self.ctx.normal(
                &pod,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            ),
            Ok(None) => {
                if let Some((failed_at, error)) = self.pull_failures.get(&image).cloned() {
                    if let Some(until) = self.pulls.held_until(&image, failed_at, now) {
                        *wake = (*wake).min(until);
                        self.ctx.normal(
                            &pod,
                            "BackOff",
                            format!("Back-off pulling image \"{image}\""),
                        );
                        self.ctx
                            .warning(&pod, "Failed", "Error: ImagePullBackOff".to_string());
                        let _ = error;
                        return Some((
                            "ImagePullBackOff".into(),
                            format!("Back-off pulling image \"{image}\""),
                        ));
                    }
                }
                self.ctx
                    .normal(&pod, "Pulling", format!("Pulling image \"{image}\""));
                let pull_started = self.ctx.clock.now();
                match runtime.pull_image(&spec).await {
                    Ok(_) => {
                        let size = runtime
                            .image_status(&spec)
                            .await
                            .ok()
                            .flatten()
                            .map_or(0, |i| i.size);
                        self.pull_failures.remove(&image);
                        self.pulls.reset(&image);
                        let took = go_duration(
                            self.ctx
                                .clock
                                .now()
                                .duration_since(pull_started)
                                .unwrap_or_default(),
                        );
                        self.ctx.normal(
                            &pod,
                            "Pulled",
                            format!(
                                "Successfully pulled image \"{image}\" in {took} ({took} including waiting). Image size: {size} bytes."
                            ),
                        );
                    }
                    Err(error) => {
                        let message = format!("Failed to pull image \"{image}\": {error}");
                        self.ctx.warning(&pod, "Failed", message.clone());
                        self.ctx
                            .warning(&pod, "Failed", "Error: ErrImagePull".to_string());
                        let failed_at = now;
                        self.pulls.next(&image, failed_at);
                        self.pull_failures
                            .insert(image.clone(), (failed_at, error.to_string()));
                        if let Some(delay) = self.pulls.delay(&image) {
                            *wake = (*wake).min(failed_at + delay);
                        }
                        return Some(("ErrImagePull".into(), message));
                    }
                }
            }
            Err(error) => {
                return Some(("ImageInspectError".into(), error.to_string()));
            }
        }
        let uid = self.uid();
        let mut config = rt::ContainerConfig::new(&container.name, &image)
            .attempt(attempt)
            .command(container.command.clone().unwrap_or_default())
            .args(container.args.clone().unwrap_or_default())
            .label(POD_UID_LABEL, &uid)
            .label(
                POD_NAME_LABEL,
                pod.metadata.name.clone().unwrap_or_default(),
            )
            .label(
                POD_NAMESPACE_LABEL,
                pod.metadata.namespace.clone().unwrap_or_default(),
            )
            .label(CONTAINER_NAME_LABEL, &container.name)
            .label(CONTAINER_HASH_LABEL, spec_hash(container));
        if let Some(dir) = &container.working_dir {
            config = config.working_dir(dir);
        }
        for env in container.env.iter().flatten() {
            if let Some(value) = &env.value {
                config = config.env(&env.name, value);
            }
        }
        let id = match runtime
            .create_container(&sandbox.id, config, &sandbox.config)
            .await
        {
            Ok(id) => id,
            Err(error) => {
                self.ctx.warning(&pod, "Failed", format!("Error: {error}"));
                return Some(("CreateContainerError".into(), error.to_string()));
            }
        };
        self.ctx.normal(
            &pod,
            "Created",
            format!("Created container: {}", container.name),
        );
        if let Err(error) = runtime.start_container(&id).await {
            self.ctx.warning(
                &pod,
                "Failed",
                format!(
                    "Error: failed to start container \"{}\": {error}",
                    container.name
                ),
            );
            return Some(("RunContainerError".into(), error.to_string()));
        }
        self.ctx.normal(
            &pod,
            "Started",
            format!("Started container {}", container.name),
        );
        // Look again at once: the status is written from what the runtime then reports.
        *wake = now;
        // Keep only the newest dead attempt besides this one.
        if attempt >= 2 {
            if let Ok(old) = runtime
                .list_containers(
                    rt::ContainerFilter::all()
                        .pod_sandbox(&sandbox.id)
                        .label(CONTAINER_NAME_LABEL, &container.name),
                )
                .await
            {
                for c in old.iter().filter(|c| c.metadata.attempt + 1 < attempt) {
                    let _ = runtime.remove_container(&c.id).await;
                }
            }
        }
        None
    }

    /// Restarts an exited container unless it is backed off; returns the waiting reason while
    /// backed off or when the start failed.
    async fn restart(
        &mut self,
        sandbox: &Sandbox,
        container: &Container,
        exited: &rt::ContainerStatus,
        now: SystemTime,
        wake: &mut SystemTime,
    ) -> Option<(String, String)> {
        let pod = self.pod.clone();
        let key = container.name.clone();
        let failed_at = exited.finished_at.unwrap_or(now);
        if let Some(until) = self.restarts.held_until(&key, failed_at, now) {
            *wake = (*wake).min(until);
            let delay = self.restarts.delay(&key).unwrap_or_default();
            self.ctx.warning(
                &pod,
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}",
                    container.name,
                    pod_label(&pod)
                ),
            );
            return Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {}s restarting failed container={} pod={}",
                    delay.as_secs(),
                    container.name,
                    pod_label(&pod)
                ),
            ));
        }
        self.restarts.next(&key, failed_at);
        self.kill_restarts.remove(&container.name);
        self.start_container(sandbox, container, exited.metadata.attempt + 1, now, wake)
            .await
    }

    // --- probes --------------------------------------------------------------------------

    async fn run_probe(&self, probe: &Probe, container: &Container, id: &str) -> ProbeOutcome {
        let timeout = seconds(probe.timeout_seconds, 1);
        let pod_ip = self
            .sandbox
            .as_ref()
            .and_then(|s| s.ips.first().cloned())
            .unwrap_or_default();
        let port = |port: &IntOrString| -> Option<u16> {
            match port {
                IntOrString::Int(p) => u16::try_from(*p).ok(),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name))
                    .and_then(|p| u16::try_from(p.container_port).ok()),
            }
        };
        if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            let request = rt::ExecRequest::new(id, command.clone()).timeout(timeout);
            return match self.ctx.runtime.exec_sync(request).await {
                Ok(response) if response.exit_code == 0 => ProbeOutcome::Success,
                Ok(response) => {
                    let mut output = String::from_utf8_lossy(&response.stdout).into_owned();
                    output.push_str(&String::from_utf8_lossy(&response.stderr));
                    ProbeOutcome::Failure(output.trim_end().to_string())
                }
                Err(rt::RuntimeError::Timeout(_)) => {
                    ProbeOutcome::Failure(format!("command {command:?} timed out"))
                }
                Err(error) => ProbeOutcome::Failure(error.to_string()),
            };
        }
        if let Some(http) = &probe.http_get {
            let Some(port) = port(&http.port) else {
                return ProbeOutcome::Failure(format!("unknown port {:?}", http.port));
            };
            let target = HttpGet {
                scheme: http.scheme.clone().unwrap_or_else(|| "HTTP".into()),
                host: http
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or(pod_ip),
                port,
                path: http
                    .path
                    .clone()
                    .filter(|p| p.starts_with('/'))
                    .unwrap_or_else(|| "/".into()),
                headers: http
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            };
            return self.ctx.prober.http_get(&target, timeout).await;
        }
        if let Some(tcp) = &probe.tcp_socket {
            let Some(port) = port(&tcp.port) else {
                return ProbeOutcome::Failure(format!("unknown port {:?}", tcp.port));
            };
            let host = tcp.host.clone().filter(|h| !h.is_empty()).unwrap_or(pod_ip);
            return self.ctx.prober.tcp(&host, port, timeout).await;
        }
        ProbeOutcome::Failure(
            "the probe has no supported handler (exec, httpGet, tcpSocket)".into(),
        )
    }

    /// Runs `kind`'s probe if it is due; returns whether it currently passes (`None` while
    /// undecided).
    async fn probe(
        &mut self,
        kind: ProbeKind,
        probe: &Probe,
        container: &Container,
        running: &rt::ContainerStatus,
        now: SystemTime,
        wake: &mut SystemTime,
    ) -> Option<bool> {
        let key = (running.id.clone(), kind);
        let state = self.probes.get(&key).cloned().unwrap_or_default();
        let started = running.started_at.unwrap_or(now);
        let period = seconds(probe.period_seconds, 10).max(Duration::from_secs(1));
        let due = match state.last_run {
            None => started + seconds(probe.initial_delay_seconds, 0),
            Some(last) => last + period,
        };
        if now < due {
            *wake = (*wake).min(due);
            return state.passed;
        }
        let outcome = self.run_probe(probe, container, &running.id).await;
        let mut state = state;
        state.last_run = Some(now);
        *wake = (*wake).min(now + period);
        match outcome {
            ProbeOutcome::Success => {
                state.failures = 0;
                state.successes += 1;
                let threshold = probe.success_threshold.unwrap_or(1).max(1) as u32;
                if state.successes >= threshold {
                    state.passed = Some(true);
                }
            }
            ProbeOutcome::Failure(message) => {
                state.successes = 0;
                state.failures += 1;
                let pod = self.pod.clone();
                self.ctx.warning(
                    &pod,
                    "Unhealthy",
                    format!("{} probe failed: {message}", kind.label()),
                );
                let threshold = probe.failure_threshold.unwrap_or(3).max(1) as u32;
                if state.failures >= threshold {
                    state.passed = Some(false);
                }
            }
        }
        let passed = state.passed;
        self.probes.insert(key, state);
        passed
    }

    /// Kills a container whose liveness or startup probe failed, to be restarted.
    async fn kill_for_restart(
        &mut self,
        container: &Container,
        id: &str,
        kind: ProbeKind,
        probe: &Probe,
    ) {
        let pod = self.pod.clone();
        let what = match kind {
            ProbeKind::Startup => "startup",
            _ => "liveness",
        };
        self.ctx.normal(
            &pod,
            "Killing",
            format!(
                "Container {} failed {what} probe, will be restarted",
                container.name
            ),
        );
        let grace = probe
            .termination_grace_period_seconds
            .or(pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0) as u64;
        let _ = self
            .ctx
            .runtime
            .stop_container(id, Duration::from_secs(grace))
            .await;
        self.kill_restarts.insert(container.name.clone());
        self.probes.retain(|(cid, _), _| cid != id);
    }

    // --- sync ----------------------------------------------------------------------------

    /// One pass; returns when to sync next at the latest.
    async fn sync(&mut self) -> Result<SystemTime> {
        let now = self.ctx.clock.now();
        let mut wake = now + self.ctx.sync_period;
        if self.finished {
            return Ok(now + self.ctx.sync_period * 60);
        }
        let pod = self.pod.clone();
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = RestartPolicy::parse(spec.restart_policy.as_deref());
        if self.start_time.is_none() {
            self.start_time = Some(now);
        }
        let Some(sandbox) = self.ensure_sandbox().await? else {
            let no_init = spec.init_containers.as_ref().is_none_or(Vec::is_empty);
            self.write_status(&spec, policy, &HashMap::new(), no_init, now)
                .await?;
            return Ok(wake);
        };
        let mut observed = self.observe(&sandbox).await?;
        let live_ids: HashSet<String> = observed
            .values()
            .filter_map(|o| o.latest.as_ref().map(|l| l.id.clone()))
            .collect();
        self.probes.retain(|(id, _), _| live_ids.contains(id));

        // Init containers, in order, each to completion.
        let mut initialized = true;
        for container in &spec.init_containers.clone().unwrap_or_default() {
            let entry = observed.get(&container.name).cloned().unwrap_or_default();
            match &entry.latest {
                None => {
                    initialized = false;
                    let waiting = self
                        .start_container(&sandbox, container, 0, now, &mut wake)
                        .await;
                    observed.entry(container.name.clone()).or_default().waiting = waiting;
                    break;
                }
                Some(l) if l.state == rt::ContainerState::Exited && l.exit_code == Some(0) => {
                    continue
                }
                Some(l) if l.state == rt::ContainerState::Exited => {
                    initialized = false;
                    if policy != RestartPolicy::Never {
                        let l = l.clone();
                        let waiting = self.restart(&sandbox, container, &l, now, &mut wake).await;
                        observed.entry(container.name.clone()).or_default().waiting = waiting;
                    }
                    break;
                }
                Some(_) => {
                    initialized = false;
                    break;
                }
            }
        }

        if initialized {
            for container in &spec.containers {
                let entry = observed.get(&container.name).cloned().unwrap_or_default();
                let waiting = match &entry.latest {
                    None => {
                        self.start_container(&sandbox, container, 0, now, &mut wake)
                            .await
                    }
                    Some(l) if l.state == rt::ContainerState::Exited => {
                        let restart = policy != RestartPolicy::Never
                            && (self.kill_restarts.contains(&container.name)
                                || policy.restarts(l.exit_code.unwrap_or_default()));
                        if restart {
                            let l = l.clone();
                            self.restart(&sandbox, container, &l, now, &mut wake).await
                        } else {
                            None
                        }
                    }
                    Some(l)
                        if l.state == rt::ContainerState::Running
                            && l.labels.get(CONTAINER_HASH_LABEL)
                                != Some(&spec_hash(container)) =>
                    {
                        // The container's definition changed (its image): replace it.
                        let l = l.clone();
                        self.ctx.normal(
                            &pod,
                            "Killing",
                            format!(
                                "Container {} definition changed, will be restarted",
                                container.name
                            ),
                        );
                        let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0);
                        self.ctx
                            .runtime
                            .stop_container(&l.id, Duration::from_secs(grace as u64))
                            .await
                            .map_err(|e| {
                                KubeletError::runtime("stopping a changed container", e)
                            })?;
                        self.probes.retain(|(id, _), _| *id != l.id);
                        self.start_container(
                            &sandbox,
                            container,
                            l.metadata.attempt + 1,
                            now,
                            &mut wake,
                        )
                        .await
                    }
                    Some(l) if l.state == rt::ContainerState::Running => {
                        let l = l.clone();
                        let (started, ready) =
                            self.probe_running(container, &l, now, &mut wake).await;
                        let slot = observed.entry(container.name.clone()).or_default();
                        slot.started = started;
                        slot.ready = ready;
                        None
                    }
                    Some(_) => None,
                };
                if waiting.is_some() {
                    observed.entry(container.name.clone()).or_default().waiting = waiting;
                }
            }
        }
        if wake <= now {
            // Something was started or killed: sync again at once instead of writing a status
            // that is already stale.
            return Ok(wake);
        }
        let phase = self
            .write_status(&spec, policy, &observed, initialized, now)
            .await?;
        if phase == "Running" {
            if let Some(seen) = self.seen_at.take() {
                let took = now.duration_since(seen).unwrap_or_default();
                self.ctx.stats.pod_started(took);
            }
        }
        if matches!(phase, "Succeeded" | "Failed") {
            // Nothing will run again: free the network and the sandbox's resources.
            if !self.host_network() {
                self.ctx
                    .network
                    .del(&self.attachment(&sandbox.id, &sandbox.netns))
                    .await
                    .map_err(|e| KubeletError::network("detaching a finished pod", e))?;
            }
            self.ctx
                .runtime
                .stop_pod_sandbox(&sandbox.id)
                .await
                .map_err(|e| KubeletError::runtime("stopping a finished pod's sandbox", e))?;
            self.finished = true;
        }
        Ok(wake)
    }

    /// Probes a running container; returns (started, ready).
    async fn probe_running(
        &mut self,
        container: &Container,
        running: &rt::ContainerStatus,
        now: SystemTime,
        wake: &mut SystemTime,
    ) -> (bool, bool) {
        if let Some(probe) = &container.startup_probe {
            match self
                .probe(ProbeKind::Startup, probe, container, running, now, wake)
                .await
            {
                Some(true) => {}
                Some(false) => {
                    self.kill_for_restart(container, &running.id, ProbeKind::Startup, probe)
                        .await;
                    *wake = now;
                    return (false, false);
                }
                None => return (false, false),
            }
        }
        if let Some(probe) = &container.liveness_probe {
            if self
                .probe(ProbeKind::Liveness, probe, container, running, now, wake)
                .await
                == Some(false)
            {
                self.kill_for_restart(container, &running.id, ProbeKind::Liveness, probe)
                    .await;
                *wake = now;
                return (true, false);
            }
        }
        let ready = match &container.readiness_probe {
            Some(probe) => {
                self.probe(ProbeKind::Readiness, probe, container, running, now, wake)
                    .await
                    == Some(true)
            }
            None => true,
        };
        (true, ready)
    }

    /// Computes the status and writes it if it changed; returns the phase.
    async fn write_status(
        &mut self,
        spec: &capstan_api::k8s_openapi::api::core::v1::PodSpec,
        policy: RestartPolicy,
        observed: &HashMap<String, Observed>,
        initialized: bool,
        now: SystemTime,
    ) -> Result<&'static str> {
        let runtime = self.ctx.runtime_name.as_str();
        let empty = Observed::default();
        let init: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                let o = observed.get(&c.name).unwrap_or(&empty);
                let mut s = status::container_status(c, o, runtime, "PodInitializing");
                // An init container is ready once it completed.
                s.ready = s
                    .state
                    .as_ref()
                    .and_then(|st| st.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == 0);
                s
            })
            .collect();
        let default_waiting = if initialized {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let containers: Vec<_> = spec
            .containers
            .iter()
            .map(|c| {
                let o = observed.get(&c.name).unwrap_or(&empty);
                status::container_status(c, o, runtime, default_waiting)
            })
            .collect();
        let phase = status::phase(policy, &init, initialized, &containers);
        let previous = self.last_status.clone();
        let conditions = status::conditions(
            phase,
            &init,
            initialized,
            &containers,
            previous.as_ref(),
            now,
        );
        let ips: Vec<String> = self
            .sandbox
            .as_ref()
            .map(|s| s.ips.clone())
            .unwrap_or_default();
        let host_ip = self.ctx.host_ip.clone();
        let status = PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            host_ip: host_ip.clone(),
            host_ips: host_ip.map(|ip| vec![HostIP { ip }]),
            pod_ip: ips.first().cloned(),
            pod_ips: (!ips.is_empty())
                .then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
            start_time: self.start_time.map(time),
            init_container_statuses: (!init.is_empty()).then_some(init),
            container_statuses: Some(containers),
            qos_class: previous.as_ref().and_then(|p| p.qos_class.clone()),
            ..PodStatus::default()
        };
        if self.last_status.as_ref() == Some(&status) {
            return Ok(phase);
        }
        let api = self.api();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let uid = &self.pod.metadata.uid;
        // Whether it was written (not gone, not replaced).
        let written = retry_on_error(5, KubeletError::is_conflict, |_| async {
            let mut current = match api.get_opt(&name).await {
                Ok(Some(current)) if current.metadata.uid == *uid => current,
                Ok(_) => return Ok(false),
                Err(error) => return Err(KubeletError::api("reading the pod", error)),
            };
            current.status = Some(status.clone());
            match api.update_status(&PostParams::default(), &current).await {
                Ok(_) => Ok(true),
                Err(error) if error.is_not_found() => Ok(false),
                Err(error) => Err(KubeletError::api("writing the pod status", error)),
            }
        })
        .await;
        match written {
            Ok(true) => self.last_status = Some(status),
            Ok(false) => {}
            // It changed under every write: the next sync writes again.
            Err(error) if error.is_conflict() => {}
            Err(error) => return Err(error),
        }
        Ok(phase)
    }

    // --- termination ---------------------------------------------------------------------

    /// Stops the Pod: `Killing` per running container, stop with the grace period, network
    /// `del`, sandbox stop and remove, then (unless `gone`) the final delete with grace 0.
    async fn terminate(&mut self, gone: bool) -> Result<()> {
        let pod = self.pod.clone();
        let grace = if gone {
            0
        } else {
            pod.metadata
                .deletion_grace_period_seconds
                .or(pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30)
                .max(0) as u64
        };
        let runtime = self.ctx.runtime.clone();
        let sandboxes = self.sandboxes().await?;
        for sandbox in &sandboxes {
            let containers = runtime
                .list_containers(rt::ContainerFilter::all().pod_sandbox(&sandbox.id))
                .await
                .map_err(|e| KubeletError::runtime("listing containers to stop", e))?;
            for container in containers.iter().filter(|c| {
                matches!(
                    c.state,
                    rt::ContainerState::Running | rt::ContainerState::Created
                )
            }) {
                if !gone {
                    self.ctx.normal(
                        &pod,
                        "Killing",
                        format!("Stopping container {}", container.metadata.name),
                    );
                }
                runtime
                    .stop_container(&container.id, Duration::from_secs(grace))
                    .await
                    .map_err(|e| KubeletError::runtime("stopping a container", e))?;
            }
        }
        for sandbox in &sandboxes {
            self.release_sandbox(&sandbox.id).await?;
        }
        self.sandbox = None;
        if gone {
            return Ok(());
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        match self.api().delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() || error.is_conflict() => Ok(()),
            Err(error) => Err(KubeletError::api("deleting the stopped pod", error)),
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
