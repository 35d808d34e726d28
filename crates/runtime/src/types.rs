//! The request and status types of the [`ContainerRuntime`](crate::ContainerRuntime) SPI.
//!
//! They follow CRI's `api.proto` (`runtime.v1`) field by field where it matters to a node
//! agent, as plain Rust: maps are `BTreeMap` (deterministic order), timestamps are
//! `SystemTime`, durations are `Duration`. Structs that are expected to grow are
//! `#[non_exhaustive]` and built with `new` plus builder methods or `Default`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Labels or annotations: string keys to string values, ordered.
pub type Labels = BTreeMap<String, String>;

/// Who a pod sandbox is: CRI's `PodSandboxMetadata`. Name, namespace, uid and attempt
/// together identify a sandbox; a second one with the same four is `AlreadyExists`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct PodSandboxMetadata {
    /// The Pod's name.
    pub name: String,
    /// The Pod's namespace.
    pub namespace: String,
    /// The Pod's uid.
    pub uid: String,
    /// How many sandboxes were created for this Pod before this one.
    pub attempt: u32,
}

impl PodSandboxMetadata {
    /// Metadata for attempt 0.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        uid: impl Into<String>,
    ) -> Self {
        PodSandboxMetadata {
            name: name.into(),
            namespace: namespace.into(),
            uid: uid.into(),
            attempt: 0,
        }
    }
}

/// How a Linux namespace is shared (CRI's `NamespaceMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum NamespaceMode {
    /// One namespace for the whole pod (the default).
    #[default]
    Pod,
    /// One namespace per container.
    Container,
    /// The host's namespace.
    Node,
}

/// Linux namespace options of a sandbox or container (CRI's `NamespaceOption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct NamespaceOptions {
    /// The network namespace (`Node` is `hostNetwork: true`).
    pub network: NamespaceMode,
    /// The PID namespace.
    pub pid: NamespaceMode,
    /// The IPC namespace.
    pub ipc: NamespaceMode,
}

/// Everything needed to run a pod sandbox (CRI's `PodSandboxConfig`, Linux parts folded in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct PodSandboxConfig {
    /// Who the sandbox is.
    pub metadata: PodSandboxMetadata,
    /// The sandbox's hostname.
    pub hostname: String,
    /// Where the containers' logs go (`/var/log/pods/<ns>_<name>_<uid>`).
    pub log_directory: String,
    /// Labels, usable in list filters.
    pub labels: Labels,
    /// Annotations, opaque to the runtime.
    pub annotations: Labels,
    /// Namespace sharing.
    pub namespace_options: NamespaceOptions,
    /// The parent cgroup of the sandbox.
    pub cgroup_parent: String,
}

impl PodSandboxConfig {
    /// A config for `metadata`, with the hostname set to the Pod's name.
    pub fn new(metadata: PodSandboxMetadata) -> Self {
        PodSandboxConfig {
            hostname: metadata.name.clone(),
            metadata,
            ..Default::default()
        }
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds an annotation.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Sets the log directory.
    pub fn log_directory(mut self, dir: impl Into<String>) -> Self {
        self.log_directory = dir.into();
        self
    }

    /// Sets the namespace options.
    pub fn namespace_options(mut self, options: NamespaceOptions) -> Self {
        self.namespace_options = options;
        self
    }
}

/// A sandbox's state (CRI's `PodSandboxState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodSandboxState {
    /// Running, with its network set up.
    Ready,
    /// Stopped (or never fully set up).
    NotReady,
}

/// A sandbox's network (CRI's `PodSandboxNetworkStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct PodSandboxNetworkStatus {
    /// The primary IP; empty when the sandbox is not ready or uses the host network.
    pub ip: String,
    /// Further IPs (dual stack).
    pub additional_ips: Vec<String>,
}

