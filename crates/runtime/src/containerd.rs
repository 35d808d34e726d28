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
//!   `<log_directory>/<log_path>`; a watcher task waits for each task's exit, records the exit
//!   code and time in the container's labels, and deletes the task.
//! - **Images** come from [`import_image`](ContainerRuntime::import_image) (OCI layout
//!   tarballs: blobs into the content store, an image record, layers unpacked into the
//!   snapshotter). This backend fetches from no registry: pulling an image that is not
//!   present is [`RuntimeError::ImagePullFailed`].

mod namespaces;
mod spec;
mod stdio;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use containerd_client::services::v1 as api;
use containerd_client::services::v1::snapshots as snap;
use containerd_client::tonic::{metadata::AsciiMetadataValue, Code, Request, Status};
use containerd_client::types::{Descriptor, Mount as RootfsMount};
use futures::StreamExt;
use prost_types::{Any, FieldMask, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Result, RuntimeError};
use crate::oci::{self, sha256_digest};
use crate::types::*;
use crate::{ContainerRuntime, LogStream};

use spec::{ImageConfig, PodNamespacePaths};

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

fn nanos_label(t: SystemTime) -> String {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

fn label_time(labels: &HashMap<String, String>, key: &str) -> Option<SystemTime> {
    let nanos: u128 = labels.get(key)?.parse().ok()?;
    let nanos = u64::try_from(nanos).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
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

/// A container's state as derived from its labels and its task.
struct Observed {
    state: ContainerState,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    exit_code: Option<i32>,
    reason: String,
    message: String,
}

fn exit_reason(code: i32) -> &'static str {
    if code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

fn observe(
    labels: &HashMap<String, String>,
    task: Option<&containerd_client::types::v1::Process>,
) -> Observed {
    let started_at = label_time(labels, LABEL_STARTED);
    if let Some(code) = labels
        .get(LABEL_EXIT_CODE)
        .and_then(|c| c.parse::<i32>().ok())
    {
        return Observed {
            state: ContainerState::Exited,
            started_at,
            finished_at: label_time(labels, LABEL_FINISHED),
            exit_code: Some(code),
            reason: labels
                .get(LABEL_REASON)
                .cloned()
                .unwrap_or_else(|| exit_reason(code).into()),
            message: labels.get(LABEL_MESSAGE).cloned().unwrap_or_default(),
        };
    }
    let mut observed = Observed {
        state: ContainerState::Created,
        started_at,
        finished_at: None,
        exit_code: None,
        reason: String::new(),
        message: String::new(),
    };
    match task {
        Some(task) if task.status == task_status::RUNNING || task.status == task_status::PAUSED => {
            observed.state = ContainerState::Running;
        }
        Some(task) if task.status == task_status::STOPPED => {
            let code = task.exit_status as i32;
            observed.state = ContainerState::Exited;
            observed.finished_at = to_time(task.exited_at.as_ref());
            observed.exit_code = Some(code);
            observed.reason = exit_reason(code).into();
        }
        Some(task) if task.status == task_status::CREATED => {}
        None if started_at.is_some() => {
            observed.state = ContainerState::Exited;
            observed.exit_code = Some(255);
            observed.reason = "Unknown".into();
            observed.message = "the container's task is gone and its exit was not seen".into();
        }
        _ => {}
    }
    observed
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

    // --- containerd objects ------------------------------------------------------------

    async fn get_object(&self, id: &str, kind: &'static str) -> Result<Option<api::Container>> {
        if id.is_empty() {
            return Ok(None);
        }
        let response = self
            .inner
            .client
            .containers()
            .get(self.request(api::GetContainerRequest { id: id.into() }))
            .await;
        match response {
            Ok(r) => Ok(r
                .into_inner()
                .container
                .filter(|c| c.labels.get(LABEL_KIND).map(String::as_str) == Some(kind))),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(map_status(s, kind, id)),
        }
    }

    async fn list_objects(&self, kind: &str) -> Result<Vec<api::Container>> {
        let response = self
            .inner
            .client
            .containers()
            .list(self.request(api::ListContainersRequest {
                filters: vec![format!("labels.\"{LABEL_KIND}\"=={kind}")],
            }))
            .await
            .map_err(|s| map_status(s, "container", ""))?;
        let mut objects = response.into_inner().containers;
        objects.sort_by_key(|c| {
            c.created_at
                .as_ref()
                .map(|t| (t.seconds, t.nanos))
                .unwrap_or_default()
        });
        Ok(objects)
    }

    async fn set_labels(&self, id: &str, labels: &[(&str, String)]) -> Result<()> {
        let container = api::Container {
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..Default::default()
        };
        let mask = FieldMask {
            paths: labels.iter().map(|(k, _)| format!("labels.{k}")).collect(),
        };
        self.inner
            .client
            .containers()
            .update(self.request(api::UpdateContainerRequest {
                container: Some(container),
                update_mask: Some(mask),
            }))
            .await
            .map_err(|s| map_status(s, "container", id))?;
        Ok(())
    }

    async fn get_task(&self, id: &str) -> Result<Option<containerd_client::types::v1::Process>> {
        match self
            .inner
            .client
            .tasks()
            .get(self.request(api::GetRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(map_status(s, "container", id)),
        }
    }

    async fn list_tasks(&self) -> Result<HashMap<String, containerd_client::types::v1::Process>> {
        let response = self
            .inner
            .client
            .tasks()
            .list(self.request(api::ListTasksRequest::default()))
            .await
            .map_err(|s| map_status(s, "container", ""))?;
        Ok(response
            .into_inner()
            .tasks
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect())
    }

    async fn kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        match self
            .inner
            .client
            .tasks()
            .kill(self.request(api::KillRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
                signal,
                all: exec_id.is_empty() && signal == SIGKILL,
            }))
            .await
        {
            Ok(_) => Ok(()),
            // Gone or already stopped: nothing to signal.
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(map_status(s, "container", id)),
        }
    }

    /// Waits for a task (or exec process) to exit; `None` if it is gone.
    async fn wait(&self, id: &str, exec_id: &str) -> Result<Option<(u32, Option<SystemTime>)>> {
        match self
            .inner
            .client
            .tasks()
            .wait(self.request(api::WaitRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
            }))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Some((r.exit_status, to_time(r.exited_at.as_ref()))))
            }
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(map_status(s, "container", id)),
        }
    }

    // --- tasks ---------------------------------------------------------------------------

    /// Starts draining a task's FIFOs into its log file; returns the FIFO paths.
    fn attach(&self, id: &str, log_path: &Path, fresh: bool) -> Result<(String, String)> {
        let dir = self.container_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| internal(&dir.display().to_string(), e))?;
        let writer = stdio::LogWriter::open(log_path)?;
        let (done, done_rx) = watch::channel(false);
        let alive = Arc::new(());
        self.inner
            .draining
            .lock()
            .insert(id.to_string(), Arc::downgrade(&alive));
        let mut paths = Vec::new();
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let path = dir.join(stream.as_str());
            let fifo = if fresh {
                stdio::fifo(&path)?
            } else {
                stdio::reopen(&path)?
            };
            let mut lines = writer.stream(stream);
            let done_rx = done_rx.clone();
            let alive = alive.clone();
            tokio::spawn(async move {
                stdio::drain(fifo, done_rx, |chunk| lines.push(chunk)).await;
                lines.finish();
                drop(alive);
            });
            paths.push(path.to_string_lossy().into_owned());
        }
        self.inner
            .attached
            .lock()
            .insert(id.to_string(), Attached { done });
        let stderr = paths.pop().unwrap_or_default();
        let stdout = paths.pop().unwrap_or_default();
        Ok((stdout, stderr))
    }

    /// Ends the draining of a task's output (after its task was deleted, so the shim has
    /// flushed it).
    fn detach(&self, id: &str) {
        if let Some(attached) = self.inner.attached.lock().remove(id) {
            let _ = attached.done.send(true);
        }
    }

    /// Watches a started task: once it exits, records its exit and deletes it.
    fn watch_exit(&self, id: &str) {
        let runtime = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Ok(Some(_)) = runtime.wait(&id, "").await {
                let _ = runtime.finish(&id).await;
            }
        });
    }

    /// Records a stopped task's exit in its container's labels and deletes the task.
    /// Idempotent; a task still running is left alone.
    async fn finish(&self, id: &str) -> Result<()> {
        let lock = self.task_lock(id);
        let _serialised = lock.lock().await;
        let Some(task) = self.get_task(id).await? else {
            return Ok(());
        };
        if task.status != task_status::STOPPED {
            return Ok(());
        }
        let code = task.exit_status as i32;
        let finished = to_time(task.exited_at.as_ref()).unwrap_or_else(SystemTime::now);
        match self
            .set_labels(
                id,
                &[
                    (LABEL_EXIT_CODE, code.to_string()),
                    (LABEL_FINISHED, nanos_label(finished)),
                    (LABEL_REASON, exit_reason(code).to_string()),
                ],
            )
            .await
        {
            Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        if self.delete_task_locked(id).await? {
            self.detach(id);
        }
        Ok(())
    }

    fn task_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .task_locks
            .lock()
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Deletes a container's task (its shim flushes the output first); `false` if there was
    /// none. The caller holds the container's task lock.
    async fn delete_task_locked(&self, id: &str) -> Result<bool> {
        match self
            .inner
            .client
            .tasks()
            .delete(self.request(api::DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(_) if self.get_task(id).await?.is_none() => Ok(false),
            Err(s) => Err(map_status(s, "container", id)),
        }
    }

    /// Drains and watches the running tasks of containers created by an earlier process, and
    /// finishes those that exited meanwhile.
    async fn reattach(&self) -> Result<()> {
        let tasks = self.list_tasks().await?;
        for object in self.list_objects("container").await? {
            let Some(task) = tasks.get(&object.id) else {
                continue;
            };
            if task.status == task_status::STOPPED {
                self.finish(&object.id).await?;
                continue;
            }
            // Output goes on only if the FIFOs survived; the exit is watched either way.
            if let Ok(record) = record_of::<ContainerRecord>(&object) {
                let _ = self.attach(&object.id, Path::new(&record.log_path), false);
            }
            self.watch_exit(&object.id);
        }
        Ok(())
    }

    /// Stops a container's task: `signal`, then SIGKILL once `grace` has passed.
    async fn stop_task(&self, id: &str, grace: Duration) -> Result<()> {
        let Some(task) = self.get_task(id).await? else {
            return Ok(());
        };
        if task.status == task_status::RUNNING || task.status == task_status::PAUSED {
            let mut exited = false;
            if !grace.is_zero() {
                self.kill(id, "", SIGTERM).await?;
                exited = matches!(
                    tokio::time::timeout(grace, self.wait(id, "")).await,
                    Ok(Ok(_))
                );
            }
            if !exited {
                self.kill(id, "", SIGKILL).await?;
                self.wait(id, "").await?;
            }
        } else if task.status == task_status::CREATED {
            self.kill(id, "", SIGKILL).await?;
            self.wait(id, "").await?;
        }
        self.finish(id).await
    }

    // --- images --------------------------------------------------------------------------

    async fn read_content(&self, digest: &str) -> Result<Vec<u8>> {
        let mut stream = self
            .inner
            .client
            .content()
            .read(self.request(api::ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|s| map_status(s, "image", digest))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend(chunk.map_err(|s| map_status(s, "image", digest))?.data);
        }
        Ok(data)
    }

    async fn has_content(&self, digest: &str) -> Result<bool> {
        match self
            .inner
            .client
            .content()
            .info(self.request(api::InfoRequest {
                digest: digest.into(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(s) => Err(map_status(s, "image", digest)),
        }
    }

    /// Writes a blob into the content store (a no-op when it is there), with `labels`.
    async fn write_content(
        &self,
        lease: &str,
        digest: &str,
        data: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<()> {
        if self.has_content(digest).await? {
            if !labels.is_empty() {
                let mask = FieldMask {
                    paths: labels.keys().map(|k| format!("labels.{k}")).collect(),
                };
                self.inner
                    .client
                    .content()
                    .update(self.request(api::UpdateRequest {
                        info: Some(api::Info {
                            digest: digest.into(),
                            labels,
                            ..Default::default()
                        }),
                        update_mask: Some(mask),
                    }))
                    .await
                    .map_err(|s| map_status(s, "image", digest))?;
            }
            return Ok(());
        }
        const CHUNK: usize = 1 << 20;
        let total = data.len() as i64;
        let reference = format!("capstan-import-{digest}");
        let mut messages = Vec::new();
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(CHUNK).collect()
        };
        let last = chunks.len() - 1;
        let mut offset = 0i64;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let commit = i == last;
            messages.push(api::WriteContentRequest {
                action: if commit {
                    api::WriteAction::Commit as i32
                } else {
                    api::WriteAction::Write as i32
                },
                r#ref: reference.clone(),
                total,
                expected: if commit { digest.into() } else { String::new() },
                offset,
                data: chunk.to_vec(),
                labels: if commit {
                    labels.clone()
                } else {
                    HashMap::new()
                },
            });
            offset += chunk.len() as i64;
        }
        let request = self.leased(futures::stream::iter(messages), lease)?;
        let mut responses = match self.inner.client.content().write(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(map_status(s, "image", digest)),
        };
        while let Some(response) = responses.next().await {
            match response {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
                Err(s) => return Err(map_status(s, "image", digest)),
            }
        }
        Ok(())
    }

    /// Unpacks layers into the snapshotter; returns the top layer's chain id.
    async fn unpack(
        &self,
        lease: &str,
        layers: &[Descriptor],
        diff_ids: &[String],
    ) -> Result<String> {
        let snapshotter = self.inner.config.snapshotter.clone();
        let mut parent = String::new();
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let chain = if parent.is_empty() {
                diff_id.clone()
            } else {
                sha256_digest(format!("{parent} {diff_id}").as_bytes())
            };
            let exists = self
                .inner
                .client
                .snapshots()
                .stat(self.request(snap::StatSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key: chain.clone(),
                }))
                .await;
            match exists {
                Ok(_) => {
                    parent = chain;
                    continue;
                }
                Err(s) if is_not_found(&s) => {}
                Err(s) => return Err(map_status(s, "image", &chain)),
            }
            let key = format!("capstan-extract-{}-{chain}", new_id()?);
            let mounts = self
                .inner
                .client
                .snapshots()
                .prepare(self.leased(
                    snap::PrepareSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        key: key.clone(),
                        parent: parent.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                )?)
                .await
                .map_err(|s| map_status(s, "image", &chain))?
                .into_inner()
                .mounts;
            let applied = self
                .inner
                .client
                .diff()
                .apply(self.leased(
                    api::ApplyRequest {
                        diff: Some(layer.clone()),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    lease,
                )?)
                .await;
            let applied = match applied {
                Ok(r) => r.into_inner().applied,
                Err(s) => {
                    let _ = self.remove_snapshot(&key).await;
                    return Err(map_status(s, "image", &layer.digest));
                }
            };
            if applied.as_ref().map(|d| d.digest.as_str()) != Some(diff_id.as_str()) {
                let _ = self.remove_snapshot(&key).await;
                return Err(RuntimeError::InvalidArgument(format!(
                    "layer {} unpacked to {}, but the config says {diff_id}",
                    layer.digest,
                    applied.map(|d| d.digest).unwrap_or_default()
                )));
            }
            let committed = self
                .inner
                .client
                .snapshots()
                .commit(self.leased(
                    snap::CommitSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        name: chain.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                )?)
                .await;
            match committed {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => {
                    let _ = self.remove_snapshot(&key).await;
                }
                Err(s) => return Err(map_status(s, "image", &chain)),
            }
            parent = chain;
        }
        Ok(parent)
    }

    async fn remove_snapshot(&self, key: &str) -> Result<()> {
        match self
            .inner
            .client
            .snapshots()
            .remove(self.request(snap::RemoveSnapshotRequest {
                snapshotter: self.inner.config.snapshotter.clone(),
                key: key.into(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(map_status(s, "container", key)),
        }
    }

    /// Imports one manifest of an archive: its blobs, GC labels, layers and image record.
    async fn import_manifest(
        &self,
        lease: &str,
        archive: &[u8],
        name: &str,
        manifest_digest: &str,
    ) -> Result<Image> {
        let blob = |digest: &str| -> Result<&[u8]> {
            let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
                RuntimeError::InvalidArgument(format!("unsupported digest {digest:?}"))
            })?;
            let data =
                oci::tar_file(archive, &format!("blobs/sha256/{hex}"))?.ok_or_else(|| {
                    RuntimeError::InvalidArgument(format!(
                        "blob {digest} is missing from the archive"
                    ))
                })?;
            if sha256_digest(data) != digest {
                return Err(RuntimeError::InvalidArgument(format!(
                    "blob {digest} does not match its digest"
                )));
            }
            Ok(data)
        };
        let manifest_bytes = blob(manifest_digest)?;
        let manifest: Manifest = serde_json::from_slice(manifest_bytes).map_err(|e| {
            RuntimeError::InvalidArgument(format!("manifest {manifest_digest}: {e}"))
        })?;
        if manifest.layers.is_empty() && manifest.config.digest.is_empty() {
            return Err(RuntimeError::InvalidArgument(format!(
                "{manifest_digest} is not an image manifest (image indexes are not supported)"
            )));
        }
        let config_bytes = blob(&manifest.config.digest)?;
        let config: ImageConfigFile = serde_json::from_slice(config_bytes)
            .map_err(|e| RuntimeError::InvalidArgument(format!("image config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(RuntimeError::InvalidArgument(format!(
                "the config of {name} lists {} layers, its manifest {}",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let mut size = config_bytes.len() as u64;
        for layer in &manifest.layers {
            let data = blob(&layer.digest)?;
            size += data.len() as u64;
            self.write_content(lease, &layer.digest, data, HashMap::new())
                .await?;
        }
        let layers: Vec<Descriptor> = manifest
            .layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
                annotations: HashMap::new(),
            })
            .collect();
        let chain = self.unpack(lease, &layers, &config.rootfs.diff_ids).await?;
        let mut config_labels = HashMap::new();
        if !chain.is_empty() {
            config_labels.insert(
                format!(
                    "containerd.io/gc.ref.snapshot.{}",
                    self.inner.config.snapshotter
                ),
                chain,
            );
        }
        self.write_content(lease, &manifest.config.digest, config_bytes, config_labels)
            .await?;
        let mut manifest_labels = HashMap::new();
        manifest_labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            manifest.config.digest.clone(),
        );
        for (i, layer) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        self.write_content(lease, manifest_digest, manifest_bytes, manifest_labels)
            .await?;
        let image = api::Image {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(Descriptor {
                media_type: if manifest.media_type.is_empty() {
                    oci::MANIFEST_MEDIA_TYPE.into()
                } else {
                    manifest.media_type.clone()
                },
                digest: manifest_digest.into(),
                size: manifest_bytes.len() as i64,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let images = self.inner.client.images();
        let created = images
            .clone()
            .create(self.request(api::CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await;
        match created {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {
                images
                    .clone()
                    .update(self.request(api::UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(FieldMask {
                            paths: vec!["target".into()],
                        }),
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(|s| map_status(s, "image", name))?;
            }
            Err(s) => return Err(map_status(s, "image", name)),
        }
        Ok(Image {
            id: manifest.config.digest.clone(),
            repo_tags: vec![name.to_string()],
            repo_digests: vec![format!(
                "{}@{manifest_digest}",
                name.rsplit_once(':')
                    .filter(|(_, tag)| !tag.contains('/'))
                    .map(|(repo, _)| repo)
                    .unwrap_or(name)
            )],
            size,
            pinned: false,
        })
    }

    /// An image record's manifest and config; `None` when its content is gone.
    async fn resolve(&self, image: &api::Image) -> Result<Option<ResolvedImage>> {
        let Some(target) = &image.target else {
            return Ok(None);
        };
        let manifest_bytes = match self.read_content(&target.digest).await {
            Ok(b) => b,
            Err(RuntimeError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| internal("decoding a manifest", e))?;
        let config_bytes = match self.read_content(&manifest.config.digest).await {
            Ok(b) => b,
            Err(RuntimeError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let config: ImageConfigFile = serde_json::from_slice(&config_bytes)
            .map_err(|e| internal("decoding an image config", e))?;
        let mut chain = String::new();
        for diff_id in &config.rootfs.diff_ids {
            chain = if chain.is_empty() {
                diff_id.clone()
            } else {
                sha256_digest(format!("{chain} {diff_id}").as_bytes())
            };
        }
        let size = manifest
            .layers
            .iter()
            .map(|l| l.size.max(0) as u64)
            .sum::<u64>()
            + config_bytes.len() as u64;
        let name = image.name.clone();
        let repo = name
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map(|(repo, _)| repo.to_string())
            .unwrap_or_else(|| name.clone());
        Ok(Some(ResolvedImage {
            image: Image {
                id: manifest.config.digest.clone(),
                repo_tags: vec![name],
                repo_digests: vec![format!("{repo}@{}", target.digest)],
                size,
                pinned: false,
            },
            config: config.config,
            chain_id: chain,
        }))
    }

    /// Finds an image by reference or id (`sha256:...` of its config).
    async fn find_image(&self, reference: &str) -> Result<Option<ResolvedImage>> {
        if reference.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "empty image reference".into(),
            ));
        }
        let normalized = normalize_image_ref(reference);
        if !normalized.starts_with("sha256:") {
            let response = self
                .inner
                .client
                .images()
                .get(self.request(api::GetImageRequest {
                    name: normalized.clone(),
                }))
                .await;
            return match response {
                Ok(r) => match r.into_inner().image {
                    Some(image) => self.resolve(&image).await,
                    None => Ok(None),
                },
                Err(s) if is_not_found(&s) => Ok(None),
                Err(s) => Err(map_status(s, "image", reference)),
            };
        }
        let mut found: Option<ResolvedImage> = None;
        for image in self.all_image_records().await? {
            if let Some(resolved) = self.resolve(&image).await? {
                if resolved.image.id == normalized {
                    match &mut found {
                        Some(f) => f.image.repo_tags.extend(resolved.image.repo_tags),
                        None => found = Some(resolved),
                    }
                }
            }
        }
        Ok(found)
    }

    async fn all_image_records(&self) -> Result<Vec<api::Image>> {
        Ok(self
            .inner
            .client
            .images()
            .list(self.request(api::ListImagesRequest::default()))
            .await
            .map_err(|s| map_status(s, "image", ""))?
            .into_inner()
            .images)
    }

    async fn with_lease<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let id = format!("capstan-{}", new_id()?);
        let mut labels = HashMap::new();
        // Should this process die mid-way, containerd drops the lease after a day.
        labels.insert("containerd.io/gc.expire".to_string(), {
            let expire = SystemTime::now() + Duration::from_secs(86_400);
            rfc3339_nanos(expire)
        });
        self.inner
            .client
            .leases()
            .create(self.request(api::CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| map_status(s, "image", &id))?;
        let result = f(id.clone()).await;
        let _ = self
            .inner
            .client
            .leases()
            .delete(self.request(api::DeleteRequest { id, sync: false }))
            .await;
        result
    }

    // --- sandboxes -----------------------------------------------------------------------

    async fn sandbox(&self, id: &str) -> Result<Option<(api::Container, SandboxRecord)>> {
        match self.get_object(id, "sandbox").await? {
            Some(object) => {
                let record = record_of(&object)?;
                Ok(Some((object, record)))
            }
            None => Ok(None),
        }
    }

    fn sandbox_state(object: &api::Container) -> PodSandboxState {
        if object.labels.get(LABEL_STATE).map(String::as_str) == Some("ready") {
            PodSandboxState::Ready
        } else {
            PodSandboxState::NotReady
        }
    }

    async fn containers_of(&self, sandbox_id: &str) -> Result<Vec<api::Container>> {
        Ok(self
            .list_objects("container")
            .await?
            .into_iter()
            .filter(|c| c.labels.get(LABEL_SANDBOX).map(String::as_str) == Some(sandbox_id))
            .collect())
    }

    fn container_view(
        object: &api::Container,
        record: &ContainerRecord,
        task: Option<&containerd_client::types::v1::Process>,
    ) -> (Container, Observed) {
        let observed = observe(&object.labels, task);
        (
            Container {
                id: object.id.clone(),
                pod_sandbox_id: record.sandbox_id.clone(),
                metadata: record.config.metadata.clone(),
                image: record.config.image.clone(),
                image_ref: record.image_ref.clone(),
                state: observed.state,
                created_at: to_time(object.created_at.as_ref()).unwrap_or(SystemTime::UNIX_EPOCH),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            },
            observed,
        )
    }

    /// Whether the container is running, for log followers: `None` once it is removed.
    async fn running(&self, id: &str) -> Result<Option<bool>> {
        let Some(object) = self.get_object(id, "container").await? else {
            return Ok(None);
        };
        let task = self.get_task(id).await?;
        let draining = self
            .inner
            .draining
            .lock()
            .get(id)
            .is_some_and(|alive| alive.strong_count() > 0);
        Ok(Some(
            observe(&object.labels, task.as_ref()).state == ContainerState::Running || draining,
        ))
    }
}

/// An image found on the node.
struct ResolvedImage {
    image: Image,
    config: ImageConfig,
    chain_id: String,
}

#[derive(Deserialize)]
struct ManifestDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    size: i64,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default = "empty_descriptor")]
    config: ManifestDescriptor,
    #[serde(default)]
    layers: Vec<ManifestDescriptor>,
}

fn empty_descriptor() -> ManifestDescriptor {
    ManifestDescriptor {
        media_type: String::new(),
        digest: String::new(),
        size: 0,
    }
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ImageConfigFile {
    #[serde(default)]
    config: ImageConfig,
    #[serde(default)]
    rootfs: RootFs,
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
        let meta = &config.metadata;
        if meta.name.is_empty() || meta.namespace.is_empty() || meta.uid.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "a sandbox needs a name, a namespace and a uid".into(),
            ));
        }
        let _guard = self.inner.create_lock.lock().await;
        for object in self.list_objects("sandbox").await? {
            let record: SandboxRecord = record_of(&object)?;
            if record.config.metadata == config.metadata {
                return Err(RuntimeError::AlreadyExists {
                    kind: "sandbox",
                    name: format!(
                        "{}_{}_{}_{}",
                        meta.name, meta.namespace, meta.uid, meta.attempt
                    ),
                    id: object.id,
                });
            }
        }
        let id = new_id()?;
        if !config.log_directory.is_empty() {
            std::fs::create_dir_all(&config.log_directory)
                .map_err(|e| internal(&config.log_directory, e))?;
        }
        let options = config.namespace_options;
        let host_network = options.network == NamespaceMode::Node;
        let wanted = namespaces::Wanted {
            network: !host_network,
            ipc: options.ipc != NamespaceMode::Node,
            uts: !host_network,
        };
        let dir = self.sandbox_dir(&id);
        let pinned = namespaces::create(dir.clone(), wanted, config.hostname.clone()).await?;
        if let Err(e) = namespaces::write_pod_files(&dir, &config.hostname, host_network) {
            let _ = namespaces::remove(&dir);
            return Err(e);
        }
        let record = SandboxRecord {
            config,
            dir: dir.to_string_lossy().into_owned(),
            network_namespace_path: pinned.network,
            ipc_namespace_path: pinned.ipc,
            uts_namespace_path: pinned.uts,
        };
        let object = api::Container {
            id: id.clone(),
            labels: [
                (LABEL_KIND.to_string(), "sandbox".to_string()),
                (LABEL_STATE.to_string(), "ready".to_string()),
            ]
            .into(),
            runtime: Some(api::container::Runtime {
                name: self.inner.config.runtime.clone(),
                options: None,
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE_URL.into(),
                value: br#"{"ociVersion":"1.0.2"}"#.to_vec(),
            }),
            extensions: [(EXTENSION.to_string(), record_any(&record)?)].into(),
            ..Default::default()
        };
        if let Err(s) = self
            .inner
            .client
            .containers()
            .create(self.request(api::CreateContainerRequest {
                container: Some(object),
            }))
            .await
        {
            let _ = namespaces::remove(&self.sandbox_dir(&id));
            return Err(map_status(s, "sandbox", &id));
        }
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let Some((object, record)) = self.sandbox(id).await? else {
            return Ok(());
        };
        for container in self.containers_of(id).await? {
            self.stop_task(&container.id, Duration::ZERO).await?;
        }
        // Where the namespaces were pinned, even by a runtime with another state directory.
        let dir = if record.dir.is_empty() {
            self.sandbox_dir(id)
        } else {
            PathBuf::from(&record.dir)
        };
        namespaces::remove(&dir)?;
        if Self::sandbox_state(&object) == PodSandboxState::Ready {
            self.set_labels(id, &[(LABEL_STATE, "notready".into())])
                .await?;
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        if self.sandbox(id).await?.is_none() {
            return Ok(());
        }
        self.stop_pod_sandbox(id).await?;
        for container in self.containers_of(id).await? {
            self.remove_container(&container.id).await?;
        }
        match self
            .inner
            .client
            .containers()
            .delete(self.request(api::DeleteContainerRequest { id: id.into() }))
            .await
        {
            Ok(_) => {
                self.inner.sandbox_locks.lock().remove(id);
                Ok(())
            }
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(map_status(s, "sandbox", id)),
        }
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let (object, record) = self
            .sandbox(id)
            .await?
            .ok_or_else(|| RuntimeError::not_found("sandbox", id))?;
        let state = Self::sandbox_state(&object);
        Ok(PodSandboxStatus {
            id: object.id.clone(),
            metadata: record.config.metadata.clone(),
            state,
            created_at: to_time(object.created_at.as_ref()).unwrap_or(SystemTime::UNIX_EPOCH),
            network: PodSandboxNetworkStatus::default(),
            network_namespace_path: if state == PodSandboxState::Ready {
                record.network_namespace_path.clone()
            } else {
                String::new()
            },
            namespace_options: record.config.namespace_options,
            labels: record.config.labels.clone(),
            annotations: record.config.annotations.clone(),
        })
    }

    async fn list_pod_sandboxes(&self, filter: PodSandboxFilter) -> Result<Vec<PodSandbox>> {
        let mut out = Vec::new();
        for object in self.list_objects("sandbox").await? {
            let record: SandboxRecord = record_of(&object)?;
            let sandbox = PodSandbox {
                id: object.id.clone(),
                metadata: record.config.metadata,
                state: Self::sandbox_state(&object),
                created_at: to_time(object.created_at.as_ref()).unwrap_or(SystemTime::UNIX_EPOCH),
                labels: record.config.labels,
                annotations: record.config.annotations,
            };
            if filter.matches(&sandbox) {
                out.push(sandbox);
            }
        }
        Ok(out)
    }

    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String> {
        if config.metadata.name.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "a container needs a name".into(),
            ));
        }
        if config.log_path.starts_with('/') || config.log_path.split('/').any(|p| p == "..") {
            return Err(RuntimeError::InvalidArgument(format!(
                "log path {:?} must be relative to the sandbox's log directory",
                config.log_path
            )));
        }
        let lock = self
            .inner
            .sandbox_locks
            .lock()
            .entry(pod_sandbox_id.to_string())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        let (object, sandbox) = self
            .sandbox(pod_sandbox_id)
            .await?
            .ok_or_else(|| RuntimeError::not_found("sandbox", pod_sandbox_id))?;
        if Self::sandbox_state(&object) != PodSandboxState::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "sandbox {pod_sandbox_id} is not ready"
            )));
        }
        for existing in self.containers_of(pod_sandbox_id).await? {
            let record: ContainerRecord = record_of(&existing)?;
            if record.config.metadata == config.metadata {
                return Err(RuntimeError::AlreadyExists {
                    kind: "container",
                    name: format!("{}_{}", config.metadata.name, config.metadata.attempt),
                    id: existing.id,
                });
            }
        }
        let image = self.find_image(&config.image.image).await?.ok_or_else(|| {
            RuntimeError::ImageNotFound {
                image: config.image.image.clone(),
            }
        })?;
        let id = new_id()?;
        // The sandbox's own record is authoritative; the caller's copy fills a gap.
        let parent = [&sandbox.config.cgroup_parent, &sandbox_config.cgroup_parent]
            .into_iter()
            .find(|p| !p.is_empty())
            .cloned()
            .unwrap_or_else(|| self.inner.config.cgroup_parent.clone());
        let cgroups_path = format!("{}/{id}", parent.trim_end_matches('/'));
        let paths = PodNamespacePaths {
            network: sandbox.network_namespace_path.clone(),
            ipc: sandbox.ipc_namespace_path.clone(),
            uts: sandbox.uts_namespace_path.clone(),
            etc_dir: sandbox.dir.clone(),
        };
        let spec = spec::container_spec(
            &config,
            &sandbox.config,
            &image.config,
            &paths,
            &cgroups_path,
        )?;
        let log_path = Path::new(&sandbox.config.log_directory)
            .join(&config.log_path)
            .to_string_lossy()
            .into_owned();
        let record = ContainerRecord {
            sandbox_id: pod_sandbox_id.to_string(),
            config: config.clone(),
            image_ref: image.image.id.clone(),
            log_path,
        };
        let normalized = normalize_image_ref(&config.image.image);
        let snapshotter = self.inner.config.snapshotter.clone();
        self.with_lease(|lease| async move {
            self.inner
                .client
                .snapshots()
                .prepare(self.leased(
                    snap::PrepareSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        key: id.clone(),
                        parent: image.chain_id.clone(),
                        labels: HashMap::new(),
                    },
                    &lease,
                )?)
                .await
                .map_err(|s| map_status(s, "container", &id))?;
            let object = api::Container {
                id: id.clone(),
                labels: [
                    (LABEL_KIND.to_string(), "container".to_string()),
                    (LABEL_SANDBOX.to_string(), pod_sandbox_id.to_string()),
                ]
                .into(),
                image: normalized,
                runtime: Some(api::container::Runtime {
                    name: self.inner.config.runtime.clone(),
                    options: None,
                }),
                spec: Some(Any {
                    type_url: SPEC_TYPE_URL.into(),
                    value: serde_json::to_vec(&spec).map_err(|e| internal("encoding a spec", e))?,
                }),
                snapshotter,
                snapshot_key: id.clone(),
                extensions: [(EXTENSION.to_string(), record_any(&record)?)].into(),
                ..Default::default()
            };
            if let Err(s) = self
                .inner
                .client
                .containers()
                .create(self.leased(
                    api::CreateContainerRequest {
                        container: Some(object),
                    },
                    &lease,
                )?)
                .await
            {
                let _ = self.remove_snapshot(&id).await;
                return Err(map_status(s, "container", &id));
            }
            Ok(id)
        })
        .await
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let object = self
            .get_object(id, "container")
            .await?
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        if object.labels.contains_key(LABEL_STARTED)
            || object.labels.contains_key(LABEL_EXIT_CODE)
            || self.get_task(id).await?.is_some()
        {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} was already started"
            )));
        }
        let record: ContainerRecord = record_of(&object)?;
        let mounts: Vec<RootfsMount> = self
            .inner
            .client
            .snapshots()
            .mounts(self.request(snap::MountsRequest {
                snapshotter: self.inner.config.snapshotter.clone(),
                key: id.into(),
            }))
            .await
            .map_err(|s| map_status(s, "container", id))?
            .into_inner()
            .mounts;
        let (stdout, stderr) = self.attach(id, Path::new(&record.log_path), true)?;
        // Taken before the start call, so a process exiting at once never appears to have
        // finished before it started.
        let mut now = SystemTime::now();
        let started = async {
            self.inner
                .client
                .tasks()
                .create(self.request(api::CreateTaskRequest {
                    container_id: id.into(),
                    rootfs: mounts,
                    stdout,
                    stderr,
                    ..Default::default()
                }))
                .await?;
            now = SystemTime::now();
            self.inner
                .client
                .tasks()
                .start(self.request(api::StartRequest {
                    container_id: id.into(),
                    exec_id: String::new(),
                }))
                .await
        }
        .await;
        if let Err(s) = started {
            // As CRI does: the container is exited with code 128 and the failure as message.
            let _ = self.kill(id, "", SIGKILL).await;
            {
                let lock = self.task_lock(id);
                let _serialised = lock.lock().await;
                let _ = self.delete_task_locked(id).await;
            }
            self.detach(id);
            self.set_labels(
                id,
                &[
                    (LABEL_STARTED, nanos_label(now)),
                    (LABEL_FINISHED, nanos_label(now)),
                    (LABEL_EXIT_CODE, "128".into()),
                    (LABEL_REASON, "StartError".into()),
                    (LABEL_MESSAGE, s.message().chars().take(1000).collect()),
                ],
            )
            .await?;
            return Err(map_status(s, "container", id));
        }
        self.set_labels(id, &[(LABEL_STARTED, nanos_label(now))])
            .await?;
        self.watch_exit(id);
        Ok(())
    }

    async fn stop_container(&self, id: &str, grace_period: Duration) -> Result<()> {
        if self.get_object(id, "container").await?.is_none() {
            return Ok(());
        }
        self.stop_task(id, grace_period).await
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        if self.get_object(id, "container").await?.is_none() {
            return Ok(());
        }
        self.stop_task(id, Duration::ZERO).await?;
        {
            let lock = self.task_lock(id);
            let _serialised = lock.lock().await;
            self.delete_task_locked(id).await?;
        }
        self.detach(id);
        self.inner.draining.lock().remove(id);
        self.inner.task_locks.lock().remove(id);
        match self
            .inner
            .client
            .containers()
            .delete(self.request(api::DeleteContainerRequest { id: id.into() }))
            .await
        {
            Ok(_) => {}
            Err(s) if is_not_found(&s) => {}
            Err(s) => return Err(map_status(s, "container", id)),
        }
        self.remove_snapshot(id).await?;
        let dir = self.container_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(internal(&dir.display().to_string(), e)),
        }
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let object = self
            .get_object(id, "container")
            .await?
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        let record: ContainerRecord = record_of(&object)?;
        let task = self.get_task(id).await?;
        let (container, observed) = Self::container_view(&object, &record, task.as_ref());
        Ok(ContainerStatus {
            id: container.id,
            metadata: container.metadata,
            state: observed.state,
            created_at: container.created_at,
            started_at: observed.started_at,
            finished_at: observed.finished_at,
            exit_code: observed.exit_code,
            image: container.image,
            image_ref: container.image_ref,
            reason: observed.reason,
            message: observed.message,
            labels: container.labels,
            annotations: container.annotations,
            mounts: record.config.mounts.clone(),
            log_path: record.log_path.clone(),
        })
    }

    async fn list_containers(&self, filter: ContainerFilter) -> Result<Vec<Container>> {
        let tasks = self.list_tasks().await?;
        let mut out = Vec::new();
        for object in self.list_objects("container").await? {
            let record: ContainerRecord = record_of(&object)?;
            let (container, _) = Self::container_view(&object, &record, tasks.get(&object.id));
            if filter.matches(&container) {
                out.push(container);
            }
        }
        Ok(out)
    }

    async fn container_logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        let object = self
            .get_object(id, "container")
            .await?
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        let record: ContainerRecord = record_of(&object)?;
        let path = PathBuf::from(&record.log_path);
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(internal(&record.log_path, e)),
        };
        let (mut entries, consumed) = stdio::parse_log(&data);
        if let Some(since) = options.since {
            entries.retain(|e| e.timestamp >= since);
        }
        if let Some(tail) = options.tail {
            let skip = entries.len().saturating_sub(tail);
            entries.drain(..skip);
        }
        let first = futures::stream::iter(entries.into_iter().map(Ok));
        if !options.follow {
            return Ok(first.boxed());
        }
        let follower = Follower {
            runtime: self.clone(),
            id: id.to_string(),
            path,
            offset: consumed as u64,
            since: options.since,
            pending: std::collections::VecDeque::new(),
            ended: false,
        };
        let rest = futures::stream::unfold(follower, |mut f| async move {
            f.next().await.map(|item| (item, f))
        });
        Ok(first.chain(rest).boxed())
    }

    async fn exec_sync(&self, request: ExecRequest) -> Result<ExecResponse> {
        if request.cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("empty exec command".into()));
        }
        let id = request.container_id.as_str();
        let object = self
            .get_object(id, "container")
            .await?
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        let task = self.get_task(id).await?;
        if observe(&object.labels, task.as_ref()).state != ContainerState::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        let spec: serde_json::Value = serde_json::from_slice(
            &object
                .spec
                .as_ref()
                .map(|s| s.value.clone())
                .unwrap_or_default(),
        )
        .map_err(|e| internal("decoding a container spec", e))?;
        let mut process = spec.get("process").cloned().unwrap_or_default();
        process["args"] = serde_json::json!(request.cmd);
        process["terminal"] = serde_json::json!(false);
        let exec_id = format!("exec-{}", &new_id()?[..16]);
        let dir = self.container_dir(id).join(&exec_id);
        std::fs::create_dir_all(&dir).map_err(|e| internal(&dir.display().to_string(), e))?;
        let (done, done_rx) = watch::channel(false);
        let mut collectors = Vec::new();
        let mut paths = Vec::new();
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let path = dir.join(stream.as_str());
            let fifo = stdio::fifo(&path)?;
            let done_rx = done_rx.clone();
            collectors.push(tokio::spawn(async move {
                let mut out = Vec::new();
                stdio::drain(fifo, done_rx, |chunk| out.extend_from_slice(chunk)).await;
                out
            }));
            paths.push(path.to_string_lossy().into_owned());
        }
        let tasks = self.inner.client.tasks();
        let run = async {
            tasks
                .clone()
                .exec(
                    self.request(api::ExecProcessRequest {
                        container_id: id.into(),
                        stdin: String::new(),
                        stdout: paths[0].clone(),
                        stderr: paths[1].clone(),
                        terminal: false,
                        spec: Some(Any {
                            type_url: PROCESS_TYPE_URL.into(),
                            value: serde_json::to_vec(&process)
                                .map_err(|e| internal("encoding a process", e))?,
                        }),
                        exec_id: exec_id.clone(),
                    }),
                )
                .await
                .map_err(|s| map_status(s, "container", id))?;
            tasks
                .clone()
                .start(self.request(api::StartRequest {
                    container_id: id.into(),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(|s| map_status(s, "container", id))?;
            let waited = match request.timeout {
                Some(limit) => match tokio::time::timeout(limit, self.wait(id, &exec_id)).await {
                    Ok(waited) => waited?,
                    Err(_) => {
                        self.kill(id, &exec_id, SIGKILL).await?;
                        self.wait(id, &exec_id).await?;
                        return Err(RuntimeError::Timeout(limit));
                    }
                },
                None => self.wait(id, &exec_id).await?,
            };
            waited
                .map(|(code, _)| code as i32)
                .ok_or_else(|| RuntimeError::Internal(format!("exec {exec_id} in {id} vanished")))
        }
        .await;
        // Deleting the process makes the shim flush and close its output.
        let _ = tasks
            .clone()
            .delete_process(self.request(api::DeleteProcessRequest {
                container_id: id.into(),
                exec_id: exec_id.clone(),
            }))
            .await;
        let _ = done.send(true);
        let mut outputs = Vec::new();
        for collector in collectors {
            outputs.push(collector.await.unwrap_or_default());
        }
        let _ = std::fs::remove_dir_all(&dir);
        let exit_code = run?;
        let stderr = outputs.pop().unwrap_or_default();
        let stdout = outputs.pop().unwrap_or_default();
        Ok(ExecResponse::new(exit_code).stdout(stdout).stderr(stderr))
    }

    async fn pull_image(&self, image: &ImageSpec) -> Result<String> {
        match self.find_image(&image.image).await? {
            Some(found) => Ok(found.image.id),
            None => Err(RuntimeError::ImagePullFailed {
                image: image.image.clone(),
                reason: format!(
                    "{} is not on the node and this runtime fetches from no registry \
                     (import it with import_image)",
                    normalize_image_ref(&image.image)
                ),
            }),
        }
    }

    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>> {
        Ok(self.find_image(&image.image).await?.map(|r| r.image))
    }

    async fn list_images(&self) -> Result<Vec<Image>> {
        let mut by_id: BTreeMap<String, Image> = BTreeMap::new();
        for record in self.all_image_records().await? {
            if let Some(resolved) = self.resolve(&record).await? {
                match by_id.get_mut(&resolved.image.id) {
                    Some(existing) => {
                        existing.repo_tags.extend(resolved.image.repo_tags);
                        existing.repo_digests.extend(resolved.image.repo_digests);
                    }
                    None => {
                        by_id.insert(resolved.image.id.clone(), resolved.image);
                    }
                }
            }
        }
        Ok(by_id.into_values().collect())
    }

    async fn remove_image(&self, image: &ImageSpec) -> Result<()> {
        let names: Vec<String> = match self.find_image(&image.image).await? {
            Some(found) => found.image.repo_tags,
            None => return Ok(()),
        };
        for name in names {
            match self
                .inner
                .client
                .images()
                .delete(self.request(api::DeleteImageRequest {
                    name: name.clone(),
                    sync: false,
                    target: None,
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if is_not_found(&s) => {}
                Err(s) => return Err(map_status(s, "image", &name)),
            }
        }
        Ok(())
    }

    async fn import_image(&self, archive: Bytes) -> Result<Vec<Image>> {
        let indexed = oci::read_index(&archive)?;
        if indexed.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "the archive's index.json names no image".into(),
            ));
        }
        self.with_lease(|lease| async move {
            let mut images = Vec::new();
            for entry in indexed {
                let name = normalize_image_ref(&entry.name);
                images.push(
                    self.import_manifest(&lease, &archive, &name, &entry.digest)
                        .await?,
                );
            }
            Ok(images)
        })
        .await
    }
}

