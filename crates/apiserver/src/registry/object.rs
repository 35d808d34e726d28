//! Reading and writing the parts of an object's JSON the registry cares about.
//!
//! Objects travel through the registry as `serde_json::Value`s; these helpers keep the
//! `metadata` plumbing out of the verbs.

use std::collections::BTreeMap;

use capstan_api::{kube_core::DynamicObject, Error, ResourceInfo, Result};
use serde_json::{Map, Value};

/// Converts a client's object into JSON. Fails with [`Error::BadRequest`] when the object
/// cannot be a Kubernetes object (its body is not a JSON object).
pub(crate) fn from_dynamic(resource: &ResourceInfo, object: DynamicObject) -> Result<Value> {
    let value = serde_json::to_value(object).map_err(|e| {
        Error::bad_request(format!(
            "the body of the {} object is not a JSON object: {e}",
            resource.qualified_kind()
        ))
    })?;
    if !value.is_object() {
        return Err(Error::bad_request(format!(
            "the body of the {} object is not a JSON object",
            resource.qualified_kind()
        )));
    }
    Ok(value)
}

/// Converts a stored object back into the [`DynamicObject`] the `Client` trait returns.
pub(crate) fn to_dynamic(object: Value) -> Result<DynamicObject> {
    serde_json::from_value(object)
        .map_err(|e| Error::internal(format!("stored object is not a valid object: {e}")))
}

/// Checks `apiVersion` and `kind` against `resource`, filling in the missing ones, and that
/// `metadata` (when present) is an object.
///
/// Errors: [`Error::BadRequest`] for another group/version or kind, or a non-object body or
/// `metadata`.
pub(crate) fn check_types(resource: &ResourceInfo, object: &mut Value) -> Result<()> {
    let root = object
        .as_object_mut()
        .ok_or_else(|| Error::bad_request("the object is not a JSON object"))?;
    let expected_version = resource.api_version();
    match root.get("apiVersion") {
        None | Some(Value::Null) => {
            root.insert("apiVersion".into(), Value::String(expected_version));
        }
        Some(Value::String(found)) if *found == expected_version => {}
        Some(found) => {
            return Err(Error::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({expected_version})",
                render(found)
            )))
        }
    }
    match root.get("kind") {
        None | Some(Value::Null) => {
            root.insert("kind".into(), Value::String(resource.kind().to_string()));
        }
        Some(Value::String(found)) if found == resource.kind() => {}
        Some(found) => {
            return Err(Error::bad_request(format!(
                "the kind in the data ({}) does not match the expected kind ({})",
                render(found),
                resource.kind()
            )))
        }
    }
    match root.get("metadata") {
        None | Some(Value::Null) => {
            root.insert("metadata".into(), Value::Object(Map::new()));
        }
        Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(Error::bad_field(
                "metadata",
                "must be an object with name, namespace, labels, ...",
            ))
        }
    }
    Ok(())
}

fn render(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sets `apiVersion` and `kind` from `resource`, as on every object the registry returns.
pub(crate) fn set_types(resource: &ResourceInfo, object: &mut Value) {
    if let Some(root) = object.as_object_mut() {
        root.insert("apiVersion".into(), Value::String(resource.api_version()));
        root.insert("kind".into(), Value::String(resource.kind().to_string()));
    }
}

/// The `metadata` map, if the object has one.
pub(crate) fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

/// The `metadata` map, created when missing (or replaced when not an object).
pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let root = ensure_object(object);
    let metadata = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    ensure_object(metadata)
}

/// Makes `value` an object (replacing anything else) and returns its map.
pub(crate) fn ensure_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// A string field of `metadata`; `None` when missing, null, empty or not a string.
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    metadata(object)?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Sets (or, with `None`, removes) a field of `metadata`.
pub(crate) fn set_meta(object: &mut Value, field: &str, value: Option<Value>) {
    let metadata = metadata_mut(object);
    match value {
        Some(value) => {
            metadata.insert(field.to_string(), value);
        }
        None => {
            metadata.remove(field);
        }
    }
}

