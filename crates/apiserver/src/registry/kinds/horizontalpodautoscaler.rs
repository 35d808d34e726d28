//! HorizontalPodAutoscalers: one storage, two group versions.
//!
//! `autoscaling/v2` and `autoscaling/v1` HorizontalPodAutoscalers are the same objects under
//! `/registry/horizontalpodautoscalers`, stored in `v2`'s shape. As kube-apiserver converts
//! between them, a `v1` read gets `v1`'s shape and a `v1` write is stored in `v2`'s:
//!
//! | autoscaling/v1 | autoscaling/v2 |
//! |---|---|
//! | `spec.targetCPUUtilizationPercentage` | a `Resource` `cpu` metric with a `Utilization` target |
//! | `status.currentCPUUtilizationPercentage` | a `Resource` `cpu` current metric's `averageUtilization` |
//!
//! What `v1` cannot spell is kept, as JSON, in the annotations Kubernetes uses, so that a `v2`
//! object read and written back through `v1` loses nothing: the other metrics
//! (`autoscaling.alpha.kubernetes.io/metrics`), `spec.behavior`
//! (`autoscaling.alpha.kubernetes.io/behavior`), `status.conditions`
//! (`autoscaling.alpha.kubernetes.io/conditions`) and the other current metrics
//! (`autoscaling.alpha.kubernetes.io/current-metrics`). The annotations hold the `v2`
//! entries as they are; they never reach storage.

use std::borrow::Cow;

use capstan_api::FieldError;
use serde_json::{json, Map, Value};

use super::KindStrategy;

/// The annotation keeping the metrics `v1` cannot spell.
pub(crate) const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// The annotation keeping `spec.behavior`.
pub(crate) const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
/// The annotation keeping `status.conditions`.
pub(crate) const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// The annotation keeping the current metrics `v1` cannot spell.
pub(crate) const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";

const V1: &str = "autoscaling/v1";
const V2: &str = "autoscaling/v2";

/// The `autoscaling/v2` rules (the storage shape).
pub(super) struct HorizontalPodAutoscalerStrategy;

/// The `autoscaling/v1` shape over `autoscaling/v2` storage, with the same rules.
pub(super) struct HorizontalPodAutoscalerV1Strategy;

impl KindStrategy for HorizontalPodAutoscalerStrategy {
    fn apply_defaults(&self, object: &mut Value) {
        let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        default_min_replicas(spec);
        if spec.get("metrics").is_none_or(Value::is_null) {
            spec.insert("metrics".into(), json!([cpu_metric(80)]));
        }
    }

    fn validate(&self, object: &Value, _old: Option<&Value>, causes: &mut Vec<FieldError>) {
        validate_common(object, causes);
    }
}

impl KindStrategy for HorizontalPodAutoscalerV1Strategy {
    fn apply_defaults(&self, object: &mut Value) {
        if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
            default_min_replicas(spec);
        }
    }

    fn validate(&self, object: &Value, _old: Option<&Value>, causes: &mut Vec<FieldError>) {
        validate_common(object, causes);
        if let Some(target) = object
            .pointer("/spec/targetCPUUtilizationPercentage")
            .and_then(Value::as_i64)
        {
            if target < 1 {
                causes.push(FieldError::invalid(
                    "spec.targetCPUUtilizationPercentage",
                    target,
                    "must be greater than or equal to 1",
                ));
            }
        }
    }

    fn to_served(&self, object: &mut Value) {
        if object.get("apiVersion").and_then(Value::as_str) == Some(V1) {
            return;
        }
        to_v1(object);
    }

    fn to_stored<'a>(&self, object: &'a Value) -> Cow<'a, Value> {
        let mut stored = object.clone();
        to_v2(&mut stored);
        Cow::Owned(stored)
    }
}

fn default_min_replicas(spec: &mut Map<String, Value>) {
    if spec.get("minReplicas").is_none_or(Value::is_null) {
        spec.insert("minReplicas".into(), json!(1));
    }
}

/// The checks both versions share: the scale target, and the replica bounds.
fn validate_common(object: &Value, causes: &mut Vec<FieldError>) {
    let spec = super::spec_of(object);
    let target = spec.get("scaleTargetRef");
    for field in ["kind", "name"] {
        let value = target.and_then(|t| t.get(field)).and_then(Value::as_str);
        if value.is_none_or(str::is_empty) {
            causes.push(FieldError::required(
                format!("spec.scaleTargetRef.{field}"),
                "",
            ));
        }
    }
    let min = spec.get("minReplicas").and_then(Value::as_i64);
    if let Some(min) = min {
        if min < 1 {
            causes.push(FieldError::invalid(
                "spec.minReplicas",
                min,
                "must be greater than or equal to 1",
            ));
        }
    }
    let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
    if max < 1 {
        causes.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to 1",
        ));
    } else if min.is_some_and(|min| max < min) {
        causes.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
}