/// A sandbox as listed (CRI's `PodSandbox`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PodSandbox {
    /// The runtime's id.
    pub id: String,
    /// Who it is.
    pub metadata: PodSandboxMetadata,
    /// Its state.
    pub state: PodSandboxState,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its labels.
    pub labels: Labels,
    /// Its annotations.
    pub annotations: Labels,
}

/// A sandbox's full status (CRI's `PodSandboxStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PodSandboxStatus {
    /// The runtime's id.
    pub id: String,
    /// Who it is.
    pub metadata: PodSandboxMetadata,
    /// Its state.
    pub state: PodSandboxState,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its network.
    pub network: PodSandboxNetworkStatus,
    /// The path of its network namespace (empty with the host network).
    pub network_namespace_path: String,
    /// Namespace sharing it was created with.
    pub namespace_options: NamespaceOptions,
    /// Its labels.
    pub labels: Labels,
    /// Its annotations.
    pub annotations: Labels,
}

/// Filters for [`list_pod_sandboxes`](crate::ContainerRuntime::list_pod_sandboxes)
/// (CRI's `PodSandboxFilter`). Every set field must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct PodSandboxFilter {
    /// The id, or a unique prefix of it.
    pub id: Option<String>,
    /// The state.
    pub state: Option<PodSandboxState>,
    /// Labels the sandbox must carry (equality).
    pub label_selector: Labels,
}

impl PodSandboxFilter {
    /// Matches everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Matches ids starting with `id`.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Matches `state`.
    pub fn state(mut self, state: PodSandboxState) -> Self {
        self.state = Some(state);
        self
    }

    /// Requires label `key` = `value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.label_selector.insert(key.into(), value.into());
        self
    }

    /// Whether `sandbox` passes the filter.
    pub fn matches(&self, sandbox: &PodSandbox) -> bool {
        self.id
            .as_deref()
            .is_none_or(|id| sandbox.id.starts_with(id))
            && self.state.is_none_or(|s| s == sandbox.state)
            && labels_match(&self.label_selector, &sandbox.labels)
    }
}

fn labels_match(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A container's identity in its sandbox (CRI's `ContainerMetadata`). Name and attempt are
/// unique per sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct ContainerMetadata {
    /// The container's name in the Pod spec.
    pub name: String,
    /// How many times this container was created in the sandbox before (restart count).
    pub attempt: u32,
}

impl ContainerMetadata {
    /// Metadata for `name` and `attempt`.
    pub fn new(name: impl Into<String>, attempt: u32) -> Self {
        ContainerMetadata {
            name: name.into(),
            attempt,
        }
    }
}

/// An image reference (CRI's `ImageSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct ImageSpec {
    /// The reference: `busybox`, `docker.io/library/busybox:1.36`, or an image id.
    pub image: String,
    /// Annotations, opaque to the runtime.
    pub annotations: Labels,
}

impl ImageSpec {
    /// The spec of `image`.
    pub fn new(image: impl Into<String>) -> Self {
        ImageSpec {
            image: image.into(),
            annotations: Labels::new(),
        }
    }
}

impl From<&str> for ImageSpec {
    fn from(image: &str) -> Self {
        ImageSpec::new(image)
    }
}

/// An environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    /// The name.
    pub key: String,
    /// The value.
    pub value: String,
}

/// Mount propagation (CRI's `MountPropagation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum MountPropagation {
    /// No propagation (`rprivate`).
    #[default]
    Private,
    /// Host mounts propagate into the container (`rslave`).
    HostToContainer,
    /// Both ways (`rshared`).
    Bidirectional,
}

/// A bind mount (CRI's `Mount`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct Mount {
    /// The path in the container.
    pub container_path: String,
    /// The path on the host.
    pub host_path: String,
    /// Read-only.
    pub readonly: bool,
    /// Propagation.
    pub propagation: MountPropagation,
}

impl Mount {
    /// A read-write bind mount of `host_path` at `container_path`.
    pub fn new(host_path: impl Into<String>, container_path: impl Into<String>) -> Self {
        Mount {
            container_path: container_path.into(),
            host_path: host_path.into(),
            ..Default::default()
        }
    }
}

