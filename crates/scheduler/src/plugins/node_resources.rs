//! NodeResourcesFit (with LeastAllocated scoring) and NodeResourcesBalancedAllocation.

use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, PreFilterPlugin, PreFilterResult, Resources,
    SchedulerPlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};

const STATE_KEY: &str = "PreFilterNodeResourcesFit";

/// The pod's requests, computed once per cycle.
#[derive(Clone, Debug)]
struct PodRequests {
    requests: Resources,
    non_zero: Resources,
}

fn pod_requests<'a>(
    state: &'a CycleState,
    pod: &Pod,
    owned: &'a mut Option<PodRequests>,
) -> &'a PodRequests {
    if let Some(r) = state.read::<PodRequests>(STATE_KEY) {
        return r;
    }
    owned.insert(PodRequests {
        requests: Resources::pod_requests(pod, false),
        non_zero: Resources::pod_requests(pod, true),
    })
}

/// Rejects nodes without room for the pod's requests (CPU, memory, ephemeral storage,
/// extended resources, and the pod count); scores with LeastAllocated (CPU and memory,
/// weight 1 each): the more room left, the better.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeResourcesFit;

impl SchedulerPlugin for NodeResourcesFit {
    fn name(&self) -> &str {
        super::NODE_RESOURCES_FIT
    }
}

impl PreFilterPlugin for NodeResourcesFit {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _: &[Arc<NodeInfo>],
    ) -> (PreFilterResult, Status) {
        state.write(
            STATE_KEY,
            PodRequests {
                requests: Resources::pod_requests(pod, false),
                non_zero: Resources::pod_requests(pod, true),
            },
        );
        (PreFilterResult::all_nodes(), Status::success())
    }
}

/// Whether `requests` fit `node`: [`insufficient_resources`] would find nothing.
pub fn fits_resources(requests: &Resources, node: &NodeInfo) -> bool {
    let alloc = node.allocatable();
    let used = node.requested();
    let fits = |want: i64, have: i64, used: i64| want <= 0 || want <= have - used;
    (node.pods().len() as i64) < alloc.allowed_pods
        && fits(requests.milli_cpu, alloc.milli_cpu, used.milli_cpu)
        && fits(requests.memory, alloc.memory, used.memory)
        && fits(
            requests.ephemeral_storage,
            alloc.ephemeral_storage,
            used.ephemeral_storage,
        )
        && requests.scalar.iter().all(|(name, want)| {
            fits(
                *want,
                alloc.scalar.get(name).copied().unwrap_or(0),
                used.scalar.get(name).copied().unwrap_or(0),
            )
        })
}

/// The reasons `requests` does not fit `node` (empty when it fits).
pub fn insufficient_resources(requests: &Resources, node: &NodeInfo) -> Vec<String> {
    let mut reasons = Vec::new();
    let alloc = node.allocatable();
    let used = node.requested();
    if node.pods().len() as i64 + 1 > alloc.allowed_pods {
        reasons.push("Too many pods".to_owned());
    }
    let check = |name: &str, want: i64, have: i64, used: i64, reasons: &mut Vec<String>| {
        if want > 0 && want > have - used {
            reasons.push(format!("Insufficient {name}"));
        }
    };
    check(
        "cpu",
        requests.milli_cpu,
        alloc.milli_cpu,
        used.milli_cpu,
        &mut reasons,
    );
    check(
        "memory",
        requests.memory,
        alloc.memory,
        used.memory,
        &mut reasons,
    );
    check(
        "ephemeral-storage",
        requests.ephemeral_storage,
        alloc.ephemeral_storage,
        used.ephemeral_storage,
        &mut reasons,
    );
    for (name, want) in &requests.scalar {
        let have = alloc.scalar.get(name).copied().unwrap_or(0);
        let u = used.scalar.get(name).copied().unwrap_or(0);
        check(name, *want, have, u, &mut reasons);
    }
    reasons
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let mut owned = None;
        let req = pod_requests(state, pod, &mut owned);
        if fits_resources(&req.requests, node) {
            return Status::success();
        }
        let mut reasons = insufficient_resources(&req.requests, node).into_iter();
        match reasons.next() {
            None => Status::success(),
            Some(first) => reasons.fold(Status::unschedulable(first), |s, r| s.with_reason(r)),
        }
    }
}

/// `(requested, allocatable)` for CPU and memory, with the pod's non-zero requests added.
fn cpu_memory(req: &PodRequests, node: &NodeInfo) -> [(i64, i64); 2] {
    let alloc = node.allocatable();
    let used = node.non_zero_requested();
    [
        (used.milli_cpu + req.non_zero.milli_cpu, alloc.milli_cpu),
        (used.memory + req.non_zero.memory, alloc.memory),
    ]
}

impl ScorePlugin for NodeResourcesFit {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let mut owned = None;
        let req = pod_requests(state, pod, &mut owned);
        let mut sum = 0;
        let pairs = cpu_memory(req, node);
        for (requested, allocatable) in pairs {
            if allocatable > 0 && requested <= allocatable {
                sum += (allocatable - requested) * MAX_NODE_SCORE / allocatable;
            }
        }
        Ok(sum / pairs.len() as i64)
    }
}

/// Prefers nodes whose CPU and memory would be used in equal shares after placing the pod:
/// `(1 - std(fractions)) * 100`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BalancedAllocation;

impl SchedulerPlugin for BalancedAllocation {
    fn name(&self) -> &str {
        super::NODE_RESOURCES_BALANCED_ALLOCATION
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let mut owned = None;
        let req = pod_requests(state, pod, &mut owned);
        let mut fractions = [0f64; 2];
        let mut count = 0;
        for (requested, allocatable) in cpu_memory(req, node) {
            if allocatable > 0 {
                fractions[count] = (requested as f64 / allocatable as f64).min(1.0);
                count += 1;
            }
        }
        if count == 0 {
            return Ok(0);
        }
        let fractions = &fractions[..count];
        let mean = fractions.iter().sum::<f64>() / count as f64;
        let var = fractions
            .iter()
            .map(|f| (f - mean) * (f - mean))
            .sum::<f64>()
            / count as f64;
        Ok(((1.0 - var.sqrt()) * MAX_NODE_SCORE as f64) as i64)
    }
}
