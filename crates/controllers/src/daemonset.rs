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
//! use capstan_controllers::daemonset::{DaemonSetController, COMPONENT};
//! use capstan_controller::events::{EventBroadcaster, EventOptions};
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! async fn run(client: Arc<dyn Client>, stop: tokio::sync::oneshot::Receiver<()>) {
//!     let factory = Arc::new(InformerFactory::new(client.clone(), ReflectorOptions::default()));
//!     let events = EventBroadcaster::new(client.clone(), EventOptions::default());
//!     let controller = DaemonSetController::new(client, factory, events.recorder(COMPONENT));
//!     controller.run(async { let _ = stop.await; }).await.unwrap();
//! }
//! ```

use capstan_api::compat::Maybe;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
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

use crate::replicaset::{is_pod_available, pod_for, Expectations};
use capstan_controller::events::{Clock, EventRecorder};
use capstan_controller::runtime::{
    add_controller_index, controlled_or_orphans, controller_owner_key, Action, Context, Controller,
    ControllerError, Reconciler,
};

/// The most Pods one sync creates or deletes (Kubernetes' DaemonSet `BurstReplicas`).
pub const BURST_REPLICAS: usize = 250;

/// The label carrying the template hash of the revision a Pod was made from.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

/// The component name the controller's Events report (`source.component`).
pub const COMPONENT: &str = "daemonset-controller";

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
// Eligibility
// ---------------------------------------------------------------------------------------

fn exists_toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    }
}

/// The tolerations Kubernetes adds to every DaemonSet Pod (`AddOrUpdateDaemonPodTolerations`):
/// not-ready and unreachable `NoExecute`; disk-, memory-, pid-pressure and unschedulable
/// `NoSchedule`; and network-unavailable `NoSchedule` when `host_network`.
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut tolerations = vec![
        exists_toleration(taints::NOT_READY, "NoExecute"),
        exists_toleration(taints::UNREACHABLE, "NoExecute"),
        exists_toleration(taints::DISK_PRESSURE, "NoSchedule"),
        exists_toleration(taints::MEMORY_PRESSURE, "NoSchedule"),
        exists_toleration(taints::PID_PRESSURE, "NoSchedule"),
        exists_toleration(taints::UNSCHEDULABLE, "NoSchedule"),
    ];
    if host_network {
        tolerations.push(exists_toleration(taints::NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    tolerations
}

/// Adds the tolerations of `wanted` that `tolerations` lacks (by key, operator and effect).
fn add_tolerations(tolerations: &mut Vec<Toleration>, wanted: Vec<Toleration>) {
    for toleration in wanted {
        let present = tolerations.iter().any(|t| {
            t.key == toleration.key
                && t.operator == toleration.operator
                && t.effect == toleration.effect
        });
        if !present {
            tolerations.push(toleration);
        }
    }
}

fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        effects.contains(&taint.effect.as_str()) && !taint.is_tolerated_by(tolerations)
    })
}

/// What a DaemonSet may do on a Node (Kubernetes' `NodeShouldRunDaemonPod`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    /// A Pod should be created there if there is none.
    pub should_run: bool,
    /// A Pod already there may stay.
    pub should_continue_running: bool,
    /// The taint that keeps a new Pod away, when that is the only obstacle.
    pub untolerated_taint: Option<Taint>,
}

/// Where the DaemonSet `ds` may run; see [`Placement`] and the [module docs](self).
pub fn node_should_run_daemon_pod(node: &Node, ds: &DaemonSet) -> Placement {
    let Some(spec) = ds.spec.opt().and_then(|s| s.template.spec.as_ref()) else {
        return Placement::default();
    };
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != node_name)
        || !spec.matches_node_selector_and_affinity(node)
    {
        return Placement::default();
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    add_tolerations(
        &mut tolerations,
        default_tolerations(spec.host_network == Some(true)),
    );
    let node_taints = node.taints();
    if let Some(taint) = untolerated(node_taints, &tolerations, &["NoSchedule", "NoExecute"]) {
        let no_execute = untolerated(node_taints, &tolerations, &["NoExecute"]).is_some();
        return Placement {
            should_run: false,
            should_continue_running: !no_execute,
            untolerated_taint: Some(taint.clone()),
        };
    }
    if node.metadata.deletion_timestamp.is_some() {
        return Placement {
            should_run: false,
            should_continue_running: true,
            untolerated_taint: None,
        };
    }
    Placement {
        should_run: true,
        should_continue_running: true,
        untolerated_taint: None,
    }
}

