//! DefaultPreemption: when no node fits a pod, evict pods of lower priority from one node so
//! that it fits, choosing the node and the fewest, least important victims as
//! kube-scheduler does.
//!
//! For each node rejected as `Unschedulable` (not `UnschedulableAndUnresolvable`), every
//! pod of lower priority is taken off; if the pod then fits, the victims are put back one by
//! one, most important first, and each one whose return makes the pod fit no more stays a
//! victim. Among the nodes found, the one picked has, in order: the lowest highest-victim
//! priority, the lowest sum of victim priorities, the fewest victims, the latest start time
//! among its most important victims. The victims are deleted (gracefully, with a `Preempted`
//! Event), and the pod's `status.nominatedNodeName` names the node; the pod is retried once
//! the victims are gone.
//!
//! Not modelled: PodDisruptionBudgets, and reserving a nominated node's freed room against
//! other pods.

use capstan_api::ext::MetaExt;
use std::cmp::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::{Api, Client, Error as ApiError};
use capstan_controller::events::EventRecorder;
use capstan_controller::retry::retry_on_conflict;

use crate::framework::{
    pod_key, Code, CycleState, Framework, NodeInfo, NodeStatusMap, Plugin, PluginRegistry,
    PostFilterContext, PostFilterPlugin, PostFilterResult, SchedulerPlugin, Status,
};

/// Candidates are looked for among at least this share of the nodes (percent)...
pub const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
/// ...and at least this many nodes.
pub const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// A node where preemption makes the pod fit, and the pods to evict there.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The node.
    pub node_name: String,
    /// The pods to evict, most important first.
    pub victims: Vec<Arc<Pod>>,
}

/// A pod's priority (`spec.priority`, 0 when unset).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn start_time(pod: &Pod) -> Option<&capstan_api::k8s_openapi::jiff::Timestamp> {
    pod.status.as_ref()?.start_time.as_ref().map(|t| &t.0)
}

