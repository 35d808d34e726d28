//! The containerd backend: [`ContainerdRuntime`] drives containerd's native gRPC API (1.6 or
//! later) with runc and a snapshotter (overlayfs by default).
//!
//! - **Objects.** Every sandbox and container is a containerd container object in the
//!   runtime's containerd namespace (`capstan` by default), with labels saying what it is and
//!   an extension holding its config; nothing lives only in memory, so a new
//!   `ContainerdRuntime` on the same socket sees what an earlier one created. A sandbox's
//!   object has no task; containers have a snapshot (key = container id) and, once started,
//!   a task.
//! - **Sandboxes** own pinned network, IPC and UTS namespaces under
//!   `<state_dir>/sandboxes/<id>/` (see `namespaces`): containers join them by path, and
//!   [`PodSandboxStatus::network_namespace_path`] hands the network one to the CNI plugin.
//!   There is no infra process, so a pod-wide PID namespace is not offered: each container
//!   has its own. The runtime assigns no IP (the kubelet's network plugin does).
//! - **Containers** get an OCI spec built here (`spec`). Their stdout and stderr are FIFOs
//!   under `<state_dir>/containers/<id>/`, drained by this process into the CRI log file
//!   `<log_directory>/<log_path>` and to attach sessions; a container created with `stdin`
//!   gets a stdin FIFO whose write end this process keeps for attach, one with `tty` a
//!   terminal (its output is then stdout alone). A watcher task waits for each task's exit,
//!   records the exit code and time in the container's labels, and deletes the task.
//! - **Streaming.** An exec is an extra process of the task with FIFOs of its own, under
//!   `<state_dir>/containers/<id>/exec-<n>/`, removed once it exits; port-forward connects
//!   from a thread that joins the pod's pinned network namespace; stats come from the
//!   container's cgroup (`linux.cgroupsPath` of its spec, cgroup v2 or v1).
//! - **Images** come from [`import_image`](ContainerRuntime::import_image) (OCI layout
//!   tarballs: blobs into the content store, an image record, layers unpacked into the
//!   snapshotter). This backend fetches from no registry: pulling an image that is not
//!   present is [`RuntimeError::ImagePullFailed`].
//!
//! The backend's files: this one holds [`ContainerdConfig`], the [`ContainerdRuntime`] handle,
//! what it records in containerd objects (labels and records) and its [`ContainerRuntime`]
//! impl, which hands each call to the file of its area: `sandbox`, `container`, `logs`,
//! `exec`, `streaming_exec`, `streaming_attach`, `port_forward`, `stats` and `image`
//! (`session` holds the plumbing the streaming sessions share). Below those, `objects`
//! wraps containerd's container and task calls, `tasks` attaches output to tasks (log file,
//! attach broadcast, stdin FIFO) and records their exits, and `status` derives a
//! container's state from its labels and task; `namespaces`, `spec` and `stdio` do the
//! Linux-side work.

mod container;
mod exec;
mod image;
mod logs;
mod namespaces;
mod objects;
mod port_forward;
mod sandbox;
mod session;
mod spec;
mod stats;
mod status;
mod stdio;
mod streaming_attach;
mod streaming_exec;
mod tasks;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use containerd_client::services::v1 as api;
use containerd_client::tonic::{metadata::AsciiMetadataValue, Code, Request, Status};
use prost_types::{Any, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Result, RuntimeError};
use crate::types::*;
use crate::{ContainerRuntime, LogStream};

/// Where a [`ContainerdRuntime`] finds containerd and keeps its own files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerdConfig {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// The containerd namespace every object lives in.
    pub namespace: String,
    /// Where pinned pod namespaces and task FIFOs go (a local, non-shared directory).
    pub state_dir: PathBuf,
    /// The snapshotter for image layers and container root filesystems.
    pub snapshotter: String,
    /// The containerd runtime (shim) tasks run with.
    pub runtime: String,
    /// The parent cgroup of containers whose sandbox names none.
    pub cgroup_parent: String,
}

impl ContainerdConfig {
    /// containerd at `socket`, namespace `capstan`, state under `/run/capstan/containerd`,
    /// overlayfs, runc (`io.containerd.runc.v2`), cgroups under `/capstan`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ContainerdConfig {
            socket: socket.into(),
            namespace: "capstan".into(),
            state_dir: PathBuf::from("/run/capstan/containerd"),
            snapshotter: "overlayfs".into(),
            runtime: "io.containerd.runc.v2".into(),
            cgroup_parent: "/capstan".into(),
        }
    }

    /// Sets the containerd namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the state directory.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// Sets the snapshotter.
    pub fn snapshotter(mut self, snapshotter: impl Into<String>) -> Self {
        self.snapshotter = snapshotter.into();
        self
    }
}

