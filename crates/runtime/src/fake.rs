//! The in-process, deterministic fake runtime.
//!
//! [`FakeRuntime`] is one node's runtime. It runs nothing: it keeps records and computes
//! every container's state lazily from its [`Clock`] whenever it is asked. A container whose
//! image is scripted to exit 5 s after it starts reports `Running` until the clock passes
//! start + 5 s and `Exited` from then on, with `finished_at` exactly start + 5 s. There are no
//! tasks or timers per container, so thousands of fake nodes (each its own `FakeRuntime`,
//! sharing one [`FakeClock`] and one [`FakeRegistry`]) fit in one process.
//!
//! What a container does is scripted per image with an [`ImageBehaviour`]: a start delay,
//! an exit code after a time, a crash loop, a pull failure, log lines and exec handlers.
//! Images come from a [`FakeRegistry`]: pulling an image the registry does not know fails
//! with `ImagePullFailed` (unless [`FakeRuntimeBuilder::allow_unknown_pulls`]), and images
//! can be preloaded onto the node or imported from an OCI tarball.
//!
//! It follows CRI's semantics where the kubelet depends on them: ids are unique, names are
//! reserved per sandbox (and per node for sandboxes), stop and remove are idempotent, removing
//! a running container force-stops it, stopping a sandbox stops its containers and removing
//! it removes them. Where a real runtime would block, the fake does not: a stop takes effect
//! at once (the process "handles" SIGTERM), whatever the grace period; the grace period is
//! recorded in the container's status message, and a zero grace period is a SIGKILL
//! (exit code 137).
//!
//! ```
//! use std::time::Duration;
//! use capstan_runtime::fake::{FakeRuntime, ImageBehaviour};
//! use capstan_runtime::*;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let clock = FakeClock::new();
//! let runtime = FakeRuntime::builder()
//!     .clock(clock.clone())
//!     .image("job", ImageBehaviour::new().exit_after(Duration::from_secs(5), 0))
//!     .build();
//! let pod = PodSandboxConfig::new(PodSandboxMetadata::new("job-1", "default", "uid-1"));
//! let sandbox = runtime.run_pod_sandbox(pod.clone()).await?;
//! runtime.pull_image(&ImageSpec::new("job")).await?;
//! let id = runtime.create_container(&sandbox, ContainerConfig::new("main", "job"), &pod).await?;
//! runtime.start_container(&id).await?;
//! assert_eq!(runtime.container_status(&id).await?.state, ContainerState::Running);
//! clock.advance(Duration::from_secs(5));
//! let status = runtime.container_status(&id).await?;
//! assert_eq!((status.state, status.exit_code), (ContainerState::Exited, Some(0)));
//! # Ok::<(), RuntimeError>(())
//! # }).unwrap();
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::clock::{Clock, FakeClock};
use crate::error::{Result, RuntimeError};
use crate::types::*;
use crate::{ContainerRuntime, LogStream};

/// Exit code of a container killed with SIGKILL (128 + 9).
pub const SIGKILL_EXIT_CODE: i32 = 137;

/// How long a scripted exec takes and what it returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ExecOutcome {
    /// What the command returns.
    pub response: ExecResponse,
    /// How long it runs; past the request's timeout the exec is a `Timeout` error.
    pub duration: Duration,
}

impl ExecOutcome {
    /// An outcome that takes `duration`.
    pub fn taking(response: ExecResponse, duration: Duration) -> Self {
        ExecOutcome { response, duration }
    }
}

impl From<ExecResponse> for ExecOutcome {
    fn from(response: ExecResponse) -> Self {
        ExecOutcome {
            response,
            duration: Duration::ZERO,
        }
    }
}

/// Answers an exec of one command: gets the full command line (`cmd[0]` included).
pub type ExecHandler = Arc<dyn Fn(&[String]) -> ExecOutcome + Send + Sync>;

/// One scripted log line: written `after` the container starts running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedLine {
    /// When, after the container started running.
    pub after: Duration,
    /// Which stream.
    pub stream: OutputStream,
    /// The text, without a newline.
    pub text: Bytes,
}

/// What containers of one image do, and how pulling it goes.
///
/// Built with [`ImageBehaviour::new`] (an image that runs forever, quietly) and the builder
/// methods. Every container keeps the behaviour its image had when it was created.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ImageBehaviour {
    /// Between `start_container` and the container running (it reports `Created` meanwhile).
    pub start_delay: Duration,
    /// Exit by itself this long after it starts running, with this code.
    pub exit_after: Option<(Duration, i32)>,
    /// Every container of the image crashes: exits with a non-zero code after
    /// `exit_after`'s time (1 s by default) and code (1 if unset or zero). A restarted
    /// container (the next attempt) crashes again, so the kubelet sees `CrashLoopBackOff`.
    pub crash_loop: bool,
    /// Pulls of the image fail with this reason (`ErrImagePull`).
    pub pull_error: Option<String>,
    /// Lines written to the log, at times relative to the start.
    pub log_lines: Vec<ScriptedLine>,
    /// Exec handlers by command name (`cmd[0]`). Without one, `true`, `false` and `echo`
    /// behave as in a shell and anything else exits 127 (`executable file not found`).
    pub exec: BTreeMap<String, ExecHandler>,
    /// The exit code when stopped with a grace period (it handles SIGTERM); 0 by default.
    pub term_exit_code: i32,
    /// The image's size in bytes (1 MiB by default).
    pub size: Option<u64>,
}

impl fmt::Debug for ImageBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageBehaviour")
            .field("start_delay", &self.start_delay)
            .field("exit_after", &self.exit_after)
            .field("crash_loop", &self.crash_loop)
            .field("pull_error", &self.pull_error)
            .field("log_lines", &self.log_lines)
            .field("exec", &self.exec.keys().collect::<Vec<_>>())
            .field("term_exit_code", &self.term_exit_code)
            .field("size", &self.size)
            .finish()
    }
}

impl ImageBehaviour {
    /// An image whose containers start at once and run until stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Containers run only `delay` after `start_container`.
    pub fn start_delay(mut self, delay: Duration) -> Self {
        self.start_delay = delay;
        self
    }

    /// Containers exit with `code` once they ran for `after`.
    pub fn exit_after(mut self, after: Duration, code: i32) -> Self {
        self.exit_after = Some((after, code));
        self
    }

    /// Containers crash (see [`ImageBehaviour::crash_loop`](field@Self::crash_loop)).
    pub fn crash_loop(mut self) -> Self {
        self.crash_loop = true;
        self
    }

    /// Pulls fail with `reason`.
    pub fn pull_error(mut self, reason: impl Into<String>) -> Self {
        self.pull_error = Some(reason.into());
        self
    }

    /// Writes `text` to stdout `after` the start.
    pub fn log_line(mut self, after: Duration, text: impl Into<Bytes>) -> Self {
        self.log_lines.push(ScriptedLine {
            after,
            stream: OutputStream::Stdout,
            text: text.into(),
        });
        self.log_lines.sort_by_key(|l| l.after);
        self
    }

