//! The plugin SPI: one small trait per extension point, as in kube-scheduler's
//! `framework/interface.go`.
//!
//! Every plugin implements [`SchedulerPlugin`] (its name) and any number of extension-point
//! traits. The per-node extension points (Filter, Score) are plain `fn`s over a borrowed
//! [`NodeInfo`]: they run once per node per pod, in parallel, and must neither block nor
//! allocate needlessly. The binding cycle (Permit waits, PreBind, Bind, PostBind, PostFilter)
//! runs off the scheduling loop and may await I/O, so those traits are async.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::core::v1::Pod;

use super::{CycleState, NodeInfo, QueuedPodInfo, Status};

/// The highest score a Score plugin may give after normalization.
pub const MAX_NODE_SCORE: i64 = 100;
/// The lowest score a Score plugin may give after normalization.
pub const MIN_NODE_SCORE: i64 = 0;

/// The base of every plugin: its name, unique within a profile.
pub trait SchedulerPlugin: Send + Sync + 'static {
    /// The plugin's name, as profiles and statuses spell it (`"NodeResourcesFit"`).
    fn name(&self) -> &str;
}

/// Decides whether a pod may enter the active queue at all (for example scheduling gates).
pub trait PreEnqueuePlugin: SchedulerPlugin {
    /// `Success` admits the pod; anything else parks it until a cluster event.
    fn pre_enqueue(&self, pod: &Pod) -> Status;
}

/// Orders the active queue. A profile has at most one.
pub trait QueueSortPlugin: SchedulerPlugin {
    /// Whether `a` is scheduled before `b`.
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool;
}

/// What a PreFilter plugin may narrow the candidate nodes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreFilterResult {
    /// `Some(names)`: only these nodes can fit (for example `spec.nodeName`, or a
    /// `metadata.name` node affinity term). `None`: all nodes.
    pub node_names: Option<HashSet<String>>,
}

impl PreFilterResult {
    /// Every node stays a candidate.
    pub fn all_nodes() -> Self {
        Self::default()
    }

    /// Only `names` stay candidates.
    pub fn nodes(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        PreFilterResult {
            node_names: Some(names.into_iter().map(Into::into).collect()),
        }
    }

    /// Intersection of two results (`None` is the whole set).
    pub fn merge(self, other: PreFilterResult) -> PreFilterResult {
        match (self.node_names, other.node_names) {
            (None, n) | (n, None) => PreFilterResult { node_names: n },
            (Some(a), Some(b)) => PreFilterResult {
                node_names: Some(a.intersection(&b).cloned().collect()),
            },
        }
    }
}

/// Runs once per pod before filtering: checks the pod and precomputes what Filter reads.
pub trait PreFilterPlugin: SchedulerPlugin {
    /// `Skip` turns this plugin's Filter off for the cycle; `Unschedulable*` rejects the pod
    /// on every node.
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[Arc<NodeInfo>],
    ) -> (PreFilterResult, Status);
}

/// Decides whether the pod fits one node. Called in parallel over nodes.
pub trait FilterPlugin: SchedulerPlugin {
    /// `Success` when `pod` fits `node`.
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status;
}

/// Why each node was rejected, by node name.
pub type NodeStatusMap = std::collections::HashMap<String, Status>;

/// What a PostFilter plugin found (for preemption: the nominated node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PostFilterResult {
    /// The node the pod is nominated to once victims are gone.
    pub nominated_node_name: Option<String>,
}

/// What a PostFilter plugin may read and run: the cycle's nodes and the profile's own
/// PreFilter and Filter plugins (to simulate the cluster with some pods gone), as
/// kube-scheduler's framework handle offers them.
#[derive(Clone, Copy, Debug)]
pub struct PostFilterContext<'a> {
    framework: &'a super::Framework,
    nodes: &'a [Arc<NodeInfo>],
}

