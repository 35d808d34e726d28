//! Walking objects by their [`StructuralSchema`]: merging an applied configuration into the
//! live object, the field set of a configuration, the fields one write changed, and removing
//! fields.
//!
//! Granular objects merge key by key; list maps merge element by element (matched on the key
//! fields the applied element sets; elements new to the list are appended in the
//! configuration's order); sets are unions; atomic values are replaced whole.

use serde_json::{Map, Value};

use super::fieldpath::{FieldSet, PathElement};
use super::schema::{Kind, ListType, Node, StructuralSchema};

/// How a value is walked: its schema kind, with untyped lists atomic.
enum Walk<'a> {
    Granular,
    Atomic,
    ListMap(&'a [String]),
    Set,
}

fn walk_of<'s>(schema: &'s StructuralSchema, node: Node, value: &Value) -> Walk<'s> {
    match schema.kind(node) {
        Kind::Granular if value.is_object() => Walk::Granular,
        Kind::List(ListType::Map(keys)) if value.is_array() => Walk::ListMap(keys),
        Kind::List(ListType::Set) if value.is_array() => Walk::Set,
        _ => Walk::Atomic,
    }
}

/// The key fields `keys` of a list-map element (those it sets).
fn key_fields(item: &Value, keys: &[String]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|key| Some((key.clone(), item.get(key)?.clone())))
        .collect()
}

/// The element of `list` that `item` names: every key field `item` sets is equal.
fn find_match(list: &[Value], item: &Value, keys: &[String]) -> Option<usize> {
    let wanted = key_fields(item, keys);
    list.iter().position(|candidate| {
        wanted
            .iter()
            .all(|(key, value)| candidate.get(key) == Some(value))
            && keys.iter().any(|key| wanted.contains_key(key))
    })
}

/// `live` with `config` merged in; see the [module docs](self).
pub(super) fn merge(
    schema: &StructuralSchema,
    node: Node,
    live: Option<&Value>,
    config: &Value,
) -> Value {
    let Some(live) = live else {
        return config.clone();
    };
    match walk_of(schema, node, config) {
        Walk::Granular => {
            let Value::Object(live_map) = live else {
                return config.clone();
            };
            let mut result = live_map.clone();
            for (key, value) in config.as_object().into_iter().flatten() {
                let child = schema.field(node, key);
                let merged = merge(schema, child, live_map.get(key), value);
                result.insert(key.clone(), merged);
            }
            Value::Object(result)
        }
        Walk::ListMap(keys) => {
            let Value::Array(live_items) = live else {
                return config.clone();
            };
            let items = schema.items(node);
            let mut result = live_items.clone();
            for item in config.as_array().into_iter().flatten() {
                match find_match(&result, item, keys) {
                    Some(index) => result[index] = merge(schema, items, Some(&result[index]), item),
                    None => result.push(item.clone()),
                }
            }
            Value::Array(result)
        }
        Walk::Set => {
            let Value::Array(live_items) = live else {
                return config.clone();
            };
            let mut result = live_items.clone();
            for item in config.as_array().into_iter().flatten() {
                if !result.contains(item) {
                    result.push(item.clone());
                }
            }
            Value::Array(result)
        }
        Walk::Atomic => config.clone(),
    }
}

