//! InterPodAffinity: required pod affinity and anti-affinity (Filter, including the
//! anti-affinity of pods already placed), and preferred terms (Score).
//!
//! Terms name pods by label selector within namespaces: the listed `namespaces`, every
//! namespace for an empty `namespaceSelector` (`{}`), or the pod's own namespace when both
//! are unset. A non-empty `namespaceSelector` needs Namespace labels, which the scheduler
//! does not follow: such a term matches only its listed namespaces.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use capstan_api::ext::{MetaExt, PodExt};
use capstan_api::k8s_openapi::api::core::v1::{
    Node, Pod, PodAffinityTerm, WeightedPodAffinityTerm,
};
use capstan_api::kube_core::Selector;
use capstan_api::selector::{label_selector_from, matches};

use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, NodeScore, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, SchedulerPlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};

/// The pod's required affinity terms are not met on the node.
pub const ERR_REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// A pod matching the pod's required anti-affinity terms is in the node's domain.
pub const ERR_REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// A pod in the node's domain has required anti-affinity against the pod.
pub const ERR_REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// The default weight of an existing pod's required affinity term in scoring
/// (`hardPodAffinityWeight`).
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

const PRE_FILTER_KEY: &str = "PreFilterInterPodAffinity";
const PRE_SCORE_KEY: &str = "PreScoreInterPodAffinity";

/// Pod affinity and anti-affinity, required and preferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterPodAffinity {
    hard_pod_affinity_weight: i64,
    ignore_preferred_terms_of_existing_pods: bool,
}

impl Default for InterPodAffinity {
    /// kube-scheduler's defaults: `hardPodAffinityWeight` 1, existing pods' preferred terms
    /// scored.
    fn default() -> Self {
        InterPodAffinity {
            hard_pod_affinity_weight: HARD_POD_AFFINITY_WEIGHT,
            ignore_preferred_terms_of_existing_pods: false,
        }
    }
}

impl InterPodAffinity {
    /// The plugin as kube-scheduler's `InterPodAffinityArgs` configure it
    /// ([`InterPodAffinityArgs`](crate::config::InterPodAffinityArgs)):
    /// `{"hardPodAffinityWeight": 0..=100, "ignorePreferredTermsOfExistingPods": bool}`;
    /// `null` is the defaults. With `ignorePreferredTermsOfExistingPods`, a pod without
    /// preferred terms of its own is not scored at all.
    ///
    /// Errors: [`Error::InvalidArgs`](crate::Error::InvalidArgs) for an unknown field, a
    /// value of the wrong type or a weight out of range.
    pub fn from_args(args: &serde_json::Value) -> crate::Result<Self> {
        let args = crate::config::PluginArgs::decode_for_plugin(super::INTER_POD_AFFINITY, args)?;
        let crate::config::PluginArgs::InterPodAffinity(a) = args else {
            unreachable!("InterPodAffinity's arguments decode as InterPodAffinityArgs")
        };
        Ok(InterPodAffinity {
            hard_pod_affinity_weight: i64::from(
                a.hard_pod_affinity_weight
                    .unwrap_or(HARD_POD_AFFINITY_WEIGHT as i32),
            ),
            ignore_preferred_terms_of_existing_pods: a.ignore_preferred_terms_of_existing_pods,
        })
    }
}

impl SchedulerPlugin for InterPodAffinity {
    fn name(&self) -> &str {
        super::INTER_POD_AFFINITY
    }
}

/// A topology domain: a label key and its value on a node.
type Domain = (String, String);

enum Namespaces {
    All,
    Listed(HashSet<String>),
}

/// One `PodAffinityTerm`, compiled for matching.
struct Term {
    selector: Option<Selector>,
    namespaces: Namespaces,
    topology_key: String,
    weight: i64,
}

impl Term {
    fn compile(term: &PodAffinityTerm, own_namespace: &str, weight: i64) -> Term {
        let listed: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let namespaces = match &term.namespace_selector {
            Some(s)
                if s.match_labels.as_ref().is_none_or(|l| l.is_empty())
                    && s.match_expressions.as_ref().is_none_or(|e| e.is_empty()) =>
            {
                Namespaces::All
            }
            None if listed.is_empty() => Namespaces::Listed([own_namespace.to_owned()].into()),
            _ => Namespaces::Listed(listed),
        };
        Term {
            // A missing or invalid selector matches no pod, as in Kubernetes.
            selector: term
                .label_selector
                .as_ref()
                .and_then(|s| label_selector_from(s).ok()),
            namespaces,
            topology_key: term.topology_key.clone(),
            weight,
        }
    }

    fn matches(&self, pod: &Pod) -> bool {
        let Some(selector) = &self.selector else {
            return false;
        };
        let in_namespace = match &self.namespaces {
            Namespaces::All => true,
            Namespaces::Listed(ns) => ns.contains(pod.namespace_str()),
        };
        in_namespace && matches(selector, pod.metadata.labels.as_ref())
    }

