//! Deployments: replicas, a `RollingUpdate` strategy of 25% surge and unavailability, history
//! and progress deadline by default; the workload checks and a valid strategy.

use capstan_api::FieldError;
use serde_json::{Map, Value};

use super::{spec_of, KindStrategy};
use crate::registry::{
    defaults::{default_template, ensure_map, set_default, RestartPolicy},
    object,
    validation::{amount, check_selector_immutable, is_zero, validate_workload, Amount, Replicas},
};

/// The rules of `apps/v1` Deployments.
pub(crate) struct DeploymentStrategy;

impl KindStrategy for DeploymentStrategy {
    fn apply_defaults(&self, deployment: &mut Value) {
        default_deployment(deployment);
    }

    fn validate(&self, deployment: &Value, old: Option<&Value>, causes: &mut Vec<FieldError>) {
        let spec = spec_of(deployment);
        validate_workload("Deployment", Replicas::Counted, spec, causes);
        validate_deployment_strategy(spec, causes);
        check_selector_immutable(spec, old, causes);
    }
}

fn default_deployment(deployment: &mut Value) {
    let spec = object::at_mut(deployment, "spec");
    set_default(spec, "replicas", 1);
    set_default(spec, "revisionHistoryLimit", 10);
    set_default(spec, "progressDeadlineSeconds", 600);
    let strategy = ensure_map(
        spec.entry("strategy")
            .or_insert_with(|| Value::Object(Map::new())),
    );
    set_default(strategy, "type", "RollingUpdate");
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let rolling = ensure_map(
            strategy
                .entry("rollingUpdate")
                .or_insert_with(|| Value::Object(Map::new())),
        );
        set_default(rolling, "maxUnavailable", "25%");
        set_default(rolling, "maxSurge", "25%");
    }
    default_template(deployment, "spec.template", RestartPolicy::Always);
}

fn validate_deployment_strategy(spec: &Map<String, Value>, causes: &mut Vec<FieldError>) {
    if let (Some(deadline), Some(min_ready)) = (
        spec.get("progressDeadlineSeconds").and_then(Value::as_i64),
        spec.get("minReadySeconds").and_then(Value::as_i64),
    ) {
        if deadline <= min_ready {
            causes.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    let Some(strategy) = spec.get("strategy").and_then(Value::as_object) else {
        return;
    };
    let strategy_type = strategy.get("type").and_then(Value::as_str);
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    match strategy_type {
        Some("Recreate") => {
            if rolling.is_some() {
                causes.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        Some("RollingUpdate") | None => {
            let Some(rolling) = rolling.and_then(Value::as_object) else {
                return;
            };
            let surge_field = "spec.strategy.rollingUpdate.maxSurge";
            let unavailable_field = "spec.strategy.rollingUpdate.maxUnavailable";
            let surge = rolling
                .get("maxSurge")
                .filter(|v| !v.is_null())
                .and_then(|v| amount(v, surge_field, causes));
            let unavailable = rolling
                .get("maxUnavailable")
                .filter(|v| !v.is_null())
                .and_then(|v| amount(v, unavailable_field, causes));
            if let Some(Amount::Percent(percent)) = unavailable {
                if percent > 100 {
                    causes.push(FieldError::invalid(
                        unavailable_field,
                        format!("{percent}%"),
                        "must not be greater than 100%",
                    ));
                }
            }
            if is_zero(&surge) && is_zero(&unavailable) {
                causes.push(FieldError::invalid(
                    unavailable_field,
                    rolling
                        .get("maxUnavailable")
                        .cloned()
                        .unwrap_or(Value::Null),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
        Some(other) => causes.push(FieldError::not_supported(
            "spec.strategy.type",
            other,
            ["Recreate", "RollingUpdate"],
        )),
    }
}
