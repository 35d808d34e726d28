//! The `scale` subresource of a custom kind: an `autoscaling/v1` `Scale` read from and written
//! to the paths the CRD names (`specReplicasPath`, `statusReplicasPath`, `labelSelectorPath`).

use serde_json::{Map, Value};

/// Where a custom kind keeps what its `Scale` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    /// `specReplicasPath`, e.g. `.spec.replicas`.
    pub spec_replicas: String,
    /// `statusReplicasPath`, e.g. `.status.replicas`.
    pub status_replicas: String,
    /// `labelSelectorPath` (a string in serialized label selector form), if any.
    pub label_selector: Option<String>,
}

impl ScalePaths {
    /// Reads a CRD version's `subresources.scale`.
    pub fn from_json(scale: &Value) -> ScalePaths {
        let text = |key: &str| scale[key].as_str().map(String::from);
        ScalePaths {
            spec_replicas: text("specReplicasPath").unwrap_or_else(|| ".spec.replicas".into()),
            status_replicas: text("statusReplicasPath")
                .unwrap_or_else(|| ".status.replicas".into()),
            label_selector: text("labelSelectorPath").filter(|p| !p.is_empty()),
        }
    }

    /// The `Scale` of `object`: replicas at the spec and status paths (0 when missing), the
    /// selector at the label selector path (empty when none).
    pub fn scale_of(&self, object: &Value) -> Value {
        let replicas = |path: &str| read(object, path).and_then(Value::as_i64).unwrap_or(0);
        let selector = self
            .label_selector
            .as_deref()
            .and_then(|path| read(object, path))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let metadata = &object["metadata"];
        serde_json::json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
                "resourceVersion": metadata["resourceVersion"],
                "creationTimestamp": metadata["creationTimestamp"],
            },
            "spec": { "replicas": replicas(&self.spec_replicas) },
            "status": { "replicas": replicas(&self.status_replicas), "selector": selector },
        })
    }

    /// A merge patch setting the spec replicas path to `replicas`.
    pub fn replicas_patch(&self, replicas: i64) -> Value {
        let mut patch = Value::Object(Map::new());
        set(&mut patch, &self.spec_replicas, replicas.into());
        patch
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('.').filter(|s| !s.is_empty())
}

/// The value at a simple dotted path (`.spec.replicas`).
fn read<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    segments(path).try_fold(object, |value, key| value.get(key))
}

fn set(object: &mut Value, path: &str, value: Value) {
    let keys: Vec<&str> = segments(path).collect();
    let mut current = object;
    for key in &keys[..keys.len().saturating_sub(1)] {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        current = current
            .as_object_mut()
            .map(|map| {
                map.entry(key.to_string())
                    .or_insert(Value::Object(Map::new()))
            })
            .expect("an object");
    }
    if let (Some(last), Some(map)) = (keys.last(), current.as_object_mut()) {
        map.insert(last.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths() -> ScalePaths {
        ScalePaths::from_json(&json!({
            "specReplicasPath": ".spec.size",
            "statusReplicasPath": ".status.ready",
            "labelSelectorPath": ".status.selector",
        }))
    }

    #[test]
    fn the_scale_reads_the_named_paths() {
        let object = json!({
            "metadata": {"name": "w", "namespace": "default"},
            "spec": {"size": 3}, "status": {"ready": 2, "selector": "app=w"},
        });
        let scale = paths().scale_of(&object);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "app=w");
        assert_eq!(scale["metadata"]["name"], "w");
    }

    #[test]
    fn a_replicas_change_patches_the_spec_path() {
        assert_eq!(paths().replicas_patch(5), json!({"spec": {"size": 5}}));
    }
}
