//! The DaemonSet controller: Kubernetes' `pkg/controller/daemon`, over the [`Client`].
//!
//! A DaemonSet asks for one Pod made from `spec.template` on every *eligible* Node. The
//! controller, a [`Reconciler`] run by the [runtime](capstan_controller::runtime) with DaemonSets as primary
//! kind, Pods as children and Nodes watched (any Node change re-evaluates every DaemonSet),
//! closes the gap:
//!
//! - **Eligibility** ([`node_should_run_daemon_pod`], Kubernetes' `NodeShouldRunDaemonPod`).
//!   A Node *should run* the Pod when it matches the template's `nodeName` (if set), its
//!   `nodeSelector` and its required node affinity (terms ORed; `matchExpressions` with
//!   `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt` on the Node's labels, `matchFields`
//!   on `metadata.name`: [`PodSpecExt`]), and the Pod tolerates
//!   every `NoSchedule` and `NoExecute` taint of the Node
//!   ([`TaintExt`]). The Pod gets Kubernetes' [`default_tolerations`] first (not-ready and
//!   unreachable `NoExecute`; disk-, memory-, pid-pressure and unschedulable `NoSchedule`;
//!   network-unavailable for `hostNetwork` Pods). A Pod already there *may continue running*
//!   when only an untolerated `NoSchedule` taint is in the way; an untolerated `NoExecute`
//!   taint, or a selector or affinity that no longer matches, removes it. A Node being deleted
//!   gets no new Pod (its Pod goes with it).
//! - **Placement.** Each Pod is created with Kubernetes' required node affinity
//!   `matchFields: metadata.name In [<node>]` *and* with `spec.nodeName` set to the Node.
//!   Kubernetes leaves binding to the scheduler, which honours that affinity; Capstan's
//!   scheduler is not written yet and [`FakeScheduler`](capstan_controller::testing::FakeScheduler)
//!   ignores affinity, so the controller binds the Pod itself (as Kubernetes did before 1.12).
//!   The affinity is kept so a real scheduler would agree.
//! - **Managing** (Kubernetes' `manage` and `podsShouldBeOnNode`). A Node that should run the
//!   Pod and has none gets one; on a Node where the Pod may continue running, `Failed` Pods
//!   are deleted (a `FailedDaemonPod` warning; recreated on the next sync, without
//!   Kubernetes' per-node backoff) and extra Pods beyond the oldest are deleted; from a Node
//!   that may not run it, every Pod is deleted; Pods bound to a Node that does not exist are
//!   deleted. A Node being deleted still counts: terminating Pods occupy their Node, so a
//!   replacement is only created once the old Pod is gone, and a Node never holds two Pods
//!   of one DaemonSet. Creates go in slow-start batches (1, 2, 4, ...), at most
//!   [`BURST_REPLICAS`] creates or deletes per sync, and [`Expectations`] (shared with the
//!   ReplicaSet controller) hold the DaemonSet back until the Pod informer has seen them.
//! - **Updates.** Every Pod carries the [`CONTROLLER_REVISION_HASH`] label: a stable hash
//!   of the template ([`template_hash`]). Kubernetes stores a `ControllerRevision` per
//!   template revision and labels Pods with its hash; the hash alone is enough to tell
//!   updated Pods from old ones, so no ControllerRevision (and no rollback history) is kept.
//!   `RollingUpdate` (the default) deletes old Pods Node by Node so that at most
//!   `maxUnavailable` (default 1; an integer or a percentage of the desired Pods, rounded
//!   up) Nodes lack an available updated Pod; the manage step then creates the new one once
//!   the old one is gone. `maxSurge` is not supported (treated as 0). `OnDelete` replaces a
//!   Pod only when someone deletes it.
//! - **Status** (through the status subresource, only when it changed):
//!   `desiredNumberScheduled`, `currentNumberScheduled`, `numberMisscheduled`, `numberReady`,
//!   `numberAvailable` (ready for `minReadySeconds`), `numberUnavailable`,
//!   `updatedNumberScheduled` and `observedGeneration`.
//! - **Events**, with Kubernetes' reasons: `SuccessfulCreate` (`Created pod: <name>`),
//!   `SuccessfulDelete` (`Deleted pod: <name>`), the warnings `FailedCreate`,
//!   `FailedDelete`, `FailedDaemonPod`, and `FailedPlacement` (`failed to place pod on
//!   "<node>": ...`, once per DaemonSet, Node and reason) when a Node matching the selector
//!   has a taint the Pod does not tolerate.
//!
//! Only Pods whose controlling ownerReference is the DaemonSet are its Pods: orphans matching
//! the selector are not adopted, and owned Pods that stop matching are not released.
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_api::Client;
//! use capstan_controllers::daemonset::{self, COMPONENT};
//! use capstan_controller::events::{EventBroadcaster, EventOptions};
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! async fn run(client: Arc<dyn Client>, stop: tokio::sync::oneshot::Receiver<()>) {
//!     let factory = Arc::new(InformerFactory::new(client.clone(), ReflectorOptions::default()));
//!     let events = EventBroadcaster::new(client.clone(), EventOptions::default());
//!     let controller = daemonset::controller(client, factory, events.recorder(COMPONENT));
//!     controller.run(async { let _ = stop.await; }).await.unwrap();
//! }
//! ```

use capstan_api::compat::Maybe;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::ext::{NodeExt, PodExt, PodSpecExt, TaintExt};
use capstan_api::k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use capstan_api::k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, PodTemplateSpec, Taint, Toleration,
};
use capstan_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::{DeleteParams, PostParams, Preconditions};
use capstan_api::kube_core::ObjectMeta;
use capstan_api::{Api, Client, Error};
use capstan_watch::{Cache, Delta, InformerFactory, ObjectKey, SharedInformer};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use capstan_controller::events::{Clock, EventRecorder};
use capstan_controller::runtime::{
    add_controller_index, controlled_or_orphans, controller_owner_key, Action, Context, Controller,
    ControllerError, ManagedController, Reconciler,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::context::{BuiltinController, ControllerContext, StopSignal};
use crate::util::{is_pod_available, pod_for, Expectations};

mod eligibility;
mod pods;
mod reconciler;
#[cfg(test)]
mod tests;

pub use eligibility::*;
pub use pods::*;
pub use reconciler::*;

/// The most Pods one sync creates or deletes (Kubernetes' DaemonSet `BurstReplicas`).
pub const BURST_REPLICAS: usize = 250;

/// The label carrying the template hash of the revision a Pod was made from.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

/// Kubernetes' name for the controller: what `--controllers` lists.
pub const NAME: &str = "daemonset-controller";

/// The component name the controller's Events report (`source.component`).
pub const COMPONENT: &str = NAME;

/// Event reasons, as Kubernetes spells them.
pub mod reasons {
    /// A Pod was created: `Created pod: <name>`.
    pub const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
    /// A Pod could not be created: `Error creating: <error>` (Warning).
    pub const FAILED_CREATE: &str = "FailedCreate";
    /// A Pod was deleted: `Deleted pod: <name>`.
    pub const SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
    /// A Pod could not be deleted: `Error deleting: <error>` (Warning).
    pub const FAILED_DELETE: &str = "FailedDelete";
    /// A Node matching the selector cannot take the Pod (Warning).
    pub const FAILED_PLACEMENT: &str = "FailedPlacement";
    /// A daemon Pod failed and is deleted to be replaced (Warning).
    pub const FAILED_DAEMON_POD: &str = "FailedDaemonPod";
}

/// The taint keys of Kubernetes' node conditions that DaemonSet Pods tolerate.
pub mod taints {
    /// The Node is not ready.
    pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
    /// The Node controller cannot reach the Node.
    pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
    /// The Node is low on disk.
    pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
    /// The Node is low on memory.
    pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
    /// The Node is low on process ids.
    pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
    /// The Node is cordoned (`spec.unschedulable`).
    pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
    /// The Node's network is not configured.
    pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

/// The DaemonSet controller: a [`Controller`] for DaemonSets that owns Pods and watches
/// Nodes, run with a [`DaemonSetReconciler`]. See the [module docs](self). Build it with
/// [`controller`]; set a clock with [`map_reconciler`](ManagedController::map_reconciler)
/// and [`DaemonSetReconciler::with_clock`]; tune its workers (Kubernetes'
/// `--concurrent-daemonset-syncs`) with [`concurrency`](ManagedController::concurrency).
pub type DaemonSetController = ManagedController<DaemonSet, DaemonSetReconciler>;

/// A controller writing through `client`, with the DaemonSet, Pod and Node informers of
/// `factory` and Events from `recorder` (whose component is usually [`COMPONENT`]).
///
/// # Panics
///
/// Outside a tokio runtime: the factory starts the informers at once.
pub fn controller(
    client: Arc<dyn Client>,
    factory: Arc<InformerFactory>,
    recorder: EventRecorder,
) -> DaemonSetController {
    let expectations = Arc::new(Expectations::default());
    let pod_informer: Arc<SharedInformer<Pod>> = factory.informer::<Pod>();
    let node_informer: Arc<SharedInformer<Node>> = factory.informer::<Node>();
    let controller = Controller::<DaemonSet>::new(factory).named(COMPONENT);
    let daemon_sets = controller.cache().clone();
    // As in the ReplicaSet controller: observations ride on their own subscription,
    // drained on the Pod feed right before it queues keys.
    let observations: Mutex<mpsc::UnboundedReceiver<Delta<Pod>>> =
        Mutex::new(pod_informer.subscribe());
    let observer = expectations.clone();
    let controller = controller
        .watches_informer(pod_informer.clone(), move |pod: &Pod| {
            {
                let mut observations = observations.lock();
                while let Ok(delta) = observations.try_recv() {
                    observer.observe::<DaemonSet>(&delta);
                }
            }
            controller_owner_key::<DaemonSet, Pod>(pod)
        })
        .watches_informer(node_informer.clone(), move |_node: &Node| {
            daemon_sets
                .list()
                .iter()
                .map(|ds| ObjectKey::of(ds.as_ref()))
                .collect::<Vec<_>>()
        });
    let reconciler = DaemonSetReconciler::new(
        client,
        pod_informer.cache().clone(),
        node_informer.cache().clone(),
        recorder,
        expectations,
    );
    ManagedController::new(controller, reconciler)
}

impl BuiltinController for DaemonSetController {
    const NAME: &'static str = NAME;
    const ALIASES: &'static [&'static str] = &["daemonset"];

    fn from_context(ctx: &ControllerContext) -> Self {
        controller(
            ctx.client.clone(),
            ctx.factory.clone(),
            ctx.recorder.clone(),
        )
    }

    fn run_until(self, shutdown: StopSignal) -> BoxFuture<'static, Result<(), ControllerError>> {
        self.run(shutdown).boxed()
    }
}