const LABEL_KIND: &str = "io.capstan.kind";
const LABEL_STATE: &str = "io.capstan.state";
const LABEL_SANDBOX: &str = "io.capstan.sandbox";
const LABEL_STARTED: &str = "io.capstan.started-at";
const LABEL_FINISHED: &str = "io.capstan.finished-at";
const LABEL_EXIT_CODE: &str = "io.capstan.exit-code";
const LABEL_REASON: &str = "io.capstan.reason";
const LABEL_MESSAGE: &str = "io.capstan.message";
const EXTENSION: &str = "io.capstan.record";
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const RECORD_TYPE_URL: &str = "capstan.io/runtime/record";

const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;

/// What a sandbox's containerd object records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SandboxRecord {
    config: PodSandboxConfig,
    /// Where the pod's namespaces and `/etc` files are.
    #[serde(default)]
    dir: String,
    network_namespace_path: String,
    ipc_namespace_path: String,
    uts_namespace_path: String,
}

/// What a container's containerd object records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerRecord {
    sandbox_id: String,
    config: ContainerConfig,
    image_ref: String,
    log_path: String,
}

/// The draining of one running task's output, ended once the task is deleted.
struct Attached {
    done: watch::Sender<bool>,
    /// What the task writes from now on, for attach sessions; a slow subscriber lags (loses
    /// chunks) rather than holding the log writer up.
    output: tokio::sync::broadcast::Sender<(OutputStream, Bytes)>,
    /// The write end of the task's stdin FIFO, when the container was created with stdin.
    stdin: Option<Arc<tokio::net::unix::pipe::Sender>>,
}

/// A [`ContainerRuntime`] over containerd. Cheap to clone (one gRPC channel). See the
/// [module docs](self) for how CRI concepts map onto containerd.
#[derive(Clone)]
pub struct ContainerdRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    client: containerd_client::Client,
    namespace: AsciiMetadataValue,
    config: ContainerdConfig,
    /// Serialises the metadata check with the creation of sandboxes.
    create_lock: tokio::sync::Mutex<()>,
    /// Per sandbox, serialises the name and attempt check with the creation of containers.
    sandbox_locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    attached: parking_lot::Mutex<HashMap<String, Attached>>,
    /// Per container, a handle alive while any of its drains still writes to its log.
    draining: parking_lot::Mutex<HashMap<String, std::sync::Weak<()>>>,
    /// Per container, serialises recording an exit and deleting the task: two concurrent
    /// deletes of one task can leave its shim running.
    task_locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for ContainerdRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerdRuntime")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// Maps a containerd gRPC error onto the runtime's errors; `kind` and `id` name the object
