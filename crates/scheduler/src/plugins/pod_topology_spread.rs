//! PodTopologySpread: `spec.topologySpreadConstraints`. `DoNotSchedule` constraints filter
//! (the skew a node would reach must stay within `maxSkew`); `ScheduleAnyway` ones score
//! (fewer matching pods in the node's domain is better).
//!
//! Pods are counted in the pod's namespace, by the constraint's label selector (plus
//! `matchLabelKeys`), on the nodes that carry every constraint's topology key and, with
//! `nodeAffinityPolicy: Honor` (the default), match the pod's node selector and required
//! node affinity; with `nodeTaintsPolicy: Honor` (default `Ignore`), only nodes whose
//! taints the pod tolerates count. Terminating pods are not counted. There are no
//! cluster-level default constraints: pods without constraints are not spread.

use std::collections::HashMap;
use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::{Node, Pod, TopologySpreadConstraint};
use capstan_api::kube_core::{Expression, Selector};
use capstan_api::selector::{label_selector_from, matches};

use super::helpers::tolerated;
use super::node_affinity::required_matches;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, NodeScore, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, SchedulerPlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};

/// The node's domain would exceed `maxSkew`.
pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints";
/// The node lacks a constraint's topology key.
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const PRE_FILTER_KEY: &str = "PreFilterPodTopologySpread";
const PRE_SCORE_KEY: &str = "PreScorePodTopologySpread";

/// Spreads pods over topology domains.
#[derive(Clone, Copy, Debug, Default)]
pub struct PodTopologySpread;

impl SchedulerPlugin for PodTopologySpread {
    fn name(&self) -> &str {
        super::POD_TOPOLOGY_SPREAD
    }
}

/// One constraint, compiled.
struct Constraint {
    max_skew: i64,
    topology_key: String,
    /// `None` (no selector in the constraint) matches no pod.
    selector: Option<Selector>,
    min_domains: usize,
    honor_node_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn compile(c: &TopologySpreadConstraint, pod: &Pod) -> Result<Constraint, Status> {
        let mut selector = c
            .label_selector
            .as_ref()
            .map(label_selector_from)
            .transpose()
            .map_err(|e| {
                Status::unresolvable(format!("invalid topology spread label selector: {e}"))
            })?;
        let labels = pod.metadata.labels.as_ref();
        if let Some(selector) = selector.as_mut() {
            for key in c.match_label_keys.iter().flatten() {
                if let Some(value) = labels.and_then(|l| l.get(key)) {
                    selector.extend([Expression::Equal(key.clone(), value.clone())]);
                }
            }
        }
        Ok(Constraint {
            max_skew: i64::from(c.max_skew.max(1)),
            topology_key: c.topology_key.clone(),
            selector,
            min_domains: c.min_domains.map_or(1, |m| m.max(1) as usize),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        })
    }

    fn value<'a>(&self, node: &'a Node) -> Option<&'a String> {
        node.metadata.labels.as_ref()?.get(&self.topology_key)
    }

    fn selects(&self, pod: &Pod) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| matches(s, pod.metadata.labels.as_ref()))
    }

    /// Matching pods on `info`.
    fn count(&self, namespace: &str, info: &NodeInfo) -> i64 {
        if self.selector.is_none() {
            return 0;
        }
        info.pods()
            .iter()
            .filter(|p| {
                p.pod.metadata.deletion_timestamp.is_none()
                    && p.pod.metadata.namespace.as_deref().unwrap_or("") == namespace
                    && self.selects(&p.pod)
            })
            .count() as i64
    }
}

fn constraints(pod: &Pod, when: &str) -> Result<Vec<Constraint>, Status> {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::compile(c, pod))
        .collect()
}

/// Whether `node` counts for `constraints`: it has every topology key and passes the
/// policies.
fn eligible(pod: &Pod, node: &Node, constraints: &[Constraint]) -> bool {
    if constraints.iter().any(|c| c.value(node).is_none()) {
        return false;
    }
    if constraints.iter().any(|c| c.honor_node_affinity) && !required_matches(pod, node) {
        return false;
    }
    if constraints.iter().any(|c| c.honor_taints) {
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[]);
        if taints.iter().any(|t| {
            (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerated(tolerations, t)
        }) {
            return false;
        }
    }
    true
}

