//! The rules of one served version of a custom kind, as the registry's
//! [`KindStrategy`]: its structural schema (validation, pruning, defaults), its CEL rules, and
//! conversion between the served and the storage version (strategy `None`: only `apiVersion`
//! changes).

use std::borrow::Cow;

use capstan_api::{FieldError, ResourceInfo};
use serde_json::Value;

use super::cel_rules::Rules;
use super::scale::ScalePaths;
use super::structural;
use crate::registry::KindStrategy;

/// One served version of a custom kind; held by the kind's
/// [`ResourceState`](crate::registry::ResourceState).
#[derive(Debug)]
pub struct CustomResourceStrategy {
    info: ResourceInfo,
    schema: Option<Value>,
    rules: Option<Rules>,
    scale: Option<ScalePaths>,
    /// `<group>/<storage version>`: the `apiVersion` objects are stored with.
    storage_api_version: String,
    conversion_webhook: bool,
}

impl CustomResourceStrategy {
    /// The rules of the served version `info`.
    pub fn new(
        info: ResourceInfo,
        schema: Option<Value>,
        rules: Option<Rules>,
        scale: Option<ScalePaths>,
        storage_api_version: String,
        conversion_webhook: bool,
    ) -> Self {
        CustomResourceStrategy {
            info,
            schema,
            rules: rules.filter(|r| !r.is_empty()),
            scale,
            storage_api_version,
            conversion_webhook,
        }
    }

    /// The version's `openAPIV3Schema`, if it has one.
    pub fn schema(&self) -> Option<&Value> {
        self.schema.as_ref()
    }

    /// The paths of the `scale` subresource, when the version serves it.
    pub fn scale_paths(&self) -> Option<&ScalePaths> {
        self.scale.as_ref()
    }

    /// Decodes a written object as kube-apiserver decodes a custom resource: drops the fields
    /// the schema does not specify (returning their paths), then fills its defaults.
    pub fn decode(&self, object: &mut Value) -> Vec<String> {
        let Some(schema) = &self.schema else {
            return Vec::new();
        };
        let pruned = structural::prune(schema, object, true);
        structural::apply_defaults(schema, object);
        pruned
    }

    /// Whether a write must be converted by a webhook, which is not supported.
    fn needs_webhook(&self) -> bool {
        self.conversion_webhook && self.info.api_version() != self.storage_api_version
    }
}

impl KindStrategy for CustomResourceStrategy {
    fn apply_defaults(&self, object: &mut Value) {
        if let Some(schema) = &self.schema {
            structural::apply_defaults(schema, object);
        }
    }

    fn validate(&self, object: &Value, old: Option<&Value>, causes: &mut Vec<FieldError>) {
        if self.needs_webhook() {
            causes.push(FieldError::invalid(
                "apiVersion",
                self.info.api_version(),
                format!(
                    "conversion webhooks are not supported: objects are stored as {} and cannot be converted",
                    self.storage_api_version
                ),
            ));
            return;
        }
        let Some(schema) = &self.schema else {
            return;
        };
        structural::validate(schema, object, true, causes);
        if let Some(rules) = &self.rules {
            // As in kube-apiserver, CEL rules run only on objects the schema accepts.
            if causes.is_empty() {
                rules.validate(schema, object, old, causes);
            }
        }
    }

    fn to_served(&self, object: &mut Value) {
        if let Some(root) = object.as_object_mut() {
            root.insert("apiVersion".into(), Value::String(self.info.api_version()));
        }
    }

    fn to_stored<'a>(&self, object: &'a Value) -> Cow<'a, Value> {
        if object["apiVersion"].as_str() == Some(self.storage_api_version.as_str()) {
            return Cow::Borrowed(object);
        }
        let mut stored = object.clone();
        if let Some(root) = stored.as_object_mut() {
            root.insert(
                "apiVersion".into(),
                Value::String(self.storage_api_version.clone()),
            );
        }
        Cow::Owned(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strategy(version: &str) -> CustomResourceStrategy {
        let info = ResourceInfo::new("example.com", version, "Widget", "widgets", true);
        let schema = json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "replicas": {"type": "integer", "default": 1},
            }}},
        });
        let rules = Rules::compile(&schema, "openAPIV3Schema").ok();
        CustomResourceStrategy::new(
            info,
            Some(schema),
            rules,
            None,
            "example.com/v1".into(),
            false,
        )
    }

    #[test]
    fn objects_are_stored_in_the_storage_version_and_served_in_the_requested_one() {
        let v2 = strategy("v2");
        let object = json!({"apiVersion": "example.com/v2", "kind": "Widget"});
        assert_eq!(v2.to_stored(&object)["apiVersion"], "example.com/v1");
        let mut read = json!({"apiVersion": "example.com/v1", "kind": "Widget"});
        v2.to_served(&mut read);
        assert_eq!(read["apiVersion"], "example.com/v2");
    }

    #[test]
    fn decoding_prunes_then_defaults() {
        let mut object =
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"color": "red"}});
        assert_eq!(strategy("v1").decode(&mut object), ["spec.color"]);
        assert_eq!(object["spec"], json!({"replicas": 1}));
    }

    #[test]
    fn the_schema_validates_writes() {
        let mut causes = Vec::new();
        strategy("v1").validate(&json!({"spec": {"replicas": "two"}}), None, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.replicas");
    }
}