/// Follows a container's log file until the container stops running (or is removed).
struct Follower {
    runtime: ContainerdRuntime,
    id: String,
    path: PathBuf,
    offset: u64,
    since: Option<SystemTime>,
    pending: std::collections::VecDeque<LogEntry>,
    ended: bool,
}

impl Follower {
    const POLL: Duration = Duration::from_millis(100);

    async fn next(&mut self) -> Option<Result<LogEntry>> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                return Some(Ok(entry));
            }
            if self.ended {
                return None;
            }
            // Read the state first: lines written before it stopped are then all in the file.
            let running = match self.runtime.running(&self.id).await {
                Ok(r) => r,
                Err(e) => {
                    self.ended = true;
                    return Some(Err(e));
                }
            };
            if let Err(e) = self.read_more().await {
                self.ended = true;
                return Some(Err(e));
            }
            match running {
                Some(true) => {
                    if self.pending.is_empty() {
                        tokio::time::sleep(Self::POLL).await;
                    }
                }
                _ => self.ended = true,
            }
        }
    }

    async fn read_more(&mut self) -> Result<()> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = match tokio::fs::File::open(&self.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(internal(&self.path.display().to_string(), e)),
        };
        file.seek(std::io::SeekFrom::Start(self.offset))
            .await
            .map_err(|e| internal("seeking a log", e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .await
            .map_err(|e| internal("reading a log", e))?;
        let (entries, consumed) = stdio::parse_log(&data);
        self.offset += consumed as u64;
        let since = self.since;
        self.pending.extend(
            entries
                .into_iter()
                .filter(|e| since.is_none_or(|s| e.timestamp >= s)),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_client::types::v1::Process;

    fn task(status: i32, exit_status: u32) -> Process {
        Process {
            status,
            exit_status,
            exited_at: Some(Timestamp {
                seconds: 100,
                nanos: 5,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn recorded_exits_win_over_what_the_task_says() {
        let labels: HashMap<String, String> = [
            (LABEL_EXIT_CODE.to_string(), "3".to_string()),
            (LABEL_STARTED.to_string(), "1000000000".to_string()),
            (LABEL_FINISHED.to_string(), "2000000000".to_string()),
        ]
        .into();
        let observed = observe(&labels, Some(&task(task_status::RUNNING, 0)));
        assert_eq!(observed.state, ContainerState::Exited);
        assert_eq!(observed.exit_code, Some(3));
        assert_eq!(observed.reason, "Error");
        assert_eq!(
            observed.finished_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2))
        );
    }

    #[test]
    fn a_stopped_task_is_an_exit_before_it_is_recorded() {
        let observed = observe(&HashMap::new(), Some(&task(task_status::STOPPED, 0)));
        assert_eq!(observed.state, ContainerState::Exited);
        assert_eq!(
            (observed.exit_code, observed.reason.as_str()),
            (Some(0), "Completed")
        );
        assert_eq!(
            observed.finished_at,
            Some(SystemTime::UNIX_EPOCH + Duration::new(100, 5))
        );
        let running = observe(&HashMap::new(), Some(&task(task_status::RUNNING, 0)));
        assert_eq!(running.state, ContainerState::Running);
    }

    #[test]
    fn a_started_container_without_task_or_record_exited_unseen() {
        let never = observe(&HashMap::new(), None);
        assert_eq!(never.state, ContainerState::Created);
        let labels: HashMap<String, String> = [(LABEL_STARTED.to_string(), "1".to_string())].into();
        let lost = observe(&labels, None);
        assert_eq!(lost.state, ContainerState::Exited);
        assert_eq!(lost.reason, "Unknown");
    }

    #[test]
    fn containerd_errors_map_onto_runtime_errors() {
        assert!(map_status(Status::not_found("x"), "container", "c").is_not_found());
        assert!(matches!(
            map_status(Status::unavailable("down"), "container", "c"),
            RuntimeError::Unavailable(_)
        ));
        assert!(matches!(
            map_status(Status::already_exists("x"), "sandbox", "s"),
            RuntimeError::AlreadyExists {
                kind: "sandbox",
                ..
            }
        ));
        assert!(matches!(
            map_status(Status::internal("x"), "image", "i"),
            RuntimeError::Internal(_)
        ));
    }

    #[test]
    fn ids_are_64_lowercase_hex_characters_and_differ() {
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_ne!(a, b);
    }
}
