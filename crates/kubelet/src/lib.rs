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
//! - **Probes.** Startup, liveness and readiness probes: exec through `exec_sync`, HTTP GET
//!   and TCP through a [`Prober`] (the real [`NetworkProber`], or a scripted one in tests).
//!   A failed liveness or startup probe kills the container to be restarted.
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
//! **Time.** Back-offs, probe periods, heartbeats and sync periods are measured on an
//! injected [`Clock`](capstan_runtime::Clock) (the runtime crate's). Tests share one
//! `FakeClock` between the fake runtime and the kubelet and advance it by hand; tokio's
//! paused time is not used. Only retries of failed API calls at start-up wait on tokio's
//! clock.
//!
//! **Architecture Invariant:** the kubelet knows nothing of scheduling. It runs whatever is
//! bound to its node; it depends on the API, the watch machinery, the event recorder, the
//! runtime and the network SPIs, never on the scheduler.

pub mod backoff;
pub mod config;
pub mod error;
mod kubelet;
mod node;
mod pod_worker;
pub mod prober;
mod status;
mod time;

pub use config::{KubeletConfig, NodeAddress, NODE_LEASE_NAMESPACE};
pub use error::{KubeletError, Result};
pub use kubelet::{Kubelet, KubeletBuilder, KubeletMetrics, RunningKubelet};
pub use pod_worker::{CONTAINER_NAME_LABEL, POD_NAMESPACE_LABEL, POD_NAME_LABEL, POD_UID_LABEL};
pub use prober::{HttpGet, NetworkProber, ProbeOutcome, Prober};