/// The fields `config` sets, as an applied configuration owns them: leaves and atomic values,
/// list elements themselves (and their fields), and empty objects. List-map elements are
/// named by the key of their counterpart in `merged` (the object after the merge), so a key
/// field the configuration leaves to its default (a port's `protocol`) is named as stored.
pub(super) fn config_fields(
    schema: &StructuralSchema,
    node: Node,
    config: &Value,
    merged: Option<&Value>,
    path: &mut Vec<PathElement>,
    set: &mut FieldSet,
) {
    match walk_of(schema, node, config) {
        Walk::Granular => {
            let map = config.as_object().expect("granular walks objects");
            if map.is_empty() && !path.is_empty() {
                set.insert(path);
            }
            for (key, value) in map {
                path.push(PathElement::Field(key.clone()));
                let counterpart = merged.and_then(|m| m.get(key));
                config_fields(
                    schema,
                    schema.field(node, key),
                    value,
                    counterpart,
                    path,
                    set,
                );
                path.pop();
            }
        }
        Walk::ListMap(keys) => {
            let merged_items = merged.and_then(Value::as_array);
            let items = schema.items(node);
            for item in config.as_array().into_iter().flatten() {
                let counterpart = merged_items
                    .and_then(|list| find_match(list, item, keys).map(|index| &list[index]));
                let named = counterpart.unwrap_or(item);
                path.push(PathElement::key(&key_fields(named, keys)));
                set.insert(path);
                config_fields(schema, items, item, counterpart, path, set);
                path.pop();
            }
        }
        Walk::Set => {
            for item in config.as_array().into_iter().flatten() {
                path.push(PathElement::value(item));
                set.insert(path);
                path.pop();
            }
        }
        Walk::Atomic => {
            if !path.is_empty() {
                set.insert(path);
            }
        }
    }
}

/// Every path of `value`: as [`config_fields`], plus every granular object and list as a
/// member itself. Ownership is kept only for paths that exist.
pub(super) fn existing_fields(
    schema: &StructuralSchema,
    node: Node,
    value: &Value,
    path: &mut Vec<PathElement>,
    set: &mut FieldSet,
) {
    if !path.is_empty() {
        set.insert(path);
    }
    match walk_of(schema, node, value) {
        Walk::Granular => {
            for (key, child) in value.as_object().into_iter().flatten() {
                path.push(PathElement::Field(key.clone()));
                existing_fields(schema, schema.field(node, key), child, path, set);
                path.pop();
            }
        }
        Walk::ListMap(keys) => {
            let items = schema.items(node);
            for item in value.as_array().into_iter().flatten() {
                path.push(PathElement::key(&key_fields(item, keys)));
                existing_fields(schema, items, item, path, set);
                path.pop();
            }
        }
        Walk::Set => {
            for item in value.as_array().into_iter().flatten() {
                path.push(PathElement::value(item));
                set.insert(path);
                path.pop();
            }
        }
        Walk::Atomic => {}
    }
}

/// The paths of `after` that one write set or changed, coming from `before`: changed leaves
/// and atomic values, and objects, lists and elements that were not there before (as
/// members, so their writer owns them).
pub(super) fn changed_fields(
    schema: &StructuralSchema,
    node: Node,
    before: Option<&Value>,
    after: &Value,
    path: &mut Vec<PathElement>,
    set: &mut FieldSet,
) {
    if before == Some(after) {
        return;
    }
    let walk = walk_of(schema, node, after);
    let fresh = match (&walk, before) {
        (_, None) => true,
        (Walk::Granular, Some(old)) => !old.is_object(),
        (Walk::ListMap(_) | Walk::Set, Some(old)) => !old.is_array(),
        (Walk::Atomic, Some(_)) => true,
    };
    if fresh && !path.is_empty() {
        set.insert(path);
    }
    let before = before.filter(|_| !fresh);
    match walk {
        Walk::Granular => {
            for (key, child) in after.as_object().into_iter().flatten() {
                path.push(PathElement::Field(key.clone()));
                let old = before.and_then(|b| b.get(key));
                changed_fields(schema, schema.field(node, key), old, child, path, set);
                path.pop();
            }
        }
        Walk::ListMap(keys) => {
            let old_items = before.and_then(Value::as_array);
            let items = schema.items(node);
            for item in after.as_array().into_iter().flatten() {
                let key = key_fields(item, keys);
                let old = old_items.and_then(|list| {
                    list.iter()
                        .find(|candidate| key_fields(candidate, keys) == key)
                });
                path.push(PathElement::key(&key));
                changed_fields(schema, items, old, item, path, set);
                path.pop();
            }
        }
        Walk::Set => {
            let old_items = before.and_then(Value::as_array);
            for item in after.as_array().into_iter().flatten() {
                if !old_items.is_some_and(|list| list.contains(item)) {
                    path.push(PathElement::value(item));
                    set.insert(path);
                    path.pop();
                }
            }
        }
        Walk::Atomic => {}
    }
}

