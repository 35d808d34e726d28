//! The metadata every kind is checked for: name, namespace, labels, annotations, finalizers
//! and owner references.

use capstan_api::{
    selector::{validate_key, validate_value},
    FieldError, ResourceInfo,
};
use serde_json::Value;

use super::names::{check_dns, NameRule};
use crate::registry::object;

const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Checks the metadata every kind has: the name (following `name_rule`), the namespace, labels,
/// annotations, finalizers and owner references.
pub(crate) fn validate_metadata(
    resource: &ResourceInfo,
    name_rule: NameRule,
    object: &Value,
    causes: &mut Vec<FieldError>,
) {
    let Some(metadata) = object::metadata(object) else {
        causes.push(FieldError::required("metadata", ""));
        return;
    };
    match metadata.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => check_dns("metadata.name", name, name_rule, causes),
        _ => causes.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
    }
    if resource.namespaced() {
        if let Some(namespace) = metadata.get("namespace").and_then(Value::as_str) {
            check_dns(
                "metadata.namespace",
                namespace,
                NameRule::Dns1123Label,
                causes,
            );
        }
    }
    validate_label_map(metadata.get("labels"), "metadata.labels", causes);
    if let Some(annotations) = metadata.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (key, value) in annotations {
            if let Err(error) = validate_key(key) {
                causes.push(FieldError::invalid(
                    "metadata.annotations",
                    key.as_str(),
                    error.to_string(),
                ));
            }
            total += key.len() + value.as_str().map_or(0, str::len);
        }
        if total > ANNOTATIONS_MAX_BYTES {
            causes.push(FieldError::too_long(
                "metadata.annotations",
                ANNOTATIONS_MAX_BYTES,
            ));
        }
    }
    let finalizers = object::finalizers(object);
    for (i, finalizer) in finalizers.iter().enumerate() {
        if let Err(error) = validate_key(finalizer) {
            causes.push(FieldError::invalid(
                format!("metadata.finalizers[{i}]"),
                finalizer.as_str(),
                error.to_string(),
            ));
        }
    }
    if finalizers.iter().any(|f| f == "orphan")
        && finalizers.iter().any(|f| f == "foregroundDeletion")
    {
        causes.push(FieldError::invalid(
            "metadata.finalizers",
            Value::from(finalizers.clone()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    validate_owner_references(metadata.get("ownerReferences"), causes);
}

/// Label keys and values of a `map[string]string` field (`metadata.labels`, a selector's
/// `matchLabels`, a Service's `selector`).
pub(crate) fn validate_label_map(
    labels: Option<&Value>,
    field: &str,
    causes: &mut Vec<FieldError>,
) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (key, value) in labels {
        if let Err(error) = validate_key(key) {
            causes.push(FieldError::invalid(field, key.as_str(), error.to_string()));
        }
        match value.as_str() {
            Some(value) => {
                if let Err(error) = validate_value(value) {
                    causes.push(FieldError::invalid(field, value, error.to_string()));
                }
            }
            None => causes.push(FieldError::type_invalid(
                field,
                value.clone(),
                "label values must be strings",
            )),
        }
    }
}

fn validate_owner_references(references: Option<&Value>, causes: &mut Vec<FieldError>) {
    let Some(references) = references.and_then(Value::as_array) else {
        return;
    };
    let mut controllers = 0;
    for (i, reference) in references.iter().enumerate() {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if reference
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(FieldError::required(
                    format!("metadata.ownerReferences[{i}].{field}"),
                    "",
                ));
            }
        }
        if reference.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        causes.push(FieldError::invalid(
            "metadata.ownerReferences",
            references.clone(),
            "Only one reference can have Controller set to true",
        ));
    }
}
