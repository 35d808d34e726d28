//! Patch formats: RFC 7386 JSON merge patch (the `json-patch` crate's) and Kubernetes' strategic
//! merge patch.
//!
//! The registry applies a patch to the stored object, then stores the result through the
//! update path (admission, validation, compare-and-swap).
//!
//! **Strategic merge patch** is a merge patch that knows, for the lists of built-in kinds,
//! whether to merge them and by which key (`patchStrategy`/`patchMergeKey` in the Go types).
//! This implementation covers what `kubectl` sends:
//!
//! - maps merge recursively and `null` deletes a key, as in a merge patch;
//! - lists merged by key: `containers`, `initContainers`, `ephemeralContainers`, `volumes`,
//!   `imagePullSecrets`, `resourceClaims`, `schedulingGates`, a container's `env` (by `name`),
//!   its `ports` (by `containerPort`), `volumeMounts` (by `mountPath`) and `volumeDevices` (by
//!   `devicePath`), a Service's `spec.ports` (by `port`), `conditions` and a Node's
//!   `status.addresses` (by `type`), `hostAliases` (by `ip`), `topologySpreadConstraints` (by
//!   `topologyKey`), `metadata.ownerReferences` (by `uid`), a ServiceAccount's `secrets` (by
//!   `name`);
//! - `metadata.finalizers` merges as a set (union, order kept, no duplicates);
//! - every other list (`tolerations`, `args`, `command`, ...) is replaced;
//! - directives: `$patch: delete` (an element of a merged list, or a whole map),
//!   `$patch: replace` (a map, or a whole merged list as `[{"$patch": "replace"}, ...]`),
//!   `$patch: merge`, `$retainKeys`, `$deleteFromPrimitiveList/<field>` and
//!   `$setElementOrder/<field>` (listed elements first, in that order, then the others).

use capstan_api::{Error, Result};
use serde_json::{Map, Value};

/// Applies an RFC 7386 JSON merge patch to `target`, in place: objects merge recursively,
/// `null` removes a key, anything else (lists included) replaces.
///
/// This is [`json_patch::merge`], re-exported under the registry's name.
pub use json_patch::merge as merge_patch;

/// Applies a strategic merge patch to `original`, an object of the built-in kind `kind`
/// (which decides, e.g., how a Service's `spec.ports` merge), and returns the result.
///
/// Errors: [`Error::BadRequest`] when the patch is not an object, an element of a merged list
/// lacks its merge key, or a directive is unknown.
pub fn strategic_merge_patch(kind: &str, original: &Value, patch: &Value) -> Result<Value> {
    let Value::Object(patch) = patch else {
        return Err(Error::bad_request(
            "a strategic merge patch must be a JSON object",
        ));
    };
    let mut result = original.as_object().cloned().unwrap_or_default();
    let mut path = Vec::new();
    let merger = Merger { kind };
    Ok(match merger.merge_map(&mut result, patch, &mut path)? {
        MapOutcome::Keep => Value::Object(result),
        MapOutcome::Delete => Value::Object(Map::new()),
    })
}

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListStrategy {
    /// The patch's list replaces the original.
    Replace,
    /// Elements are maps matched by this key; matches merge, others are appended.
    MergeByKey(&'static str),
    /// Elements are scalars; the result is the union, original order first.
    Set,
}

/// What to do with a map after its patch.
enum MapOutcome {
    Keep,
    /// `$patch: delete`: remove the map from its parent.
    Delete,
}

struct Merger<'k> {
    kind: &'k str,
}