// ---------------------------------------------------------------------------------------
// Revisions
// ---------------------------------------------------------------------------------------

/// The `controller-revision-hash` of `template`: FNV-1a (64 bits) over its JSON, written in
/// Kubernetes' safe alphabet (no vowels, so it never spells a word). Equal templates give
/// equal hashes in every process.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in json {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|digit| ALPHABET[usize::from(digit - b'0') % ALPHABET.len()] as char)
        .collect()
}

fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

// ---------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------

/// Whether `pod`'s controlling ownerReference has `uid`.
#[cfg(test)]
pub(crate) fn controlled_by(pod: &Pod, uid: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// The Node a daemon Pod is for: its `spec.nodeName`, else the Node its required
/// `metadata.name` affinity names.
fn target_node(pod: &Pod) -> Option<String> {
    if let Some(node) = pod.node_name() {
        return Some(node.to_string());
    }
    let terms = &pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|term| {
        term.match_fields.iter().flatten().find_map(|field| {
            let values = field.values.as_deref().unwrap_or_default();
            (field.key == "metadata.name" && field.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

fn created_at(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// The Pod `ds` runs on `node`: the template (through the ReplicaSet controller's
/// [`pod_for`]), owned by the DaemonSet, labelled with the revision `hash`, with the
/// [`default_tolerations`], the required affinity to `node` and `spec.nodeName` set.
pub fn daemon_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let mut template = ds
        .spec
        .opt()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(CONTROLLER_REVISION_HASH.into(), hash.into());
    let mut pod = pod_for(ds, template);
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    add_tolerations(
        &mut tolerations,
        default_tolerations(spec.host_network == Some(true)),
    );
    spec.tolerations = Some(tolerations);
    // Kubernetes' ReplaceDaemonSetPodNodeNameNodeAffinity: one term, on the Node's name.
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
            match_expressions: None,
        }],
    });
    spec.node_name = Some(node.to_string());
    pod
}

fn max_unavailable(ds: &DaemonSet, desired: usize) -> usize {
    let strategy = ds.spec.opt().and_then(|s| s.update_strategy.as_ref());
    let value = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let scaled = match value {
        IntOrString::Int(n) => n.max(0) as usize,
        IntOrString::String(s) => {
            let percent: usize = s.trim_end_matches('%').parse().unwrap_or(0);
            (percent * desired).div_ceil(100)
        }
    };
    // Kubernetes: an impossible configuration (no surge and no unavailability) means 1.
    if scaled == 0 && desired > 0 {
        1
    } else {
        scaled
    }
}

fn is_rolling_update(ds: &DaemonSet) -> bool {
    ds.spec
        .opt()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

// ---------------------------------------------------------------------------------------
// The reconciler
// ---------------------------------------------------------------------------------------

/// What the [`DaemonSetReconciler`] fails with: an API error, after which the runtime
/// retries the DaemonSet with backoff.
pub type DaemonSetError = Error;

/// Syncs one DaemonSet; see the [module docs](self). Built by [`DaemonSetController`].
pub struct DaemonSetReconciler {
    client: Arc<dyn Client>,
    pods: Cache<Pod>,
    nodes: Cache<Node>,
    recorder: EventRecorder,
    expectations: Arc<Expectations>,
    clock: Clock,
    /// (DaemonSet uid, Node, message) of the FailedPlacement events already recorded.
    placement_warnings: Mutex<HashSet<(String, String, String)>>,
}

impl std::fmt::Debug for DaemonSetReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonSetReconciler")
            .field("expectations", &self.expectations)
            .finish_non_exhaustive()
    }
}

/// What one sync decided to do.
#[derive(Default)]
struct Plan {
    create_on: Vec<String>,
    delete: Vec<Arc<Pod>>,
}

impl DaemonSetReconciler {
    /// A reconciler reading Pods (to which it adds the controller-uid index) and Nodes from
    /// the caches and writing through `client`.
    pub fn new(
        client: Arc<dyn Client>,
        pods: Cache<Pod>,
        nodes: Cache<Node>,
        recorder: EventRecorder,
        expectations: Arc<Expectations>,
    ) -> Self {
        add_controller_index(&pods);
        DaemonSetReconciler {
            client,
            pods,
            nodes,
            recorder,
            expectations,
            clock: Arc::new(Timestamp::now),
            placement_warnings: Mutex::new(HashSet::new()),
        }
    }

    /// Reads the time (for `minReadySeconds`) from `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The expectations this reconciler keeps.
    pub fn expectations(&self) -> &Arc<Expectations> {
        &self.expectations
    }

    /// Kubernetes' `podsShouldBeOnNode` for every Node, plus the Pods of vanished Nodes.
    fn plan_manage(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        node_to_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    ) -> Plan {
        let mut plan = Plan::default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let placement = node_should_run_daemon_pod(node, ds);
            let pods = node_to_pods
                .get(&name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let warning_key = |message: &str| (uid.clone(), name.clone(), message.to_string());
            match &placement.untolerated_taint {
                Some(taint) if pods.is_empty() => {
                    let message = format!(
                        "failed to place pod on {name:?}: node(s) had untolerated taint {{{}: {}}}",
                        taint.key,
                        taint.value.as_deref().unwrap_or_default()
                    );
                    if self.placement_warnings.lock().insert(warning_key(&message)) {
                        self.recorder
                            .warning(ds, reasons::FAILED_PLACEMENT, message);
                    }
                }
                _ => self
                    .placement_warnings
                    .lock()
                    .retain(|(u, n, _)| !(u == &uid && n == &name)),
            }
            if placement.should_run && pods.is_empty() {
                plan.create_on.push(name);
            } else if placement.should_continue_running {
                let mut running: Vec<&Arc<Pod>> = Vec::new();
                for pod in pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                {
                    if pod.phase() == "Failed" {
                        self.recorder.warning(
                            ds,
                            reasons::FAILED_DAEMON_POD,
                            format!(
                                "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                                pod.metadata.namespace.as_deref().unwrap_or_default(),
                                pod.metadata.name.as_deref().unwrap_or_default()
                            ),
                        );
                        plan.delete.push(pod.clone());
                    } else {
                        running.push(pod);
                    }
                }
                // More than one: keep the oldest (the first created, running before not).
                running.sort_by(|a, b| {
                    created_at(a)
                        .cmp(&created_at(b))
                        .then_with(|| b.is_ready().cmp(&a.is_ready()))
                        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
                });
                plan.delete.extend(running.into_iter().skip(1).cloned());
            } else {
                plan.delete.extend(
                    pods.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .cloned(),
                );
            }
        }
        // Pods bound to Nodes that no longer exist.
        let known: HashSet<&str> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        for (node, pods) in node_to_pods {
            if !known.contains(node.as_str()) {
                plan.delete.extend(
                    pods.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .cloned(),
                );
            }
        }
        plan.create_on.truncate(BURST_REPLICAS);
        plan.delete.truncate(BURST_REPLICAS);
        plan
    }

    /// Kubernetes' `rollingUpdate` without surge: the old Pods to delete now.
    fn plan_rolling_update(
        &self,
        ds: &DaemonSet,
        hash: &str,
        desired: usize,
        node_to_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    ) -> Vec<Arc<Pod>> {
        let max_unavailable = max_unavailable(ds, desired);
        let min_ready = ds.spec.opt().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = (self.clock)();
        let mut unavailable = 0usize;
        let mut replace_now: Vec<Arc<Pod>> = Vec::new();
        let mut candidates: Vec<Arc<Pod>> = Vec::new();
        for pods in node_to_pods.values() {
            let (mut new_pod, mut old_pod, mut ok) = (None, None, true);
            for pod in pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
            {
                let slot = if pod_hash(pod) == Some(hash) {
                    &mut new_pod
                } else {
                    &mut old_pod
                };
                if slot.is_some() {
                    ok = false;
                }
                *slot = Some(pod.clone());
            }
            if !ok {
                unavailable += 1;
                continue;
            }
            match (new_pod, old_pod) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new_pod), None) => {
                    if !is_pod_available(&new_pod, min_ready, now) {
                        unavailable += 1;
                    }
                }
                (None, Some(old_pod)) => {
                    if !is_pod_available(&old_pod, min_ready, now) {
                        replace_now.push(old_pod);
                    } else if unavailable < max_unavailable {
                        candidates.push(old_pod);
                    }
                }
            }
        }
        let room = max_unavailable
            .saturating_sub(unavailable)
            .min(candidates.len());
        replace_now.extend(candidates.into_iter().take(room));
        replace_now.truncate(BURST_REPLICAS);
        replace_now
    }

    /// Kubernetes' `syncNodes`: creates (slow start) and deletes, with expectations.
    async fn sync_nodes(
        &self,
        key: &ObjectKey,
        ds: &DaemonSet,
        hash: &str,
        plan: Plan,
    ) -> Result<(), Error> {
        let namespace = ds.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.expectations.expect(
            key,
            plan.create_on.len(),
            plan.delete.iter().map(|p| ObjectKey::of(p.as_ref())),
        );
        let mut first_error = None;
        let mut remaining: &[String] = &plan.create_on;
        let mut batch = 1usize;
        while !remaining.is_empty() {
            let (now, later) = remaining.split_at(batch.min(remaining.len()));
            remaining = later;
            let results = futures::future::join_all(now.iter().map(|node| {
                let api = &api;
                async move {
                    let pod = daemon_pod(ds, node, hash);
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(pod) => {
                            let name = pod.metadata.name.unwrap_or_default();
                            self.recorder.normal(
                                ds,
                                reasons::SUCCESSFUL_CREATE,
                                format!("Created pod: {name}"),
                            );
                            Ok(())
                        }
                        Err(error) => {
                            self.recorder.warning(
                                ds,
                                reasons::FAILED_CREATE,
                                format!("Error creating: {error}"),
                            );
                            self.expectations.creation_observed(key);
                            Err(error)
                        }
                    }
                }
            }))
            .await;
            if let Some(error) = results.into_iter().find_map(Result::err) {
                // The creations never attempted will never be observed either.
                for _ in 0..remaining.len() {
                    self.expectations.creation_observed(key);
                }
                first_error = Some(error);
                break;
            }
            batch *= 2;
        }
        let results = futures::future::join_all(plan.delete.iter().map(|pod| {
            let api = &api;
            async move {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let params = DeleteParams {
                    preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => {
                        self.recorder.normal(
                            ds,
                            reasons::SUCCESSFUL_DELETE,
                            format!("Deleted pod: {name}"),
                        );
                        Ok(())
                    }
                    Err(error) => {
                        self.expectations
                            .deletion_observed(key, &ObjectKey::of(pod.as_ref()));
                        if error.is_not_found() {
                            return Ok(());
                        }
                        self.recorder.warning(
                            ds,
                            reasons::FAILED_DELETE,
                            format!("Error deleting: {error}"),
                        );
                        Err(error)
                    }
                }
            }
        }))
        .await;
        match first_error.or_else(|| results.into_iter().find_map(Result::err)) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Kubernetes' `updateDaemonSetStatus`, computed.
    fn calculate_status(
        &self,
        ds: &DaemonSet,
        hash: &str,
        nodes: &[Arc<Node>],
        node_to_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    ) -> DaemonSetStatus {
        let min_ready = ds.spec.opt().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = (self.clock)();
        let mut status = DaemonSetStatus {
            observed_generation: ds.metadata.generation,
            ..ds.status.clone().unwrap_or_default()
        };
        let (mut desired, mut current, mut misscheduled, mut ready, mut available, mut updated) =
            (0, 0, 0, 0, 0, 0);
        for node in nodes {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            let mut pods: Vec<&Arc<Pod>> = node_to_pods.get(name).into_iter().flatten().collect();
            let placement = node_should_run_daemon_pod(node, ds);
            if placement.should_run {
                desired += 1;
                if pods.is_empty() {
                    continue;
                }
                current += 1;
                pods.sort_by_key(|p| created_at(p));
                let pod = pods[0];
                if pod.is_ready() {
                    ready += 1;
                    if is_pod_available(pod, min_ready, now) {
                        available += 1;
                    }
                }
                if pod_hash(pod) == Some(hash) {
                    updated += 1;
                }
            } else if !pods.is_empty() {
                misscheduled += 1;
            }
        }
        status.desired_number_scheduled = desired;
        status.current_number_scheduled = current;
        status.number_misscheduled = misscheduled;
        status.number_ready = ready;
        status.number_available = Some(available);
        status.number_unavailable = Some(desired - available);
        status.updated_number_scheduled = Some(updated);
        status
    }

    async fn update_status(&self, ds: &DaemonSet, status: DaemonSetStatus) -> Result<(), Error> {
        if ds.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let namespace = ds.metadata.namespace.as_deref().unwrap_or_default();
        let api = Api::<DaemonSet>::namespaced(self.client.clone(), namespace);
        let mut current = ds.clone();
        current.status = Some(status);
        match api.update_status(&PostParams::default(), &current).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => Ok(()),
            // A conflict means the cache was stale: the next sync (queued by the change, or
            // this error's backoff) computes again from fresh state.
            Err(error) => Err(error),
        }
    }
}

