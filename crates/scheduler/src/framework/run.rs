//! Running one profile's plugins at each extension point.

use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::Pod;

use super::{CycleState, Framework, NodeInfo, PreFilterResult, Status};

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
        (result, Status::success())
    }

    /// Runs every Filter plugin (but those skipped) on one node; the first non-success
    /// status wins, naming its plugin.
    pub fn run_filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        for (name, p) in &self.filter {
            if state.skip_filter.contains(name) {
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