/// Matching pods per domain value, one map per constraint, over the eligible nodes (every
/// eligible node's domain is present, possibly with zero).
fn count_domains(
    pod: &Pod,
    constraints: &[Constraint],
    nodes: &[Arc<NodeInfo>],
) -> Vec<HashMap<String, i64>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let mut counts = vec![HashMap::new(); constraints.len()];
    for info in nodes {
        let Some(node) = info.node() else { continue };
        if !eligible(pod, node, constraints) {
            continue;
        }
        for (c, map) in constraints.iter().zip(counts.iter_mut()) {
            let value = c.value(node).expect("eligible nodes have every key");
            *map.entry(value.clone()).or_insert(0) += c.count(ns, info);
        }
    }
    counts
}

struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    /// The smallest count per constraint (0 while fewer than `minDomains` domains exist).
    min: Vec<i64>,
    /// Whether the pod itself matches each constraint's selector.
    self_match: Vec<i64>,
}

struct ScoreState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    /// `log(domains + 2)` per constraint, over the feasible nodes.
    weights: Vec<f64>,
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[Arc<NodeInfo>],
    ) -> (PreFilterResult, Status) {
        // Soft constraints are counted here too: Score sees only the feasible nodes.
        match constraints(pod, "ScheduleAnyway") {
            Ok(soft) if !soft.is_empty() => {
                let counts = count_domains(pod, &soft, nodes);
                state.write(
                    PRE_SCORE_KEY,
                    ScoreState {
                        constraints: soft,
                        counts,
                        weights: Vec::new(),
                    },
                );
            }
            Ok(_) => {}
            Err(s) => return (PreFilterResult::all_nodes(), s),
        }
        let hard = match constraints(pod, "DoNotSchedule") {
            Ok(c) if c.is_empty() => return (PreFilterResult::all_nodes(), Status::skip()),
            Ok(c) => c,
            Err(s) => return (PreFilterResult::all_nodes(), s),
        };
        let counts = count_domains(pod, &hard, nodes);
        let min = hard
            .iter()
            .zip(&counts)
            .map(|(c, m)| {
                if m.len() < c.min_domains {
                    0
                } else {
                    m.values().copied().min().unwrap_or(0)
                }
            })
            .collect();
        let self_match = hard.iter().map(|c| i64::from(c.selects(pod))).collect();
        state.write(
            PRE_FILTER_KEY,
            FilterState {
                constraints: hard,
                counts,
                min,
                self_match,
            },
        );
        (PreFilterResult::all_nodes(), Status::success())
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _: &Pod, info: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(PRE_FILTER_KEY) else {
            return Status::error("PodTopologySpread: PreFilter state is missing");
        };
        let Some(node) = info.node() else {
            return Status::unresolvable("node(s) not found");
        };
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = c.value(node) else {
                return Status::unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH);
            };
            let here = s.counts[i].get(value).copied().unwrap_or(0);
            if here + s.self_match[i] - s.min[i] > c.max_skew {
                return Status::unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(&self, state: &mut CycleState, _: &Pod, nodes: &[Arc<NodeInfo>]) -> Status {
        let Some(s) = state.read_mut::<ScoreState>(PRE_SCORE_KEY) else {
            return Status::skip();
        };
        s.weights = s
            .constraints
            .iter()
            .map(|c| {
                let mut domains: Vec<&String> = nodes
                    .iter()
                    .filter_map(|n| n.node().and_then(|node| c.value(node)))
                    .collect();
                domains.sort_unstable();
                domains.dedup();
                ((domains.len() + 2) as f64).ln()
            })
            .collect();
        Status::success()
    }
}

/// The score of a node lacking a soft constraint's key: it is ranked last.
const IGNORED: i64 = -1;

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, _: &Pod, info: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(PRE_SCORE_KEY) else {
            return Ok(0);
        };
        let Some(node) = info.node() else {
            return Ok(IGNORED);
        };
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = c.value(node) else {
                return Ok(IGNORED);
            };
            let here = s.counts[i].get(value).copied().unwrap_or(0);
            score += here as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
        Ok(score.round() as i64)
    }

    /// Fewer matching pods scores higher: `MAX * (max + min - score) / max` over the nodes
    /// with every key; nodes without them get 0.
    fn normalize_score(&self, state: &CycleState, _: &Pod, scores: &mut [NodeScore]) -> Status {
        if state.read::<ScoreState>(PRE_SCORE_KEY).is_none() {
            return Status::success();
        }
        let counted = scores
            .iter()
            .filter(|s| s.score != IGNORED)
            .map(|s| s.score);
        let max = counted.clone().max().unwrap_or(0);
        let min = counted.min().unwrap_or(0);
        for s in scores {
            s.score = if s.score == IGNORED {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - s.score) / max
            };
        }
        Status::success()
    }
}
