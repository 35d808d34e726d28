//! Running one profile's plugins at each extension point.

use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::Pod;

use super::{
    CycleState, Framework, NodeInfo, NodeScore, NodeStatusMap, PermitDecision, PostFilterResult,
    PreFilterResult, Status, MAX_NODE_SCORE, MIN_NODE_SCORE,
};

impl Framework {
    /// Runs every PreEnqueue plugin; the first non-success status wins.
    pub fn run_pre_enqueue(&self, pod: &Pod) -> Status {
        for (name, p) in &self.pre_enqueue {
            let s = p.pre_enqueue(pod);
            if !s.is_success() {
                return s.with_plugin(name.clone());
            }
        }
        Status::success()
    }

    /// Runs every PreFilter plugin, recording the ones that `Skip` so their Filter is not
    /// called, and intersecting their node pre-selections. The first rejection or error ends
    /// the run.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[Arc<NodeInfo>],
    ) -> (PreFilterResult, Status) {
        let mut result = PreFilterResult::all_nodes();
        for (name, p) in &self.pre_filter {
            let (r, s) = p.pre_filter(state, pod, nodes);
            if s.is_skip() {
                state.skip_filter.insert(name.clone());
                continue;
            }
            if !s.is_success() {
                return (result, s.with_plugin(name.clone()));
            }
            result = result.merge(r);
            if matches!(&result.node_names, Some(n) if n.is_empty()) {
                return (
                    result,
                    Status::unresolvable("node(s) didn't satisfy plugin(s) PreFilter")
                        .with_plugin(name.clone()),
                );
            }
        }
        state.filter_enabled = self
            .filter
            .iter()
            .map(|(name, _)| !state.skip_filter.contains(name))
            .collect();
        (result, Status::success())
    }

    /// Runs every Filter plugin (but those skipped) on one node; the first non-success
    /// status wins, naming its plugin.
    pub fn run_filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let by_position = state.filter_enabled.len() == self.filter.len();
        for (i, (name, p)) in self.filter.iter().enumerate() {
            let enabled = if by_position {
                state.filter_enabled[i]
            } else {
                !state.skip_filter.contains(name)
            };
            if !enabled {
                continue;
            }
            let s = p.filter(state, pod, node);
            if !s.is_success() {
                return s.with_plugin(name.clone());
            }
        }
        Status::success()
    }
}