/// kube-scheduler's `MoreImportantPod`: higher priority first, then the one that started
/// earlier (a pod that has not started counts as starting now).
pub fn more_important(a: &Pod, b: &Pod) -> Ordering {
    priority(b)
        .cmp(&priority(a))
        .then_with(|| match (start_time(a), start_time(b)) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

/// Whether `pod` may preempt at all: not with `preemptionPolicy: Never`, and not while a
/// lower-priority pod on its nominated node is still terminating (an earlier preemption is
/// under way). `Err` carries the reason.
pub fn eligible(pod: &Pod, nodes: &[Arc<NodeInfo>]) -> Result<(), &'static str> {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never")
    {
        return Err("not eligible due to preemptionPolicy=Never.");
    }
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    if let Some(node) = nominated.and_then(|n| nodes.iter().find(|i| i.name() == n)) {
        let p = priority(pod);
        if node
            .pods()
            .iter()
            .any(|v| v.pod.metadata.deletion_timestamp.is_some() && priority(&v.pod) < p)
        {
            return Err("not eligible due to a terminating pod on the nominated node.");
        }
    }
    Ok(())
}

/// Whether `pod` fits `nodes[index]`, running the profile's PreFilter (over all `nodes`, as
/// changed) and Filter plugins.
fn fits(fw: &Framework, pod: &Pod, nodes: &[Arc<NodeInfo>], index: usize) -> bool {
    let mut state = CycleState::new();
    let (pre, s) = fw.run_pre_filter(&mut state, pod, nodes);
    if !s.is_success() {
        return false;
    }
    let node = &nodes[index];
    if pre
        .node_names
        .as_ref()
        .is_some_and(|names| !names.contains(node.name()))
    {
        return false;
    }
    fw.run_filter(&state, pod, node).is_success()
}

/// The fewest, least important pods to evict from `nodes[index]` so that `pod` fits, or
/// `None` when evicting every lower-priority pod is not enough. `nodes` is restored before
/// returning.
pub fn select_victims_on_node(
    fw: &Framework,
    pod: &Pod,
    nodes: &mut [Arc<NodeInfo>],
    index: usize,
) -> Option<Vec<Arc<Pod>>> {
    let original = nodes[index].clone();
    let p = priority(pod);
    let mut info = (*original).clone();
    let mut potential: Vec<Arc<Pod>> = original
        .pods()
        .iter()
        .filter(|v| priority(&v.pod) < p)
        .map(|v| v.pod.clone())
        .collect();
    if potential.is_empty() {
        return None;
    }
    for v in &potential {
        info.remove_pod(&pod_key(v));
    }
    nodes[index] = Arc::new(info.clone());
    if !fits(fw, pod, nodes, index) {
        nodes[index] = original;
        return None;
    }
    potential.sort_by(|a, b| more_important(a, b));
    let mut victims = Vec::new();
    for v in potential {
        info.add_pod(v.clone());
        nodes[index] = Arc::new(info.clone());
        if !fits(fw, pod, nodes, index) {
            info.remove_pod(&pod_key(&v));
            victims.push(v);
        }
    }
    nodes[index] = original;
    Some(victims)
}

/// Looks for candidates on the nodes `filtered` rejected as `Unschedulable` (a rejection
/// preemption can help), starting at a random node and stopping after
/// `max(10% of nodes, 100)` candidates.
pub fn find_candidates(
    fw: &Framework,
    pod: &Pod,
    nodes: &[Arc<NodeInfo>],
    filtered: &NodeStatusMap,
) -> Vec<Candidate> {
    find_candidates_among(
        fw,
        pod,
        nodes,
        filtered,
        MIN_CANDIDATE_NODES_PERCENTAGE,
        MIN_CANDIDATE_NODES_ABSOLUTE,
    )
}

/// [`find_candidates`], stopping after `max(min_percentage % of nodes, min_absolute)`
/// candidates (kube-scheduler's `minCandidateNodesPercentage` and
/// `minCandidateNodesAbsolute`).
pub fn find_candidates_among(
    fw: &Framework,
    pod: &Pod,
    nodes: &[Arc<NodeInfo>],
    filtered: &NodeStatusMap,
    min_percentage: usize,
    min_absolute: usize,
) -> Vec<Candidate> {
    let potential: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            filtered
                .get(n.name())
                .is_some_and(|s| s.code() == Code::Unschedulable)
        })
        .map(|(i, _)| i)
        .collect();
    if potential.is_empty() {
        return Vec::new();
    }
    let wanted = (nodes.len() * min_percentage / 100)
        .max(min_absolute)
        .min(potential.len());
    let offset = fastrand::usize(0..potential.len());
    let mut scratch = nodes.to_vec();
    let mut candidates = Vec::new();
    for k in 0..potential.len() {
        let i = potential[(offset + k) % potential.len()];
        if let Some(victims) = select_victims_on_node(fw, pod, &mut scratch, i) {
            candidates.push(Candidate {
                node_name: nodes[i].name().to_owned(),
                victims,
            });
            if candidates.len() >= wanted {
                break;
            }
        }
    }
    candidates
}

/// Picks the candidate whose eviction hurts least (see the module docs); `None` for none.
pub fn pick_candidate(candidates: &[Candidate]) -> Option<&Candidate> {
    let key = |c: &Candidate| {
        let highest = c
            .victims
            .iter()
            .map(|v| priority(v))
            .max()
            .unwrap_or(i32::MIN);
        // Offset so that negative priorities still add up to more with more victims.
        let sum: i64 = c
            .victims
            .iter()
            .map(|v| i64::from(priority(v)) + i64::from(i32::MAX) + 1)
            .sum();
        // The earliest start among the most important victims; later is better.
        let earliest = c
            .victims
            .iter()
            .filter(|v| priority(v) == highest)
            .filter_map(|v| start_time(v).copied())
            .min();
        (highest, sum, c.victims.len(), std::cmp::Reverse(earliest))
    };
    candidates.iter().min_by(|a, b| key(a).cmp(&key(b)))
}

/// The `DefaultPreemption` PostFilter plugin: finds a candidate, deletes its victims and
/// nominates the node.
#[derive(Clone)]
pub struct DefaultPreemption {
    client: Arc<dyn Client>,
    recorder: EventRecorder,
    min_candidate_nodes_percentage: usize,
    min_candidate_nodes_absolute: usize,
}

