//! PodTopologySpread: `spec.topologySpreadConstraints`. `DoNotSchedule` constraints filter
//! (the skew a node would reach must stay within `maxSkew`); `ScheduleAnyway` ones score
//! (fewer matching pods in the node's domain is better).
//!
//! Pods are counted in the pod's namespace, by the constraint's label selector (plus
//! `matchLabelKeys`), on the nodes that carry every constraint's topology key and, with
//! `nodeAffinityPolicy: Honor` (the default), match the pod's node selector and required
//! node affinity; with `nodeTaintsPolicy: Honor` (default `Ignore`), only nodes whose
//! taints the pod tolerates count. Terminating pods are not counted.
//!
//! Pods without constraints of their own get the plugin's default constraints
//! (`defaultingType`). Kubernetes' `System` defaults, the default here, spread softly by
//! hostname (`maxSkew` 3) and by zone (`maxSkew` 5), and then a node lacking one of the keys
//! is still scored by the other. Kubernetes gives default constraints the selector of the
//! pod's owners (its ReplicaSet, StatefulSet or ReplicationController, and the Services
//! selecting it). Here they select the pods of the same controlling owner, which is what that
//! selector picks out in practice; a pod with no such owner (a bare Pod behind a Service)
//! gets no default constraints.

use std::collections::HashMap;
use std::sync::Arc;

use capstan_api::ext::{MetaExt, NodeExt, PodExt, TaintExt};
use capstan_api::k8s_openapi::api::core::v1::{Node, Pod, TopologySpreadConstraint};
use capstan_api::kube_core::{Expression, Selector};
use capstan_api::selector::{label_selector_from, matches};

use crate::framework::controller_of;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, NodeScore, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, SchedulerPlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::{Error, Result};

/// The node's domain would exceed `maxSkew`.
pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints";
/// The node lacks a constraint's topology key.
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const HOSTNAME: &str = "kubernetes.io/hostname";

const PRE_FILTER_KEY: &str = "PreFilterPodTopologySpread";
const PRE_SCORE_KEY: &str = "PreScorePodTopologySpread";

/// The owner kinds whose pods get default constraints, as in Kubernetes' default selector.
const SPREAD_OWNER_KINDS: [&str; 3] = ["ReplicaSet", "StatefulSet", "ReplicationController"];

/// Spreads pods over topology domains.
#[derive(Clone, Debug)]
pub struct PodTopologySpread {
    /// Constraints for pods that have none of their own.
    defaults: Vec<TopologySpreadConstraint>,
    /// Whether `defaults` are the system defaults: then nodes lacking a topology key are
    /// still scored, by the keys they have.
    system_defaulted: bool,
}

impl Default for PodTopologySpread {
    /// Kubernetes' `System` defaulting.
    fn default() -> Self {
        let soft = |key: &str, max_skew| TopologySpreadConstraint {
            max_skew,
            topology_key: key.to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            ..TopologySpreadConstraint::default()
        };
        PodTopologySpread {
            defaults: vec![soft(HOSTNAME, 3), soft("topology.kubernetes.io/zone", 5)],
            system_defaulted: true,
        }
    }
}