/// `metadata.name`, if set.
pub(crate) fn name(object: &Value) -> Option<&str> {
    meta_str(object, "name")
}

/// `metadata.generation`, if the object tracks one.
pub(crate) fn generation(object: &Value) -> Option<i64> {
    metadata(object)?.get("generation")?.as_i64()
}

/// `metadata.finalizers`, in order.
pub(crate) fn finalizers(object: &Value) -> Vec<String> {
    metadata(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Replaces `metadata.finalizers`; an empty list removes the field, as Kubernetes omits it.
pub(crate) fn set_finalizers(object: &mut Value, finalizers: &[String]) {
    let value = (!finalizers.is_empty()).then(|| {
        Value::Array(
            finalizers
                .iter()
                .map(|f| Value::String(f.clone()))
                .collect(),
        )
    });
    set_meta(object, "finalizers", value);
}

/// Whether the object is being deleted (has a `deletionTimestamp`).
pub(crate) fn is_deleting(object: &Value) -> bool {
    meta_str(object, "deletionTimestamp").is_some()
}

/// Whether a deletion under way may complete: no grace period is left to wait out
/// (`deletionGracePeriodSeconds` absent or 0).
pub(crate) fn grace_is_over(object: &Value) -> bool {
    metadata(object)
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .is_none_or(|grace| grace <= 0)
}

/// `metadata.labels` as a map for selector matching; non-string values are skipped.
pub(crate) fn labels(object: &Value) -> BTreeMap<String, String> {
    metadata(object)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The value at a dotted path (`spec.template.spec`), if every step exists.
pub(crate) fn at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(object, |value, step| value.get(step))
}

/// The object at a dotted path, created (as empty objects) along the way.
pub(crate) fn at_mut<'a>(object: &'a mut Value, path: &str) -> &'a mut Map<String, Value> {
    path.split('.').fold(ensure_object(object), |map, step| {
        ensure_object(
            map.entry(step.to_string())
                .or_insert_with(|| Value::Object(Map::new())),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> ResourceInfo {
        ResourceInfo::builtin("apps", "Deployment").unwrap()
    }

    #[test]
    fn missing_types_are_filled_in_and_wrong_ones_rejected() {
        let mut object = json!({"metadata": {"name": "web"}});
        check_types(&deployment(), &mut object).unwrap();
        assert_eq!(object["apiVersion"], "apps/v1");
        assert_eq!(object["kind"], "Deployment");

        let mut wrong_version = json!({"apiVersion": "apps/v1beta1", "metadata": {}});
        let error = check_types(&deployment(), &mut wrong_version).unwrap_err();
        assert_eq!(error.code(), 400);
        assert!(error.to_string().contains("apps/v1beta1"), "{error}");

        let mut wrong_kind = json!({"kind": "Pod"});
        assert!(check_types(&deployment(), &mut wrong_kind).is_err());

        let mut bad_metadata = json!({"metadata": "web"});
        let error = check_types(&deployment(), &mut bad_metadata).unwrap_err();
        assert!(matches!(error, Error::BadRequest { field: Some(ref f), .. } if f == "metadata"));
    }

    #[test]
    fn finalizers_round_trip_and_an_empty_list_disappears() {
        let mut object = json!({"metadata": {"finalizers": ["a", "b"]}});
        assert_eq!(finalizers(&object), ["a", "b"]);
        set_finalizers(&mut object, &["b".to_string()]);
        assert_eq!(object["metadata"]["finalizers"], json!(["b"]));
        set_finalizers(&mut object, &[]);
        assert!(object["metadata"].get("finalizers").is_none());
    }

    #[test]
    fn labels_skip_non_string_values() {
        let object = json!({"metadata": {"labels": {"app": "web", "bad": 1}}});
        assert_eq!(
            labels(&object),
            [("app".to_string(), "web".to_string())].into()
        );
    }
}