    /// Writes `text` to stderr `after` the start.
    pub fn stderr_line(mut self, after: Duration, text: impl Into<Bytes>) -> Self {
        self.log_lines.push(ScriptedLine {
            after,
            stream: OutputStream::Stderr,
            text: text.into(),
        });
        self.log_lines.sort_by_key(|l| l.after);
        self
    }

    /// Answers execs of `command` with `handler`.
    pub fn exec<F, O>(mut self, command: impl Into<String>, handler: F) -> Self
    where
        F: Fn(&[String]) -> O + Send + Sync + 'static,
        O: Into<ExecOutcome>,
    {
        self.exec
            .insert(command.into(), Arc::new(move |cmd| handler(cmd).into()));
        self
    }

    /// Exit code on a graceful stop.
    pub fn term_exit_code(mut self, code: i32) -> Self {
        self.term_exit_code = code;
        self
    }

    /// The image's size.
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }

    /// When and how a container running since `running_at` exits by itself.
    fn natural_exit(&self, running_at: SystemTime) -> Option<(SystemTime, i32)> {
        let (after, code) = match (self.crash_loop, self.exit_after) {
            (true, Some((after, code))) => (after, if code == 0 { 1 } else { code }),
            (true, None) => (Duration::from_secs(1), 1),
            (false, Some(exit)) => exit,
            (false, None) => return None,
        };
        Some((running_at + after, code))
    }
}

/// The images a fake registry serves, by normalised reference. Cheap to clone; clones share
/// the same images, so one registry can serve every fake node of a simulation.
#[derive(Debug, Clone, Default)]
pub struct FakeRegistry {
    images: Arc<RwLock<HashMap<String, Arc<ImageBehaviour>>>>,
}

impl FakeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `image` (any reference form) with `behaviour`, replacing what was there.
    /// Containers created before keep their old behaviour.
    pub fn insert(&self, image: &str, behaviour: ImageBehaviour) {
        self.images
            .write()
            .insert(normalize_image_ref(image), Arc::new(behaviour));
    }

    /// Stops serving `image`.
    pub fn remove(&self, image: &str) {
        self.images.write().remove(&normalize_image_ref(image));
    }

    /// The behaviour of `image`, if served.
    pub fn get(&self, image: &str) -> Option<Arc<ImageBehaviour>> {
        self.images.read().get(&normalize_image_ref(image)).cloned()
    }
}

/// Counters of what a fake runtime was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FakeMetrics {
    /// Sandboxes run.
    pub sandboxes_run: u64,
    /// Sandboxes stopped (transitions from `Ready`).
    pub sandboxes_stopped: u64,
    /// Sandboxes removed.
    pub sandboxes_removed: u64,
    /// Containers created.
    pub containers_created: u64,
    /// Containers started.
    pub containers_started: u64,
    /// Containers stopped by a call while running (explicitly or by a cascade).
    pub containers_stopped: u64,
    /// Containers removed.
    pub containers_removed: u64,
    /// Successful pulls.
    pub images_pulled: u64,
    /// Failed pulls.
    pub image_pull_failures: u64,
    /// Exec calls that reached a container.
    pub execs: u64,
}

/// Builds a [`FakeRuntime`].
#[derive(Debug)]
pub struct FakeRuntimeBuilder {
    node_name: String,
    clock: Arc<dyn Clock>,
    registry: FakeRegistry,
    preload: Vec<String>,
    allow_unknown_pulls: bool,
    pod_ip_prefix: String,
}

impl FakeRuntimeBuilder {
    /// The node's name: part of every id, so runtimes of different nodes never share one.
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = name.into();
        self
    }

    /// The clock (a fresh [`FakeClock`] by default).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The clock, shared.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The registry to pull from (a fresh one by default).
    pub fn registry(mut self, registry: FakeRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Serves `image` from the registry with `behaviour`.
    pub fn image(self, image: &str, behaviour: ImageBehaviour) -> Self {
        self.registry.insert(image, behaviour);
        self
    }

    /// Puts `image` on the node from the start (with the registry's behaviour, or the
    /// default one if the registry does not serve it).
    pub fn preload(mut self, image: &str) -> Self {
        self.preload.push(image.to_string());
        self
    }

    /// Pulls of images the registry does not serve succeed, with the default behaviour.
    pub fn allow_unknown_pulls(mut self, allow: bool) -> Self {
        self.allow_unknown_pulls = allow;
        self
    }

    /// Sandbox IPs are `<prefix>.2` to `<prefix>.254` (`10.88.0` by default), reused once
    /// released. Simulations give each node its own prefix (its pod CIDR) so that pod IPs
    /// are unique across the cluster.
    pub fn pod_ip_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.pod_ip_prefix = prefix.into();
        self
    }

    /// The runtime.
    pub fn build(self) -> FakeRuntime {
        let node_hash = fnv1a(0xcbf2_9ce4_8422_2325, self.node_name.as_bytes());
        let mut state = State::default();
        for image in &self.preload {
            let behaviour = self.registry.get(image).unwrap_or_default();
            state.add_image(&normalize_image_ref(image), None, behaviour);
        }
        FakeRuntime {
            inner: Arc::new(Inner {
                node_name: self.node_name,
                node_hash,
                clock: self.clock,
                registry: self.registry,
                allow_unknown_pulls: self.allow_unknown_pulls,
                pod_ip_prefix: self.pod_ip_prefix,
                state: Mutex::new(state),
                changed: watch::Sender::new(0),
            }),
        }
    }
}

/// One node's fake container runtime. Cheap to clone (clones are the same runtime).
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_name: String,
    node_hash: u64,
    clock: Arc<dyn Clock>,
    registry: FakeRegistry,
    allow_unknown_pulls: bool,
    pod_ip_prefix: String,
    state: Mutex<State>,
    /// Bumped on every change, for log followers.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    seq: u64,
    unavailable: Option<String>,
    sandboxes: HashMap<String, SandboxRecord>,
    sandbox_names: HashMap<PodSandboxMetadata, String>,
    containers: HashMap<String, ContainerRecord>,
    /// Image records by id.
    images: BTreeMap<String, ImageRecord>,
    /// Image ids by normalised reference.
    image_refs: HashMap<String, String>,
    next_ip: u8,
    free_ips: BTreeSet<u8>,
    metrics: FakeMetrics,
}

#[derive(Debug)]
struct SandboxRecord {
    seq: u64,
    config: PodSandboxConfig,
    created_at: SystemTime,
    ready: bool,
    ip: Option<u8>,
    netns: String,
    containers: BTreeSet<String>,
    /// Container names (name, attempt) reserved in this sandbox.
    names: HashMap<ContainerMetadata, String>,
}

#[derive(Debug)]
struct ContainerRecord {
    seq: u64,
    sandbox_id: String,
    config: ContainerConfig,
    image_ref: String,
    behaviour: Arc<ImageBehaviour>,
    created_at: SystemTime,
    log_path: String,
    start_requested: Option<SystemTime>,
    stopped: Option<Stop>,
}