#[async_trait]
impl Reconciler<DaemonSet> for DaemonSetReconciler {
    type Error = DaemonSetError;

    async fn reconcile(&self, ds: Arc<DaemonSet>, ctx: &Context) -> Result<Action, Error> {
        let key = ctx.key().clone();
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let namespace = ds.metadata.namespace.clone().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let template = ds
            .spec
            .opt()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let hash = template_hash(&template);
        // Expectations before the caches, as Kubernetes reads them.
        let needs_sync = self.expectations.satisfied(&key);
        let mut nodes = self.nodes.list();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut node_to_pods: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        // Only its own Pods (DaemonSets adopt none), from the controller-uid index.
        for pod in controlled_or_orphans(&self.pods, &namespace, &uid, false) {
            // A deleted Pod that has also finished no longer occupies its Node.
            let finished = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            if finished && pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(node) = target_node(&pod) {
                node_to_pods.entry(node).or_default().push(pod);
            }
        }

        let mut sync_error = None;
        if needs_sync {
            let mut plan = self.plan_manage(&ds, &nodes, &node_to_pods);
            if plan.create_on.is_empty() && plan.delete.is_empty() && is_rolling_update(&ds) {
                let desired = nodes
                    .iter()
                    .filter(|n| node_should_run_daemon_pod(n, &ds).should_run)
                    .count();
                plan.delete = self.plan_rolling_update(&ds, &hash, desired, &node_to_pods);
            }
            if !plan.create_on.is_empty() || !plan.delete.is_empty() {
                tracing::debug!(
                    daemonset = %key,
                    create = plan.create_on.len(),
                    delete = plan.delete.len(),
                    "syncing nodes"
                );
                sync_error = self.sync_nodes(&key, &ds, &hash, plan).await.err();
            }
        }
        let status = self.calculate_status(&ds, &hash, &nodes, &node_to_pods);
        let waiting_for_availability =
            status.number_ready > status.number_available.unwrap_or_default();
        self.update_status(&ds, status).await?;
        if let Some(error) = sync_error {
            return Err(error);
        }
        let min_ready = ds.spec.opt().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        if min_ready > 0 && waiting_for_availability {
            return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
        }
        if let Some(expiry) = self.expectations.expires_in(&key) {
            return Ok(Action::requeue(expiry + Duration::from_millis(1)));
        }
        Ok(Action::await_change())
    }
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

/// The DaemonSet controller: a [`Controller`] for DaemonSets that owns Pods and watches
/// Nodes, with a [`DaemonSetReconciler`]. See the [module docs](self).
pub struct DaemonSetController {
    controller: Controller<DaemonSet>,
    reconciler: DaemonSetReconciler,
}

impl std::fmt::Debug for DaemonSetController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonSetController")
            .field("controller", &self.controller)
            .finish_non_exhaustive()
    }
}

