//! StatefulSets: replicas, `OrderedReady` pod management, a `RollingUpdate` strategy, history
//! and PVC retention by default; the workload checks and a known pod management policy.

use capstan_api::FieldError;
use serde_json::{json, Map, Value};

use super::{spec_of, KindStrategy};
use crate::registry::{
    defaults::{default_template, ensure_map, set_default, RestartPolicy},
    object,
    validation::{check_selector_immutable, validate_workload, Replicas},
};

/// The rules of `apps/v1` StatefulSets.
pub(crate) struct StatefulSetStrategy;

impl KindStrategy for StatefulSetStrategy {
    fn apply_defaults(&self, stateful_set: &mut Value) {
        default_stateful_set(stateful_set);
    }

    fn validate(&self, stateful_set: &Value, old: Option<&Value>, causes: &mut Vec<FieldError>) {
        let spec = spec_of(stateful_set);
        validate_workload("StatefulSet", Replicas::Counted, spec, causes);
        validate_pod_management_policy(spec, causes);
        check_selector_immutable(spec, old, causes);
    }
}

fn default_stateful_set(stateful_set: &mut Value) {
    let spec = object::at_mut(stateful_set, "spec");
    set_default(spec, "replicas", 1);
    set_default(spec, "podManagementPolicy", "OrderedReady");
    set_default(spec, "revisionHistoryLimit", 10);
    set_default(
        spec,
        "persistentVolumeClaimRetentionPolicy",
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
    let strategy = ensure_map(
        spec.entry("updateStrategy")
            .or_insert_with(|| Value::Object(Map::new())),
    );
    set_default(strategy, "type", "RollingUpdate");
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let rolling = ensure_map(
            strategy
                .entry("rollingUpdate")
                .or_insert_with(|| Value::Object(Map::new())),
        );
        set_default(rolling, "partition", 0);
    }
    default_template(stateful_set, "spec.template", RestartPolicy::Always);
}

fn validate_pod_management_policy(spec: &Map<String, Value>, causes: &mut Vec<FieldError>) {
    if let Some(policy) = spec.get("podManagementPolicy").and_then(Value::as_str) {
        if !["OrderedReady", "Parallel"].contains(&policy) {
            causes.push(FieldError::not_supported(
                "spec.podManagementPolicy",
                policy,
                ["OrderedReady", "Parallel"],
            ));
        }
    }
}