#[derive(Debug, Clone)]
struct Stop {
    at: SystemTime,
    exit_code: i32,
    reason: String,
    message: String,
}

#[derive(Debug)]
struct ImageRecord {
    image: Image,
    behaviour: Arc<ImageBehaviour>,
}

/// A container's state at one instant.
#[derive(Debug)]
struct Observed {
    state: ContainerState,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    exit_code: Option<i32>,
    reason: String,
    message: String,
}

impl ContainerRecord {
    fn running_at(&self) -> Option<SystemTime> {
        self.start_requested.map(|s| s + self.behaviour.start_delay)
    }

    fn observe(&self, now: SystemTime) -> Observed {
        let created = Observed {
            state: ContainerState::Created,
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: String::new(),
            message: String::new(),
        };
        let Some(running_at) = self.running_at() else {
            return created;
        };
        if let Some(stop) = &self.stopped {
            return Observed {
                state: ContainerState::Exited,
                started_at: (running_at <= stop.at).then_some(running_at),
                finished_at: Some(stop.at),
                exit_code: Some(stop.exit_code),
                reason: stop.reason.clone(),
                message: stop.message.clone(),
            };
        }
        if now < running_at {
            return created;
        }
        match self.behaviour.natural_exit(running_at) {
            Some((at, code)) if now >= at => Observed {
                state: ContainerState::Exited,
                started_at: Some(running_at),
                finished_at: Some(at),
                exit_code: Some(code),
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: String::new(),
            },
            _ => Observed {
                state: ContainerState::Running,
                started_at: Some(running_at),
                ..created
            },
        }
    }

    /// Records a stop at `now` if the container is starting or running; returns whether it
    /// was.
    fn stop(&mut self, now: SystemTime, grace: Duration) -> bool {
        if self.start_requested.is_none() {
            return false;
        }
        if self.observe(now).state == ContainerState::Exited {
            return false;
        }
        let (exit_code, how) = if grace.is_zero() {
            (SIGKILL_EXIT_CODE, "killed (grace period 0s)".to_string())
        } else {
            (
                self.behaviour.term_exit_code,
                format!("stopped with a grace period of {grace:?}"),
            )
        };
        self.stopped = Some(Stop {
            at: now,
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: how,
        });
        true
    }

    /// The log lines written by `now`.
    fn log(&self, now: SystemTime) -> Vec<LogEntry> {
        let Some(running_at) = self.running_at() else {
            return Vec::new();
        };
        let observed = self.observe(now);
        let until = observed.finished_at.map_or(now, |f| f.min(now));
        if observed.started_at.is_none() {
            return Vec::new();
        }
        self.behaviour
            .log_lines
            .iter()
            .map(|l| (running_at + l.after, l))
            .take_while(|(at, _)| *at <= until)
            .map(|(timestamp, l)| LogEntry {
                timestamp,
                stream: l.stream,
                line: l.text.clone(),
            })
            .collect()
    }

    fn to_container(&self, id: &str, now: SystemTime) -> Container {
        Container {
            id: id.to_string(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: self.config.metadata.clone(),
            image: self.config.image.clone(),
            image_ref: self.image_ref.clone(),
            state: self.observe(now).state,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
        }
    }
}

impl State {
    fn add_image(
        &mut self,
        reference: &str,
        id: Option<String>,
        behaviour: Arc<ImageBehaviour>,
    ) -> Image {
        let id = id.unwrap_or_else(|| {
            let h = fnv1a(0x1b87_3593_cc9e_2d51, reference.as_bytes());
            format!(
                "sha256:{}",
                hex256(h, reference.as_bytes(), h.rotate_left(17))
            )
        });
        if let Some(old) = self.image_refs.insert(reference.to_string(), id.clone()) {
            if old != id {
                if let Some(record) = self.images.get_mut(&old) {
                    record.image.repo_tags.retain(|t| t != reference);
                    if record.image.repo_tags.is_empty() {
                        self.images.remove(&old);
                    }
                }
            }
        }
        let record = self
            .images
            .entry(id.clone())
            .or_insert_with(|| ImageRecord {
                image: Image {
                    id: id.clone(),
                    repo_tags: Vec::new(),
                    repo_digests: Vec::new(),
                    size: behaviour.size.unwrap_or(1 << 20),
                    pinned: false,
                },
                behaviour: behaviour.clone(),
            });
        record.behaviour = behaviour;
        if !record.image.repo_tags.iter().any(|t| t == reference) {
            record.image.repo_tags.push(reference.to_string());
        }
        record.image.clone()
    }

    fn find_image(&self, image: &str) -> Option<&ImageRecord> {
        if let Some(record) = self.images.get(image) {
            return Some(record);
        }
        let id = self.image_refs.get(&normalize_image_ref(image))?;
        self.images.get(id)
    }

    fn alloc_ip(&mut self) -> Option<u8> {
        if let Some(ip) = self.free_ips.pop_first() {
            return Some(ip);
        }
        if self.next_ip < 2 {
            self.next_ip = 2;
        }
        if self.next_ip == 255 {
            return None;
        }
        self.next_ip += 1;
        Some(self.next_ip - 1)
    }

    /// Stops `id`'s containers and tears its network down. Returns whether it changed.
    fn stop_sandbox(&mut self, id: &str, now: SystemTime) -> bool {
        let Some(sandbox) = self.sandboxes.get_mut(id) else {
            return false;
        };
        let containers: Vec<String> = sandbox.containers.iter().cloned().collect();
        let was_ready = std::mem::replace(&mut sandbox.ready, false);
        let ip = sandbox.ip.take();
        let mut changed = was_ready;
        for c in containers {
            if let Some(record) = self.containers.get_mut(&c) {
                if record.stop(now, Duration::ZERO) {
                    self.metrics.containers_stopped += 1;
                    changed = true;
                }
            }
        }
        if let Some(ip) = ip {
            self.free_ips.insert(ip);
        }
        if was_ready {
            self.metrics.sandboxes_stopped += 1;
        }
        changed
    }

    fn remove_container(&mut self, id: &str, now: SystemTime) -> bool {
        let Some(mut record) = self.containers.remove(id) else {
            return false;
        };
        if record.stop(now, Duration::ZERO) {
            self.metrics.containers_stopped += 1;
        }
        if let Some(sandbox) = self.sandboxes.get_mut(&record.sandbox_id) {
            sandbox.containers.remove(id);
            sandbox.names.remove(&record.config.metadata);
        }
        self.metrics.containers_removed += 1;
        true
    }
}

impl FakeRuntime {
    /// A builder with a fresh [`FakeClock`], an empty registry and node name `fake-node`.
    pub fn builder() -> FakeRuntimeBuilder {
        FakeRuntimeBuilder {
            node_name: "fake-node".into(),
            clock: Arc::new(FakeClock::new()),
            registry: FakeRegistry::new(),
            preload: Vec::new(),
            allow_unknown_pulls: false,
            pod_ip_prefix: "10.88.0".into(),
        }
    }