/// A `v2` `Resource` `cpu` metric with a `Utilization` target of `percent`.
fn cpu_metric(percent: i64) -> Value {
    json!({
        "type": "Resource",
        "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": percent } },
    })
}

/// The utilization target of a `v2` `Resource` `cpu` metric, if `metric` is one.
fn cpu_target(metric: &Value) -> Option<i64> {
    let resource = metric.get("resource")?;
    let is_cpu = metric.get("type").and_then(Value::as_str) == Some("Resource")
        && resource.get("name").and_then(Value::as_str) == Some("cpu")
        && resource.pointer("/target/type").and_then(Value::as_str) == Some("Utilization");
    is_cpu
        .then(|| resource.pointer("/target/averageUtilization")?.as_i64())
        .flatten()
}

/// The current utilization of a `v2` `Resource` `cpu` current metric, if `metric` is one.
fn cpu_current(metric: &Value) -> Option<i64> {
    let resource = metric.get("resource")?;
    let is_cpu = metric.get("type").and_then(Value::as_str) == Some("Resource")
        && resource.get("name").and_then(Value::as_str) == Some("cpu");
    is_cpu
        .then(|| resource.pointer("/current/averageUtilization")?.as_i64())
        .flatten()
}

/// Moves `from` (a JSON value) into the annotation `key`, when it is present and not empty.
fn annotate(root: &mut Map<String, Value>, key: &str, from: Option<Value>) {
    let keep = match &from {
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    };
    if !keep {
        return;
    }
    let metadata = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    if let (Some(annotations), Some(value)) = (annotations.as_object_mut(), from) {
        annotations.insert(key.into(), Value::String(value.to_string()));
    }
}

/// Removes the annotation `key` and reads its JSON; `None` when absent or not JSON.
fn take_annotation(root: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let metadata = root.get_mut("metadata")?.as_object_mut()?;
    let annotations = metadata.get_mut("annotations")?.as_object_mut()?;
    let text = annotations.remove(key)?;
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
    serde_json::from_str(text.as_str()?).ok()
}

/// Converts a `v2` object to `v1`'s shape, in place.
fn to_v1(object: &mut Value) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    root.insert("apiVersion".into(), Value::String(V1.into()));
    let mut spec = match root.remove("spec") {
        Some(Value::Object(spec)) => spec,
        _ => Map::new(),
    };
    let metrics = match spec.remove("metrics") {
        Some(Value::Array(metrics)) => metrics,
        _ => Vec::new(),
    };
    let mut target = None;
    let mut others = Vec::new();
    for metric in metrics {
        match cpu_target(&metric) {
            Some(percent) if target.is_none() => target = Some(percent),
            _ => others.push(metric),
        }
    }
    if let Some(percent) = target {
        spec.insert("targetCPUUtilizationPercentage".into(), json!(percent));
    }
    let behavior = spec.remove("behavior");
    root.insert("spec".into(), Value::Object(spec));
    annotate(root, METRICS, Some(Value::Array(others)));
    annotate(root, BEHAVIOR, behavior);

    let Some(Value::Object(mut status)) = root.remove("status") else {
        return;
    };
    let current = match status.remove("currentMetrics") {
        Some(Value::Array(current)) => current,
        _ => Vec::new(),
    };
    let mut utilization = None;
    let mut others = Vec::new();
    for metric in current {
        match cpu_current(&metric) {
            Some(percent) if utilization.is_none() => utilization = Some(percent),
            _ => others.push(metric),
        }
    }
    if let Some(percent) = utilization {
        status.insert("currentCPUUtilizationPercentage".into(), json!(percent));
    }
    let conditions = status.remove("conditions");
    root.insert("status".into(), Value::Object(status));
    annotate(root, CURRENT_METRICS, Some(Value::Array(others)));
    annotate(root, CONDITIONS, conditions);
}

