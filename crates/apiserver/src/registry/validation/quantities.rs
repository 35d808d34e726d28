//! Resource quantities of the built-in kinds (`100m`, `1Gi`): each one follows Kubernetes'
//! grammar ([`capstan_api::quantity`]), none is negative, and a container requests no more
//! than its limit, so the scheduler and the kubelet never meet an amount they cannot read.
//!
//! Pod specs (in Pods and every template) are checked by `pod_spec` through
//! [`validate_requirements`] and [`validate_resource_list`]; the other kinds' quantity fields
//! (ResourceQuota, LimitRange, PersistentVolumeClaim, PersistentVolume, Node, StatefulSet
//! claim templates) by [`validate_kind_quantities`], and on status writes by
//! [`validate_status_quantities`].

use std::collections::BTreeMap;

use capstan_api::{
    quantity::{parse_quantity, ParsedQuantity, QUANTITY_FORMAT_MESSAGE},
    FieldError, ResourceInfo,
};
use serde_json::{Map, Value};

/// A quantity as the client wrote it: a string, or a JSON number (Kubernetes takes both).
fn quantity_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Checks the `ResourceList` `list` at `field`: every value parses and is not negative. Returns
/// the parsed amounts with their text, by resource name. Missing or non-map lists are left to
/// decoding, which refuses them first.
pub(crate) fn validate_resource_list<'a>(
    list: Option<&'a Value>,
    field: &str,
    causes: &mut Vec<FieldError>,
) -> BTreeMap<&'a str, (ParsedQuantity, String)> {
    let mut parsed = BTreeMap::new();
    let Some(list) = list.and_then(Value::as_object) else {
        return parsed;
    };
    for (name, value) in list {
        if let Some(quantity) = validate_quantity(value, format!("{field}[{name}]"), causes) {
            parsed.insert(name.as_str(), quantity);
        }
    }
    parsed
}

/// Checks one quantity at `field`: it parses and is not negative. Returns it with its text;
/// `None` when it is invalid (pushed) or not a string or number (left to decoding).
pub(crate) fn validate_quantity(
    value: &Value,
    field: String,
    causes: &mut Vec<FieldError>,
) -> Option<(ParsedQuantity, String)> {
    let text = quantity_text(value)?;
    match parse_quantity(&text) {
        Err(_) => {
            causes.push(FieldError::invalid(
                field,
                text.as_str(),
                QUANTITY_FORMAT_MESSAGE,
            ));
            None
        }
        Ok(quantity) if quantity.is_negative() => {
            causes.push(FieldError::invalid(
                field,
                text.as_str(),
                "must be greater than or equal to 0",
            ));
            None
        }
        Ok(quantity) => Some((quantity, text)),
    }
}

/// Checks `resources` (a container's or a Pod's `ResourceRequirements`) at `field`: its
/// `limits` and `requests`, and that no request is above its limit.
pub(crate) fn validate_requirements(
    resources: Option<&Value>,
    field: &str,
    causes: &mut Vec<FieldError>,
) {
    let Some(resources) = resources.and_then(Value::as_object) else {
        return;
    };
    let limits_field = format!("{field}.limits");
    let limits = validate_resource_list(resources.get("limits"), &limits_field, causes);
    let requests_field = format!("{field}.requests");
    let requests = validate_resource_list(resources.get("requests"), &requests_field, causes);
    for (name, (request, request_text)) in &requests {
        if let Some((limit, limit_text)) = limits.get(name) {
            if request > limit {
                // Kubernetes names the whole `requests` map here, not the resource.
                causes.push(FieldError::invalid(
                    &requests_field,
                    request_text.as_str(),
                    format!("must be less than or equal to {name} limit of {limit_text}"),
                ));
            }
        }
    }
}

