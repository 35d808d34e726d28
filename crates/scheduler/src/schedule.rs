//! One pod's scheduling algorithm: PreFilter, parallel Filter over a share of the nodes,
//! PreScore, Score, and host selection (kube-scheduler's `schedulePod`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use parking_lot::Mutex;

use crate::cache::Snapshot;
use crate::framework::{CycleState, Framework, NodeInfo, NodeScore, NodeStatusMap, Status};

/// Below this many nodes, all are scored (kube-scheduler's `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The smallest adaptive percentage (`minFeasibleNodesPercentageToFind`).
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;
/// The adaptive percentage at zero nodes (`DefaultPercentageOfNodesToScore` base).
pub const BASE_PERCENTAGE_OF_NODES_TO_SCORE: usize = 50;
/// The first this many candidate nodes are filtered on the calling thread; only the rest
/// (when too few of those fit) is spread over all cores.
const SEQUENTIAL_FILTER_PREFIX: usize = 1024;
/// Nodes a filtering worker takes at a time.
const FILTER_CHUNK: usize = 32;

/// How many feasible nodes to find before scoring, out of `num_all_nodes`, as in
/// kube-scheduler: all below 100 nodes; otherwise `percentage` (or the adaptive
/// `50 - nodes/125`, at least 5) percent, but at least 100 nodes.
pub fn num_feasible_nodes_to_find(percentage: Option<u32>, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let pct = match percentage {
        Some(p) if p >= 100 => return num_all_nodes,
        Some(p) if p > 0 => p as usize,
        _ => BASE_PERCENTAGE_OF_NODES_TO_SCORE
            .saturating_sub(num_all_nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND),
    };
    (num_all_nodes * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Where the pod goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleResult {
    /// The chosen node.
    pub suggested_host: String,
    /// How many nodes Filter looked at.
    pub evaluated_nodes: usize,
    /// How many of them fit.
    pub feasible_nodes: usize,
}

/// Why no node fits: each rejected node's status.
#[derive(Clone, Debug, Default)]
pub struct FitError {
    /// The nodes in the snapshot.
    pub num_all_nodes: usize,
    /// Rejected nodes by name.
    pub node_statuses: NodeStatusMap,
    /// Set when PreFilter rejected the pod for every node.
    pub pre_filter_status: Option<Status>,
}

impl FitError {
    /// Reasons with the number of nodes giving each, sorted by reason.
    pub fn reason_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        if let Some(s) = &self.pre_filter_status {
            for r in s.reasons() {
                *counts.entry(r.to_owned()).or_default() += self.num_all_nodes;
            }
            return counts;
        }
        for s in self.node_statuses.values() {
            for r in s.reasons() {
                *counts.entry(r.to_owned()).or_default() += 1;
            }
        }
        counts
    }
}

impl fmt::Display for FitError {
    /// Kubernetes' message: `0/3 nodes are available: 3 node(s) didn't match Pod's node
    /// affinity/selector.`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available", self.num_all_nodes)?;
        let counts = self.reason_counts();
        if counts.is_empty() {
            return f.write_str(".");
        }
        f.write_str(": ")?;
        for (i, (reason, n)) in counts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n} {reason}")?;
        }
        f.write_str(".")
    }
}

/// Why a scheduling attempt failed.
#[derive(Clone, Debug)]
pub enum ScheduleError {
    /// No node fits (the pod waits for a cluster change, or preemption).
    Unschedulable(FitError),
    /// A plugin failed with `Error` (the pod is retried with backoff).
    Error(Status),
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::Unschedulable(e) => e.fmt(f),
            ScheduleError::Error(s) => match s.plugin() {
                Some(p) => write!(f, "running plugin {p}: {s}"),
                None => s.fmt(f),
            },
        }
    }
}

/// Picks a node for `pod`: PreFilter, Filter (in parallel, stopping once enough nodes
/// fit), PreScore, Score, then the best total score, ties broken at random.
///
/// `next_start` rotates where Filter starts, so successive pods spread over all nodes
/// (kube-scheduler's `nextStartNodeIndex`).
pub fn schedule_pod(
    fw: &Framework,
    state: &mut CycleState,
    pod: &Pod,
    snapshot: &Snapshot,
    next_start: &mut usize,
) -> Result<ScheduleResult, ScheduleError> {
    let all = snapshot.nodes();
    if all.is_empty() {
        return Err(ScheduleError::Unschedulable(FitError::default()));
    }
    if state.nodes_with_affinity_pods().is_none() {
        state.set_affinity_nodes(
            snapshot.nodes_with_affinity_pods(),
            snapshot.nodes_with_required_anti_affinity_pods(),
        );
    }
    let (pre, status) = fw.run_pre_filter(state, pod, all);
    if status.is_error() {
        return Err(ScheduleError::Error(status));
    }
    if !status.is_success() {
        return Err(ScheduleError::Unschedulable(FitError {
            num_all_nodes: all.len(),
            node_statuses: NodeStatusMap::new(),
            pre_filter_status: Some(status),
        }));
    }
    // Candidates: the PreFilter pre-selection, or every node from the rotating start.
    let candidates: Vec<Arc<NodeInfo>> = match &pre.node_names {
        Some(names) => {
            let mut v: Vec<_> = names
                .iter()
                .filter_map(|n| snapshot.get(n).cloned())
                .collect();
            v.sort_by(|a, b| a.name().cmp(b.name()));
            v
        }
        None => Vec::new(),
    };
    let (nodes, start): (&[Arc<NodeInfo>], usize) = match &pre.node_names {
        Some(_) => (&candidates, 0),
        None => (all, *next_start % all.len()),
    };
    let to_find = num_feasible_nodes_to_find(fw.percentage_of_nodes_to_score(), all.len());
    let (feasible, evaluated, failures) = find_feasible(fw, state, pod, nodes, start, to_find)?;
    if pre.node_names.is_none() {
        *next_start = (start + evaluated) % all.len();
    }
    if feasible.is_empty() {
        let mut node_statuses = failures;
        // Nodes the pre-selection left out are unresolvable for this pod.
        if pre.node_names.is_some() {
            for n in all {
                node_statuses.entry(n.name().to_owned()).or_insert_with(|| {
                    Status::unresolvable("node(s) didn't satisfy plugin(s) PreFilter")
                });
            }
        }
        return Err(ScheduleError::Unschedulable(FitError {
            num_all_nodes: all.len(),
            node_statuses,
            pre_filter_status: None,
        }));
    }
    let feasible_nodes = feasible.len();
    if feasible_nodes == 1 {
        return Ok(ScheduleResult {
            suggested_host: feasible[0].name().to_owned(),
            evaluated_nodes: evaluated,
            feasible_nodes,
        });
    }
    let s = fw.run_pre_score(state, pod, &feasible);
    if !s.is_success() {
        return Err(ScheduleError::Error(s));
    }
    let scores = fw
        .run_score(state, pod, &feasible)
        .map_err(ScheduleError::Error)?;
    Ok(ScheduleResult {
        suggested_host: select_host(&scores),
        evaluated_nodes: evaluated,
        feasible_nodes,
    })
}