impl<'a> PostFilterContext<'a> {
    /// A context over `nodes` (the cycle's snapshot) running `framework`'s plugins.
    pub fn new(framework: &'a super::Framework, nodes: &'a [Arc<NodeInfo>]) -> Self {
        PostFilterContext { framework, nodes }
    }

    /// The profile's framework.
    pub fn framework(&self) -> &'a super::Framework {
        self.framework
    }

    /// Every node of the cycle, in the snapshot's order.
    pub fn nodes(&self) -> &'a [Arc<NodeInfo>] {
        self.nodes
    }
}

/// Runs when no node fits (DefaultPreemption).
#[async_trait]
pub trait PostFilterPlugin: SchedulerPlugin {
    /// `Success` with a nominated node, or `Unschedulable` when it could not help.
    /// `filtered` holds why each node was rejected.
    async fn post_filter(
        &self,
        ctx: &PostFilterContext<'_>,
        state: &CycleState,
        pod: &Pod,
        filtered: &NodeStatusMap,
    ) -> (PostFilterResult, Status);
}

/// Runs once per pod before scoring, with the nodes that passed Filter.
pub trait PreScorePlugin: SchedulerPlugin {
    /// `Skip` turns this plugin's Score off for the cycle.
    fn pre_score(&self, state: &mut CycleState, pod: &Pod, nodes: &[Arc<NodeInfo>]) -> Status;
}

/// One node's score.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeScore {
    /// The node's name.
    pub name: String,
    /// Its score.
    pub score: i64,
}

/// Ranks the nodes that passed Filter. Called in parallel over nodes.
pub trait ScorePlugin: SchedulerPlugin {
    /// The node's raw score, or a non-success status (which fails the cycle).
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status>;

    /// Maps the raw scores onto `MIN_NODE_SCORE..=MAX_NODE_SCORE`. The default leaves them
    /// as they are (for plugins that already score in range).
    fn normalize_score(
        &self,
        _state: &CycleState,
        _pod: &Pod,
        _scores: &mut [NodeScore],
    ) -> Status {
        Status::success()
    }
}

/// Claims (and releases) per-node resources for the pod, before binding.
pub trait ReservePlugin: SchedulerPlugin {
    /// Reserves; a non-success status fails the cycle and unreserves every Reserve plugin.
    fn reserve(&self, state: &mut CycleState, pod: &Pod, node_name: &str) -> Status;
    /// Undoes `reserve`. Must be idempotent: it also runs for plugins whose reserve did not.
    fn unreserve(&self, state: &mut CycleState, pod: &Pod, node_name: &str);
}

/// A Permit plugin's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PermitDecision {
    /// The pod may be bound.
    Allow,
    /// The pod is rejected with this status.
    Deny(Status),
    /// The pod waits at most this long for someone to allow it (then it is rejected).
    Wait(Duration),
}

/// Approves, rejects or delays binding.
pub trait PermitPlugin: SchedulerPlugin {
    /// Decides for the pod on `node_name`.
    fn permit(&self, state: &mut CycleState, pod: &Pod, node_name: &str) -> PermitDecision;
}

/// Prepares binding (for example provisions volumes). Runs in the binding cycle.
#[async_trait]
pub trait PreBindPlugin: SchedulerPlugin {
    /// A non-success status fails binding and unreserves.
    async fn pre_bind(&self, state: &CycleState, pod: &Pod, node_name: &str) -> Status;
}

/// Binds the pod to the node. Bind plugins are asked in order until one does not `Skip`.
#[async_trait]
pub trait BindPlugin: SchedulerPlugin {
    /// `Success` when bound; `Skip` to let the next Bind plugin do it.
    async fn bind(&self, state: &CycleState, pod: &Pod, node_name: &str) -> Status;
}

/// Informational, after a successful bind.
#[async_trait]
pub trait PostBindPlugin: SchedulerPlugin {
    /// Called once the pod is bound.
    async fn post_bind(&self, state: &CycleState, pod: &Pod, node_name: &str);
}
