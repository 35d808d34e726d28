//! TaintToleration: NoSchedule and NoExecute taints filter, PreferNoSchedule taints score.

use capstan_api::ext::{NodeExt, TaintExt, TolerationExt};
use capstan_api::k8s_openapi::api::core::v1::{Pod, Toleration};

use super::helpers::default_normalize;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, NodeScore, SchedulerPlugin, ScorePlugin, Status,
};

/// Rejects nodes with a NoSchedule or NoExecute taint the pod does not tolerate; prefers
/// nodes with fewer untolerated PreferNoSchedule taints.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaintToleration;

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

impl SchedulerPlugin for TaintToleration {
    fn name(&self) -> &str {
        super::TAINT_TOLERATION
    }
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let Some(n) = node.node() else {
            return Status::unresolvable("node(s) not found");
        };
        if !node.has_taints() {
            return Status::success();
        }
        let tols = tolerations(pod);
        for taint in n.taints() {
            if (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !taint.is_tolerated_by(tols)
            {
                return Status::unresolvable(format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    taint.key,
                    taint.value.as_deref().unwrap_or("")
                ));
            }
        }
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(n) = node.node().filter(|_| node.has_taints()) else {
            return Ok(0);
        };
        // Only tolerations with an empty or PreferNoSchedule effect count, as in Kubernetes.
        let tols: Vec<&Toleration> = tolerations(pod)
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .collect();
        Ok(n.taints()
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|t| !tols.iter().any(|tol| tol.tolerates(t)))
            .count() as i64)
    }

    fn normalize_score(&self, _: &CycleState, _: &Pod, scores: &mut [NodeScore]) -> Status {
        default_normalize(scores, true);
        Status::success()
    }
}