/// The basics of a container's Linux security context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct SecurityContext {
    /// Run as this uid.
    pub run_as_user: Option<i64>,
    /// Run as this gid.
    pub run_as_group: Option<i64>,
    /// Refuse to run as root.
    pub run_as_non_root: bool,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// Privileged.
    pub privileged: bool,
    /// Capabilities to add.
    pub add_capabilities: Vec<String>,
    /// Capabilities to drop.
    pub drop_capabilities: Vec<String>,
}

/// A container's Linux resource settings (CRI's `LinuxContainerResources`), which the
/// kubelet computes from the container's requests and limits. Zero means "not set": the
/// runtime leaves that cgroup setting at its default. Runtimes apply them to the
/// container's cgroup (CPU shares and CFS quota, memory limit, pids limit) and process
/// (`oom_score_adj`); the fake records them and enforces the memory limit against scripted
/// usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(default)]
#[non_exhaustive]
pub struct LinuxContainerResources {
    /// CFS period in microseconds (`cpu.cfs_period_us`; Kubernetes uses 100000).
    pub cpu_period: i64,
    /// CFS quota in microseconds per period (`cpu.cfs_quota_us`); 0: no CPU limit.
    pub cpu_quota: i64,
    /// CPU shares, the relative weight (`cpu.shares`; 2 to 262144).
    pub cpu_shares: i64,
    /// Memory limit in bytes (`memory.limit_in_bytes` / `memory.max`); 0: unlimited.
    pub memory_limit_in_bytes: i64,
    /// The OOM score adjustment of the container's processes (-1000 to 1000).
    pub oom_score_adj: i64,
    /// The maximum number of processes (`pids.max`); `None`: unlimited.
    pub pids_limit: Option<i64>,
}

impl LinuxContainerResources {
    /// CPU shares, CFS quota and CFS period.
    pub fn cpu(mut self, shares: i64, quota: i64, period: i64) -> Self {
        self.cpu_shares = shares;
        self.cpu_quota = quota;
        self.cpu_period = period;
        self
    }

    /// The memory limit in bytes (0: unlimited).
    pub fn memory_limit(mut self, bytes: i64) -> Self {
        self.memory_limit_in_bytes = bytes;
        self
    }

    /// The OOM score adjustment.
    pub fn oom_score_adj(mut self, adj: i64) -> Self {
        self.oom_score_adj = adj;
        self
    }

    /// The pids limit.
    pub fn pids_limit(mut self, limit: i64) -> Self {
        self.pids_limit = Some(limit);
        self
    }
}

/// Everything needed to create a container (CRI's `ContainerConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct ContainerConfig {
    /// Its identity in the sandbox.
    pub metadata: ContainerMetadata,
    /// The image (must be present on the node).
    pub image: ImageSpec,
    /// Entrypoint override (`command` in the Pod spec).
    pub command: Vec<String>,
    /// Arguments (`args` in the Pod spec).
    pub args: Vec<String>,
    /// Working directory.
    pub working_dir: String,
    /// Environment.
    pub envs: Vec<KeyValue>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Labels, usable in list filters.
    pub labels: Labels,
    /// Annotations, opaque to the runtime.
    pub annotations: Labels,
    /// The log file, relative to the sandbox's `log_directory`.
    pub log_path: String,
    /// Allocate a stdin.
    pub stdin: bool,
    /// Allocate a TTY.
    pub tty: bool,
    /// Security settings.
    pub security_context: SecurityContext,
    /// Cgroup and OOM settings (CRI's `linux.resources`); the default sets none.
    #[serde(default)]
    pub resources: LinuxContainerResources,
}

