//! Container runtimes for Capstan's node agent.
//!
//! [`ContainerRuntime`] is the SPI the kubelet drives, shaped like the Kubernetes Container
//! Runtime Interface (CRI `runtime.v1`): pod sandboxes, containers, images, logs and exec,
//! and the interactive calls of [`streaming`] (exec and attach sessions, port forwarding,
//! container stats). Backends:
//!
//! - [`fake`] (always built): [`fake::FakeRuntime`], in process and deterministic, with
//!   scriptable per-image behaviour (start delays, exits, crash loops, pull failures, log
//!   lines, exec handlers, streaming exec handlers, files, listening ports, stdin answers,
//!   resource usage) and an injected [`Clock`]. Each container has a writable file view
//!   that honours its bind mounts, and busybox-like built-in commands (`sh -c`, `cat`,
//!   `ls`, `tar` for `kubectl cp`, ...). It keeps no tasks or timers for idle containers
//!   (only a live exec or forwarded connection runs a task, and, when
//!   [`run_commands`](fake::FakeRuntimeBuilder::run_commands) is on, a container running its
//!   own command line), so thousands of fake nodes fit in one process.
//! - `containerd` (cargo feature `containerd`): `containerd::ContainerdRuntime` over
//!   containerd's native gRPC API with runc: pods get pinned network, IPC and UTS namespaces,
//!   containers an OCI spec with secure defaults and CRI log files, images come from
//!   [`ContainerRuntime::import_image`] (no registry is fetched).
//!
//! [`oci::ImageArchive`] builds one-layer OCI image tarballs for `import_image`.
//!
//! # Contract
//!
//! - **Who calls it.** One node agent (the kubelet) per runtime. It may call concurrently;
//!   every method takes `&self` and each call is atomic with respect to the others.
//! - **Identity.** The runtime assigns ids (64 lowercase hex characters, unique for the
//!   runtime's life). A sandbox is named by its metadata (name, namespace, uid, attempt) and
//!   a container by its name and attempt within its sandbox: creating a second one with the
//!   same identity is [`RuntimeError::AlreadyExists`] until the first is removed.
//! - **Idempotency.** As in CRI, `stop_*` and `remove_*` are idempotent: stopping a stopped
//!   sandbox or container succeeds, and removing one that does not exist succeeds. Every
//!   other call is not idempotent (running a sandbox twice creates two, or fails with
//!   `AlreadyExists`).
//! - **Cascades.** [`ContainerRuntime::stop_pod_sandbox`] force-stops the sandbox's
//!   containers; [`ContainerRuntime::remove_pod_sandbox`] removes them;
//!   [`ContainerRuntime::remove_container`] force-stops a running container first.
//! - **Errors.** [`RuntimeError`]; [`RuntimeError::is_retryable`] says whether to retry
//!   after a back-off. A non-zero exit code of an exec is a result, not an error.
//! - **Time.** Timestamps are wall-clock `SystemTime`s read from a [`Clock`]. Tests inject a
//!   [`FakeClock`] and advance it by hand; the fake backend reads it on every call instead of
//!   running timers, so tokio's paused time is neither needed nor used.
//!
//! **Architecture Invariant:** this crate knows nothing of the API server or Kubernetes
//! objects; the kubelet translates Pods into these calls.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::time::Duration;

pub mod clock;
#[cfg(feature = "containerd")]
pub mod containerd;
pub mod error;
pub mod fake;
pub mod oci;
pub mod streaming;
pub mod types;

pub use clock::{Clock, FakeClock, SystemClock};
pub use error::{Result, RuntimeError};
pub use streaming::{
    AttachRequest, ByteReader, ByteWriter, ContainerStats, Duplex, DuplexStream, ProcessIo,
    StdioOptions, StreamingExecRequest, TerminalSize,
};
pub use types::*;

/// A stream of log lines; it ends when the log does (or, when following, when the container
/// has exited and everything was read).
pub type LogStream = BoxStream<'static, Result<LogEntry>>;

