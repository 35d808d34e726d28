//! What the `apps/v1` workloads (Deployment, ReplicaSet, DaemonSet, StatefulSet) share: counts,
//! a required selector matching the template, and a selector that never changes.

use capstan_api::{
    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector, kube_core::Selector,
    label_selector_from, selector, FieldError,
};
use serde_json::{Map, Value};

use super::{
    fields::non_negative,
    metadata::validate_label_map,
    pod_spec::{validate_template, PodContext},
};
use crate::registry::object;

/// Whether a workload's spec counts its pods in `replicas`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replicas {
    /// `spec.replicas` says how many pods run.
    Counted,
    /// One pod per node (DaemonSets): no `spec.replicas`.
    PerNode,
}

/// Checks what the `apps/v1` workloads share: counts, the selector and that it matches the
/// template's labels, and the template, whose pods must restart `Always`. `kind` names the
/// kind in messages.
pub(crate) fn validate_workload(
    kind: &str,
    replicas: Replicas,
    spec: &Map<String, Value>,
    causes: &mut Vec<FieldError>,
) {
    if replicas == Replicas::Counted {
        non_negative(spec, "replicas", "spec", causes);
    }
    non_negative(spec, "minReadySeconds", "spec", causes);
    non_negative(spec, "revisionHistoryLimit", "spec", causes);
    let selector = validate_selector(kind, spec, causes);
    match spec.get("template").and_then(Value::as_object) {
        Some(template) => {
            if let Some(selector) = selector {
                check_selector_matches_template(&selector, template, causes);
            }
            validate_template(
                template,
                "spec.template",
                PodContext::AlwaysRestarting,
                causes,
            );
        }
        None => causes.push(FieldError::required("spec.template", "")),
    }
}

/// Checks `spec.selector` (required, non-empty, well-formed) and returns it when usable.
pub(crate) fn validate_selector(
    kind: &str,
    spec: &Map<String, Value>,
    causes: &mut Vec<FieldError>,
) -> Option<Selector> {
    let Some(raw) = spec.get("selector").filter(|s| !s.is_null()) else {
        causes.push(FieldError::required("spec.selector", ""));
        return None;
    };
    let parsed: LabelSelector = match serde_json::from_value(raw.clone()) {
        Ok(parsed) => parsed,
        Err(error) => {
            causes.push(FieldError::invalid(
                "spec.selector",
                raw.clone(),
                error.to_string(),
            ));
            return None;
        }
    };
    let empty = parsed.match_labels.as_ref().is_none_or(|l| l.is_empty())
        && parsed
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty());
    if empty {
        causes.push(FieldError::invalid(
            "spec.selector",
            raw.clone(),
            format!(
                "empty selector is invalid for {}",
                kind.to_ascii_lowercase()
            ),
        ));
        return None;
    }
    validate_label_map(raw.get("matchLabels"), "spec.selector.matchLabels", causes);
    match label_selector_from(&parsed) {
        Ok(selector) => Some(selector),
        Err(error) => {
            causes.push(FieldError::invalid(
                "spec.selector",
                raw.clone(),
                error.to_string(),
            ));
            None
        }
    }
}

pub(crate) fn check_selector_matches_template(
    selector: &Selector,
    template: &Map<String, Value>,
    causes: &mut Vec<FieldError>,
) {
    let labels_value = template
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .cloned()
        .unwrap_or(Value::Null);
    let labels = object::labels(&serde_json::json!({ "metadata": { "labels": labels_value } }));
    if !selector::matches(selector, Some(&labels)) {
        causes.push(FieldError::invalid(
            "spec.template.metadata.labels",
            labels_value,
            "`selector` does not match template `labels`",
        ));
    }
}

/// On an update, `spec.selector` may not change (the `apps/v1` workloads).
pub(crate) fn check_selector_immutable(
    spec: &Map<String, Value>,
    old: Option<&Value>,
    causes: &mut Vec<FieldError>,
) {
    let old_spec = old.and_then(|old| old.get("spec"));
    if let Some(old_selector) = old_spec.and_then(|s| s.get("selector")) {
        if spec.get("selector") != Some(old_selector) {
            let value = spec.get("selector").cloned().unwrap_or(Value::Null);
            causes.push(FieldError::invalid(
                "spec.selector",
                value,
                "field is immutable",
            ));
        }
    }
}