impl PodTopologySpread {
    /// The plugin as kube-scheduler's `PodTopologySpreadArgs` configure it:
    /// `{"defaultingType": "System" | "List", "defaultConstraints": [...]}`. `null` or `{}`
    /// is `System`. `List` uses `defaultConstraints` (possibly none, which turns defaulting
    /// off).
    ///
    /// Errors: [`Error::InvalidArgs`] naming the field, for an unknown `defaultingType`,
    /// default constraints under `System`, or a default constraint with a label selector (it
    /// is derived per pod), a `maxSkew` below 1, an empty `topologyKey`, an unknown
    /// `whenUnsatisfiable`, or the same key and `whenUnsatisfiable` twice.
    pub fn from_args(args: &serde_json::Value) -> Result<Self> {
        let invalid = |message: String| Error::InvalidArgs {
            plugin: super::POD_TOPOLOGY_SPREAD.to_owned(),
            message,
        };
        if args.is_null() {
            return Ok(Self::default());
        }
        let object = args
            .as_object()
            .ok_or_else(|| invalid("the arguments must be an object".to_owned()))?;
        if let Some(field) = object
            .keys()
            .find(|k| *k != "defaultingType" && *k != "defaultConstraints")
        {
            return Err(invalid(format!("unknown field {field:?}")));
        }
        let constraints: Vec<TopologySpreadConstraint> = match object.get("defaultConstraints") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| invalid(format!("defaultConstraints: {e}")))?,
        };
        match object.get("defaultingType").and_then(|t| t.as_str()) {
            None | Some("System") => {
                if !constraints.is_empty() {
                    return Err(invalid(
                        "defaultConstraints: must be empty when defaultingType is System"
                            .to_owned(),
                    ));
                }
                Ok(Self::default())
            }
            Some("List") => {
                for (i, c) in constraints.iter().enumerate() {
                    let field = format!("defaultConstraints[{i}]");
                    if c.label_selector.is_some() {
                        return Err(invalid(format!(
                            "{field}.labelSelector: must not be set, it is derived for each pod"
                        )));
                    }
                    if c.max_skew < 1 {
                        return Err(invalid(format!(
                            "{field}.maxSkew: {} must be greater than zero",
                            c.max_skew
                        )));
                    }
                    if c.topology_key.is_empty() {
                        return Err(invalid(format!("{field}.topologyKey: must not be empty")));
                    }
                    if c.when_unsatisfiable != "DoNotSchedule"
                        && c.when_unsatisfiable != "ScheduleAnyway"
                    {
                        return Err(invalid(format!(
                            "{field}.whenUnsatisfiable: {:?} is not DoNotSchedule or ScheduleAnyway",
                            c.when_unsatisfiable
                        )));
                    }
                    if constraints[..i].iter().any(|o| {
                        o.topology_key == c.topology_key
                            && o.when_unsatisfiable == c.when_unsatisfiable
                    }) {
                        return Err(invalid(format!(
                            "{field}: topologyKey {:?} with {} is listed twice",
                            c.topology_key, c.when_unsatisfiable
                        )));
                    }
                }
                Ok(PodTopologySpread {
                    defaults: constraints,
                    system_defaulted: false,
                })
            }
            Some(other) => Err(invalid(format!(
                "defaultingType: {other:?} is not System or List"
            ))),
        }
    }

    /// The pod's constraints with `whenUnsatisfiable == when`, and whether a node must carry
    /// every topology key to count (false only under the system defaults).
    fn constraints(&self, pod: &Pod, when: &str) -> Result<(Vec<Constraint>, bool), Status> {
        let own = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or(&[]);
        if !own.is_empty() {
            let compiled = own
                .iter()
                .filter(|c| c.when_unsatisfiable == when)
                .map(|c| Constraint::compile(c, pod))
                .collect::<Result<_, _>>()?;
            return Ok((compiled, true));
        }
        let Some(owner) = spread_owner(pod) else {
            return Ok((Vec::new(), true));
        };
        let compiled = self
            .defaults
            .iter()
            .filter(|c| c.when_unsatisfiable == when)
            .map(|c| Constraint {
                max_skew: i64::from(c.max_skew.max(1)),
                topology_key: c.topology_key.clone(),
                matcher: Matcher::Controller(owner.to_owned()),
                min_domains: c.min_domains.map_or(1, |m| m.max(1) as usize),
                honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            })
            .collect();
        Ok((compiled, !self.system_defaulted))
    }
}

/// The uid of the pod's controlling owner, when that owner's pods get default constraints.
fn spread_owner(pod: &Pod) -> Option<&str> {
    controller_of(pod)
        .filter(|r| SPREAD_OWNER_KINDS.contains(&r.kind.as_str()))
        .map(|r| r.uid.as_str())
}

/// Which pods a constraint counts.
enum Matcher {
    /// The constraint has no selector: no pod.
    Nothing,
    /// The constraint's label selector (plus `matchLabelKeys`).
    Labels(Selector),
    /// A default constraint: the pods of the controlling owner with this uid.
    Controller(String),
}

impl SchedulerPlugin for PodTopologySpread {
    fn name(&self) -> &str {
        super::POD_TOPOLOGY_SPREAD
    }
}

/// One constraint, compiled.
struct Constraint {
    max_skew: i64,
    topology_key: String,
    matcher: Matcher,
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
            matcher: selector.map_or(Matcher::Nothing, Matcher::Labels),
            min_domains: c.min_domains.map_or(1, |m| m.max(1) as usize),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        })
    }

    fn is_hostname(&self) -> bool {
        self.topology_key == HOSTNAME
    }

    fn value<'a>(&self, node: &'a Node) -> Option<&'a String> {
        node.metadata.labels.as_ref()?.get(&self.topology_key)
    }

    fn selects(&self, pod: &Pod) -> bool {
        match &self.matcher {
            Matcher::Nothing => false,
            Matcher::Labels(selector) => matches(selector, pod.metadata.labels.as_ref()),
            Matcher::Controller(uid) => controller_of(pod).is_some_and(|r| r.uid == *uid),
        }
    }

    /// Matching pods on `info`.
    fn count(&self, namespace: &str, info: &NodeInfo) -> i64 {
        match &self.matcher {
            Matcher::Nothing => return 0,
            // A controller's pods share its namespace.
            Matcher::Controller(uid) => return info.pods_controlled_by(uid) as i64,
            Matcher::Labels(_) => {}
        }
        info.pods()
            .iter()
            .filter(|p| {
                p.pod.metadata.deletion_timestamp.is_none()
                    && p.pod.namespace_str() == namespace
                    && self.selects(&p.pod)
            })
            .count() as i64
    }
}