impl Framework {
    /// Runs every PreScore plugin on the feasible nodes, recording the ones that `Skip` so
    /// their Score is not called. The first failure ends the run.
    pub fn run_pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[Arc<NodeInfo>],
    ) -> Status {
        for (name, p) in &self.pre_score {
            let s = p.pre_score(state, pod, nodes);
            if s.is_skip() {
                state.skip_score.insert(name.clone());
            } else if !s.is_success() {
                return s.with_plugin(name.clone());
            }
        }
        Status::success()
    }

    /// Scores `nodes` with every Score plugin (but those skipped), normalizes each plugin's
    /// scores, weights them and sums them per node.
    pub fn run_score(
        &self,
        state: &CycleState,
        pod: &Pod,
        nodes: &[Arc<NodeInfo>],
    ) -> Result<Vec<NodeScore>, Status> {
        // One buffer of names for every plugin; totals are summed apart from it.
        let mut scores: Vec<NodeScore> = nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name().to_owned(),
                score: 0,
            })
            .collect();
        let mut totals = vec![0i64; nodes.len()];
        for (name, p, weight) in &self.score {
            if state.skip_score.contains(name) {
                continue;
            }
            for (slot, node) in scores.iter_mut().zip(nodes) {
                slot.score = p
                    .score(state, pod, node)
                    .map_err(|s| s.with_plugin(name.clone()))?;
            }
            let s = p.normalize_score(state, pod, &mut scores);
            if !s.is_success() {
                return Err(s.with_plugin(name.clone()));
            }
            for (total, s) in totals.iter_mut().zip(&scores) {
                if !(MIN_NODE_SCORE..=MAX_NODE_SCORE).contains(&s.score) {
                    return Err(Status::error(format!(
                        "plugin {name} returned an invalid score {} for node {}",
                        s.score, s.name
                    ))
                    .with_plugin(name.clone()));
                }
                *total += s.score * weight;
            }
        }
        for (slot, total) in scores.iter_mut().zip(totals) {
            slot.score = total;
        }
        Ok(scores)
    }

    /// Runs every Reserve plugin; on the first failure, unreserves all of them (in reverse
    /// order) and returns that failure.
    pub fn run_reserve(&self, state: &mut CycleState, pod: &Pod, node_name: &str) -> Status {
        for (name, p) in &self.reserve {
            let s = p.reserve(state, pod, node_name);
            if !s.is_success() {
                self.run_unreserve(state, pod, node_name);
                return s.with_plugin(name.clone());
            }
        }
        Status::success()
    }

    /// Runs every Reserve plugin's `unreserve`, in reverse order.
    pub fn run_unreserve(&self, state: &mut CycleState, pod: &Pod, node_name: &str) {
        for (_, p) in self.reserve.iter().rev() {
            p.unreserve(state, pod, node_name);
        }
    }

    /// Runs every Permit plugin: any denial wins; otherwise the longest wait, if any plugin
    /// asked to wait; otherwise `Allow`.
    pub fn run_permit(&self, state: &mut CycleState, pod: &Pod, node_name: &str) -> PermitDecision {
        self.run_permit_naming_waits(state, pod, node_name).0
    }

    /// [`run_permit`](Framework::run_permit), also naming the plugins that asked to wait
    /// (each must allow the pod before it is bound).
    pub fn run_permit_naming_waits(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        node_name: &str,
    ) -> (PermitDecision, Vec<String>) {
        let mut wait: Option<std::time::Duration> = None;
        let mut waiting = Vec::new();
        for (name, p) in &self.permit {
            match p.permit(state, pod, node_name) {
                PermitDecision::Allow => {}
                PermitDecision::Deny(s) => {
                    return (
                        PermitDecision::Deny(s.with_plugin(name.clone())),
                        Vec::new(),
                    );
                }
                PermitDecision::Wait(d) => {
                    wait = Some(wait.map_or(d, |w| w.max(d)));
                    waiting.push(name.clone());
                }
            }
        }
        (
            wait.map_or(PermitDecision::Allow, PermitDecision::Wait),
            waiting,
        )
    }

    /// Whether the profile has a PostFilter plugin (preemption).
    pub fn has_post_filter(&self) -> bool {
        !self.post_filter.is_empty()
    }

    /// Runs every PreBind plugin; the first failure ends the run.
    pub async fn run_pre_bind(&self, state: &CycleState, pod: &Pod, node_name: &str) -> Status {
        for (name, p) in &self.pre_bind {
            let s = p.pre_bind(state, pod, node_name).await;
            if !s.is_success() {
                return s.with_plugin(name.clone());
            }
        }
        Status::success()
    }

    /// Asks the Bind plugins in order until one does not `Skip`. With none, or all
    /// skipping, binding is an error.
    pub async fn run_bind(&self, state: &CycleState, pod: &Pod, node_name: &str) -> Status {
        for (name, p) in &self.bind {
            let s = p.bind(state, pod, node_name).await;
            if s.is_skip() {
                continue;
            }
            return if s.is_success() {
                s
            } else {
                s.with_plugin(name.clone())
            };
        }
        Status::error("no Bind plugin bound the pod")
    }

    /// Runs every PostBind plugin.
    pub async fn run_post_bind(&self, state: &CycleState, pod: &Pod, node_name: &str) {
        for (_, p) in &self.post_bind {
            p.post_bind(state, pod, node_name).await;
        }
    }

    /// Runs the PostFilter plugins over the cycle's `nodes` until one succeeds (or returns
    /// `UnschedulableAndUnresolvable`, or fails).
    pub async fn run_post_filter(
        &self,
        nodes: &[Arc<NodeInfo>],
        state: &CycleState,
        pod: &Pod,
        filtered: &NodeStatusMap,
    ) -> (PostFilterResult, Status) {
        let ctx = super::PostFilterContext::new(self, nodes);
        let mut last = Status::unschedulable("no PostFilter plugin helped");
        for (name, p) in &self.post_filter {
            let (r, s) = p.post_filter(&ctx, state, pod, filtered).await;
            if s.is_success()
                || s.code() == super::Code::UnschedulableAndUnresolvable
                || s.is_error()
            {
                return (r, s.with_plugin(name.clone()));
            }
            last = s.with_plugin(name.clone());
        }
        (PostFilterResult::default(), last)
    }
}