    fn domain(&self, node: &Node) -> Option<Domain> {
        let value = node.metadata.labels.as_ref()?.get(&self.topology_key)?;
        Some((self.topology_key.clone(), value.clone()))
    }
}

/// A pod's terms, by kind.
#[derive(Default)]
struct Terms {
    required_affinity: Vec<Term>,
    required_anti_affinity: Vec<Term>,
    preferred_affinity: Vec<Term>,
    preferred_anti_affinity: Vec<Term>,
}

fn compile_required(terms: Option<&Vec<PodAffinityTerm>>, ns: &str) -> Vec<Term> {
    terms
        .into_iter()
        .flatten()
        .map(|t| Term::compile(t, ns, HARD_POD_AFFINITY_WEIGHT))
        .collect()
}

fn compile_preferred(terms: Option<&Vec<WeightedPodAffinityTerm>>, ns: &str) -> Vec<Term> {
    terms
        .into_iter()
        .flatten()
        .map(|t| Term::compile(&t.pod_affinity_term, ns, i64::from(t.weight)))
        .collect()
}

impl Terms {
    fn of(pod: &Pod) -> Terms {
        let ns = pod.namespace_str();
        let Some(affinity) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
            return Terms::default();
        };
        let a = affinity.pod_affinity.as_ref();
        let anti = affinity.pod_anti_affinity.as_ref();
        Terms {
            required_affinity: compile_required(
                a.and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
                ns,
            ),
            required_anti_affinity: compile_required(
                anti.and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
                ns,
            ),
            preferred_affinity: compile_preferred(
                a.and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
                ns,
            ),
            preferred_anti_affinity: compile_preferred(
                anti.and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
                ns,
            ),
        }
    }
}

/// What Filter reads: pods counted per topology domain.
struct FilterState {
    /// Existing pods whose required anti-affinity matches the pod, by their domain.
    existing_anti_affinity: HashMap<Domain, i64>,
    /// Pods matching each required affinity term, by domain (all terms share the map).
    affinity: HashMap<Domain, i64>,
    /// Pods matching the required anti-affinity terms, by domain.
    anti_affinity: HashMap<Domain, i64>,
    terms: Terms,
    /// No pod matched any affinity term and the pod matches all its own: the first pod of a
    /// group may go anywhere its terms' topology keys exist.
    self_affinity_only: bool,
}

/// What Score reads: the summed weights per topology domain.
struct ScoreState {
    topology_score: HashMap<String, HashMap<String, i64>>,
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[Arc<NodeInfo>],
    ) -> (PreFilterResult, Status) {
        let terms = Terms::of(pod);
        // Scoring needs every node's pods, which only PreFilter sees.
        if let Some(score) = score_state(state, pod, &terms, nodes, self) {
            state.write(PRE_SCORE_KEY, score);
        }
        let anti_nodes: Vec<Arc<NodeInfo>> = match state.nodes_with_required_anti_affinity_pods() {
            Some(n) => n.to_vec(),
            None => nodes
                .iter()
                .filter(|n| n.pods_with_required_anti_affinity() > 0)
                .cloned()
                .collect(),
        };
        if terms.required_affinity.is_empty()
            && terms.required_anti_affinity.is_empty()
            && anti_nodes.is_empty()
        {
            return (PreFilterResult::all_nodes(), Status::skip());
        }
        let mut existing_anti_affinity = HashMap::new();
        for info in &anti_nodes {
            let Some(node) = info.node() else { continue };
            for existing in info.pods().iter().filter(|p| p.has_required_anti_affinity) {
                let ns = existing.pod.namespace_str();
                let anti = existing
                    .pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.affinity.as_ref())
                    .and_then(|a| a.pod_anti_affinity.as_ref())
                    .and_then(|a| {
                        a.required_during_scheduling_ignored_during_execution
                            .as_ref()
                    });
                for term in compile_required(anti, ns) {
                    if term.matches(pod) {
                        if let Some(d) = term.domain(node) {
                            *existing_anti_affinity.entry(d).or_insert(0) += 1;
                        }
                    }
                }
            }
        }
        let mut affinity = HashMap::new();
        let mut anti_affinity = HashMap::new();
        if !terms.required_affinity.is_empty() || !terms.required_anti_affinity.is_empty() {
            for info in nodes {
                let Some(node) = info.node() else { continue };
                for existing in info.pods().iter().filter(|p| !p.pod.is_terminating()) {
                    for term in &terms.required_affinity {
                        if term.matches(&existing.pod) {
                            if let Some(d) = term.domain(node) {
                                *affinity.entry(d).or_insert(0) += 1;
                            }
                        }
                    }
                    for term in &terms.required_anti_affinity {
                        if term.matches(&existing.pod) {
                            if let Some(d) = term.domain(node) {
                                *anti_affinity.entry(d).or_insert(0) += 1;
                            }
                        }
                    }
                }
            }
        }
        let self_affinity_only = affinity.is_empty()
            && !terms.required_affinity.is_empty()
            && terms.required_affinity.iter().all(|t| t.matches(pod));
        state.write(
            PRE_FILTER_KEY,
            FilterState {
                existing_anti_affinity,
                affinity,
                anti_affinity,
                terms,
                self_affinity_only,
            },
        );
        (PreFilterResult::all_nodes(), Status::success())
    }
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a String> {
    node.metadata.labels.as_ref()?.get(key)
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, _pod: &Pod, info: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(PRE_FILTER_KEY) else {
            return Status::error("InterPodAffinity: PreFilter state is missing");
        };
        let Some(node) = info.node() else {
            return Status::unresolvable("node(s) not found");
        };
        for ((key, value), n) in &s.existing_anti_affinity {
            if *n > 0 && label(node, key) == Some(value) {
                return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY);
            }
        }
        for term in &s.terms.required_anti_affinity {
            if let Some(d) = term.domain(node) {
                if s.anti_affinity.get(&d).is_some_and(|n| *n > 0) {
                    return Status::unschedulable(ERR_REASON_ANTI_AFFINITY);
                }
            }
        }
        let affinity_met = s.terms.required_affinity.iter().all(|term| {
            term.domain(node)
                .is_some_and(|d| s.self_affinity_only || s.affinity.get(&d).is_some_and(|n| *n > 0))
        });
        if !affinity_met {
            return Status::unresolvable(ERR_REASON_AFFINITY);
        }
        Status::success()
    }
}

