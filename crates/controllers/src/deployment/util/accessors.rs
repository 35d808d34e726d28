//! Accessors of Deployments and ReplicaSets (sizes, strategy, revisions) and the
//! fenceposts: `maxSurge` and `maxUnavailable` resolved against `spec.replicas`.

use super::*;

// ---------------------------------------------------------------------------------------
// Accessors
// ---------------------------------------------------------------------------------------

/// `spec.replicas` of a Deployment (1 when unset, the API's default).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.opt().and_then(|s| s.replicas).unwrap_or(1)
}

/// `spec.replicas` of a ReplicaSet (1 when unset, the API's default).
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.opt().and_then(|s| s.replicas).unwrap_or(1)
}

/// `status.replicas` of a ReplicaSet.
pub fn rs_actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

/// `status.availableReplicas` of a ReplicaSet.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// `status.readyReplicas` of a ReplicaSet.
pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// Whether the strategy is `RollingUpdate` (the default).
pub fn is_rolling_update(d: &Deployment) -> bool {
    d.spec
        .opt()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// Whether `spec.progressDeadlineSeconds` is set (and not "forever").
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .opt()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// `spec.paused`.
pub fn is_paused(d: &Deployment) -> bool {
    d.spec.opt().and_then(|s| s.paused).unwrap_or(false)
}

pub(super) fn annotation<'a>(
    meta: &'a capstan_api::kube_core::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

pub(super) fn set_annotation(
    meta: &mut capstan_api::kube_core::ObjectMeta,
    key: &str,
    value: &str,
) -> bool {
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    if annotations.get(key).map(String::as_str) == Some(value) {
        return false;
    }
    annotations.insert(key.to_string(), value.to_string());
    true
}

/// The `deployment.kubernetes.io/revision` of a ReplicaSet (0 when absent or not a number).
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, annotations::REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The highest revision among `rs_list` (0 when none has one).
pub fn max_revision<'a>(rs_list: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rs_list.into_iter().map(revision).max().unwrap_or(0)
}

/// The integer annotation `key` of a ReplicaSet.
pub fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(&rs.metadata, key)?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Fenceposts
// ---------------------------------------------------------------------------------------

/// Kubernetes' `GetScaledValueFromIntOrPercent`: an int as is, `"N%"` of `total`, rounded up
/// or down. A string that is not a percentage (validation refuses it) counts as 0.
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let Some(percent) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return 0;
            };
            let product = percent * i64::from(total);
            let scaled = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            scaled as i32
        }
    }
}

/// Kubernetes' `ResolveFenceposts`: `(maxSurge, maxUnavailable)` for `desired` replicas, the
/// surge rounded up, the unavailability rounded down; both zero gives unavailability 1.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> (i32, i32) {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(max_surge.unwrap_or(&zero), desired, true);
    let unavailable = scaled_value(max_unavailable.unwrap_or(&zero), desired, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

pub(super) fn fenceposts(d: &Deployment) -> (i32, i32) {
    let rolling = d
        .spec
        .opt()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    resolve_fenceposts(
        rolling.and_then(|r| r.max_surge.as_ref()),
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas(d),
    )
}

/// How many Pods above `spec.replicas` a rolling update may run (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    fenceposts(d).0
}

/// How many of `spec.replicas` may be unavailable during a rolling update (0 for Recreate
/// or no replicas; at most `spec.replicas`).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let desired = replicas(d);
    if !is_rolling_update(d) || desired == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired)
}