/// Whether `node` counts for `constraints`: it has every topology key (when
/// `require_all_keys`) and passes the policies.
fn eligible(pod: &Pod, node: &Node, constraints: &[Constraint], require_all_keys: bool) -> bool {
    if require_all_keys && constraints.iter().any(|c| c.value(node).is_none()) {
        return false;
    }
    if constraints.iter().any(|c| c.honor_node_affinity)
        && !pod.matches_node_selector_and_affinity(node)
    {
        return false;
    }
    if constraints.iter().any(|c| c.honor_taints) {
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        if node.taints().iter().any(|t| {
            (t.effect == "NoSchedule" || t.effect == "NoExecute") && !t.is_tolerated_by(tolerations)
        }) {
            return false;
        }
    }
    true
}

/// Matching pods per domain value, one map per constraint, over the eligible nodes (every
/// eligible node's domain is present, possibly with zero). Nodes lacking a constraint's key
/// (possible only without `require_all_keys`) add nothing to that constraint. With
/// `skip_hostname`, hostname constraints are left empty: Score counts them on the node it
/// scores, as Kubernetes does, instead of on every node.
fn count_domains(
    pod: &Pod,
    constraints: &[Constraint],
    require_all_keys: bool,
    skip_hostname: bool,
    nodes: &[Arc<NodeInfo>],
) -> Vec<HashMap<String, i64>> {
    let ns = pod.namespace_str();
    let mut counts = vec![HashMap::new(); constraints.len()];
    if skip_hostname && constraints.iter().all(Constraint::is_hostname) {
        return counts;
    }
    for info in nodes {
        let Some(node) = info.node() else { continue };
        // Labels first: under the system defaults most nodes may lack the zone key, and
        // then there is nothing to count on them.
        if !require_all_keys
            && constraints
                .iter()
                .all(|c| (skip_hostname && c.is_hostname()) || c.value(node).is_none())
        {
            continue;
        }
        if !eligible(pod, node, constraints, require_all_keys) {
            continue;
        }
        for (c, map) in constraints.iter().zip(counts.iter_mut()) {
            if skip_hostname && c.is_hostname() {
                continue;
            }
            if let Some(value) = c.value(node) {
                *map.entry(value.clone()).or_insert(0) += c.count(ns, info);
            }
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
    /// Whether a node lacking a topology key is ranked last (false under system defaults:
    /// it is scored by the keys it has).
    require_all_keys: bool,
    /// Matching pods per domain, per constraint (empty for hostname ones: Score counts those).
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
        match self.constraints(pod, "ScheduleAnyway") {
            Ok((soft, require_all_keys)) if !soft.is_empty() => {
                let counts = count_domains(pod, &soft, require_all_keys, true, nodes);
                state.write(
                    PRE_SCORE_KEY,
                    ScoreState {
                        constraints: soft,
                        require_all_keys,
                        counts,
                        weights: Vec::new(),
                    },
                );
            }
            Ok(_) => {}
            Err(s) => return (PreFilterResult::all_nodes(), s),
        }
        // A hard constraint needs its key on every node that counts, defaults included.
        let hard = match self.constraints(pod, "DoNotSchedule") {
            Ok((c, _)) if c.is_empty() => return (PreFilterResult::all_nodes(), Status::skip()),
            Ok((c, _)) => c,
            Err(s) => return (PreFilterResult::all_nodes(), s),
        };
        let counts = count_domains(pod, &hard, true, false, nodes);
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
                let with_key = nodes
                    .iter()
                    .filter_map(|n| n.node().and_then(|node| c.value(node)));
                // Every node is its own hostname domain: count, do not sort.
                let domains = if c.is_hostname() {
                    with_key.count()
                } else {
                    let mut values: Vec<&String> = with_key.collect();
                    values.sort_unstable();
                    values.dedup();
                    values.len()
                };
                ((domains + 2) as f64).ln()
            })
            .collect();
        Status::success()
    }
}

/// The score of a node lacking a soft constraint's key: it is ranked last.
const IGNORED: i64 = -1;

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, pod: &Pod, info: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(PRE_SCORE_KEY) else {
            return Ok(0);
        };
        let Some(node) = info.node() else {
            return Ok(IGNORED);
        };
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = c.value(node) else {
                if s.require_all_keys {
                    return Ok(IGNORED);
                }
                continue;
            };
            let here = if c.is_hostname() {
                c.count(pod.namespace_str(), info)
            } else {
                s.counts[i].get(value).copied().unwrap_or(0)
            };
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
