//! NodeName, NodeUnschedulable and PrioritySort.

use capstan_api::ext::{PodExt, TaintExt};
use capstan_api::k8s_openapi::api::core::v1::{Pod, Taint};

use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, QueueSortPlugin, QueuedPodInfo, SchedulerPlugin, Status,
};

/// Filters out every node but the one `spec.nodeName` names, if set.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeName;

/// NodeName's rejection reason.
pub const ERR_REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";

impl SchedulerPlugin for NodeName {
    fn name(&self) -> &str {
        super::NODE_NAME
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        match pod.node_name() {
            Some(n) if n != node.name() => Status::unresolvable(ERR_REASON_NODE_NAME),
            _ => Status::success(),
        }
    }
}

/// Filters out nodes with `spec.unschedulable`, unless the pod tolerates the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeUnschedulable;

/// NodeUnschedulable's rejection reason.
pub const ERR_REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";

impl SchedulerPlugin for NodeUnschedulable {
    fn name(&self) -> &str {
        super::NODE_UNSCHEDULABLE
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        if node.node().is_none() {
            return Status::unresolvable("node(s) not found");
        }
        if !node.unschedulable() {
            return Status::success();
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        if taint.is_tolerated_by(tolerations) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_UNSCHEDULABLE)
        }
    }
}

/// The default QueueSort: higher priority first, then earlier.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrioritySort;

impl SchedulerPlugin for PrioritySort {
    fn name(&self) -> &str {
        super::PRIORITY_SORT
    }
}

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
        crate::queue::default_less(a, b)
    }
}