impl Merger<'_> {
    /// The strategy for the list `field` of the map at `path` (the keys from the root, list
    /// indices left out).
    fn list_strategy(&self, path: &[String], field: &str) -> ListStrategy {
        let parent = path.last().map(String::as_str);
        let in_container = matches!(
            parent,
            Some("containers" | "initContainers" | "ephemeralContainers")
        );
        match field {
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "volumes"
            | "imagePullSecrets"
            | "resourceClaims"
            | "schedulingGates" => ListStrategy::MergeByKey("name"),
            "env" if in_container => ListStrategy::MergeByKey("name"),
            "ports" if in_container => ListStrategy::MergeByKey("containerPort"),
            "ports" if self.kind == "Service" && path == ["spec"] => {
                ListStrategy::MergeByKey("port")
            }
            "volumeMounts" if in_container => ListStrategy::MergeByKey("mountPath"),
            "volumeDevices" if in_container => ListStrategy::MergeByKey("devicePath"),
            "conditions" => ListStrategy::MergeByKey("type"),
            "addresses" if self.kind == "Node" => ListStrategy::MergeByKey("type"),
            "hostAliases" => ListStrategy::MergeByKey("ip"),
            "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
            "ownerReferences" if path == ["metadata"] => ListStrategy::MergeByKey("uid"),
            "finalizers" if path == ["metadata"] => ListStrategy::Set,
            "secrets" if self.kind == "ServiceAccount" => ListStrategy::MergeByKey("name"),
            _ => ListStrategy::Replace,
        }
    }

    fn merge_map(
        &self,
        original: &mut Map<String, Value>,
        patch: &Map<String, Value>,
        path: &mut Vec<String>,
    ) -> Result<MapOutcome> {
        match patch.get(PATCH) {
            None => {}
            Some(Value::String(directive)) => match directive.as_str() {
                "delete" => return Ok(MapOutcome::Delete),
                "replace" => {
                    original.clear();
                    let mut without = patch.clone();
                    without.remove(PATCH);
                    self.merge_map(original, &without, path)?;
                    return Ok(MapOutcome::Keep);
                }
                "merge" => {}
                other => return Err(unknown_directive(other)),
            },
            Some(other) => return Err(unknown_directive(&other.to_string())),
        }
        for (key, value) in patch {
            if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                let doomed = value.as_array().ok_or_else(|| {
                    Error::bad_request(format!("{key} must be a list, got {value}"))
                })?;
                if let Some(Value::Array(list)) = original.get_mut(field) {
                    list.retain(|item| !doomed.contains(item));
                }
            }
        }
        for (key, value) in patch {
            if key.starts_with('$') {
                continue;
            }
            if value.is_null() {
                original.remove(key);
                continue;
            }
            match value {
                Value::Object(child_patch) => {
                    let existing = original
                        .entry(key.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !existing.is_object() {
                        *existing = Value::Object(Map::new());
                    }
                    let child = existing.as_object_mut().expect("just made an object");
                    path.push(key.clone());
                    let outcome = self.merge_map(child, child_patch, path);
                    path.pop();
                    if let MapOutcome::Delete = outcome? {
                        original.remove(key);
                    }
                }
                Value::Array(items) => {
                    let strategy = self.list_strategy(path, key);
                    let current = match original.remove(key) {
                        Some(Value::Array(current)) => current,
                        _ => Vec::new(),
                    };
                    path.push(key.clone());
                    let merged = self.merge_list(current, items, strategy, path);
                    path.pop();
                    original.insert(key.clone(), Value::Array(merged?));
                }
                scalar => {
                    original.insert(key.clone(), scalar.clone());
                }
            }
        }
        for (key, order) in patch {
            if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
                let order = order.as_array().ok_or_else(|| {
                    Error::bad_request(format!("{key} must be a list, got {order}"))
                })?;
                let strategy = self.list_strategy(path, field);
                if let Some(Value::Array(list)) = original.get_mut(field) {
                    reorder(list, order, strategy);
                }
            }
        }
        if let Some(retain) = patch.get(RETAIN_KEYS) {
            let retain = retain.as_array().ok_or_else(|| {
                Error::bad_request(format!("{RETAIN_KEYS} must be a list, got {retain}"))
            })?;
            original.retain(|key, _| retain.iter().any(|k| k.as_str() == Some(key)));
        }
        Ok(MapOutcome::Keep)
    }

    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: &[Value],
        strategy: ListStrategy,
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>> {
        let is_replace_directive =
            |item: &Value| item.get(PATCH).and_then(Value::as_str) == Some("replace");
        let replace_all = patch.iter().any(is_replace_directive);
        let patch: Vec<&Value> = patch.iter().filter(|i| !is_replace_directive(i)).collect();
        if replace_all || strategy == ListStrategy::Replace {
            return patch
                .into_iter()
                .map(|item| self.clean(item, path))
                .collect();
        }
        let mut result = original;
        match strategy {
            ListStrategy::Set => {
                for item in patch {
                    if !result.contains(item) {
                        result.push(item.clone());
                    }
                }
            }
            ListStrategy::MergeByKey(merge_key) => {
                for item in patch {
                    let Some(element) = item.as_object() else {
                        return Err(Error::bad_request(format!(
                            "expected a map in the list merged by {merge_key}, got {item}"
                        )));
                    };
                    let key_value = element.get(merge_key).ok_or_else(|| {
                        Error::bad_request(format!(
                            "map: {item} does not contain declared merge key: {merge_key}"
                        ))
                    })?;
                    let position = result
                        .iter()
                        .position(|existing| existing.get(merge_key) == Some(key_value));
                    let delete = element.get(PATCH).and_then(Value::as_str) == Some("delete");
                    match (position, delete) {
                        (Some(index), true) => {
                            result.remove(index);
                        }
                        (None, true) => {}
                        (Some(index), false) => {
                            let existing = result[index]
                                .as_object_mut()
                                .expect("matched on a key, so a map");
                            if let MapOutcome::Delete = self.merge_map(existing, element, path)? {
                                result.remove(index);
                            }
                        }
                        (None, false) => result.push(self.clean(item, path)?),
                    }
                }
            }
            ListStrategy::Replace => unreachable!("handled above"),
        }
        Ok(result)
    }

    /// A patch value applied to nothing: nulls and directives stripped.
    fn clean(&self, value: &Value, path: &mut Vec<String>) -> Result<Value> {
        match value {
            Value::Object(patch) => {
                let mut result = Map::new();
                match self.merge_map(&mut result, patch, path)? {
                    MapOutcome::Keep => Ok(Value::Object(result)),
                    MapOutcome::Delete => Ok(Value::Object(Map::new())),
                }
            }
            other => Ok(other.clone()),
        }
    }
}

