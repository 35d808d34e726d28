//! Scaling arithmetic: how many replicas the new ReplicaSet may have, and proportional
//! scaling across active ReplicaSets.

use super::*;
use capstan_api::kube_core::ResourceExt;

// ---------------------------------------------------------------------------------------
// Scaling arithmetic
// ---------------------------------------------------------------------------------------

/// Kubernetes' `NewRSNewReplicas`: the size the new ReplicaSet may have now. For a rolling
/// update, as large as the surge allows: `currentPods` counts each ReplicaSet's
/// `max(spec.replicas, status.replicas)`, so Pods an old ReplicaSet was told to drop but
/// still runs are not replaced before they are gone (Kubernetes counts `spec.replicas` only).
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    let desired = replicas(d);
    if !is_rolling_update(d) {
        return desired;
    }
    let current: i32 = all
        .iter()
        .map(|rs| rs_replicas(rs).max(rs_actual(rs)))
        .sum();
    let max_total = desired + max_surge(d);
    let new_size = rs_replicas(new_rs);
    if current >= max_total {
        return new_size;
    }
    let scale_up = (max_total - current).min(desired - new_size);
    new_size + scale_up.max(0)
}

/// Kubernetes' `getReplicaSetFraction`: how many replicas `rs` gains (or loses) when the
/// Deployment is resized, in proportion to its share of the `max-replicas` it was sized for.
pub fn replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    let desired = replicas(d);
    if desired == 0 {
        return -rs_replicas(rs);
    }
    let deployment_replicas = desired + max_surge(d);
    let annotated = int_annotation(rs, annotations::MAX_REPLICAS)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    size.round() as i32 - rs_replicas(rs)
}

/// Kubernetes' `GetProportion`: `rs`'s share of `to_add`, given `added` so far.
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Kubernetes' proportional scaling (`scale`, rolling case): the new size of each of
/// `active` (the active ReplicaSets) when the Deployment's size changed mid-rollout, in the
/// same order. The difference between `spec.replicas + maxSurge` and the current sizes is
/// shared in proportion to each one's size; what rounding leaves goes to the largest (the
/// newest among equals) on the way up, or the largest (the oldest among equals) on the way
/// down.
pub fn proportional_sizes(d: &Deployment, active: &[ReplicaSet]) -> Vec<(String, i32)> {
    let desired = replicas(d);
    let allowed = if desired > 0 {
        desired + max_surge(d)
    } else {
        0
    };
    let to_add = allowed - replica_count(active);
    let mut sorted: Vec<&ReplicaSet> = active.iter().collect();
    match to_add.cmp(&0) {
        Ordering::Greater => sorted.sort_by(|a, b| by_size_newer(a, b)),
        Ordering::Less => sorted.sort_by(|a, b| by_size_older(a, b)),
        Ordering::Equal => {}
    }
    let mut added = 0;
    let mut sizes: Vec<(String, i32)> = Vec::with_capacity(sorted.len());
    for rs in &sorted {
        let name = rs.name_any();
        if to_add != 0 {
            let share = proportion(rs, d, to_add, added);
            sizes.push((name, rs_replicas(rs) + share));
            added += share;
        } else {
            sizes.push((name, rs_replicas(rs)));
        }
    }
    if to_add != 0 {
        if let Some(first) = sizes.first_mut() {
            first.1 = (first.1 + to_add - added).max(0);
        }
    }
    sizes
}
