//! Pure helpers: a Node's readiness, the eviction time of a Pod under NoExecute taints, the
//! NoSchedule taints a Node's conditions call for, and small accessors.

use super::*;

// ---------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------

/// The status of the Node's `Ready` condition (`True`, `False`, `Unknown`), if posted.
pub fn node_ready_status(node: &Node) -> Option<&str> {
    node.condition("Ready").map(|c| c.status.as_str())
}

/// When a Pod must leave a node with the given NoExecute taints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Some taint is not tolerated.
    Now,
    /// Every taint is tolerated, the earliest tolerance ends then.
    At(Timestamp),
    /// Every taint is tolerated forever.
    Never,
}

/// When a Pod with `tolerations` must be evicted from a node with `taints` (NoExecute only;
/// others are ignored). A taint's tolerance ends at `start(taint)` (normally its
/// `timeAdded`) plus the smallest `tolerationSeconds` among the tolerations matching it
/// (negative counts as 0); with none of them giving seconds, it lasts forever.
pub fn eviction_time(
    tolerations: &[Toleration],
    taints: &[Taint],
    start: impl Fn(&Taint) -> Timestamp,
) -> Eviction {
    let mut earliest: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == taints::NO_EXECUTE) {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| t.tolerates(taint)).collect();
        if matching.is_empty() {
            return Eviction::Now;
        }
        let Some(seconds) = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .map(|s| s.max(0))
            .min()
        else {
            continue;
        };
        let end = start(taint)
            .checked_add(SignedDuration::from_secs(seconds))
            .unwrap_or(Timestamp::MAX);
        earliest = Some(earliest.map_or(end, |e| e.min(end)));
    }
    earliest.map_or(Eviction::Never, Eviction::At)
}

/// The NoSchedule taint keys a node's conditions and spec call for, as Kubernetes'
/// `doNoScheduleTaintingPass`.
pub fn no_schedule_taint_keys(node: &Node) -> BTreeSet<&'static str> {
    let mut keys = BTreeSet::new();
    match node_ready_status(node) {
        Some("False") => {
            keys.insert(taints::NOT_READY);
        }
        Some("Unknown") => {
            keys.insert(taints::UNREACHABLE);
        }
        _ => {}
    }
    for (condition, key) in [
        ("MemoryPressure", taints::MEMORY_PRESSURE),
        ("DiskPressure", taints::DISK_PRESSURE),
        ("PIDPressure", taints::PID_PRESSURE),
        ("NetworkUnavailable", taints::NETWORK_UNAVAILABLE),
    ] {
        if node
            .condition(condition)
            .is_some_and(|c| c.status == "True")
        {
            keys.insert(key);
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        keys.insert(taints::UNSCHEDULABLE);
    }
    keys
}

pub(super) const MANAGED_NO_SCHEDULE: [&str; 7] = [
    taints::NOT_READY,
    taints::UNREACHABLE,
    taints::MEMORY_PRESSURE,
    taints::DISK_PRESSURE,
    taints::PID_PRESSURE,
    taints::NETWORK_UNAVAILABLE,
    taints::UNSCHEDULABLE,
];
pub(super) const MANAGED_NO_EXECUTE: [&str; 2] = [taints::NOT_READY, taints::UNREACHABLE];

pub(super) fn is_managed(taint: &Taint) -> bool {
    (taint.effect == taints::NO_SCHEDULE && MANAGED_NO_SCHEDULE.contains(&taint.key.as_str()))
        || (taint.effect == taints::NO_EXECUTE && MANAGED_NO_EXECUTE.contains(&taint.key.as_str()))
}

pub(super) fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    node.taints()
        .iter()
        .any(|t| t.key == key && t.effect == effect)
}

/// Kubernetes' zone key: region and zone labels, `""` for neither.
pub(super) fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |key: &str, legacy: &str| {
        labels
            .and_then(|l| l.get(key).or_else(|| l.get(legacy)))
            .cloned()
            .unwrap_or_default()
    };
    let region = get(REGION_LABEL, LEGACY_REGION_LABEL);
    let zone = get(ZONE_LABEL, LEGACY_ZONE_LABEL);
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\x00:{zone}")
    }
}

pub(super) fn name_of<K: capstan_api::Resource>(object: &K) -> String {
    object.meta().name.clone().unwrap_or_default()
}

pub(super) fn renew_time(lease: &Lease) -> Option<&MicroTime> {
    lease.spec.as_ref()?.renew_time.as_ref()
}