/// A node's container runtime, shaped like CRI's `RuntimeService` and `ImageService`.
///
/// Object-safe: the kubelet holds an `Arc<dyn ContainerRuntime>`. See the
/// [crate docs](crate) for the contract shared by every method.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The runtime's name and version. Fails with `Unavailable` when the runtime is down,
    /// which makes it the kubelet's health check.
    async fn version(&self) -> Result<RuntimeVersion>;

    // --- pod sandboxes ---------------------------------------------------------------

    /// Creates and starts a pod sandbox with its network; returns its id. The sandbox is
    /// `Ready` when this returns. `AlreadyExists` if a sandbox with the same metadata exists.
    async fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String>;

    /// Stops a sandbox: force-stops its containers and tears its network down; it becomes
    /// `NotReady`. Idempotent: a stopped or missing sandbox is `Ok`.
    async fn stop_pod_sandbox(&self, id: &str) -> Result<()>;

    /// Removes a sandbox and all its containers (stopping them first if needed).
    /// Idempotent: a missing sandbox is `Ok`.
    async fn remove_pod_sandbox(&self, id: &str) -> Result<()>;

    /// A sandbox's status; `NotFound` if there is none with this id.
    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus>;

    /// The sandboxes passing `filter`, oldest first.
    async fn list_pod_sandboxes(&self, filter: PodSandboxFilter) -> Result<Vec<PodSandbox>>;

    // --- containers ------------------------------------------------------------------

    /// Creates a container in a `Ready` sandbox; returns its id. The image must be on the
    /// node (`ImageNotFound` otherwise); `NotFound` for a missing sandbox;
    /// `FailedPrecondition` for a stopped one; `AlreadyExists` for a name and attempt taken.
    /// `sandbox_config` is the config the sandbox was run with (as in CRI).
    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String>;

    /// Starts a created container. `FailedPrecondition` if it was already started.
    async fn start_container(&self, id: &str) -> Result<()>;

    /// Stops a container: SIGTERM, then SIGKILL once `grace_period` has passed (zero kills
    /// at once). Idempotent: a stopped, never-started or missing container is `Ok`.
    async fn stop_container(&self, id: &str, grace_period: Duration) -> Result<()>;

    /// Removes a container, force-stopping it if it runs. Idempotent: a missing one is `Ok`.
    async fn remove_container(&self, id: &str) -> Result<()>;

    /// A container's status; `NotFound` if there is none with this id.
    async fn container_status(&self, id: &str) -> Result<ContainerStatus>;

    /// The containers passing `filter`, oldest first.
    async fn list_containers(&self, filter: ContainerFilter) -> Result<Vec<Container>>;

    // --- logs and exec ---------------------------------------------------------------

    /// A container's log from the start (or as `options` say), line by line. `NotFound` if
    /// there is no such container. With `follow`, the stream stays open for new lines until
    /// the container is no longer running, or is removed.
    async fn container_logs(&self, id: &str, options: LogOptions) -> Result<LogStream>;

    /// Runs a command in a running container and waits for it (CRI's `ExecSync`).
    /// `FailedPrecondition` if the container is not running, `InvalidArgument` for an empty
    /// command, `Timeout` past the request's timeout.
    async fn exec_sync(&self, request: ExecRequest) -> Result<ExecResponse>;

    // --- streaming (the kubelet's API: exec, attach, port-forward, stats) -------------

    /// Starts a command in a running container with its stdio streamed (CRI's `Exec`).
    /// `FailedPrecondition` if the container is not running, `NotFound` if there is no such
    /// container, `InvalidArgument` for an empty command or for `stderr` with `tty`. A
    /// command that cannot be started (not found in the image) is not an error: the session's
    /// exit code says so (126 or 127, as a shell does).
    async fn exec(&self, request: StreamingExecRequest) -> Result<ProcessIo>;

    /// Connects to a running container's main process (CRI's `Attach`). Output is what the
    /// process writes from now on. `FailedPrecondition` if it is not running, `NotFound` if
    /// there is no such container.
    async fn attach(&self, request: AttachRequest) -> Result<ProcessIo>;

    /// Opens a TCP connection to `port` on the loopback address of a ready sandbox's network
    /// namespace (CRI's `PortForward`), as a process in the pod would. `NotFound` for a
    /// missing sandbox, `FailedPrecondition` for a stopped one, `Unavailable` when nothing
    /// listens on the port (connection refused).
    async fn port_forward(&self, pod_sandbox_id: &str, port: u16) -> Result<DuplexStream>;

    /// A container's resource usage now. `NotFound` if there is no such container; a
    /// container that is not running reports zero usage.
    async fn container_stats(&self, id: &str) -> Result<ContainerStats>;

    // --- images ----------------------------------------------------------------------

    /// Pulls an image (a no-op if it is present) and returns its id. `ImagePullFailed` when
    /// the registry refuses or does not know it.
    async fn pull_image(&self, image: &ImageSpec) -> Result<String>;

    /// The image if it is on the node, `None` otherwise (as CRI's `ImageStatus`).
    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>>;

    /// The images on the node.
    async fn list_images(&self) -> Result<Vec<Image>>;

    /// Removes an image. Idempotent: a missing image is `Ok`. As with containerd, containers
    /// already created from it are unaffected (the kubelet's image GC avoids images in use).
    async fn remove_image(&self, image: &ImageSpec) -> Result<()>;

    /// Imports the images of an OCI image layout tarball (as `ctr images import`); returns
    /// what was imported. `InvalidArgument` if the archive is not one.
    async fn import_image(&self, archive: Bytes) -> Result<Vec<Image>>;
}

/// Pulls `image` unless it is already present: the kubelet's `IfNotPresent` policy.
/// Returns the image id.
pub async fn ensure_image(runtime: &dyn ContainerRuntime, image: &ImageSpec) -> Result<String> {
    match runtime.image_status(image).await? {
        Some(present) => Ok(present.id),
        None => runtime.pull_image(image).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn ensure_image_pulls_only_what_is_missing() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let fake = fake::FakeRuntime::builder()
                .image("app", fake::ImageBehaviour::new())
                .preload("pause")
                .build();
            let runtime: Arc<dyn ContainerRuntime> = Arc::new(fake.clone());
            // Present but not served by the registry: no pull happens.
            ensure_image(runtime.as_ref(), &"pause".into())
                .await
                .unwrap();
            assert_eq!(fake.metrics().images_pulled, 0);
            let id = ensure_image(runtime.as_ref(), &"app".into()).await.unwrap();
            assert_eq!(
                ensure_image(runtime.as_ref(), &"app".into()).await.unwrap(),
                id
            );
            assert_eq!(fake.metrics().images_pulled, 1);
        })
        .await
        .expect("in time");
    }

    #[test]
    fn the_runtime_is_object_safe_and_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn ContainerRuntime>();
        let _shared: Arc<dyn ContainerRuntime> = Arc::new(fake::FakeRuntime::new());
    }
}