impl std::fmt::Debug for DefaultPreemption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DefaultPreemption")
    }
}

impl DefaultPreemption {
    /// Evicts through `client`, recording `Preempted` Events with `recorder`.
    pub fn new(client: Arc<dyn Client>, recorder: EventRecorder) -> Self {
        DefaultPreemption {
            client,
            recorder,
            min_candidate_nodes_percentage: MIN_CANDIDATE_NODES_PERCENTAGE,
            min_candidate_nodes_absolute: MIN_CANDIDATE_NODES_ABSOLUTE,
        }
    }

    /// Sets how many nodes are looked at for candidates: at least `percentage` % of them
    /// and at least `absolute` (10 and 100 by default).
    pub fn min_candidate_nodes(mut self, percentage: usize, absolute: usize) -> Self {
        self.min_candidate_nodes_percentage = percentage;
        self.min_candidate_nodes_absolute = absolute;
        self
    }

    /// A registry holding only this plugin, to merge into the default registry. Its
    /// factory reads kube-scheduler's `DefaultPreemptionArgs`
    /// ([`DefaultPreemptionArgs`](crate::config::DefaultPreemptionArgs):
    /// `minCandidateNodesPercentage`, `minCandidateNodesAbsolute`; `null` is the defaults)
    /// and refuses invalid ones with [`Error::InvalidArgs`](crate::Error::InvalidArgs).
    pub fn registry(client: Arc<dyn Client>, recorder: EventRecorder) -> PluginRegistry {
        let plugin = DefaultPreemption::new(client, recorder);
        let mut r = PluginRegistry::new();
        r.register(super::DEFAULT_PREEMPTION, move |args| {
            let args =
                crate::config::PluginArgs::decode_for_plugin(super::DEFAULT_PREEMPTION, args)?;
            let crate::config::PluginArgs::DefaultPreemption(a) = args else {
                unreachable!("DefaultPreemption's arguments decode as DefaultPreemptionArgs")
            };
            // Validated to be in range, and defaulted.
            let count = |v: Option<i32>, default: usize| {
                v.and_then(|v| usize::try_from(v).ok()).unwrap_or(default)
            };
            let configured = plugin.clone().min_candidate_nodes(
                count(
                    a.min_candidate_nodes_percentage,
                    MIN_CANDIDATE_NODES_PERCENTAGE,
                ),
                count(a.min_candidate_nodes_absolute, MIN_CANDIDATE_NODES_ABSOLUTE),
            );
            Ok(Plugin::builder(Arc::new(configured)).post_filter().build())
        })
        .expect("empty registry");
        r
    }

    async fn evict(&self, preemptor: &Pod, node: &str, victim: &Pod) -> Result<(), ApiError> {
        let ns = victim.metadata.namespace.as_deref().unwrap_or("default");
        let name = victim.name_str();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let uid = preemptor.metadata.uid.as_deref().unwrap_or_default();
        self.recorder.normal(
            victim,
            "Preempted",
            format!("Preempted by pod {uid} on node {node}"),
        );
        Ok(())
    }

    /// Writes `status.nominatedNodeName`, retrying on conflicts.
    async fn nominate(&self, pod: &Pod, node: &str) -> Result<(), ApiError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.name_str();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        // The first write and five retries.
        retry_on_conflict(6, |_| async {
            let mut current = api.get(name).await?;
            let status = current.status.get_or_insert_with(Default::default);
            if status.nominated_node_name.as_deref() == Some(node) {
                return Ok(());
            }
            status.nominated_node_name = Some(node.to_owned());
            api.update_status(&PostParams::default(), &current)
                .await
                .map(|_| ())
        })
        .await
    }
}

impl SchedulerPlugin for DefaultPreemption {
    fn name(&self) -> &str {
        super::DEFAULT_PREEMPTION
    }
}

