//! Annotations a Deployment copies to its ReplicaSets (revision, desired and max replicas).

use super::*;

// ---------------------------------------------------------------------------------------
// Annotations
// ---------------------------------------------------------------------------------------

/// Annotations of the Deployment never copied to its ReplicaSets.
pub(super) fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        "kubectl.kubernetes.io/last-applied-configuration"
            | annotations::REVISION
            | annotations::REVISION_HISTORY
            | annotations::DESIRED_REPLICAS
            | annotations::MAX_REPLICAS
            | "deprecated.deployment.rollback.to"
    )
}

/// Copies the Deployment's own annotations onto the ReplicaSet; whether any changed.
pub fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    for (key, value) in d.metadata.annotations.iter().flatten() {
        if skip_copy(key) {
            continue;
        }
        changed |= set_annotation(&mut rs.metadata, key, value);
    }
    changed
}

/// Sets `desired-replicas` and `max-replicas`; whether either changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = set_annotation(
        &mut rs.metadata,
        annotations::DESIRED_REPLICAS,
        &desired.to_string(),
    );
    let b = set_annotation(
        &mut rs.metadata,
        annotations::MAX_REPLICAS,
        &max.to_string(),
    );
    a || b
}

/// Kubernetes' `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, raises
/// the revision to `new_revision` (keeping an earlier one in `revision-history`: a
/// rollback), and for a ReplicaSet about to be created (`!exists`) sets the replica
/// annotations. Whether anything changed.
pub fn set_new_replica_set_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let old = annotation(&rs.metadata, annotations::REVISION).map(str::to_string);
    let old_revision = match old.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    if old_revision < new_revision {
        set_annotation(
            &mut rs.metadata,
            annotations::REVISION,
            &new_revision.to_string(),
        );
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = annotation(&rs.metadata, annotations::REVISION_HISTORY)
                .unwrap_or_default()
                .to_string();
            if history.is_empty() {
                set_annotation(&mut rs.metadata, annotations::REVISION_HISTORY, &old);
            } else {
                let entries: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REVISION_HISTORY_CHARS && start < entries.len() {
                    total -= entries[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REVISION_HISTORY_CHARS {
                    let mut kept: Vec<&str> = entries[start..].to_vec();
                    kept.push(&old);
                    set_annotation(
                        &mut rs.metadata,
                        annotations::REVISION_HISTORY,
                        &kept.join(","),
                    );
                }
            }
        }
    }
    if !exists {
        let desired = replicas(d);
        changed |= set_replicas_annotations(rs, desired, desired + max_surge(d));
    }
    changed
}

/// Sets the Deployment's revision annotation; whether it changed.
pub fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    set_annotation(&mut d.metadata, annotations::REVISION, revision)
}