fn unknown_directive(directive: &str) -> Error {
    Error::bad_request(format!(
        "unknown patch directive {directive:?}: expected \"replace\", \"merge\" or \"delete\""
    ))
}

/// Moves the elements named in `order` to the front, in that order; the others follow in
/// their current order.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let identity = |item: &Value| -> Option<Value> {
        match strategy {
            ListStrategy::MergeByKey(key) => item.get(key).cloned(),
            _ => Some(item.clone()),
        }
    };
    let mut rest = std::mem::take(list);
    for wanted in order {
        let wanted = identity(wanted);
        if wanted.is_none() {
            continue;
        }
        if let Some(index) = rest.iter().position(|item| identity(item) == wanted) {
            list.push(rest.remove(index));
        }
    }
    list.append(&mut rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "finalizers": ["a"]},
            "spec": {
                "replicas": 1,
                "template": {"spec": {
                    "containers": [
                        {"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}],
                         "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                        {"name": "sidecar", "image": "envoy:1"},
                    ],
                    "tolerations": [{"key": "a"}],
                }},
            },
        })
    }

    fn apply(patch: Value) -> Value {
        strategic_merge_patch("Deployment", &deployment(), &patch).unwrap()
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut target,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": null}}),
        );
        assert_eq!(
            target,
            json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {}})
        );
        let mut scalar = json!({"a": 1});
        merge_patch(&mut scalar, &json!([1]));
        assert_eq!(scalar, json!([1]));
    }

    #[test]
    fn containers_merge_by_name() {
        let patched = apply(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "nginx:2"},
            {"name": "new", "image": "busybox"},
        ]}}}}));
        let containers = &patched["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:2");
        assert_eq!(containers[0]["env"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(containers[1]["name"], "sidecar");
        assert_eq!(containers[2], json!({"name": "new", "image": "busybox"}));
    }

    #[test]
    fn patch_delete_removes_a_container() {
        let patched = apply(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "$patch": "delete"},
        ]}}}}));
        let containers = patched["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["name"], "app");
    }

    #[test]
    fn env_and_ports_merge_inside_a_container() {
        let patched = apply(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": null}],
             "ports": [{"containerPort": 443}]},
        ]}}}}));
        let app = &patched["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            app["env"],
            json!([{"name": "A"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(
            app["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}])
        );
    }

    #[test]
    fn tolerations_are_replaced_and_finalizers_merge_as_a_set() {
        let patched = apply(json!({
            "metadata": {"finalizers": ["b", "a"]},
            "spec": {"template": {"spec": {"tolerations": [{"key": "b"}]}}},
        }));
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            patched["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "b"}])
        );
    }

    #[test]
    fn replace_directives_replace_maps_and_lists() {
        let patched = apply(json!({"spec": {"template": {"spec": {
            "containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}],
        }}}}));
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
        let patched = apply(json!({"spec": {"$patch": "replace", "replicas": 5}}));
        assert_eq!(patched["spec"], json!({"replicas": 5}));
    }

    #[test]
    fn delete_from_primitive_list_and_retain_keys() {
        let patched = apply(json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"$retainKeys": ["replicas"], "replicas": 2},
        }));
        assert!(patched["metadata"]
            .get("finalizers")
            .is_some_and(|f| f == &json!([])));
        assert_eq!(patched["spec"], json!({"replicas": 2}));
    }

    #[test]
    fn set_element_order_reorders_a_merged_list() {
        let patched = apply(json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
        }}}}));
        let names: Vec<&str> = patched["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["sidecar", "app"]);
    }

    #[test]
    fn service_ports_merge_by_port() {
        let service = json!({"spec": {"ports": [{"port": 80, "name": "http"}]}});
        let patched = strategic_merge_patch(
            "Service",
            &service,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "name": "https"}]}}),
        )
        .unwrap();
        assert_eq!(
            patched["spec"]["ports"],
            json!([{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443, "name": "https"}])
        );
    }

    #[test]
    fn an_element_without_its_merge_key_is_a_bad_request() {
        let error = strategic_merge_patch(
            "Deployment",
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
        )
        .unwrap_err();
        assert_eq!(error.code(), 400);
        assert!(error.to_string().contains("merge key: name"), "{error}");
        let error =
            strategic_merge_patch("Deployment", &deployment(), &json!({"$patch": "explode"}))
                .unwrap_err();
        assert_eq!(error.code(), 400);
    }
}
