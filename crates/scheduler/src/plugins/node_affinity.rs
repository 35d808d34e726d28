//! NodeAffinity: `spec.nodeSelector` and node affinity, required (Filter) and preferred
//! (Score).

use std::sync::Arc;

use capstan_api::ext::{NodeSelectorTermExt, PodExt};
use capstan_api::k8s_openapi::api::core::v1::{NodeAffinity as Affinity, Pod};

use super::helpers::default_normalize;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, NodeScore, PreScorePlugin, SchedulerPlugin, ScorePlugin,
    Status,
};

/// NodeAffinity's rejection reason.
pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";

/// Filters by `nodeSelector` and required node affinity; scores by the weights of the
/// preferred terms a node matches.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeAffinity;

fn affinity(pod: &Pod) -> Option<&Affinity> {
    pod.spec.as_ref()?.affinity.as_ref()?.node_affinity.as_ref()
}

impl SchedulerPlugin for NodeAffinity {
    fn name(&self) -> &str {
        super::NODE_AFFINITY
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let Some(n) = node.node() else {
            return Status::unresolvable("node(s) not found");
        };
        if pod.matches_node_selector_and_affinity(n) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_POD)
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(&self, _: &mut CycleState, pod: &Pod, _: &[Arc<NodeInfo>]) -> Status {
        let has_preferred = affinity(pod)
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|p| !p.is_empty());
        if has_preferred {
            Status::success()
        } else {
            Status::skip()
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(n) = node.node() else {
            return Ok(0);
        };
        let preferred = affinity(pod)
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[]);
        Ok(preferred
            .iter()
            .filter(|t| t.weight != 0 && t.preference.matches(n))
            .map(|t| i64::from(t.weight))
            .sum())
    }

    fn normalize_score(&self, _: &CycleState, _: &Pod, scores: &mut [NodeScore]) -> Status {
        default_normalize(scores, false);
        Status::success()
    }
}
