//! The pure parts of the Deployment controller: Kubernetes' `pkg/controller/deployment/util`
//! (hashing, revisions and annotations, fenceposts, proportions, sorting, conditions and
//! status), free of any I/O so each rule is unit-tested on its own.

use capstan_api::compat::{self, Maybe};
use std::cmp::Ordering;
use std::collections::BTreeMap;

use capstan_api::k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet,
};
use capstan_api::k8s_openapi::api::core::v1::PodTemplateSpec;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use capstan_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use capstan_api::k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{annotations, reasons, POD_TEMPLATE_HASH_LABEL};

/// The longest `deployment.kubernetes.io/revision-history` value kept (Kubernetes'
/// `maxRevHistoryLengthInChars`).
pub const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// The alphabet of Kubernetes' `rand.SafeEncodeString`: no vowels (no words), no `0`, `1`,
/// `3` (no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

// ---------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------

/// FNV-1a, 32 bits.
#[derive(Clone, Copy, Debug)]
struct Fnv32a(u32);

impl Fnv32a {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;

    fn new() -> Self {
        Fnv32a(Self::OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u32::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
}

/// Writes `value` as JSON with object keys sorted, so equal values always print the same.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (key, value)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Kubernetes' `rand.SafeEncodeString`: each character mapped into Kubernetes' safe alphabet (`bcdfghjklmnpqrstvwxz2456789`).
pub fn safe_encode(s: &str) -> String {
    s.chars()
        .map(|c| SAFE_ALPHABET[(c as usize) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// The `pod-template-hash` of `template`: FNV-1a 32 over the template's canonical JSON (keys
/// sorted), then, if set, the collision count as 8 little-endian bytes (as Kubernetes'
/// `ComputeHash` writes it), printed in decimal and [safe-encoded](safe_encode).
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let value = serde_json::to_value(template).unwrap_or(Value::Null);
    let mut printed = String::new();
    canonical_json(&value, &mut printed);
    let mut hasher = Fnv32a::new();
    hasher.write(printed.as_bytes());
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(count as u32).to_le_bytes());
        hasher.write(&bytes);
    }
    safe_encode(&hasher.0.to_string())
}

/// Whether two templates are equal once the `pod-template-hash` label is ignored
/// (Kubernetes' `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
        }
        serde_json::to_value(t).unwrap_or(Value::Null)
    };
    strip(a) == strip(b)
}

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

fn annotation<'a>(meta: &'a capstan_api::kube_core::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn set_annotation(meta: &mut capstan_api::kube_core::ObjectMeta, key: &str, value: &str) -> bool {
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

fn fenceposts(d: &Deployment) -> (i32, i32) {
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

// ---------------------------------------------------------------------------------------
// Sorting and filtering
// ---------------------------------------------------------------------------------------

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
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

// ---------------------------------------------------------------------------------------
// Annotations
// ---------------------------------------------------------------------------------------

/// Annotations of the Deployment never copied to its ReplicaSets.
fn skip_copy(key: &str) -> bool {
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
        let name = rs.metadata.name.clone().unwrap_or_default();
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

// ---------------------------------------------------------------------------------------
// Conditions and status
// ---------------------------------------------------------------------------------------

/// `now`, to the second, as the API stores times.
pub fn truncate(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// A condition of `type_` with both times `now`.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) -> DeploymentCondition {
    let now = Time(truncate(now));
    DeploymentCondition {
        type_: compat::value(type_.to_string()),
        status: compat::value(status.to_string()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// The condition of `type_`, if any.
pub fn get_condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| compat::text(&c.type_) == type_)
}

/// Kubernetes' `SetDeploymentCondition`: no change when status and reason are the same;
/// the transition time kept when only the reason changes; the condition moved last.
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_condition(status, compat::text(&condition.type_)) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, compat::text(&condition.type_));
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(condition);
}

/// Removes the condition of `type_`.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| compat::text(&c.type_) != type_);
    }
}

/// Kubernetes' `calculateStatus`: the counts from the ReplicaSets, the previous conditions,
/// and `Available` set from the availability.
pub fn calculate_status(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
    let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|rs| rs_actual(rs)).sum()),
        updated_replicas: Some(new_rs.map_or(0, rs_actual)),
        ready_replicas: Some(all.iter().map(|rs| rs_ready(rs)).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                reasons::MINIMUM_REPLICAS_AVAILABLE,
                "Deployment has minimum availability.",
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                reasons::MINIMUM_REPLICAS_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            ),
        );
    }
    status
}