/// Removes the value at `path` from `value`, if it is there (a field, a list-map element, a
/// set element). Returns whether something was removed.
pub(super) fn remove_path(
    schema: &StructuralSchema,
    node: Node,
    value: &mut Value,
    path: &[PathElement],
) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (first, value) {
        (PathElement::Field(key), Value::Object(map)) => {
            if rest.is_empty() {
                return map.remove(key).is_some();
            }
            match map.get_mut(key) {
                Some(child) => remove_path(schema, schema.field(node, key), child, rest),
                None => false,
            }
        }
        (PathElement::Key(_), Value::Array(list)) => {
            let Kind::List(ListType::Map(keys)) = schema.kind(node) else {
                return false;
            };
            let Some(index) = list
                .iter()
                .position(|item| &PathElement::key(&key_fields(item, keys)) == first)
            else {
                return false;
            };
            if rest.is_empty() {
                list.remove(index);
                return true;
            }
            remove_path(schema, schema.items(node), &mut list[index], rest)
        }
        (PathElement::Value(_), Value::Array(list)) if rest.is_empty() => {
            let before = list.len();
            list.retain(|item| &PathElement::value(item) != first);
            list.len() != before
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::ResourceInfo;
    use serde_json::json;

    fn deployment_schema() -> std::sync::Arc<StructuralSchema> {
        StructuralSchema::builtin(&ResourceInfo::builtin("apps", "Deployment").unwrap()).unwrap()
    }

    #[test]
    fn containers_merge_by_name_and_args_are_replaced() {
        let schema = deployment_schema();
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "args": ["a", "b"]},
            {"name": "sidecar", "image": "envoy"}
        ]}}}});
        let config = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:2", "args": ["c"]}
        ]}}}});
        let merged = merge(&schema, schema.root(), Some(&live), &config);
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "web", "image": "nginx:2", "args": ["c"]},
                {"name": "sidecar", "image": "envoy"}
            ])
        );
    }

    #[test]
    fn a_config_owns_its_leaves_and_its_list_elements() {
        let schema = deployment_schema();
        let config = json!({"spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}});
        let mut set = FieldSet::new();
        config_fields(
            &schema,
            schema.root(),
            &config,
            Some(&config),
            &mut Vec::new(),
            &mut set,
        );
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}
                }}}
            }})
        );
    }

    #[test]
    fn a_changed_leaf_and_a_new_map_are_what_an_update_changed() {
        let schema = deployment_schema();
        let before = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1, "paused": false}});
        let after = json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"replicas": 3, "paused": false}});
        let mut set = FieldSet::new();
        changed_fields(
            &schema,
            schema.root(),
            Some(&before),
            &after,
            &mut Vec::new(),
            &mut set,
        );
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}}, "f:spec": {"f:replicas": {}}})
        );
    }

    #[test]
    fn removing_a_list_map_element_and_a_set_element() {
        let schema = deployment_schema();
        let mut object = json!({"metadata": {"finalizers": ["a", "b"]},
            "spec": {"template": {"spec": {"containers": [{"name": "web"}, {"name": "sidecar"}]}}}});
        let sidecar = PathElement::key(json!({"name": "sidecar"}).as_object().unwrap());
        let field = |s: &str| PathElement::Field(s.into());
        assert!(remove_path(
            &schema,
            schema.root(),
            &mut object,
            &[
                field("spec"),
                field("template"),
                field("spec"),
                field("containers"),
                sidecar
            ]
        ));
        assert!(remove_path(
            &schema,
            schema.root(),
            &mut object,
            &[
                field("metadata"),
                field("finalizers"),
                PathElement::value(&json!("a"))
            ]
        ));
        assert_eq!(
            object,
            json!({"metadata": {"finalizers": ["b"]},
                "spec": {"template": {"spec": {"containers": [{"name": "web"}]}}}})
        );
    }
}