/// for `NotFound`.
fn map_status(status: Status, kind: &'static str, id: &str) -> RuntimeError {
    let message = format!("containerd: {}", status.message());
    match status.code() {
        Code::NotFound => RuntimeError::not_found(kind, id),
        Code::AlreadyExists => RuntimeError::AlreadyExists {
            kind,
            name: id.to_string(),
            id: id.to_string(),
        },
        Code::InvalidArgument => RuntimeError::InvalidArgument(message),
        Code::FailedPrecondition => RuntimeError::FailedPrecondition(message),
        Code::Unavailable => RuntimeError::Unavailable(message),
        Code::DeadlineExceeded => RuntimeError::Timeout(Duration::ZERO),
        _ => RuntimeError::Internal(message),
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Internal(format!("{what}: {e}"))
}

fn new_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| internal("reading /dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn to_time(t: Option<&Timestamp>) -> Option<SystemTime> {
    let t = t?;
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok()?;
    if secs == 0 && nanos == 0 {
        return None;
    }
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

fn is_not_found(status: &Status) -> bool {
    status.code() == Code::NotFound
}

fn record_of<T: for<'de> Deserialize<'de>>(container: &api::Container) -> Result<T> {
    let any = container
        .extensions
        .get(EXTENSION)
        .ok_or_else(|| internal("containerd object without its record", &container.id))?;
    serde_json::from_slice(&any.value).map_err(|e| internal("decoding a record", e))
}

fn record_any<T: Serialize>(record: &T) -> Result<Any> {
    Ok(Any {
        type_url: RECORD_TYPE_URL.into(),
        value: serde_json::to_vec(record).map_err(|e| internal("encoding a record", e))?,
    })
}

/// The task status values of containerd's `Process.status`.
mod task_status {
    pub(super) const CREATED: i32 = 1;
    pub(super) const RUNNING: i32 = 2;
    pub(super) const STOPPED: i32 = 3;
    pub(super) const PAUSED: i32 = 4;
}

impl ContainerdRuntime {
    /// Connects to containerd at `config.socket` and creates the state directory.
    /// `Unavailable` if containerd does not answer. Running tasks of containers this runtime
    /// created earlier (in an earlier process) get their output drained and their exit
    /// watched again.
    pub async fn connect(config: ContainerdConfig) -> Result<Self> {
        let channel = containerd_client::connect(&config.socket)
            .await
            .map_err(|e| {
                RuntimeError::Unavailable(format!(
                    "connecting to containerd at {}: {e}",
                    config.socket.display()
                ))
            })?;
        let namespace = config.namespace.parse().map_err(|_| {
            RuntimeError::InvalidArgument(format!("bad namespace {:?}", config.namespace))
        })?;
        for dir in ["sandboxes", "containers"] {
            let dir = config.state_dir.join(dir);
            std::fs::create_dir_all(&dir).map_err(|e| internal(&dir.display().to_string(), e))?;
        }
        let runtime = ContainerdRuntime {
            inner: Arc::new(Inner {
                client: containerd_client::Client::from(channel),
                namespace,
                config,
                create_lock: tokio::sync::Mutex::new(()),
                sandbox_locks: parking_lot::Mutex::new(HashMap::new()),
                attached: parking_lot::Mutex::new(HashMap::new()),
                draining: parking_lot::Mutex::new(HashMap::new()),
                task_locks: parking_lot::Mutex::new(HashMap::new()),
            }),
        };
        runtime.version().await?;
        runtime.reattach().await?;
        Ok(runtime)
    }

    /// The config this runtime was connected with.
    pub fn config(&self) -> &ContainerdConfig {
        &self.inner.config
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.inner.namespace.clone());
        request
    }

    fn leased<T>(&self, message: T, lease: &str) -> Result<Request<T>> {
        let mut request = self.request(message);
        let value = lease.parse().map_err(|_| internal("lease id", lease))?;
        request.metadata_mut().insert("containerd-lease", value);
        Ok(request)
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.inner.config.state_dir.join("containers").join(id)
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.inner.config.state_dir.join("sandboxes").join(id)
    }
}

#[async_trait]
impl ContainerRuntime for ContainerdRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        let response = self
            .inner
            .client
            .version()
            .version(self.request(()))
            .await
            .map_err(|s| RuntimeError::Unavailable(format!("containerd: {}", s.message())))?
            .into_inner();
        Ok(RuntimeVersion {
            runtime_name: "containerd".into(),
            runtime_version: response.version,
            runtime_api_version: "v1".into(),
        })
    }

    async fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String> {
        sandbox::run_pod_sandbox(self, config).await
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        sandbox::stop_pod_sandbox(self, id).await
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        sandbox::remove_pod_sandbox(self, id).await
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        sandbox::pod_sandbox_status(self, id).await
    }

    async fn list_pod_sandboxes(&self, filter: PodSandboxFilter) -> Result<Vec<PodSandbox>> {
        sandbox::list_pod_sandboxes(self, filter).await
    }

    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String> {
        container::create_container(self, pod_sandbox_id, config, sandbox_config).await
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        container::start_container(self, id).await
    }

    async fn stop_container(&self, id: &str, grace_period: Duration) -> Result<()> {
        container::stop_container(self, id, grace_period).await
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        container::remove_container(self, id).await
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        container::container_status(self, id).await
    }

    async fn list_containers(&self, filter: ContainerFilter) -> Result<Vec<Container>> {
        container::list_containers(self, filter).await
    }

    async fn container_logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        logs::container_logs(self, id, options).await
    }

    async fn exec(&self, request: crate::StreamingExecRequest) -> Result<crate::ProcessIo> {
        streaming_exec::exec(self, request).await
    }

    async fn attach(&self, request: crate::AttachRequest) -> Result<crate::ProcessIo> {
        streaming_attach::attach(self, request).await
    }

    async fn port_forward(&self, pod_sandbox_id: &str, port: u16) -> Result<crate::DuplexStream> {
        port_forward::port_forward(self, pod_sandbox_id, port).await
    }

    async fn container_stats(&self, id: &str) -> Result<crate::ContainerStats> {
        stats::container_stats(self, id).await
    }

    async fn exec_sync(&self, request: ExecRequest) -> Result<ExecResponse> {
        exec::exec_sync(self, request).await
    }

    async fn pull_image(&self, image: &ImageSpec) -> Result<String> {
        image::pull_image(self, image).await
    }

    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>> {
        image::image_status(self, image).await
    }

    async fn list_images(&self) -> Result<Vec<Image>> {
        image::list_images(self).await
    }

    async fn remove_image(&self, image: &ImageSpec) -> Result<()> {
        image::remove_image(self, image).await
    }

    async fn import_image(&self, archive: Bytes) -> Result<Vec<Image>> {
        image::import_image(self, archive).await
    }
}