impl ContainerConfig {
    /// A config for container `name` (attempt 0) running `image`, logging to
    /// `<name>/0.log`.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        let name = name.into();
        ContainerConfig {
            log_path: format!("{name}/0.log"),
            metadata: ContainerMetadata::new(name, 0),
            image: ImageSpec::new(image),
            ..Default::default()
        }
    }

    /// Sets the attempt (and the log path `<name>/<attempt>.log`).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.metadata.attempt = attempt;
        self.log_path = format!("{}/{attempt}.log", self.metadata.name);
        self
    }

    /// Sets the command.
    pub fn command<I: IntoIterator<Item = S>, S: Into<String>>(mut self, command: I) -> Self {
        self.command = command.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push(KeyValue {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a mount.
    pub fn mount(mut self, mount: Mount) -> Self {
        self.mounts.push(mount);
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds an annotation.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Sets the working directory.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = dir.into();
        self
    }

    /// Sets the Linux resources.
    pub fn resources(mut self, resources: LinuxContainerResources) -> Self {
        self.resources = resources;
        self
    }
}

/// A container's state (CRI's `ContainerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited (stopped, crashed or completed).
    Exited,
    /// The runtime cannot tell.
    Unknown,
}

/// A container as listed (CRI's `Container`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Container {
    /// The runtime's id.
    pub id: String,
    /// The sandbox it belongs to.
    pub pod_sandbox_id: String,
    /// Its identity in the sandbox.
    pub metadata: ContainerMetadata,
    /// The image as asked.
    pub image: ImageSpec,
    /// The image id it runs.
    pub image_ref: String,
    /// Its state.
    pub state: ContainerState,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its labels.
    pub labels: Labels,
    /// Its annotations.
    pub annotations: Labels,
}

/// A container's full status (CRI's `ContainerStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContainerStatus {
    /// The runtime's id.
    pub id: String,
    /// Its identity in the sandbox.
    pub metadata: ContainerMetadata,
    /// Its state.
    pub state: ContainerState,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it started running, once it has.
    pub started_at: Option<SystemTime>,
    /// When it exited, once it has.
    pub finished_at: Option<SystemTime>,
    /// The exit code, once exited.
    pub exit_code: Option<i32>,
    /// The image as asked.
    pub image: ImageSpec,
    /// The image id it runs.
    pub image_ref: String,
    /// A short, CamelCase reason for the state (`Completed`, `Error`, `OOMKilled`).
    pub reason: String,
    /// A human-readable message about the state.
    pub message: String,
    /// Its labels.
    pub labels: Labels,
    /// Its annotations.
    pub annotations: Labels,
    /// Its mounts.
    pub mounts: Vec<Mount>,
    /// The absolute path of its log file (sandbox log directory joined with the log path).
    pub log_path: String,
}

/// Filters for [`list_containers`](crate::ContainerRuntime::list_containers) (CRI's
/// `ContainerFilter`). Every set field must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct ContainerFilter {
    /// The id, or a unique prefix of it.
    pub id: Option<String>,
    /// The state.
    pub state: Option<ContainerState>,
    /// The sandbox.
    pub pod_sandbox_id: Option<String>,
    /// Labels the container must carry (equality).
    pub label_selector: Labels,
}

impl ContainerFilter {
    /// Matches everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Matches ids starting with `id`.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Matches `state`.
    pub fn state(mut self, state: ContainerState) -> Self {
        self.state = Some(state);
        self
    }

    /// Matches containers of sandbox `id`.
    pub fn pod_sandbox(mut self, id: impl Into<String>) -> Self {
        self.pod_sandbox_id = Some(id.into());
        self
    }

    /// Requires label `key` = `value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.label_selector.insert(key.into(), value.into());
        self
    }

    /// Whether `container` passes the filter.
    pub fn matches(&self, container: &Container) -> bool {
        self.id
            .as_deref()
            .is_none_or(|id| container.id.starts_with(id))
            && self.state.is_none_or(|s| s == container.state)
            && self
                .pod_sandbox_id
                .as_deref()
                .is_none_or(|p| container.pod_sandbox_id == p)
            && labels_match(&self.label_selector, &container.labels)
    }
}