/// Kubernetes' `DeploymentComplete`: every replica updated and available, and the latest
/// generation observed.
pub fn deployment_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = replicas(d);
    status.updated_replicas.unwrap_or(0) == desired
        && status.replicas.unwrap_or(0) == desired
        && status.available_replicas.unwrap_or(0) == desired
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Kubernetes' `DeploymentProgressing`: more updated, fewer old, more ready or more
/// available replicas than the Deployment's current status says.
pub fn deployment_progressing(d: &Deployment, status: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(status.replicas) - n(status.updated_replicas);
    n(status.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(status.ready_replicas) > n(old.ready_replicas)
        || n(status.available_replicas) > n(old.available_replicas)
}

/// Kubernetes' `DeploymentTimedOut`: no progress for `progressDeadlineSeconds` since the
/// `Progressing` condition was last updated.
pub fn deployment_timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(condition) = get_condition(status, "Progressing") else {
        return false;
    };
    match condition.reason.as_deref() {
        Some(reasons::NEW_RS_AVAILABLE) => return false,
        Some(reasons::TIMED_OUT) => return true,
        _ => {}
    }
    let Some(from) = condition.last_update_time.as_ref() else {
        return false;
    };
    from.0.as_second() + i64::from(deadline) < now.as_second()
        || (from.0.as_second() + i64::from(deadline) == now.as_second()
            && now.subsec_nanosecond() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };
    use capstan_api::k8s_openapi::api::core::v1::{Container, PodSpec};
    use capstan_api::kube_core::ObjectMeta;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..ObjectMeta::default()
            },
            spec: compat::value(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                template: template("web:v1"),
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    fn rs(name: &str, replicas: i32, created: i64, max_replicas: Option<i32>) -> ReplicaSet {
        let mut annotations = BTreeMap::new();
        if let Some(max) = max_replicas {
            annotations.insert(annotations::MAX_REPLICAS.to_string(), max.to_string());
        }
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(
                    Timestamp::from_second(1_700_000_000 + created).unwrap(),
                )),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: compat::value(ReplicaSetSpec {
                replicas: Some(replicas),
                ..ReplicaSetSpec::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                ..ReplicaSetStatus::default()
            }),
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        let hash = |s: &str| {
            let mut h = Fnv32a::new();
            h.write(s.as_bytes());
            h.0
        };
        assert_eq!(hash(""), 0x811c_9dc5);
        assert_eq!(hash("a"), 0xe40c_292c);
        assert_eq!(hash("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn safe_encoding_maps_digits_into_the_kubernetes_alphabet() {
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn the_template_hash_is_stable_safe_and_changes_with_the_template_and_collisions() {
        let v1 = pod_template_hash(&template("web:v1"), None);
        assert_eq!(v1, pod_template_hash(&template("web:v1"), None));
        assert!(v1.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{v1}");
        assert_ne!(v1, pod_template_hash(&template("web:v2"), None));
        assert_ne!(v1, pod_template_hash(&template("web:v1"), Some(1)));
        assert_ne!(
            pod_template_hash(&template("web:v1"), Some(1)),
            pod_template_hash(&template("web:v1"), Some(2))
        );
    }

    #[test]
    fn templates_equal_but_for_the_hash_label_are_equal() {
        let mut hashed = template("web:v1");
        hashed
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH_LABEL.into(), "abc".into());
        assert!(equal_ignore_hash(&hashed, &template("web:v1")));
        assert!(!equal_ignore_hash(&hashed, &template("web:v2")));
    }

    #[test]
    fn surge_rounds_up_and_unavailability_rounds_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10),
            (3, 2)
        );
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(1)), Some(&IntOrString::Int(1)), 3),
            (1, 1)
        );
        assert_eq!(
            resolve_fenceposts(Some(&pct("0%")), Some(&pct("10%")), 5),
            (0, 1)
        );
        let d = deployment(3, IntOrString::Int(1), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d), 3, "never more than the replicas");
        assert_eq!(max_surge(&d), 1);
    }

    #[test]
    fn the_new_replica_set_grows_by_what_the_surge_allows() {
        let d = deployment(3, IntOrString::Int(1), IntOrString::Int(1));
        let old = rs("old", 3, 0, None);
        let new = rs("new", 0, 1, None);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 1);
        let new = rs("new", 1, 1, None);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 1);
        // The old one was told to shrink but still runs three Pods: wait for them.
        let mut shrinking = rs("old", 2, 0, None);
        shrinking.status.as_mut().unwrap().replicas = 3;
        assert_eq!(new_rs_new_replicas(&d, &[&shrinking, &new], &new), 1);
        shrinking.status.as_mut().unwrap().replicas = 2;
        assert_eq!(new_rs_new_replicas(&d, &[&shrinking, &new], &new), 2);
    }

    #[test]
    fn proportional_scaling_shares_the_difference_by_size_as_kubernetes_does() {
        // Kubernetes' documented example: 10 replicas, maxSurge 3, mid-rollout with 8 old
        // and 5 new (max-replicas 13), scaled to 15 (max 18): +5 split 3 to old, 2 to new.
        let d = deployment(15, IntOrString::Int(3), IntOrString::Int(2));
        let old = rs("old", 8, 0, Some(13));
        let new = rs("new", 5, 1, Some(13));
        let sizes: BTreeMap<String, i32> = proportional_sizes(&d, &[old.clone(), new.clone()])
            .into_iter()
            .collect();
        assert_eq!(sizes["old"], 11);
        assert_eq!(sizes["new"], 7);
        // And back down to 10 (max 13): -5, the larger loses more.
        let d = deployment(10, IntOrString::Int(3), IntOrString::Int(2));
        let old = rs("old", 11, 0, Some(18));
        let new = rs("new", 7, 1, Some(18));
        let sizes: BTreeMap<String, i32> =
            proportional_sizes(&d, &[old, new]).into_iter().collect();
        assert_eq!(sizes.values().sum::<i32>(), 13);
        assert_eq!(sizes["old"], 8);
        assert_eq!(sizes["new"], 5);
    }

    #[test]
    fn a_reused_replica_set_gets_the_new_revision_and_keeps_the_old_in_history() {
        let d = deployment(3, IntOrString::Int(1), IntOrString::Int(1));
        let mut old = rs("old", 0, 0, None);
        old.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(annotations::REVISION.into(), "1".into());
        assert!(set_new_replica_set_annotations(&d, &mut old, 3, true));
        assert_eq!(revision(&old), 3);
        assert_eq!(
            old.metadata.annotations.as_ref().unwrap()[annotations::REVISION_HISTORY],
            "1"
        );
        assert!(set_new_replica_set_annotations(&d, &mut old, 5, true));
        assert_eq!(
            old.metadata.annotations.as_ref().unwrap()[annotations::REVISION_HISTORY],
            "1,3"
        );
        assert!(!set_new_replica_set_annotations(&d, &mut old, 5, true));

        let mut fresh = rs("fresh", 0, 0, None);
        assert!(set_new_replica_set_annotations(&d, &mut fresh, 1, false));
        let annotations = fresh.metadata.annotations.unwrap();
        assert_eq!(annotations[annotations::DESIRED_REPLICAS], "3");
        assert_eq!(annotations[annotations::MAX_REPLICAS], "4");
        assert!(!annotations.contains_key(annotations::REVISION_HISTORY));
    }

    #[test]
    fn the_only_active_replica_set_or_the_latest_is_scaled_directly() {
        let a = rs("a", 0, 0, None);
        let b = rs("b", 0, 5, None);
        assert_eq!(
            find_active_or_latest(None, &[a.clone(), b.clone()])
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("b")
        );
        let c = rs("c", 2, 1, None);
        assert_eq!(
            find_active_or_latest(Some(&c), std::slice::from_ref(&a))
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("c")
        );
        assert!(find_active_or_latest(Some(&c), &[rs("d", 1, 0, None)]).is_none());
    }

    #[test]
    fn a_condition_keeps_its_transition_time_when_only_the_reason_changes() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let t1 = Timestamp::from_second(1_700_000_100).unwrap();
        let mut status = DeploymentStatus::default();
        set_condition(
            &mut status,
            new_condition("Progressing", "True", "A", "a", t0),
        );
        set_condition(
            &mut status,
            new_condition("Progressing", "True", "A", "changed", t1),
        );
        assert_eq!(
            get_condition(&status, "Progressing")
                .unwrap()
                .message
                .as_deref(),
            Some("a")
        );
        set_condition(
            &mut status,
            new_condition("Progressing", "True", "B", "b", t1),
        );
        let c = get_condition(&status, "Progressing").unwrap();
        assert_eq!(c.last_transition_time, Some(Time(t0)));
        assert_eq!(c.last_update_time, Some(Time(t1)));
    }

    #[test]
    fn progress_times_out_only_after_the_deadline() {
        let mut d = deployment(3, IntOrString::Int(1), IntOrString::Int(1));
        d.spec.opt_mut().unwrap().progress_deadline_seconds = Some(10);
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let mut status = DeploymentStatus::default();
        set_condition(
            &mut status,
            new_condition("Progressing", "True", reasons::RS_UPDATED, "x", t0),
        );
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        assert!(!deployment_timed_out(&d, &status, at(10)));
        assert!(deployment_timed_out(&d, &status, at(11)));
    }
}
