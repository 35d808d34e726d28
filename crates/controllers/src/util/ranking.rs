//! Pod predicates and the deletion ranking Kubernetes keeps in `controller_utils.go`:
//! availability (`IsPodAvailable`) and `ActivePodsWithRanks`, the order in which surplus
//! Pods are deleted.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::k8s_openapi::jiff::Timestamp;

/// The annotation whose integer value makes a Pod cheaper (lower) or dearer to delete.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Since when `pod` has been ready, if it is.
fn ready_since(pod: &Pod) -> Option<Timestamp> {
    pod.condition("Ready")
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Whether `pod` has been ready for at least `min_ready_seconds` at `now`.
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !pod.is_ready() {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match ready_since(pod) {
        Some(since) => {
            let ready_for = now.duration_since(since);
            ready_for.as_secs() >= i64::from(min_ready_seconds)
        }
        None => false,
    }
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().map(|c| c.restart_count).max())
        .unwrap_or(0)
}

fn deletion_cost(pod: &Pod) -> i64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Kubernetes' `ActivePodsWithRanks.Less`: `Less` means "delete first". `rank_*` is how many
/// related Pods share each Pod's node (more is deleted first).
pub fn compare_for_deletion(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize) -> Ordering {
    // 1. Unassigned before assigned.
    let (node_a, node_b) = (
        a.node_name().unwrap_or_default(),
        b.node_name().unwrap_or_default(),
    );
    if node_a.is_empty() != node_b.is_empty() {
        return if node_a.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // 2. Pending before Unknown before Running.
    let phase_order = |pod: &Pod| match pod.phase() {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    match phase_order(a).cmp(&phase_order(b)) {
        Ordering::Equal => {}
        other => return other,
    }
    // 3. Not ready before ready.
    match a.is_ready().cmp(&b.is_ready()) {
        Ordering::Equal => {}
        other => return other,
    }
    // 4. Lower deletion cost first.
    match deletion_cost(a).cmp(&deletion_cost(b)) {
        Ordering::Equal => {}
        other => return other,
    }
    // 5. Doubled-up: more Pods on the same node first.
    match rank_b.cmp(&rank_a) {
        Ordering::Equal => {}
        other => return other,
    }
    // 6. Both ready: ready for less time first.
    if let (Some(since_a), Some(since_b)) = (ready_since(a), ready_since(b)) {
        match since_b.cmp(&since_a) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    // 7. More restarts first.
    match max_restarts(b).cmp(&max_restarts(a)) {
        Ordering::Equal => {}
        other => return other,
    }
    // 8. Newer first; an unset creation time counts as newest.
    let created = |pod: &Pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    match (created(a), created(b)) {
        (Some(ca), Some(cb)) => cb.cmp(&ca),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The `count` Pods of `pods` to delete first, ranked against `related` Pods (those that
/// share nodes with them, usually `pods` themselves) as Kubernetes' `getPodsToDelete` does.
pub fn pods_to_delete(pods: &[Arc<Pod>], related: &[Arc<Pod>], count: usize) -> Vec<Arc<Pod>> {
    if count >= pods.len() {
        return pods.to_vec();
    }
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for pod in related.iter().filter(|p| p.is_active()) {
        let node = pod.node_name().unwrap_or_default();
        if !node.is_empty() {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let rank = |pod: &Pod| {
        let node = pod.node_name().unwrap_or_default();
        if node.is_empty() {
            0
        } else {
            per_node.get(node).copied().unwrap_or(0)
        }
    };
    let mut ranked: Vec<(usize, Arc<Pod>)> = pods.iter().map(|p| (rank(p), p.clone())).collect();
    ranked.sort_by(|(ra, a), (rb, b)| compare_for_deletion(a, *ra, b, *rb));
    ranked.into_iter().take(count).map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use capstan_api::k8s_openapi::api::core::v1::{
        ContainerStatus, PodCondition, PodSpec, PodStatus,
    };
    use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use capstan_api::kube_core::ObjectMeta;

    use super::*;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn pod(name: &str, node: &str, phase: &str, ready_since: Option<i64>, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(ts(created))),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready_since.is_some() {
                        "True"
                    } else {
                        "False"
                    }
                    .into(),
                    last_transition_time: ready_since.map(|s| Time(ts(s))),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    fn with_restarts(mut pod: Pod, restarts: i32) -> Pod {
        pod.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            restart_count: restarts,
            ..ContainerStatus::default()
        }]);
        pod
    }

    #[test]
    fn unscheduled_pods_are_deleted_before_scheduled_ones_whatever_their_phase() {
        let pods = vec![
            Arc::new(pod("running", "n1", "Running", Some(0), 0)),
            Arc::new(pod("unscheduled", "", "Running", Some(0), 0)),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["unscheduled"]);
    }

    #[test]
    fn pending_goes_before_unknown_before_running() {
        let pods = vec![
            Arc::new(pod("running", "n1", "Running", None, 0)),
            Arc::new(pod("unknown", "n2", "Unknown", None, 0)),
            Arc::new(pod("pending", "n3", "Pending", None, 0)),
        ];
        assert_eq!(
            names(&pods_to_delete(&pods, &pods, 2)),
            ["pending", "unknown"]
        );
    }

    #[test]
    fn not_ready_pods_go_before_ready_ones() {
        let pods = vec![
            Arc::new(pod("ready", "n1", "Running", Some(0), 100)),
            Arc::new(pod("not-ready", "n2", "Running", None, 0)),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["not-ready"]);
    }

    #[test]
    fn pods_doubled_up_on_a_node_go_before_lone_ones() {
        let pods = vec![
            Arc::new(pod("alone", "n1", "Running", Some(0), 0)),
            Arc::new(pod("crowded-a", "n2", "Running", Some(0), 0)),
            Arc::new(pod("crowded-b", "n2", "Running", Some(0), 0)),
        ];
        let doomed = pods_to_delete(&pods, &pods, 1);
        assert!(names(&doomed)[0].starts_with("crowded"));
    }

    #[test]
    fn among_ready_pods_the_most_recently_ready_goes_first() {
        let pods = vec![
            Arc::new(pod("old-ready", "n1", "Running", Some(10), 0)),
            Arc::new(pod("new-ready", "n2", "Running", Some(50), 0)),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["new-ready"]);
    }

    #[test]
    fn more_restarts_go_first_then_newer_pods() {
        let pods = vec![
            Arc::new(with_restarts(pod("calm", "n1", "Running", Some(0), 0), 0)),
            Arc::new(with_restarts(pod("flappy", "n2", "Running", Some(0), 0), 3)),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["flappy"]);
        let pods = vec![
            Arc::new(pod("older", "n1", "Running", Some(0), 0)),
            Arc::new(pod("newer", "n2", "Running", Some(0), 60)),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["newer"]);
    }

    #[test]
    fn a_lower_deletion_cost_goes_first() {
        let mut cheap = pod("cheap", "n1", "Running", Some(0), 0);
        cheap.metadata.annotations = Some(BTreeMap::from([(
            POD_DELETION_COST.to_string(),
            "-5".to_string(),
        )]));
        let pods = vec![
            Arc::new(pod("normal", "n2", "Running", Some(0), 60)),
            Arc::new(cheap),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1)), ["cheap"]);
    }

    #[test]
    fn inactive_pods_are_not_replicas() {
        assert!(pod("a", "n", "Running", None, 0).is_active());
        assert!(!pod("a", "n", "Succeeded", None, 0).is_active());
        assert!(!pod("a", "n", "Failed", None, 0).is_active());
        let mut deleting = pod("a", "n", "Running", None, 0);
        deleting.metadata.deletion_timestamp = Some(Time(ts(0)));
        assert!(!deleting.is_active());
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let ready = pod("a", "n", "Running", Some(0), 0);
        assert!(is_pod_available(&ready, 0, ts(0)));
        assert!(!is_pod_available(&ready, 10, ts(5)));
        assert!(is_pod_available(&ready, 10, ts(10)));
        assert!(!is_pod_available(
            &pod("b", "n", "Running", None, 0),
            0,
            ts(0)
        ));
    }
}
