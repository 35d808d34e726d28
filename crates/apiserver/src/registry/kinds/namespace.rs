//! Namespaces: names are DNS-1123 labels; `status.phase: Active` and the
//! `kubernetes.io/metadata.name` label by default.

use serde_json::{Map, Value};

use super::KindStrategy;
use crate::registry::{
    defaults::{ensure_map, set_default},
    object,
    validation::NameRule,
};

/// The rules of `v1` Namespaces.
pub(crate) struct NamespaceStrategy;

impl KindStrategy for NamespaceStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Label
    }

    fn apply_defaults(&self, namespace: &mut Value) {
        default_namespace(namespace);
    }
}

fn default_namespace(namespace: &mut Value) {
    if let Some(name) = object::name(namespace).map(str::to_string) {
        let metadata = object::metadata_mut(namespace);
        let labels = ensure_map(
            metadata
                .entry("labels")
                .or_insert_with(|| Value::Object(Map::new())),
        );
        labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
    }
    set_default(object::at_mut(namespace, "status"), "phase", "Active");
}