/// Converts a `v1` object to `v2`'s shape, in place: the annotations' metrics first, then
/// the cpu target, as Kubernetes orders them.
fn to_v2(object: &mut Value) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    root.insert("apiVersion".into(), Value::String(V2.into()));
    let mut metrics = match take_annotation(root, METRICS) {
        Some(Value::Array(metrics)) => metrics,
        _ => Vec::new(),
    };
    let behavior = take_annotation(root, BEHAVIOR);
    let mut current = match take_annotation(root, CURRENT_METRICS) {
        Some(Value::Array(current)) => current,
        _ => Vec::new(),
    };
    let conditions = take_annotation(root, CONDITIONS);
    let mut spec = match root.remove("spec") {
        Some(Value::Object(spec)) => spec,
        _ => Map::new(),
    };
    if let Some(percent) = spec
        .remove("targetCPUUtilizationPercentage")
        .and_then(|p| p.as_i64())
    {
        metrics.push(cpu_metric(percent));
    }
    if !metrics.is_empty() {
        spec.insert("metrics".into(), Value::Array(metrics));
    }
    if let Some(behavior) = behavior {
        spec.insert("behavior".into(), behavior);
    }
    root.insert("spec".into(), Value::Object(spec));

    let status = match root.remove("status") {
        Some(Value::Object(status)) => Some(status),
        _ => None,
    };
    let has_status = status.is_some() || !current.is_empty() || conditions.is_some();
    let mut status = status.unwrap_or_default();
    if let Some(percent) = status
        .remove("currentCPUUtilizationPercentage")
        .and_then(|p| p.as_i64())
    {
        current.push(json!({
            "type": "Resource",
            "resource": { "name": "cpu", "current": { "averageUtilization": percent } },
        }));
    }
    if !current.is_empty() {
        status.insert("currentMetrics".into(), Value::Array(current));
    }
    if let Some(conditions) = conditions {
        status.insert("conditions".into(), conditions);
    }
    if has_status {
        root.insert("status".into(), Value::Object(status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_with_extras() -> Value {
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": "web", "namespace": "default", "annotations": { "team": "a" } },
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
                "minReplicas": 2,
                "maxReplicas": 5,
                "metrics": [
                    { "type": "Resource", "resource": { "name": "memory",
                        "target": { "type": "AverageValue", "averageValue": "100Mi" } } },
                    cpu_metric(80),
                ],
                "behavior": { "scaleDown": { "stabilizationWindowSeconds": 60 } },
            },
            "status": {
                "currentReplicas": 2,
                "desiredReplicas": 2,
                "currentMetrics": [
                    { "type": "Resource", "resource": { "name": "memory",
                        "current": { "averageValue": "50Mi" } } },
                    { "type": "Resource", "resource": { "name": "cpu",
                        "current": { "averageUtilization": 40 } } },
                ],
                "conditions": [{ "type": "AbleToScale", "status": "True" }],
            },
        })
    }

    #[test]
    fn a_v2_object_is_served_as_v1_with_the_cpu_target_and_the_rest_in_annotations() {
        let mut served = v2_with_extras();
        HorizontalPodAutoscalerV1Strategy.to_served(&mut served);
        assert_eq!(served["apiVersion"], "autoscaling/v1");
        assert_eq!(served["spec"]["targetCPUUtilizationPercentage"], 80);
        assert_eq!(served["status"]["currentCPUUtilizationPercentage"], 40);
        assert!(served["spec"].get("metrics").is_none());
        assert!(served["spec"].get("behavior").is_none());
        let annotations = &served["metadata"]["annotations"];
        assert_eq!(annotations["team"], "a");
        for key in [METRICS, BEHAVIOR, CONDITIONS, CURRENT_METRICS] {
            assert!(annotations[key].is_string(), "{key} missing");
        }
    }

    #[test]
    fn v2_read_as_v1_and_written_back_loses_nothing_but_metric_order() {
        let original = v2_with_extras();
        let mut served = original.clone();
        HorizontalPodAutoscalerV1Strategy.to_served(&mut served);
        let back = HorizontalPodAutoscalerV1Strategy
            .to_stored(&served)
            .into_owned();
        assert_eq!(back["apiVersion"], "autoscaling/v2");
        assert_eq!(back["metadata"], original["metadata"]);
        assert_eq!(back["spec"], original["spec"]);
        assert_eq!(back["status"], original["status"]);
    }

    #[test]
    fn serving_v1_twice_changes_nothing() {
        let mut once = v2_with_extras();
        HorizontalPodAutoscalerV1Strategy.to_served(&mut once);
        let mut twice = once.clone();
        HorizontalPodAutoscalerV1Strategy.to_served(&mut twice);
        assert_eq!(once, twice);
    }

    #[test]
    fn a_v1_cpu_target_is_stored_as_a_v2_resource_metric() {
        let v1 = json!({
            "apiVersion": "autoscaling/v1",
            "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": "web" },
            "spec": {
                "scaleTargetRef": { "kind": "Deployment", "name": "web" },
                "maxReplicas": 5,
                "targetCPUUtilizationPercentage": 70,
            },
        });
        let stored = HorizontalPodAutoscalerV1Strategy
            .to_stored(&v1)
            .into_owned();
        assert_eq!(stored["spec"]["metrics"], json!([cpu_metric(70)]));
        assert!(stored.get("status").is_none());
        assert!(stored["metadata"].get("annotations").is_none());
    }

    #[test]
    fn replica_bounds_and_the_target_are_validated() {
        let object = json!({ "spec": { "minReplicas": 3, "maxReplicas": 2 } });
        let mut causes = Vec::new();
        HorizontalPodAutoscalerStrategy.validate(&object, None, &mut causes);
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.scaleTargetRef.kind",
                "spec.scaleTargetRef.name",
                "spec.maxReplicas"
            ]
        );
    }
}
