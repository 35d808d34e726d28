//! DaemonSets: a `RollingUpdate` update strategy and history by default; the workload checks
//! (no replica count) and a known update strategy.

use capstan_api::FieldError;
use serde_json::{Map, Value};

use super::{spec_of, KindStrategy};
use crate::registry::{
    defaults::{default_template, ensure_map, set_default, RestartPolicy},
    object,
    validation::{check_selector_immutable, validate_workload, Replicas},
};

/// The rules of `apps/v1` DaemonSets.
pub(crate) struct DaemonSetStrategy;

impl KindStrategy for DaemonSetStrategy {
    fn apply_defaults(&self, daemon_set: &mut Value) {
        default_daemon_set(daemon_set);
    }

    fn validate(&self, daemon_set: &Value, old: Option<&Value>, causes: &mut Vec<FieldError>) {
        let spec = spec_of(daemon_set);
        validate_workload("DaemonSet", Replicas::PerNode, spec, causes);
        validate_update_strategy(spec, causes);
        check_selector_immutable(spec, old, causes);
    }
}

fn default_daemon_set(daemon_set: &mut Value) {
    let spec = object::at_mut(daemon_set, "spec");
    set_default(spec, "revisionHistoryLimit", 10);
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
        set_default(rolling, "maxUnavailable", 1);
        set_default(rolling, "maxSurge", 0);
    }
    default_template(daemon_set, "spec.template", RestartPolicy::Always);
}

fn validate_update_strategy(spec: &Map<String, Value>, causes: &mut Vec<FieldError>) {
    let strategy = spec
        .get("updateStrategy")
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str);
    if let Some(strategy) = strategy {
        if !["RollingUpdate", "OnDelete"].contains(&strategy) {
            causes.push(FieldError::not_supported(
                "spec.updateStrategy.type",
                strategy,
                ["OnDelete", "RollingUpdate"],
            ));
        }
    }
}