/// Sums, per topology domain, the weights that place `pod` near or away from the pods
/// already there: its preferred terms, and the existing pods' required affinity and
/// preferred terms that match it. `None` when nothing can contribute.
fn score_state(
    state: &CycleState,
    pod: &Pod,
    terms: &Terms,
    nodes: &[Arc<NodeInfo>],
    args: &InterPodAffinity,
) -> Option<ScoreState> {
    let own_preferred =
        !terms.preferred_affinity.is_empty() || !terms.preferred_anti_affinity.is_empty();
    if args.ignore_preferred_terms_of_existing_pods && !own_preferred {
        return None;
    }
    let affinity_nodes: Vec<Arc<NodeInfo>>;
    let scan: &[Arc<NodeInfo>] = if own_preferred {
        nodes
    } else {
        affinity_nodes = match state.nodes_with_affinity_pods() {
            Some(n) => n.to_vec(),
            None => nodes
                .iter()
                .filter(|n| n.pods_with_affinity() > 0)
                .cloned()
                .collect(),
        };
        &affinity_nodes
    };
    if scan.is_empty() {
        return None;
    }
    let mut topology_score: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let mut add = |term: &Term, node: &Node, sign: i64| {
        if let Some(v) = label(node, &term.topology_key) {
            *topology_score
                .entry(term.topology_key.clone())
                .or_default()
                .entry(v.clone())
                .or_insert(0) += sign * term.weight;
        }
    };
    for info in scan {
        let Some(node) = info.node() else { continue };
        for existing in info.pods() {
            for t in &terms.preferred_affinity {
                if t.matches(&existing.pod) {
                    add(t, node, 1);
                }
            }
            for t in &terms.preferred_anti_affinity {
                if t.matches(&existing.pod) {
                    add(t, node, -1);
                }
            }
            if existing.has_affinity {
                let theirs = Terms::of(&existing.pod);
                // Required terms count with `hardPodAffinityWeight` (their own weight is 1).
                if args.hard_pod_affinity_weight > 0 {
                    for t in &theirs.required_affinity {
                        if t.matches(pod) {
                            add(t, node, args.hard_pod_affinity_weight);
                        }
                    }
                }
                for t in &theirs.preferred_affinity {
                    if t.matches(pod) {
                        add(t, node, 1);
                    }
                }
                for t in &theirs.preferred_anti_affinity {
                    if t.matches(pod) {
                        add(t, node, -1);
                    }
                }
            }
        }
    }
    topology_score.retain(|_, values| {
        values.retain(|_, s| *s != 0);
        !values.is_empty()
    });
    (!topology_score.is_empty()).then_some(ScoreState { topology_score })
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(&self, state: &mut CycleState, _: &Pod, _: &[Arc<NodeInfo>]) -> Status {
        if state.read::<ScoreState>(PRE_SCORE_KEY).is_some() {
            Status::success()
        } else {
            Status::skip()
        }
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &Pod, info: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(PRE_SCORE_KEY) else {
            return Ok(0);
        };
        let Some(node) = info.node() else {
            return Ok(0);
        };
        Ok(s.topology_score
            .iter()
            .filter_map(|(key, values)| values.get(label(node, key)?))
            .sum())
    }

    /// Min-max scaling onto `0..=MAX_NODE_SCORE` (negative sums allowed before it).
    fn normalize_score(&self, _: &CycleState, _: &Pod, scores: &mut [NodeScore]) -> Status {
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let diff = max - min;
        for s in scores {
            s.score = if diff > 0 {
                MAX_NODE_SCORE * (s.score - min) / diff
            } else {
                0
            };
        }
        Status::success()
    }
}