    /// A runtime with the defaults of [`FakeRuntime::builder`].
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// The node name the runtime was built with.
    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// The runtime's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// The registry it pulls from.
    pub fn registry(&self) -> &FakeRegistry {
        &self.inner.registry
    }

    /// Makes every call fail with `Unavailable(reason)` (a crashed runtime) until called
    /// with `None`. State is kept.
    pub fn set_unavailable(&self, reason: Option<&str>) {
        self.inner.state.lock().unavailable = reason.map(str::to_string);
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// Kills a running container from outside, as the OOM killer would: it exits now with
    /// `exit_code`, `reason` (for example `OOMKilled`) and `message`. Returns whether it was
    /// running.
    pub fn kill_container(&self, id: &str, exit_code: i32, reason: &str, message: &str) -> bool {
        let now = self.inner.clock.now();
        let mut state = self.inner.state.lock();
        let Some(record) = state.containers.get_mut(id) else {
            return false;
        };
        if record.observe(now).state != ContainerState::Running {
            return false;
        }
        record.stopped = Some(Stop {
            at: now,
            exit_code,
            reason: reason.to_string(),
            message: message.to_string(),
        });
        drop(state);
        self.notify();
        true
    }

    /// What the runtime was asked to do so far.
    pub fn metrics(&self) -> FakeMetrics {
        self.inner.state.lock().metrics
    }

    fn notify(&self) {
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// Locks the state, failing if the runtime is marked unavailable.
    fn lock(&self) -> Result<parking_lot::MutexGuard<'_, State>> {
        let state = self.inner.state.lock();
        if let Some(reason) = &state.unavailable {
            return Err(RuntimeError::Unavailable(reason.clone()));
        }
        Ok(state)
    }

    fn next_id(&self, state: &mut State) -> (u64, String) {
        state.seq += 1;
        let seq = state.seq;
        (seq, hex256(self.inner.node_hash, &seq.to_le_bytes(), seq))
    }
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        let _state = self.lock()?;
        Ok(RuntimeVersion {
            runtime_name: "fake".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        })
    }