/// An image on the node (CRI's `Image`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Image {
    /// The image id (`sha256:...`).
    pub id: String,
    /// The references it is known by (`docker.io/library/busybox:latest`).
    pub repo_tags: Vec<String>,
    /// Digest references.
    pub repo_digests: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// Pinned images are never garbage-collected.
    pub pinned: bool,
}

/// Which output a log line or exec output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    /// `"stdout"` or `"stderr"`, as in CRI log files.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// One line of a container's log (one record of a CRI log file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it was written.
    pub timestamp: SystemTime,
    /// Which stream it came from.
    pub stream: OutputStream,
    /// The line, without its newline.
    pub line: Bytes,
}

impl LogEntry {
    /// The entry as a line of a CRI log file:
    /// `2024-01-01T00:00:00.000000000Z stdout F <line>\n` (RFC 3339 in UTC, full line).
    pub fn to_cri_line(&self) -> Bytes {
        let mut out = format!(
            "{} {} F ",
            rfc3339_nanos(self.timestamp),
            self.stream.as_str()
        )
        .into_bytes();
        out.extend_from_slice(&self.line);
        out.push(b'\n');
        out.into()
    }
}

/// The civil date of `days` since 1970-01-01: (year, month 1-12, day 1-31), by Howard
/// Hinnant's civil-from-days.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `t` as RFC 3339 in UTC with nanoseconds (times before 1970 print as 1970).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        since.subsec_nanos()
    )
}

/// What to read of a container's log (the kubelet's `PodLogOptions` as the runtime sees them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct LogOptions {
    /// Keep the stream open and yield new lines until the container exits.
    pub follow: bool,
    /// Only the last `n` lines (before following).
    pub tail: Option<usize>,
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
}

impl LogOptions {
    /// Everything written so far, then end.
    pub fn all() -> Self {
        Self::default()
    }

    /// Follow the log.
    pub fn follow(mut self) -> Self {
        self.follow = true;
        self
    }

    /// Only the last `n` lines.
    pub fn tail(mut self, n: usize) -> Self {
        self.tail = Some(n);
        self
    }

    /// Only lines written at or after `since`.
    pub fn since(mut self, since: SystemTime) -> Self {
        self.since = Some(since);
        self
    }
}

/// A synchronous exec (CRI's `ExecSyncRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExecRequest {
    /// The container to run in (it must be running).
    pub container_id: String,
    /// The command and its arguments; must not be empty.
    pub cmd: Vec<String>,
    /// Give up after this long (`None`: wait as long as it takes).
    pub timeout: Option<Duration>,
}

impl ExecRequest {
    /// Runs `cmd` in `container_id` without a timeout.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(
        container_id: impl Into<String>,
        cmd: I,
    ) -> Self {
        ExecRequest {
            container_id: container_id.into(),
            cmd: cmd.into_iter().map(Into::into).collect(),
            timeout: None,
        }
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// What a synchronous exec returned (CRI's `ExecSyncResponse`). A non-zero exit code is a
/// result, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct ExecResponse {
    /// The command's exit code.
    pub exit_code: i32,
    /// What it wrote to standard output.
    pub stdout: Bytes,
    /// What it wrote to standard error.
    pub stderr: Bytes,
}

impl ExecResponse {
    /// A response with `exit_code` and no output.
    pub fn new(exit_code: i32) -> Self {
        ExecResponse {
            exit_code,
            ..Default::default()
        }
    }

    /// Sets the standard output.
    pub fn stdout(mut self, out: impl Into<Bytes>) -> Self {
        self.stdout = out.into();
        self
    }

    /// Sets the standard error.
    pub fn stderr(mut self, err: impl Into<Bytes>) -> Self {
        self.stderr = err.into();
        self
    }
}