impl DaemonSetController {
    /// A controller writing through `client`, with the DaemonSet, Pod and Node informers of
    /// `factory` and Events from `recorder` (whose component is usually [`COMPONENT`]).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the factory starts the informers at once.
    pub fn new(
        client: Arc<dyn Client>,
        factory: Arc<InformerFactory>,
        recorder: EventRecorder,
    ) -> Self {
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
        DaemonSetController {
            controller,
            reconciler,
        }
    }

    /// Reads the time (for `minReadySeconds`) from `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.reconciler = self.reconciler.with_clock(clock);
        self
    }

    /// Runs at most `workers` syncs at once (Kubernetes' `--concurrent-daemonset-syncs`).
    #[must_use]
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.controller = self.controller.concurrency(workers);
        self
    }

    /// The expectations, for inspection.
    pub fn expectations(&self) -> Arc<Expectations> {
        self.reconciler.expectations.clone()
    }

    /// The underlying runtime controller's metrics.
    pub fn metrics(&self) -> Arc<capstan_controller::runtime::ControllerMetrics> {
        self.controller.metrics()
    }

    /// Runs until `shutdown` completes; syncs in flight then finish and it returns `Ok(())`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControllerError> {
        self.controller
            .graceful_shutdown_on(shutdown)
            .run(self.reconciler)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::ext::TolerationExt;
    use capstan_api::k8s_openapi::api::apps::v1::DaemonSetSpec;
    use capstan_api::k8s_openapi::api::core::v1::NodeSpec;

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: None,
        }
    }

    fn daemon_set(spec: PodSpec) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                uid: Some("uid-agent".into()),
                ..ObjectMeta::default()
            },
            spec: capstan_api::compat::value(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(spec),
                },
                ..DaemonSetSpec::default()
            }),
            status: None,
        }
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn with_affinity(requirements: Vec<NodeSelectorRequirement>) -> PodSpec {
        PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(requirements),
                            match_fields: None,
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            ..PodSpec::default()
        }
    }

    #[test]
    fn node_selector_and_affinity_operators_match_node_labels() {
        let gpu = node("n1", &[("gpu", "a100"), ("cores", "64")], vec![]);
        let plain = node("n2", &[("cores", "8")], vec![]);
        let cases = [
            (requirement("gpu", "In", &["a100", "h100"]), true, false),
            (requirement("gpu", "NotIn", &["a100"]), false, true),
            (requirement("gpu", "Exists", &[]), true, false),
            (requirement("gpu", "DoesNotExist", &[]), false, true),
            (requirement("cores", "Gt", &["16"]), true, false),
            (requirement("cores", "Lt", &["16"]), false, true),
        ];
        for (requirement, on_gpu, on_plain) in cases {
            let spec = with_affinity(vec![requirement.clone()]);
            assert_eq!(
                spec.matches_node_selector_and_affinity(&gpu),
                on_gpu,
                "{requirement:?}"
            );
            assert_eq!(
                spec.matches_node_selector_and_affinity(&plain),
                on_plain,
                "{requirement:?}"
            );
        }
        let selector = PodSpec {
            node_selector: Some(BTreeMap::from([("gpu".into(), "a100".into())])),
            ..PodSpec::default()
        };
        assert!(selector.matches_node_selector_and_affinity(&gpu));
        assert!(!selector.matches_node_selector_and_affinity(&plain));
    }

    #[test]
    fn no_schedule_taints_keep_new_pods_away_and_no_execute_taints_evict() {
        let ds = daemon_set(PodSpec::default());
        let clean = node("n1", &[], vec![]);
        assert!(node_should_run_daemon_pod(&clean, &ds).should_run);

        let no_schedule = node("n2", &[], vec![taint("dedicated", "NoSchedule")]);
        let placement = node_should_run_daemon_pod(&no_schedule, &ds);
        assert!(!placement.should_run && placement.should_continue_running);
        assert_eq!(placement.untolerated_taint.unwrap().key, "dedicated");

        let no_execute = node("n3", &[], vec![taint("dedicated", "NoExecute")]);
        let placement = node_should_run_daemon_pod(&no_execute, &ds);
        assert!(!placement.should_run && !placement.should_continue_running);

        // Preferences are not obstacles; the default tolerations cover node conditions.
        let benign = node(
            "n4",
            &[],
            vec![
                taint("dedicated", "PreferNoSchedule"),
                taint(taints::NOT_READY, "NoExecute"),
                taint(taints::UNSCHEDULABLE, "NoSchedule"),
                taint(taints::MEMORY_PRESSURE, "NoSchedule"),
            ],
        );
        assert!(node_should_run_daemon_pod(&benign, &ds).should_run);

        let tolerant = daemon_set(PodSpec {
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Exists".into()),
                ..Toleration::default()
            }]),
            ..PodSpec::default()
        });
        assert!(node_should_run_daemon_pod(&no_execute, &tolerant).should_run);
    }

    #[test]
    fn equal_tolerations_need_the_taints_value() {
        let mut tainted = taint("team", "NoSchedule");
        tainted.value = Some("infra".into());
        let equal = |value: &str| Toleration {
            key: Some("team".into()),
            operator: Some("Equal".into()),
            value: Some(value.into()),
            effect: Some("NoSchedule".into()),
            toleration_seconds: None,
        };
        assert!(equal("infra").tolerates(&tainted));
        assert!(!equal("web").tolerates(&tainted));
    }

    #[test]
    fn daemon_pods_are_bound_and_pinned_to_their_node_with_the_revision_hash() {
        let ds = daemon_set(PodSpec::default());
        let hash = template_hash(&ds.spec.opt().unwrap().template);
        let pod = daemon_pod(&ds, "n7", &hash);
        assert_eq!(target_node(&pod).as_deref(), Some("n7"));
        assert_eq!(pod_hash(&pod), Some(hash.as_str()));
        assert!(controlled_by(&pod, "uid-agent"));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
        let tolerations = pod.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        assert_eq!(tolerations.len(), 6);
        let mut unbound = pod.clone();
        unbound.spec.as_mut().unwrap().node_name = None;
        assert_eq!(target_node(&unbound).as_deref(), Some("n7"));
        // The hash is stable and follows the template.
        assert_eq!(hash, template_hash(&ds.spec.opt().unwrap().template));
        let other = daemon_set(PodSpec {
            host_network: Some(true),
            ..PodSpec::default()
        });
        assert_ne!(hash, template_hash(&other.spec.opt().unwrap().template));
    }

    #[test]
    fn max_unavailable_scales_percentages_up_and_is_never_zero() {
        let mut ds = daemon_set(PodSpec::default());
        assert_eq!(max_unavailable(&ds, 10), 1);
        ds.spec.opt_mut().unwrap().update_strategy = Some(
            capstan_api::k8s_openapi::api::apps::v1::DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(
                    capstan_api::k8s_openapi::api::apps::v1::RollingUpdateDaemonSet {
                        max_unavailable: Some(IntOrString::String("25%".into())),
                        max_surge: None,
                    },
                ),
            },
        );
        assert_eq!(max_unavailable(&ds, 10), 3);
        assert_eq!(max_unavailable(&ds, 1), 1);
    }
}