    async fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String> {
        let meta = &config.metadata;
        if meta.name.is_empty() || meta.namespace.is_empty() || meta.uid.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "sandbox metadata needs a name, a namespace and a uid".into(),
            ));
        }
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        if let Some(existing) = state.sandbox_names.get(meta) {
            return Err(RuntimeError::AlreadyExists {
                kind: "sandbox",
                name: format!(
                    "{}_{}_{}_{}",
                    meta.name, meta.namespace, meta.uid, meta.attempt
                ),
                id: existing.clone(),
            });
        }
        let host_network = config.namespace_options.network == NamespaceMode::Node;
        let ip = if host_network {
            None
        } else {
            Some(state.alloc_ip().ok_or_else(|| {
                RuntimeError::Internal(format!(
                    "no free pod IP left in {}.0/24",
                    self.inner.pod_ip_prefix
                ))
            })?)
        };
        let (seq, id) = self.next_id(&mut state);
        let netns = if host_network {
            String::new()
        } else {
            format!("/var/run/netns/cni-{}", &id[..16])
        };
        state.sandbox_names.insert(meta.clone(), id.clone());
        state.sandboxes.insert(
            id.clone(),
            SandboxRecord {
                seq,
                config,
                created_at: now,
                ready: true,
                ip,
                netns,
                containers: BTreeSet::new(),
                names: HashMap::new(),
            },
        );
        state.metrics.sandboxes_run += 1;
        drop(state);
        self.notify();
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let now = self.inner.clock.now();
        let changed = self.lock()?.stop_sandbox(id, now);
        if changed {
            self.notify();
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        if !state.sandboxes.contains_key(id) {
            return Ok(());
        }
        state.stop_sandbox(id, now);
        let containers: Vec<String> = state.sandboxes[id].containers.iter().cloned().collect();
        for c in containers {
            state.remove_container(&c, now);
        }
        if let Some(sandbox) = state.sandboxes.remove(id) {
            state.sandbox_names.remove(&sandbox.config.metadata);
            state.metrics.sandboxes_removed += 1;
        }
        drop(state);
        self.notify();
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let state = self.lock()?;
        let sandbox = state
            .sandboxes
            .get(id)
            .ok_or_else(|| RuntimeError::not_found("sandbox", id))?;
        Ok(PodSandboxStatus {
            id: id.to_string(),
            metadata: sandbox.config.metadata.clone(),
            state: if sandbox.ready {
                PodSandboxState::Ready
            } else {
                PodSandboxState::NotReady
            },
            created_at: sandbox.created_at,
            network: PodSandboxNetworkStatus {
                ip: sandbox
                    .ip
                    .map(|ip| format!("{}.{ip}", self.inner.pod_ip_prefix))
                    .unwrap_or_default(),
                additional_ips: Vec::new(),
            },
            network_namespace_path: sandbox.netns.clone(),
            namespace_options: sandbox.config.namespace_options,
            labels: sandbox.config.labels.clone(),
            annotations: sandbox.config.annotations.clone(),
        })
    }

    async fn list_pod_sandboxes(&self, filter: PodSandboxFilter) -> Result<Vec<PodSandbox>> {
        let state = self.lock()?;
        let mut out: Vec<(u64, PodSandbox)> = state
            .sandboxes
            .iter()
            .map(|(id, s)| {
                (
                    s.seq,
                    PodSandbox {
                        id: id.clone(),
                        metadata: s.config.metadata.clone(),
                        state: if s.ready {
                            PodSandboxState::Ready
                        } else {
                            PodSandboxState::NotReady
                        },
                        created_at: s.created_at,
                        labels: s.config.labels.clone(),
                        annotations: s.config.annotations.clone(),
                    },
                )
            })
            .filter(|(_, s)| filter.matches(s))
            .collect();
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: ContainerConfig,
        _sandbox_config: &PodSandboxConfig,
    ) -> Result<String> {
        if config.metadata.name.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "container metadata needs a name".into(),
            ));
        }
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        let sandbox = state
            .sandboxes
            .get(pod_sandbox_id)
            .ok_or_else(|| RuntimeError::not_found("sandbox", pod_sandbox_id))?;
        if !sandbox.ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "sandbox {pod_sandbox_id} is not ready"
            )));
        }
        if let Some(existing) = sandbox.names.get(&config.metadata) {
            return Err(RuntimeError::AlreadyExists {
                kind: "container",
                name: format!(
                    "{}_{}_{}",
                    config.metadata.name, sandbox.config.metadata.name, config.metadata.attempt
                ),
                id: existing.clone(),
            });
        }
        let log_path = match (
            sandbox.config.log_directory.as_str(),
            config.log_path.as_str(),
        ) {
            (_, "") => String::new(),
            ("", path) => path.to_string(),
            (dir, path) => format!("{}/{path}", dir.trim_end_matches('/')),
        };
        let image =
            state
                .find_image(&config.image.image)
                .ok_or_else(|| RuntimeError::ImageNotFound {
                    image: config.image.image.clone(),
                })?;
        let (image_ref, behaviour) = (image.image.id.clone(), image.behaviour.clone());
        let (seq, id) = self.next_id(&mut state);
        let sandbox = state
            .sandboxes
            .get_mut(pod_sandbox_id)
            .ok_or_else(|| RuntimeError::not_found("sandbox", pod_sandbox_id))?;
        sandbox.containers.insert(id.clone());
        sandbox.names.insert(config.metadata.clone(), id.clone());
        state.containers.insert(
            id.clone(),
            ContainerRecord {
                seq,
                sandbox_id: pod_sandbox_id.to_string(),
                config,
                image_ref,
                behaviour,
                created_at: now,
                log_path,
                start_requested: None,
                stopped: None,
            },
        );
        state.metrics.containers_created += 1;
        drop(state);
        self.notify();
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        let record = state
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        if record.start_requested.is_some() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} was already started"
            )));
        }
        record.start_requested = Some(now);
        state.metrics.containers_started += 1;
        drop(state);
        self.notify();
        Ok(())
    }

    async fn stop_container(&self, id: &str, grace_period: Duration) -> Result<()> {
        let now = self.inner.clock.now();
        let mut state = self.lock()?;
        let stopped = state
            .containers
            .get_mut(id)
            .is_some_and(|record| record.stop(now, grace_period));
        if stopped {
            state.metrics.containers_stopped += 1;
            drop(state);
            self.notify();
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let now = self.inner.clock.now();
        let removed = self.lock()?.remove_container(id, now);
        if removed {
            self.notify();
        }
        Ok(())
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let now = self.inner.clock.now();
        let state = self.lock()?;
        let record = state
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        let observed = record.observe(now);
        Ok(ContainerStatus {
            id: id.to_string(),
            metadata: record.config.metadata.clone(),
            state: observed.state,
            created_at: record.created_at,
            started_at: observed.started_at,
            finished_at: observed.finished_at,
            exit_code: observed.exit_code,
            image: record.config.image.clone(),
            image_ref: record.image_ref.clone(),
            reason: observed.reason,
            message: observed.message,
            labels: record.config.labels.clone(),
            annotations: record.config.annotations.clone(),
            mounts: record.config.mounts.clone(),
            log_path: record.log_path.clone(),
        })
    }

    async fn list_containers(&self, filter: ContainerFilter) -> Result<Vec<Container>> {
        let now = self.inner.clock.now();
        let state = self.lock()?;
        let mut out: Vec<(u64, Container)> = state
            .containers
            .iter()
            .filter(|(_, c)| {
                filter
                    .pod_sandbox_id
                    .as_deref()
                    .is_none_or(|p| c.sandbox_id == p)
            })
            .map(|(id, c)| (c.seq, c.to_container(id, now)))
            .filter(|(_, c)| filter.matches(c))
            .collect();
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    async fn container_logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        let now = self.inner.clock.now();
        let lines = {
            let state = self.lock()?;
            state
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::not_found("container", id))?
                .log(now)
        };
        let mut lines: Vec<LogEntry> = lines
            .into_iter()
            .filter(|l| options.since.is_none_or(|s| l.timestamp >= s))
            .collect();
        let written = lines.len();
        if let Some(tail) = options.tail {
            lines.drain(..lines.len().saturating_sub(tail));
        }
        let first = futures::stream::iter(lines.into_iter().map(Ok));
        if !options.follow {
            return Ok(Box::pin(first));
        }
        let follower = Follower {
            runtime: self.clone(),
            id: id.to_string(),
            since: options.since,
            emitted: written,
            pending: VecDeque::new(),
        };
        let rest = futures::stream::unfold(follower, |mut f| async move {
            f.next().await.map(|entry| (entry, f))
        });
        Ok(Box::pin(futures::StreamExt::chain(first, rest)))
    }

    async fn exec_sync(&self, request: ExecRequest) -> Result<ExecResponse> {
        let Some(command) = request.cmd.first() else {
            return Err(RuntimeError::InvalidArgument("exec needs a command".into()));
        };
        let now = self.inner.clock.now();
        let behaviour = {
            let mut state = self.lock()?;
            let record = state
                .containers
                .get(&request.container_id)
                .ok_or_else(|| RuntimeError::not_found("container", &request.container_id))?;
            let observed = record.observe(now);
            if observed.state != ContainerState::Running {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "container {} is not running ({:?})",
                    request.container_id, observed.state
                )));
            }
            let behaviour = record.behaviour.clone();
            state.metrics.execs += 1;
            behaviour
        };
        let outcome = match behaviour.exec.get(command) {
            Some(handler) => handler(&request.cmd),
            None => builtin_exec(&request.cmd),
        };
        match request.timeout {
            Some(timeout) if outcome.duration > timeout => Err(RuntimeError::Timeout(timeout)),
            _ => Ok(outcome.response),
        }
    }

    async fn pull_image(&self, image: &ImageSpec) -> Result<String> {
        let reference = normalize_image_ref(&image.image);
        if image.image.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "empty image reference".into(),
            ));
        }
        drop(self.lock()?);
        let served = self.inner.registry.get(&reference);
        let behaviour = match served {
            Some(behaviour) => match &behaviour.pull_error {
                Some(reason) => Err(reason.clone()),
                None => Ok(behaviour),
            },
            None if self.inner.allow_unknown_pulls => Ok(Arc::default()),
            None => Err(format!(
                "failed to resolve reference {reference:?}: {reference}: not found"
            )),
        };
        let mut state = self.lock()?;
        match behaviour {
            Ok(behaviour) => {
                let image = state.add_image(&reference, None, behaviour);
                state.metrics.images_pulled += 1;
                Ok(image.id)
            }
            Err(reason) => {
                state.metrics.image_pull_failures += 1;
                Err(RuntimeError::ImagePullFailed {
                    image: image.image.clone(),
                    reason,
                })
            }
        }
    }

    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>> {
        let state = self.lock()?;
        Ok(state.find_image(&image.image).map(|r| r.image.clone()))
    }

    async fn list_images(&self) -> Result<Vec<Image>> {
        let state = self.lock()?;
        Ok(state.images.values().map(|r| r.image.clone()).collect())
    }

    async fn remove_image(&self, image: &ImageSpec) -> Result<()> {
        let mut state = self.lock()?;
        let Some(id) = state.find_image(&image.image).map(|r| r.image.id.clone()) else {
            return Ok(());
        };
        if let Some(record) = state.images.remove(&id) {
            for tag in record.image.repo_tags {
                state.image_refs.remove(&tag);
            }
        }
        Ok(())
    }

    async fn import_image(&self, archive: Bytes) -> Result<Vec<Image>> {
        let indexed = crate::oci::read_index(&archive)?;
        let mut state = self.lock()?;
        Ok(indexed
            .into_iter()
            .map(|i| {
                let reference = normalize_image_ref(&i.name);
                let behaviour = self.inner.registry.get(&reference).unwrap_or_default();
                state.add_image(&reference, Some(i.digest), behaviour)
            })
            .collect())
    }
}