/// The runtime's name and version (CRI's `VersionResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RuntimeVersion {
    /// The runtime's name (`fake`, `containerd`).
    pub runtime_name: String,
    /// Its version.
    pub runtime_version: String,
    /// The CRI API version it speaks (`v1`).
    pub runtime_api_version: String,
}

/// Normalises an image reference the way containerd's CRI plugin does: a bare name gets
/// `docker.io/library/`, a name without a registry gets `docker.io/`, and a reference without
/// a tag or digest gets `:latest`. Image ids (`sha256:...`) are returned unchanged.
pub fn normalize_image_ref(image: &str) -> String {
    if image.starts_with("sha256:") {
        return image.to_string();
    }
    let (first, rest) = match image.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (image, None),
    };
    let named = match rest {
        None => format!("docker.io/library/{first}"),
        Some(rest) if first.contains('.') || first.contains(':') || first == "localhost" => {
            format!("{first}/{rest}")
        }
        Some(rest) => format!("docker.io/{first}/{rest}"),
    };
    let last = named.rsplit('/').next().unwrap_or_default();
    if named.contains('@') || last.contains(':') {
        named
    } else {
        format!("{named}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_normalised_like_containerd_does() {
        assert_eq!(
            normalize_image_ref("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_image_ref("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            normalize_image_ref("luksa/kubia"),
            "docker.io/luksa/kubia:latest"
        );
        assert_eq!(
            normalize_image_ref("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_image_ref("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(normalize_image_ref("sha256:abc"), "sha256:abc");
    }

    #[test]
    fn log_entries_render_as_cri_log_lines() {
        let entry = LogEntry {
            timestamp: SystemTime::UNIX_EPOCH + Duration::new(1_704_067_200, 5),
            stream: OutputStream::Stderr,
            line: Bytes::from("boom"),
        };
        assert_eq!(
            entry.to_cri_line(),
            Bytes::from("2024-01-01T00:00:00.000000005Z stderr F boom\n")
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_827_696);
        assert_eq!(rfc3339_nanos(leap), "2000-02-29T12:34:56.000000000Z");
        assert_eq!(
            rfc3339_nanos(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn a_container_filter_matches_every_set_field() {
        let c = Container {
            id: "abcdef".into(),
            pod_sandbox_id: "p1".into(),
            metadata: ContainerMetadata::new("web", 0),
            image: ImageSpec::new("busybox"),
            image_ref: "sha256:1".into(),
            state: ContainerState::Running,
            created_at: SystemTime::UNIX_EPOCH,
            labels: [("app".to_string(), "web".to_string())].into(),
            annotations: Labels::new(),
        };
        assert!(ContainerFilter::all().matches(&c));
        assert!(ContainerFilter::all()
            .id("abc")
            .state(ContainerState::Running)
            .pod_sandbox("p1")
            .label("app", "web")
            .matches(&c));
        assert!(!ContainerFilter::all().id("abd").matches(&c));
        assert!(!ContainerFilter::all()
            .state(ContainerState::Exited)
            .matches(&c));
        assert!(!ContainerFilter::all().label("app", "db").matches(&c));
    }

    #[test]
    fn configs_round_trip_through_json() {
        let config = ContainerConfig::new("web", "busybox")
            .attempt(2)
            .command(["sh", "-c"])
            .args(["echo hi"])
            .env("A", "1")
            .label("app", "web")
            .resources(
                LinuxContainerResources::default()
                    .cpu(512, 50_000, 100_000)
                    .memory_limit(64 << 20)
                    .pids_limit(100),
            );
        assert_eq!(config.log_path, "web/2.log");
        let json = serde_json::to_string(&config).unwrap();
        let back: ContainerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        // A config recorded before resources existed still reads, with none set.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        old.as_object_mut().unwrap().remove("resources");
        let back: ContainerConfig = serde_json::from_value(old).unwrap();
        assert_eq!(back.resources, LinuxContainerResources::default());
    }
}