/// The highest score; among equal ones, each is equally likely (reservoir sampling).
pub fn select_host(scores: &[NodeScore]) -> String {
    let mut best: Option<&NodeScore> = None;
    let mut ties = 0u32;
    for s in scores {
        match best {
            Some(b) if s.score < b.score => {}
            Some(b) if s.score == b.score => {
                ties += 1;
                if fastrand::u32(0..ties) == 0 {
                    best = Some(s);
                }
            }
            _ => {
                best = Some(s);
                ties = 1;
            }
        }
    }
    best.map(|b| b.name.clone()).unwrap_or_default()
}

type Found = (Vec<Arc<NodeInfo>>, usize, NodeStatusMap);

/// Filters `nodes` from `start` (wrapping) until `to_find` fit or all were seen. Returns the
/// feasible nodes in visiting order, how many were evaluated, and the failures.
fn find_feasible(
    fw: &Framework,
    state: &CycleState,
    pod: &Pod,
    nodes: &[Arc<NodeInfo>],
    start: usize,
    to_find: usize,
) -> Result<Found, ScheduleError> {
    let n = nodes.len();
    let at = |i: usize| &nodes[(start + i) % n];
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    let threads = fw.parallelism().map_or(cores, |p| p.min(cores)).max(1);
    // Filter the first nodes on this thread: starting threads costs more than filtering a
    // few hundred nodes, and usually enough of them fit.
    let prefix = if threads == 1 {
        n
    } else {
        n.min(SEQUENTIAL_FILTER_PREFIX)
    };
    let mut feasible = Vec::new();
    let mut failures = NodeStatusMap::new();
    let mut evaluated = 0;
    for i in 0..prefix {
        let node = at(i);
        evaluated += 1;
        let s = fw.run_filter(state, pod, node);
        if s.is_success() {
            feasible.push(node.clone());
            if feasible.len() >= to_find {
                break;
            }
        } else if s.is_error() {
            return Err(ScheduleError::Error(s));
        } else {
            failures.insert(node.name().to_owned(), s);
        }
    }
    if feasible.len() >= to_find || prefix == n {
        return Ok((feasible, evaluated, failures));
    }
    let to_find_rest = to_find - feasible.len();
    // Workers take chunks in visiting order; once enough nodes fit they stop taking more.
    let cursor = AtomicUsize::new(prefix);
    let found = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Arc<NodeInfo>)>> = Mutex::new(Vec::new());
    let failures_rest: Mutex<NodeStatusMap> = Mutex::new(NodeStatusMap::new());
    let error: Mutex<Option<Status>> = Mutex::new(None);
    let work = || {
        let mut local = Vec::new();
        let mut local_fail = Vec::new();
        loop {
            if found.load(Ordering::Relaxed) >= to_find_rest {
                break;
            }
            let from = cursor.fetch_add(FILTER_CHUNK, Ordering::Relaxed);
            if from >= n {
                break;
            }
            for i in from..(from + FILTER_CHUNK).min(n) {
                let node = at(i);
                let s = fw.run_filter(state, pod, node);
                if s.is_success() {
                    local.push((i, node.clone()));
                    found.fetch_add(1, Ordering::Relaxed);
                } else if s.is_error() {
                    *error.lock() = Some(s);
                    found.store(usize::MAX, Ordering::Relaxed);
                    break;
                } else {
                    local_fail.push((node.name().to_owned(), s));
                }
            }
        }
        results.lock().extend(local);
        failures_rest.lock().extend(local_fail);
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        work();
    });
    if let Some(s) = error.into_inner() {
        return Err(ScheduleError::Error(s));
    }
    let mut results = results.into_inner();
    results.sort_by_key(|(i, _)| *i);
    results.truncate(to_find_rest);
    // Evaluated: up to the last feasible node kept, or everything looked at.
    let evaluated = if results.len() >= to_find_rest {
        results.last().map_or(0, |(i, _)| i + 1)
    } else {
        cursor.load(Ordering::Relaxed).min(n)
    };
    feasible.extend(results.into_iter().map(|(_, node)| node));
    failures.extend(failures_rest.into_inner());
    Ok((feasible, evaluated, failures))
}