/// A follower of one container's log.
struct Follower {
    runtime: FakeRuntime,
    id: String,
    since: Option<SystemTime>,
    /// How many of the container's lines (after `since`) were yielded.
    emitted: usize,
    pending: VecDeque<LogEntry>,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<LogEntry>> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                return Some(Ok(entry));
            }
            // Subscribe before reading, so no change between the read and the wait is lost.
            let tick = self.runtime.inner.clock.tick();
            let mut changed = self.runtime.inner.changed.subscribe();
            let now = self.runtime.inner.clock.now();
            let (lines, state) = {
                let state = self.runtime.inner.state.lock();
                let record = state.containers.get(&self.id)?;
                (record.log(now), record.observe(now).state)
            };
            let lines: Vec<LogEntry> = lines
                .into_iter()
                .filter(|l| self.since.is_none_or(|s| l.timestamp >= s))
                .collect();
            if lines.len() > self.emitted {
                self.pending.extend(lines.into_iter().skip(self.emitted));
                self.emitted += self.pending.len();
                continue;
            }
            if state == ContainerState::Exited {
                return None;
            }
            let changed = std::pin::pin!(changed.changed());
            futures::future::select(tick, changed).await;
        }
    }
}

fn builtin_exec(cmd: &[String]) -> ExecOutcome {
    match cmd[0].as_str() {
        "true" => ExecResponse::new(0).into(),
        "false" => ExecResponse::new(1).into(),
        "echo" => {
            let mut out = cmd[1..].join(" ");
            out.push('\n');
            ExecResponse::new(0).stdout(out).into()
        }
        other => ExecResponse::new(127)
            .stderr(format!(
                "exec: {other:?}: executable file not found in $PATH\n"
            ))
            .into(),
    }
}