/// The quantity fields of the kinds without a pod spec, on creates and updates of the object.
pub(crate) fn validate_kind_quantities(
    resource: &ResourceInfo,
    object: &Value,
    causes: &mut Vec<FieldError>,
) {
    if !resource.group().is_empty() {
        if (resource.group(), resource.kind()) == ("apps", "StatefulSet") {
            let templates = object.pointer("/spec/volumeClaimTemplates");
            for (i, template) in templates
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let field = format!("spec.volumeClaimTemplates[{i}].spec.resources");
                validate_requirements(template.pointer("/spec/resources"), &field, causes);
            }
        }
        return;
    }
    match resource.kind() {
        "ResourceQuota" => {
            validate_resource_list(object.pointer("/spec/hard"), "spec.hard", causes);
        }
        "LimitRange" => {
            let limits = object.pointer("/spec/limits").and_then(Value::as_array);
            for (i, item) in limits.into_iter().flatten().enumerate() {
                for key in [
                    "max",
                    "min",
                    "default",
                    "defaultRequest",
                    "maxLimitRequestRatio",
                ] {
                    let field = format!("spec.limits[{i}].{key}");
                    validate_resource_list(item.get(key), &field, causes);
                }
            }
        }
        "PersistentVolumeClaim" => {
            validate_requirements(object.pointer("/spec/resources"), "spec.resources", causes);
        }
        "PersistentVolume" => {
            validate_resource_list(object.pointer("/spec/capacity"), "spec.capacity", causes);
        }
        "Node" => validate_status_quantities(resource, object, causes),
        _ => {}
    }
}

/// The quantity fields of `status` (Node capacity and allocatable, ResourceQuota usage, a
/// claim's capacity), on status writes and creates.
pub(crate) fn validate_status_quantities(
    resource: &ResourceInfo,
    object: &Value,
    causes: &mut Vec<FieldError>,
) {
    if !resource.group().is_empty() {
        return;
    }
    let lists: &[&str] = match resource.kind() {
        "Node" => &["capacity", "allocatable"],
        "ResourceQuota" => &["hard", "used"],
        "PersistentVolumeClaim" => &["capacity"],
        _ => return,
    };
    let empty = Map::new();
    let status = object
        .get("status")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for list in lists {
        validate_resource_list(status.get(*list), &format!("status.{list}"), causes);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn requirement_problems(resources: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate_requirements(Some(&resources), "resources", &mut causes);
        causes
            .iter()
            .map(|cause| format!("{}: {}", cause.field, cause.body()))
            .collect()
    }

    #[test]
    fn valid_quantities_pass() {
        let resources = json!({
            "requests": {"cpu": "100m", "memory": "1Gi", "example.com/gpu": 1},
            "limits": {"cpu": "0.5", "memory": "1e10"},
        });
        assert_eq!(requirement_problems(resources), Vec::<String>::new());
    }

    #[test]
    fn a_quantity_outside_the_grammar_is_invalid() {
        assert_eq!(
            requirement_problems(json!({"limits": {"cpu": "1GB"}})),
            vec![
                "resources.limits[cpu]: Invalid value: \"1GB\": quantities must match the \
                  regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            ]
        );
    }

    #[test]
    fn negative_amounts_are_invalid() {
        assert_eq!(
            requirement_problems(json!({"requests": {"memory": "-1Mi"}})),
            vec!["resources.requests[memory]: Invalid value: \"-1Mi\": must be greater than or equal to 0"]
        );
    }

    #[test]
    fn a_request_above_its_limit_is_invalid() {
        assert_eq!(
            requirement_problems(json!({"requests": {"cpu": "1500m"}, "limits": {"cpu": "1"}})),
            vec!["resources.requests: Invalid value: \"1500m\": must be less than or equal to cpu limit of 1"]
        );
        assert!(requirement_problems(
            json!({"requests": {"cpu": "1000m"}, "limits": {"cpu": "1"}})
        )
        .is_empty());
    }

    #[test]
    fn node_status_quantities_are_checked() {
        let nodes = ResourceInfo::builtin("", "Node").unwrap();
        let node = json!({"status": {"capacity": {"cpu": "4", "memory": "abc"}}});
        let mut causes = Vec::new();
        validate_status_quantities(&nodes, &node, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "status.capacity[memory]");
    }
}
