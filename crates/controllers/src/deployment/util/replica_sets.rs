//! Sorting and filtering ReplicaSets: by creation, size and revision; the active ones; the
//! new ReplicaSet of a Deployment.

use super::*;

// ---------------------------------------------------------------------------------------
// Sorting and filtering
// ---------------------------------------------------------------------------------------

pub(super) fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Kubernetes' `ReplicaSetsByCreationTimestamp`: older first, then by name.
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Kubernetes' `ReplicaSetsBySizeNewer`: larger first, then newer first.
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// Kubernetes' `ReplicaSetsBySizeOlder`: larger first, then older first.
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// Kubernetes' `ReplicaSetsByRevision`: lower revision first, then older first.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    revision(a)
        .cmp(&revision(b))
        .then_with(|| by_creation(a, b))
}

/// Whether a ReplicaSet asks for any Pod.
pub fn is_active(rs: &ReplicaSet) -> bool {
    rs_replicas(rs) > 0
}

/// Σ `spec.replicas`.
pub fn replica_count<'a>(rs_list: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rs_list.into_iter().map(rs_replicas).sum()
}

/// Σ `status.replicas`.
pub fn actual_count<'a>(rs_list: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rs_list.into_iter().map(rs_actual).sum()
}

/// The ReplicaSet whose template equals the Deployment's (ignoring the hash label), the
/// oldest if several do (Kubernetes' `FindNewReplicaSet`).
pub fn find_new_replica_set(d: &Deployment, rs_list: &[ReplicaSet]) -> Option<usize> {
    let template = d.spec.opt().map(|s| s.template.clone()).unwrap_or_default();
    let mut indexes: Vec<usize> = (0..rs_list.len()).collect();
    indexes.sort_by(|a, b| by_creation(&rs_list[*a], &rs_list[*b]));
    indexes.into_iter().find(|i| {
        rs_list[*i]
            .spec
            .opt()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignore_hash(t, &template))
    })
}

/// Kubernetes' `FindActiveOrLatest`: the only active ReplicaSet; with none active, the new
/// one, else the newest old one; `None` when several are active.
pub fn find_active_or_latest(
    new_rs: Option<&ReplicaSet>,
    old: &[ReplicaSet],
) -> Option<ReplicaSet> {
    if new_rs.is_none() && old.is_empty() {
        return None;
    }
    let mut old_sorted = old.to_vec();
    old_sorted.sort_by(|a, b| by_creation(b, a));
    let active: Vec<&ReplicaSet> = old_sorted
        .iter()
        .chain(new_rs)
        .filter(|rs| is_active(rs))
        .collect();
    match active.len() {
        0 => new_rs.cloned().or_else(|| old_sorted.first().cloned()),
        1 => Some(active[0].clone()),
        _ => None,
    }
}

/// Kubernetes' `IsSaturated`: the new ReplicaSet has all the replicas, asked for and available.
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else { return false };
    let desired = replicas(d);
    int_annotation(rs, annotations::DESIRED_REPLICAS) == Some(desired)
        && rs_replicas(rs) == desired
        && rs_available(rs) == desired
}