/// FNV-1a, 64 bits, from `seed`.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: a bijection on `u64`.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64 hex characters derived from `salt`, `bytes` and `unique`. For one `salt`, distinct
/// `unique` values give distinct strings (the second quarter is a bijection of it).
fn hex256(salt: u64, bytes: &[u8], unique: u64) -> String {
    let a = fnv1a(0xcbf2_9ce4_8422_2325 ^ salt, bytes);
    let b = mix(unique ^ salt);
    let c = mix(a ^ 0x9e37_79b9_7f4a_7c15);
    let d = mix(salt.wrapping_add(b));
    format!("{a:016x}{b:016x}{c:016x}{d:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    const SECOND: Duration = Duration::from_secs(1);

    fn pod(name: &str) -> PodSandboxConfig {
        PodSandboxConfig::new(PodSandboxMetadata::new(
            name,
            "default",
            format!("uid-{name}"),
        ))
        .log_directory(format!("/var/log/pods/default_{name}"))
    }

    async fn running(runtime: &FakeRuntime, image: &str) -> (String, String, PodSandboxConfig) {
        let config = pod("p");
        let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
        crate::ensure_image(runtime, &ImageSpec::new(image))
            .await
            .unwrap();
        let id = runtime
            .create_container(&sandbox, ContainerConfig::new("c", image), &config)
            .await
            .unwrap();
        runtime.start_container(&id).await.unwrap();
        (sandbox, id, config)
    }

    #[tokio::test]
    async fn a_second_sandbox_with_the_same_metadata_already_exists() {
        let runtime = FakeRuntime::new();
        let first = runtime.run_pod_sandbox(pod("a")).await.unwrap();
        let err = runtime.run_pod_sandbox(pod("a")).await.unwrap_err();
        assert!(matches!(err, RuntimeError::AlreadyExists { ref id, .. } if *id == first));
        let mut next = pod("a");
        next.metadata.attempt = 1;
        runtime.run_pod_sandbox(next).await.unwrap();
        runtime.remove_pod_sandbox(&first).await.unwrap();
        runtime.run_pod_sandbox(pod("a")).await.unwrap();
    }

    #[tokio::test]
    async fn a_container_name_and_attempt_is_reserved_until_removal() {
        let runtime = FakeRuntime::builder().preload("busybox").build();
        let config = pod("p");
        let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let c = ContainerConfig::new("web", "busybox");
        let first = runtime
            .create_container(&sandbox, c.clone(), &config)
            .await
            .unwrap();
        let err = runtime
            .create_container(&sandbox, c.clone(), &config)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            RuntimeError::AlreadyExists {
                kind: "container",
                ..
            }
        ));
        runtime
            .create_container(&sandbox, c.clone().attempt(1), &config)
            .await
            .unwrap();
        runtime.remove_container(&first).await.unwrap();
        runtime
            .create_container(&sandbox, c, &config)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn creating_a_container_needs_its_image_and_a_ready_sandbox() {
        let runtime = FakeRuntime::builder().preload("busybox").build();
        let config = pod("p");
        let sandbox = runtime.run_pod_sandbox(config.clone()).await.unwrap();
        let err = runtime
            .create_container(&sandbox, ContainerConfig::new("c", "nginx"), &config)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            RuntimeError::ImageNotFound {
                image: "nginx".into()
            }
        );
        let err = runtime
            .create_container("nope", ContainerConfig::new("c", "busybox"), &config)
            .await
            .unwrap_err();
        assert!(err.is_not_found());
        runtime.stop_pod_sandbox(&sandbox).await.unwrap();
        let err = runtime
            .create_container(&sandbox, ContainerConfig::new("c", "busybox"), &config)
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::FailedPrecondition(_)));
    }

    #[tokio::test]
    async fn a_start_delay_keeps_the_container_created_until_the_clock_passes_it() {
        let clock = FakeClock::new();
        let runtime = FakeRuntime::builder()
            .clock(clock.clone())
            .image("slow", ImageBehaviour::new().start_delay(3 * SECOND))
            .build();
        let t0 = clock.now();
        let (_, id, _) = running(&runtime, "slow").await;
        assert_eq!(
            runtime.container_status(&id).await.unwrap().state,
            ContainerState::Created
        );
        clock.advance(3 * SECOND);
        let status = runtime.container_status(&id).await.unwrap();
        assert_eq!(status.state, ContainerState::Running);
        assert_eq!(status.started_at, Some(t0 + 3 * SECOND));
    }

    #[tokio::test]
    async fn a_crash_looping_image_exits_non_zero_every_attempt() {
        let clock = FakeClock::new();
        let runtime = FakeRuntime::builder()
            .clock(clock.clone())
            .image("crash", ImageBehaviour::new().crash_loop())
            .build();
        let (sandbox, first, config) = running(&runtime, "crash").await;
        clock.advance(SECOND);
        let status = runtime.container_status(&first).await.unwrap();
        assert_eq!(status.state, ContainerState::Exited);
        assert_eq!(status.exit_code, Some(1));
        assert_eq!(status.reason, "Error");
        let second = runtime
            .create_container(
                &sandbox,
                ContainerConfig::new("c", "crash").attempt(1),
                &config,
            )
            .await
            .unwrap();
        runtime.start_container(&second).await.unwrap();
        clock.advance(SECOND);
        assert_eq!(
            runtime.container_status(&second).await.unwrap().exit_code,
            Some(1)
        );
    }

    #[tokio::test]
    async fn stop_is_idempotent_and_records_the_grace_period() {
        let clock = FakeClock::new();
        let runtime = FakeRuntime::builder()
            .clock(clock.clone())
            .preload("busybox")
            .build();
        let (_, id, _) = running(&runtime, "busybox").await;
        clock.advance(SECOND);
        runtime.stop_container(&id, 30 * SECOND).await.unwrap();
        let status = runtime.container_status(&id).await.unwrap();
        assert_eq!(status.state, ContainerState::Exited);
        assert_eq!(status.exit_code, Some(0));
        assert_eq!(status.finished_at, Some(clock.now()));
        assert!(status.message.contains("30s"), "{}", status.message);
        clock.advance(SECOND);
        runtime.stop_container(&id, Duration::ZERO).await.unwrap();
        let again = runtime.container_status(&id).await.unwrap();
        assert_eq!(again, status, "a second stop changes nothing");
        runtime.stop_container("missing", SECOND).await.unwrap();
        assert_eq!(runtime.metrics().containers_stopped, 1);
    }

    #[tokio::test]
    async fn removing_a_running_container_kills_it_and_missing_ones_are_fine() {
        let runtime = FakeRuntime::builder().preload("busybox").build();
        let (_, id, _) = running(&runtime, "busybox").await;
        runtime.remove_container(&id).await.unwrap();
        assert!(runtime
            .container_status(&id)
            .await
            .unwrap_err()
            .is_not_found());
        runtime.remove_container(&id).await.unwrap();
        let m = runtime.metrics();
        assert_eq!((m.containers_stopped, m.containers_removed), (1, 1));
    }

    #[tokio::test]
    async fn stopping_a_sandbox_kills_its_containers_and_releases_its_ip() {
        let runtime = FakeRuntime::builder().preload("busybox").build();
        let (sandbox, id, _) = running(&runtime, "busybox").await;
        let status = runtime.pod_sandbox_status(&sandbox).await.unwrap();
        assert_eq!(status.network.ip, "10.88.0.2");
        assert!(status
            .network_namespace_path
            .starts_with("/var/run/netns/cni-"));
        runtime.stop_pod_sandbox(&sandbox).await.unwrap();
        runtime.stop_pod_sandbox(&sandbox).await.unwrap();
        let status = runtime.pod_sandbox_status(&sandbox).await.unwrap();
        assert_eq!(status.state, PodSandboxState::NotReady);
        assert_eq!(status.network.ip, "");
        let c = runtime.container_status(&id).await.unwrap();
        assert_eq!(c.exit_code, Some(SIGKILL_EXIT_CODE));
        let next = runtime.run_pod_sandbox(pod("q")).await.unwrap();
        let ip = runtime.pod_sandbox_status(&next).await.unwrap().network.ip;
        assert_eq!(ip, "10.88.0.2", "the address is reused");
    }

    #[tokio::test]
    async fn removing_a_sandbox_removes_its_containers() {
        let runtime = FakeRuntime::builder().preload("busybox").build();
        let (sandbox, id, _) = running(&runtime, "busybox").await;
        runtime.remove_pod_sandbox(&sandbox).await.unwrap();
        runtime.remove_pod_sandbox(&sandbox).await.unwrap();
        assert!(runtime
            .container_status(&id)
            .await
            .unwrap_err()
            .is_not_found());
        assert!(runtime
            .list_containers(ContainerFilter::all())
            .await
            .unwrap()
            .is_empty());
        assert!(runtime
            .list_pod_sandboxes(PodSandboxFilter::all())
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn host_network_sandboxes_get_no_ip_or_namespace() {
        let runtime = FakeRuntime::new();
        let config = pod("h").namespace_options(NamespaceOptions {
            network: NamespaceMode::Node,
            ..Default::default()
        });
        let id = runtime.run_pod_sandbox(config).await.unwrap();
        let status = runtime.pod_sandbox_status(&id).await.unwrap();
        assert_eq!(status.network.ip, "");
        assert_eq!(status.network_namespace_path, "");
    }

    #[tokio::test]
    async fn lists_filter_by_state_sandbox_and_labels_in_creation_order() {
        let runtime = FakeRuntime::builder().preload("busybox").build();
        let a = pod("a").label("app", "web");
        let b = pod("b").label("app", "db");
        let sa = runtime.run_pod_sandbox(a.clone()).await.unwrap();
        let sb = runtime.run_pod_sandbox(b.clone()).await.unwrap();
        let web = PodSandboxFilter::all().label("app", "web");
        let listed = runtime.list_pod_sandboxes(web).await.unwrap();
        assert_eq!(listed.iter().map(|s| &s.id).collect::<Vec<_>>(), vec![&sa]);
        let all = runtime
            .list_pod_sandboxes(PodSandboxFilter::all())
            .await
            .unwrap();
        assert_eq!(
            all.iter().map(|s| &s.id).collect::<Vec<_>>(),
            vec![&sa, &sb]
        );
        let c1 = runtime
            .create_container(&sa, ContainerConfig::new("x", "busybox"), &a)
            .await
            .unwrap();
        let c2 = runtime
            .create_container(&sb, ContainerConfig::new("y", "busybox"), &b)
            .await
            .unwrap();
        runtime.start_container(&c2).await.unwrap();
        let running = runtime
            .list_containers(ContainerFilter::all().state(ContainerState::Running))
            .await
            .unwrap();
        assert_eq!(running.iter().map(|c| &c.id).collect::<Vec<_>>(), vec![&c2]);
        let in_a = runtime
            .list_containers(ContainerFilter::all().pod_sandbox(&sa))
            .await
            .unwrap();
        assert_eq!(in_a.iter().map(|c| &c.id).collect::<Vec<_>>(), vec![&c1]);
        let by_prefix = runtime
            .list_containers(ContainerFilter::all().id(&c1[..12]))
            .await
            .unwrap();
        assert_eq!(by_prefix.len(), 1);
    }

    #[tokio::test]
    async fn pulls_fail_for_unknown_images_unless_allowed() {
        let runtime = FakeRuntime::new();
        let err = runtime.pull_image(&"nginx".into()).await.unwrap_err();
        assert!(matches!(err, RuntimeError::ImagePullFailed { .. }));
        assert!(err.is_retryable());
        let open = FakeRuntime::builder().allow_unknown_pulls(true).build();
        let id = open.pull_image(&"nginx".into()).await.unwrap();
        let image = open
            .image_status(&"docker.io/library/nginx".into())
            .await
            .unwrap();
        assert_eq!(image.map(|i| i.id), Some(id));
        assert_eq!(open.metrics().images_pulled, 1);
        assert_eq!(runtime.metrics().image_pull_failures, 1);
    }

    #[tokio::test]
    async fn a_removed_image_is_gone_and_removing_it_again_is_fine() {
        let runtime = FakeRuntime::builder().preload("busybox:1.36").build();
        assert_eq!(runtime.list_images().await.unwrap().len(), 1);
        runtime.remove_image(&"busybox:1.36".into()).await.unwrap();
        runtime.remove_image(&"busybox:1.36".into()).await.unwrap();
        assert!(runtime.list_images().await.unwrap().is_empty());
        assert_eq!(
            runtime.image_status(&"busybox:1.36".into()).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn an_imported_oci_tarball_makes_its_images_present() {
        let runtime = FakeRuntime::new();
        let index = br#"{"manifests":[{"digest":"sha256:feed","size":9,
            "annotations":{"io.containerd.image.name":"docker.io/library/busybox:latest"}}]}"#;
        let archive = crate::oci::tar(&[("index.json", index)]);
        let images = runtime.import_image(archive.into()).await.unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].id, "sha256:feed");
        let status = runtime.image_status(&"busybox".into()).await.unwrap();
        assert_eq!(status.map(|i| i.id).as_deref(), Some("sha256:feed"));
    }

    #[tokio::test]
    async fn exec_runs_handlers_and_builtins_only_in_running_containers() {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new()
            .exit_after(10 * SECOND, 0)
            .exec("cat", |cmd: &[String]| {
                ExecResponse::new(0).stdout(format!("contents of {}", cmd[1]))
            })
            .exec("sleep", |_: &[String]| {
                ExecOutcome::taking(ExecResponse::new(0), 5 * SECOND)
            });
        let runtime = FakeRuntime::builder()
            .clock(clock.clone())
            .image("app", behaviour)
            .build();
        let (_, id, _) = running(&runtime, "app").await;
        let out = runtime
            .exec_sync(ExecRequest::new(&id, ["cat", "/etc/hostname"]))
            .await
            .unwrap();
        assert_eq!(out.stdout, Bytes::from("contents of /etc/hostname"));
        let out = runtime
            .exec_sync(ExecRequest::new(&id, ["echo", "a", "b"]))
            .await
            .unwrap();
        assert_eq!(out.stdout, Bytes::from("a b\n"));
        let out = runtime
            .exec_sync(ExecRequest::new(&id, ["nope"]))
            .await
            .unwrap();
        assert_eq!(out.exit_code, 127);
        let err = runtime
            .exec_sync(ExecRequest::new(&id, ["sleep"]).timeout(SECOND))
            .await
            .unwrap_err();
        assert_eq!(err, RuntimeError::Timeout(SECOND));
        let err = runtime
            .exec_sync(ExecRequest::new(&id, Vec::<String>::new()))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidArgument(_)));
        clock.advance(10 * SECOND);
        let err = runtime
            .exec_sync(ExecRequest::new(&id, ["true"]))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::FailedPrecondition(_)));
    }

    #[tokio::test]
    async fn logs_show_the_lines_written_by_now_with_tail_and_since() {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new()
            .log_line(Duration::ZERO, "one")
            .stderr_line(SECOND, "two")
            .log_line(2 * SECOND, "three");
        let runtime = FakeRuntime::builder()
            .clock(clock.clone())
            .image("app", behaviour)
            .build();
        let t0 = clock.now();
        let (_, id, _) = running(&runtime, "app").await;
        clock.advance(SECOND);
        let read = |options: LogOptions| {
            let runtime = runtime.clone();
            let id = id.clone();
            async move {
                let stream = runtime.container_logs(&id, options).await.unwrap();
                stream.map(|l| l.unwrap()).collect::<Vec<_>>().await
            }
        };
        let lines = read(LogOptions::all()).await;
        assert_eq!(
            lines.iter().map(|l| &l.line[..]).collect::<Vec<_>>(),
            vec![&b"one"[..], b"two"]
        );
        assert_eq!(lines[1].stream, OutputStream::Stderr);
        assert_eq!(lines[1].timestamp, t0 + SECOND);
        assert_eq!(read(LogOptions::all().tail(1)).await.len(), 1);
        assert_eq!(read(LogOptions::all().since(t0 + SECOND)).await.len(), 1);
        let err = runtime
            .container_logs("missing", LogOptions::all())
            .await
            .err()
            .unwrap();
        assert!(err.is_not_found());
    }

    #[tokio::test]
    async fn following_a_log_yields_new_lines_and_ends_when_the_container_exits() {
        let clock = FakeClock::new();
        let behaviour = ImageBehaviour::new()
            .log_line(Duration::ZERO, "one")
            .log_line(SECOND, "two")
            .exit_after(2 * SECOND, 0);
        let runtime = FakeRuntime::builder()
            .clock(clock.clone())
            .image("app", behaviour)
            .build();
        let (_, id, _) = running(&runtime, "app").await;
        let mut stream = runtime
            .container_logs(&id, LogOptions::all().follow())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            assert_eq!(stream.next().await.unwrap().unwrap().line, "one");
            let advancer = {
                let clock = clock.clone();
                tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    clock.advance(SECOND);
                })
            };
            assert_eq!(stream.next().await.unwrap().unwrap().line, "two");
            advancer.await.unwrap();
            clock.advance(SECOND);
            assert!(stream.next().await.is_none(), "ends once exited");
        })
        .await
        .expect("the follower finishes");
    }

    #[tokio::test]
    async fn an_unavailable_runtime_fails_every_call_until_it_recovers() {
        let runtime = FakeRuntime::new();
        runtime.set_unavailable(Some("socket closed"));
        let err = runtime.version().await.unwrap_err();
        assert_eq!(err, RuntimeError::Unavailable("socket closed".into()));
        assert!(runtime.run_pod_sandbox(pod("a")).await.is_err());
        runtime.set_unavailable(None);
        assert_eq!(runtime.version().await.unwrap().runtime_name, "fake");
    }

    #[tokio::test]
    async fn an_external_kill_records_its_reason() {
        let runtime = FakeRuntime::builder().preload("busybox").build();
        let (_, id, _) = running(&runtime, "busybox").await;
        assert!(runtime.kill_container(&id, 137, "OOMKilled", "out of memory"));
        let status = runtime.container_status(&id).await.unwrap();
        assert_eq!(status.reason, "OOMKilled");
        assert!(!runtime.kill_container(&id, 137, "OOMKilled", ""));
    }

    #[tokio::test]
    async fn image_ids_are_stable_digests_of_the_reference() {
        let runtime = FakeRuntime::builder().allow_unknown_pulls(true).build();
        let id = runtime.pull_image(&"busybox".into()).await.unwrap();
        let again = FakeRuntime::builder().allow_unknown_pulls(true).build();
        assert_eq!(
            again.pull_image(&"busybox:latest".into()).await.unwrap(),
            id
        );
        let hex = id.strip_prefix("sha256:").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(!hex.contains("00000000"), "{hex}");
        assert_ne!(runtime.pull_image(&"nginx".into()).await.unwrap(), id);
    }

    #[test]
    fn ids_differ_per_node_and_per_sequence_number() {
        let a = hex256(1, b"x", 1);
        assert_eq!(a.len(), 64);
        assert_ne!(a, hex256(1, b"x", 2));
        assert_ne!(a, hex256(2, b"x", 1));
    }
}
