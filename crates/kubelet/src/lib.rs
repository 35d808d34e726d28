//! Capstan's node agent: the kubelet.
//!
//! A [`Kubelet`] runs one node. It registers its Node (capacity, allocatable, labels with
//! `kubernetes.io/hostname`, addresses, and the conditions Ready, MemoryPressure,
//! DiskPressure, PIDPressure and NetworkUnavailable), renews its Lease in `kube-node-lease`
//! every heartbeat (10 s; the Lease lasts 40 s) and re-checks its conditions then: Ready is
//! `False` while the runtime's `version()` or the network's `status()` fails.
//!
//! It watches only the Pods bound to it (field selector `spec.nodeName=<node>`) and gives each
//! Pod one worker task, so everything done to a Pod is serialized. A worker drives the
//! [`ContainerRuntime`](capstan_runtime::ContainerRuntime) and the
//! [`NetworkPlugin`](capstan_net::NetworkPlugin):
//!
//! - **Start.** It runs the sandbox, calls `NetworkPlugin::add` with the sandbox's network
//!   namespace and records the Pod IPs, runs the init containers one after the other to
//!   completion, then starts the app containers. Images are pulled if missing; a failed pull
//!   shows `ErrImagePull`, then `ImagePullBackOff` while the pull backs off.
//! - **Restarts.** `restartPolicy` Always, OnFailure or Never decides whether an exited
//!   container starts again. Restarts back off 10 s, doubling to 5 min, reset after 10 min
//!   without a failure; meanwhile the container waits with `CrashLoopBackOff`.
//! - **Probes.** Startup, liveness and readiness probes: exec through `exec_sync`, HTTP GET,
//!   TCP and gRPC through a [`Prober`] (the real [`NetworkProber`], or a scripted one in
//!   tests), addressed to the Pod IP. HTTP probes use hyper, HTTPS without certificate
//!   verification (feature `https-probes`, on by default), follow redirects on the same host
//!   and send `User-Agent: kube-probe/<major>.<minor>`; 2xx passes, 3xx passes with a
//!   `ProbeWarning` Event. gRPC probes call `grpc.health.v1.Health/Check` over HTTP/2:
//!   `SERVING` passes. A failed liveness or startup probe kills the container to be
//!   restarted.
//! - **Configuration.** Each container's environment is built as Kubernetes builds it:
//!   `envFrom` ConfigMaps and Secrets (with `prefix`; invalid keys skipped with an
//!   `InvalidEnvironmentVariableNames` warning), then `env` (literal values with `$(VAR)`
//!   references expanded, `configMapKeyRef`, `secretKeyRef`, `fieldRef`, `resourceFieldRef`
//!   with missing limits read as the Node's allocatable), then the Services' variables: the
//!   `kubernetes` Service's always, every Service of the Pod's namespace with
//!   `enableServiceLinks` (the default), read at most every 30 s. `command` and `args` are
//!   expanded against the result (`$$` escapes). A ConfigMap, Secret or key that is missing
//!   and not `optional` keeps the container waiting with `CreateContainerConfigError` (and a
//!   `Failed` Event) until a later sync finds it.
//! - **Resources.** Each container's requests and limits become its runtime settings
//!   ([`resources::container_resources`]: CPU shares and CFS quota, memory limit, OOM score
//!   adjustment by QoS class), the Pod gets its `status.qosClass`
//!   ([`resources::qos_class`]), and a container killed over its memory limit shows
//!   `OOMKilled` with exit code 137 and restarts per `restartPolicy`. **Admission:** a Pod
//!   whose requests do not fit the node's allocatable resources beside the Pods admitted
//!   before it is rejected, never started: phase `Failed`, reason `OutOfcpu` (`OutOfmemory`,
//!   `OutOfpods`, ...) and Kubernetes' message (`Pod was rejected: Node didn't have enough
//!   resource: cpu, requested: 2000, used: 500, capacity: 2000`), plus a Warning Event.
//! - **Changes.** A running container whose spec changed (a new image) is stopped and
//!   replaced by the next attempt (`Killing`: "definition changed").
//! - **Status.** Phase, conditions (PodScheduled, Initialized, ContainersReady, Ready),
//!   container statuses with reasons, exit codes, restart counts and ids, Pod IPs, host IP and
//!   start time, written through the status subresource only when they changed.
//! - **Events.** Pulling, Pulled, Created, Started, Killing, BackOff, Unhealthy, Failed, with
//!   Kubernetes' wording, through capstan-controller's `EventRecorder`.
//! - **Deletion.** A Pod with a `deletionTimestamp` is stopped gracefully (`Killing`, stop
//!   with its grace period, network `del`, sandbox stop and remove) and then deleted with
//!   grace period 0.
//!
//! **Restarts of the kubelet.** Sandboxes and containers carry the Pod's uid, name and
//! namespace (and the container's name) as labels. A starting kubelet first stops and removes
//! (after network `del`) the sandboxes of Pods that no longer exist, then adopts what still
//! runs for the others: a worker finds its Pod's sandbox and containers by label and creates
//! nothing that already exists.
//!
//! **API.** With [`KubeletConfig::server_listen`] set, the kubelet serves its HTTP API
//! ([`server`]): `/pods`, container logs, exec, attach, port-forward, `/stats/summary` and
//! `/metrics/resource`, every route but `/healthz` behind bearer-token authentication and
//! authorization (by default delegated to the API server), and the Node reports the port as
//! its `daemonEndpoints.kubeletEndpoint`.
//!
//! **Time.** Back-offs, probe periods, heartbeats and sync periods are measured on an
//! injected [`Clock`](capstan_runtime::Clock) (the runtime crate's). Tests share one
//! `FakeClock` between the fake runtime and the kubelet and advance it by hand; tokio's
//! paused time is not used. Only the real prober's timeouts and the retries of failed calls
//! at start-up wait on tokio's clock.
//!
//! One node running one Pod, over the in-process API server, with the fake runtime and a
//! minimal network plugin:
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use capstan_api::k8s_openapi::api::core::v1::Pod;
//! use capstan_api::kube_core::params::PostParams;
//! use capstan_api::{Api, Client};
//! use capstan_apiserver::registry::Registry;
//! use capstan_kubelet::{Kubelet, KubeletConfig};
//! use capstan_net::fake::FakeNetwork;
//! use capstan_runtime::fake::{FakeRuntime, ImageBehaviour};
//! use capstan_runtime::FakeClock;
//! use capstan_store::memory::MemoryStore;
//!
//! let client: Arc<dyn Client> = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
//! let clock = FakeClock::new();
//! let runtime = FakeRuntime::builder()
//!     .clock(clock.clone())
//!     .image("nginx", ImageBehaviour::new())
//!     .build();
//! let kubelet = Kubelet::builder(KubeletConfig::new("node-1").internal_ip("192.168.0.2"))
//!     .client(client.clone())
//!     .runtime(Arc::new(runtime))
//!     .network(Arc::new(FakeNetwork::new("10.244.0.0/24".parse()?)?))
//!     .clock(Arc::new(clock))
//!     .build()?
//!     .start();
//!
//! let pod: Pod = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "web", "namespace": "default"},
//!     "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "nginx"}]},
//! }))?;
//! let pods: Api<Pod> = Api::namespaced(client, "default");
//! pods.create(&PostParams::default(), &pod).await?;
//! let status = loop {
//!     let status = pods.get("web").await?.status.unwrap_or_default();
//!     if status.phase.as_deref() == Some("Running") {
//!         break status;
//!     }
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//! };
//! assert_eq!(status.pod_ip.as_deref(), Some("10.244.0.2"));
//! kubelet.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! **Architecture Invariant:** the kubelet knows nothing of scheduling. It runs whatever is
//! bound to its node; it depends on the API, the watch machinery, the event recorder, the
//! runtime and the network SPIs, never on the scheduler.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod admission;
pub mod backoff;
pub mod config;
mod env;
pub mod error;
mod kubelet;
pub mod metrics;
mod node;
mod pod_worker;
pub mod prober;
pub mod resources;
pub mod server;
mod service_env;
mod status;
pub mod streaming;
mod time;
pub mod volumes;

pub use config::{KubeletConfig, NodeAddress, NODE_LEASE_NAMESPACE};
pub use error::{KubeletError, Result};
pub use kubelet::{Kubelet, KubeletBuilder, KubeletMetrics, RunningKubelet};
pub use pod_worker::{
    CONTAINER_HASH_LABEL, CONTAINER_NAME_LABEL, POD_NAMESPACE_LABEL, POD_NAME_LABEL, POD_UID_LABEL,
};
pub use prober::{GrpcCheck, HttpGet, NetworkProber, ProbeOutcome, Prober};
pub use server::ServerAuth;