#[async_trait]
impl PostFilterPlugin for DefaultPreemption {
    async fn post_filter(
        &self,
        ctx: &PostFilterContext<'_>,
        _: &CycleState,
        pod: &Pod,
        filtered: &NodeStatusMap,
    ) -> (PostFilterResult, Status) {
        if let Err(reason) = eligible(pod, ctx.nodes()) {
            return (PostFilterResult::default(), Status::unschedulable(reason));
        }
        let candidates = find_candidates_among(
            ctx.framework(),
            pod,
            ctx.nodes(),
            filtered,
            self.min_candidate_nodes_percentage,
            self.min_candidate_nodes_absolute,
        );
        let Some(chosen) = pick_candidate(&candidates) else {
            let helpless = ctx
                .nodes()
                .iter()
                .filter(|n| {
                    filtered
                        .get(n.name())
                        .is_none_or(|s| s.code() != Code::Unschedulable)
                })
                .count();
            let mut reasons = Vec::new();
            let without = ctx.nodes().len() - helpless;
            if without > 0 {
                reasons.push(format!(
                    "{without} No preemption victims found for incoming pod"
                ));
            }
            if helpless > 0 {
                reasons.push(format!(
                    "{helpless} Preemption is not helpful for scheduling"
                ));
            }
            return (
                PostFilterResult::default(),
                Status::unschedulable(format!(
                    "0/{} nodes are available: {}.",
                    ctx.nodes().len(),
                    reasons.join(", ")
                )),
            );
        };
        for victim in &chosen.victims {
            if let Err(e) = self.evict(pod, &chosen.node_name, victim).await {
                return (
                    PostFilterResult::default(),
                    Status::error(format!("preempting {}: {e}", pod_key(victim))),
                );
            }
        }
        if let Err(e) = self.nominate(pod, &chosen.node_name).await {
            return (
                PostFilterResult::default(),
                Status::error(format!("nominating node {}: {e}", chosen.node_name)),
            );
        }
        (
            PostFilterResult {
                nominated_node_name: Some(chosen.node_name.clone()),
            },
            Status::success(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32, started: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"priority": priority, "containers": [{"name": "c"}]},
                "status": {"startTime": started},
            }))
            .unwrap(),
        )
    }

    fn candidate(node: &str, victims: Vec<Arc<Pod>>) -> Candidate {
        Candidate {
            node_name: node.into(),
            victims,
        }
    }

    #[test]
    fn the_candidate_picked_hurts_least_by_kubernetes_criteria() {
        let t1 = Some("2026-01-01T00:00:00Z");
        let t2 = Some("2026-01-02T00:00:00Z");
        let cases = [
            (
                "lowest highest-priority victim",
                vec![
                    candidate("a", vec![pod("x", 10, t1)]),
                    candidate("b", vec![pod("y", 1, t1), pod("z", 1, t1)]),
                ],
                "b",
            ),
            (
                "lowest priority sum",
                vec![
                    candidate("a", vec![pod("x", 5, t1), pod("y", 5, t1)]),
                    candidate("b", vec![pod("z", 5, t1), pod("w", 1, t1)]),
                ],
                "b",
            ),
            (
                "fewest victims, negative priorities included",
                vec![
                    candidate("a", vec![pod("x", -5, t1), pod("y", -5, t1)]),
                    candidate("b", vec![pod("z", -5, t1)]),
                ],
                "b",
            ),
            (
                "latest start among the most important victims",
                vec![
                    candidate("a", vec![pod("x", 5, t1)]),
                    candidate("b", vec![pod("y", 5, t2)]),
                ],
                "b",
            ),
        ];
        for (what, candidates, want) in cases {
            assert_eq!(
                pick_candidate(&candidates).unwrap().node_name,
                want,
                "{what}"
            );
        }
        assert!(pick_candidate(&[]).is_none());
    }

    #[test]
    fn more_important_pods_sort_first() {
        let mut pods = [
            pod("late-low", 0, Some("2026-01-02T00:00:00Z")),
            pod("high", 10, None),
            pod("early-low", 0, Some("2026-01-01T00:00:00Z")),
        ];
        pods.sort_by(|a, b| more_important(a, b));
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["high", "early-low", "late-low"]);
    }
}
