//! CustomResourceDefinitions served at run time, as kube-apiserver's apiextensions server
//! serves them.
//!
//! [`serve_custom_resources`] starts the [controller](CustomResourceController) that watches
//! CRDs through the registry and serves each one: every served version becomes a kind of the
//! registry (sharing the storage version's location), with the CRD's names, categories,
//! printer columns and subresources, and the CRD reports `NamesAccepted`, `Established`,
//! `acceptedNames` and `storedVersions`. [`ApiServer::bind`](crate::http::ApiServer::bind)
//! starts it; a test over a bare [`Registry`] starts it with one call.
//!
//! The files: `controller.rs` (the controller), `definition.rs` (a CRD read, and its
//! validation), `strategy.rs` (a served version's rules as the registry's `KindStrategy`),
//! `structural.rs` (schema validation, pruning, defaulting), `cel_rules.rs`
//! (`x-kubernetes-validations` with the `cel` crate), `scale.rs` (the `scale` subresource's
//! paths) and `columns.rs` (tables with printer columns).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let registry = capstan_apiserver::testing::registry();
//! let controller = capstan_apiserver::apiextensions::serve_custom_resources(registry.clone());
//! controller.synced().await;
//! # });
//! ```

mod cel_rules;
#[cfg(feature = "server")]
pub mod columns;
mod controller;
mod definition;
mod scale;
mod strategy;
pub mod structural;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use capstan_api::{FieldError, ResourceInfo};
use parking_lot::RwLock;
use serde_json::{json, Value};

use crate::registry::{KindStrategy, Registry};

pub use controller::CustomResourceController;
pub use definition::{Definition, Names, Version, CLEANUP_FINALIZER};
pub use scale::ScalePaths;
pub use strategy::CustomResourceStrategy;

/// Starts serving `registry`'s CustomResourceDefinitions (those stored already and every
/// later one) on the current tokio runtime, and returns the running controller; it stops when
/// the last handle is dropped. Calling it again for the same registry returns the controller
/// already running.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn serve_custom_resources(registry: Arc<Registry>) -> CustomResourceController {
    CustomResourceController::start(registry)
}

/// The paths of a custom kind's `scale` subresource, when `resource` is a served custom
/// resource version with one.
pub fn scale_paths(registry: &Registry, resource: &ResourceInfo) -> Option<ScalePaths> {
    let state = registry.resource_state(resource).ok()?;
    state.custom_resource()?.scale_paths().cloned()
}

/// Schemas of custom kinds, by group, version and kind, for the OpenAPI documents, which ask
/// only for the kinds served now (so the entry of a deleted CRD is never read). Registries in
/// one process share the table: the last CRD served for a group-version-kind wins.
static PUBLISHED: LazyLock<RwLock<HashMap<GroupVersionKind, Value>>> =
    LazyLock::new(RwLock::default);

/// Group, version and kind.
type GroupVersionKind = (String, String, String);

/// Publishes the OpenAPI schema of every served version of `definition` under `names`.
pub(crate) fn publish_schemas(definition: &Definition, names: &Names) {
    let mut published = PUBLISHED.write();
    for version in definition.versions.iter().filter(|v| v.served) {
        let key = (
            definition.group.clone(),
            version.name.clone(),
            names.kind.clone(),
        );
        match &version.schema {
            Some(schema) => {
                published.insert(key, schema.clone());
            }
            None => {
                published.remove(&key);
            }
        }
    }
}

/// The OpenAPI v3 schema of a served custom kind, from its CRD's `openAPIV3Schema`, with
/// `apiVersion`, `kind` and `metadata` as every object's and its group-version-kind; `None`
/// for other kinds (and custom kinds without a schema).
pub fn openapi_schema(resource: &ResourceInfo) -> Option<Value> {
    let key = (
        resource.group().to_string(),
        resource.version().to_string(),
        resource.kind().to_string(),
    );
    let mut schema = PUBLISHED.read().get(&key)?.clone();
    let root = schema.as_object_mut()?;
    let properties = root
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()?;
    properties.insert(
        "apiVersion".into(),
        json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
    );
    properties.insert(
        "kind".into(),
        json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
    );
    properties.insert(
        "metadata".into(),
        json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]}),
    );
    root.insert(
        "x-kubernetes-group-version-kind".into(),
        json!([{ "group": resource.group(), "version": resource.version(), "kind": resource.kind() }]),
    );
    Some(schema)
}

/// The rules of CustomResourceDefinitions themselves: the checks serving relies on (names,
/// scope, one storage version, conversion `None`, compilable patterns and CEL rules).
pub(crate) struct CustomResourceDefinitionStrategy;

impl KindStrategy for CustomResourceDefinitionStrategy {
    fn validate(&self, object: &Value, _old: Option<&Value>, causes: &mut Vec<FieldError>) {
        definition::validate_definition(object, causes);
    }
}
