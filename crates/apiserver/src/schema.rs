//! The OpenAPI schemas of the built-in kinds, and what Kubernetes' decoder does with them:
//! it drops the fields a schema does not know, and names them.
//!
//! The schemas are k8s-openapi's (its `schemars` implementations, in the OpenAPI 3 flavour),
//! named as Kubernetes names them (`io.k8s.api.apps.v1.Deployment`). [`Schemas::builtin`]
//! builds them once per process and compiles them into a small tree that
//! [`KindSchema::prune`] walks.
//!
//! Who uses them:
//! - the registry prunes every built-in object it writes, so unknown fields are never stored
//!   (as kube-apiserver, whose typed decoding drops them);
//! - the HTTP layer reports them as `Warning` headers, or refuses the request under
//!   `fieldValidation=Strict`;
//! - the OpenAPI v3 documents under `/openapi/v3` publish them.
//!
//! Custom kinds have no schema here: every field of theirs is kept.

use std::collections::HashMap;
use std::sync::OnceLock;

use capstan_api::{Error, ResourceInfo};
use k8s_openapi::schemars::{generate::SchemaSettings, JsonSchema, SchemaGenerator};
use serde_json::{Map, Value};

/// Where OpenAPI 3 keeps named schemas; `$ref`s point below it.
pub const SCHEMA_REF_PREFIX: &str = "#/components/schemas/";

/// The built-in kinds' schemas, by name, and compiled for walking objects.
#[derive(Debug)]
pub struct Schemas {
    definitions: Map<String, Value>,
    kinds: HashMap<(String, String, String), usize>,
    names: HashMap<(String, String, String), String>,
    nodes: Vec<Node>,
}

/// One compiled schema: what to expect below a value.
#[derive(Debug, Clone)]
enum Node {
    /// Anything goes below here: a scalar, a free-form object (`RawExtension`, `FieldsV1`), or
    /// a value with its own encoding (`IntOrString`, `Quantity`, `Time`).
    Any,
    /// An object with known properties and, for maps, a schema for every other key.
    Object {
        properties: HashMap<String, usize>,
        additional: Option<usize>,
    },
    /// An array whose items follow one schema.
    Array(usize),
}

/// How [`KindSchema::prune`] reads keys that start with `$`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// An object: a `$` key is as unknown as any other.
    Object,
    /// A strategic merge patch: `$patch`, `$retainKeys`, `$setElementOrder/...` and
    /// `$deleteFromPrimitiveList/...` are directives, not fields.
    StrategicPatch,
}

/// The schema of one kind, ready to walk objects of it.
#[derive(Debug, Clone, Copy)]
pub struct KindSchema<'a> {
    schemas: &'a Schemas,
    root: usize,
    name: &'a str,
}

impl KindSchema<'_> {
    /// The schema's name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Removes from `object` every field the schema does not know, and returns their paths in
    /// Kubernetes' notation (`spec.template.spec.containers[0].imagePullPolicy`), in the
    /// order met. Idempotent: a pruned object has nothing left to prune.
    ///
    /// The walk goes at most [`MAX_PRUNE_DEPTH`] levels down (recursive schemas such as a
    /// CRD's `JSONSchemaProps` would follow a value as deep as it goes); anything deeper is
    /// left as it is. The HTTP API refuses bodies nesting more than 100 levels before they are
    /// parsed, so objects arriving over HTTP are always pruned whole.
    pub fn prune(&self, object: &mut Value, keys: Keys) -> Vec<String> {
        let mut unknown = Vec::new();
        let mut path = String::new();
        self.schemas
            .prune(self.root, object, keys, &mut path, &mut unknown, 0);
        unknown
    }
}

/// How deep [`KindSchema::prune`] walks a value: 256 levels, well past any object the HTTP
/// API accepts, and shallow enough for the stack of any thread.
pub const MAX_PRUNE_DEPTH: usize = 256;

impl Schemas {
    /// The schemas of every built-in kind, built on first use.
    pub fn builtin() -> &'static Schemas {
        static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
        SCHEMAS.get_or_init(Schemas::generate)
    }

    /// The schema of `resource`'s kind, or `None` for a kind without one (custom kinds).
    pub fn of(&self, resource: &ResourceInfo) -> Option<KindSchema<'_>> {
        let key = (
            resource.group().to_string(),
            resource.version().to_string(),
            resource.kind().to_string(),
        );
        let root = *self.kinds.get(&key)?;
        let name = self.names.get(&key)?;
        Some(KindSchema {
            schemas: self,
            root,
            name,
        })
    }

    /// Every named schema (`io.k8s.api.core.v1.PodSpec` → its OpenAPI 3 schema), as the
    /// OpenAPI documents' `components.schemas` publish them; kinds carry Kubernetes'
    /// `x-kubernetes-group-version-kind`.
    pub fn definitions(&self) -> &Map<String, Value> {
        &self.definitions
    }

    /// The name of the schema of `group`/`version`/`kind`, if it is a built-in kind.
    pub fn name_of(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.names
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .map(String::as_str)
    }

    fn generate() -> Schemas {
        use k8s_openapi::api::{
            apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
            coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
            events::v1 as events, networking::v1 as networking, policy::v1 as policy,
            rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
        };
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;

        let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
        let mut names = HashMap::new();
        macro_rules! kinds {
            ($($kind:ty),* $(,)?) => {
                $( add::<$kind>(&mut generator, &mut names); )*
            };
        }
        kinds![
            core::Pod,
            core::Node,
            core::Service,
            core::Endpoints,
            core::Namespace,
            core::Event,
            core::ConfigMap,
            core::Secret,
            core::ServiceAccount,
            core::ReplicationController,
            core::PersistentVolume,
            core::PersistentVolumeClaim,
            core::LimitRange,
            core::ResourceQuota,
            core::PodTemplate,
            apps::Deployment,
            apps::ReplicaSet,
            apps::DaemonSet,
            apps::StatefulSet,
            apps::ControllerRevision,
            batch::Job,
            batch::CronJob,
            coordination::Lease,
            discovery::EndpointSlice,
            events::Event,
            networking::Ingress,
            networking::NetworkPolicy,
            networking::IngressClass,
            policy::PodDisruptionBudget,
            rbac::Role,
            rbac::RoleBinding,
            rbac::ClusterRole,
            rbac::ClusterRoleBinding,
            scheduling::PriorityClass,
            storage::StorageClass,
            apiextensions::CustomResourceDefinition,
            autoscaling::HorizontalPodAutoscaler,
            k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler,
            k8s_openapi::api::certificates::v1::CertificateSigningRequest,
            // Not a stored kind: the scale subresource's view.
            k8s_openapi::api::autoscaling::v1::Scale,
        ];
        let mut definitions = generator.take_definitions(true);
        for ((group, version, kind), name) in &names {
            if let Some(Value::Object(schema)) = definitions.get_mut(name) {
                schema.insert(
                    "x-kubernetes-group-version-kind".into(),
                    serde_json::json!([{ "group": group, "kind": kind, "version": version }]),
                );
            }
        }
        let mut compiler = Compiler {
            definitions: &definitions,
            nodes: Vec::new(),
            named: HashMap::new(),
        };
        let kinds = names
            .iter()
            .map(|(key, name)| (key.clone(), compiler.named(name)))
            .collect();
        let nodes = compiler.nodes;
        Schemas {
            definitions,
            kinds,
            names,
            nodes,
        }
    }

    fn prune(
        &self,
        node: usize,
        value: &mut Value,
        keys: Keys,
        path: &mut String,
        unknown: &mut Vec<String>,
        depth: usize,
    ) {
        if depth >= MAX_PRUNE_DEPTH {
            return;
        }
        match (&self.nodes[node], value) {
            (
                Node::Object {
                    properties,
                    additional,
                },
                Value::Object(map),
            ) => {
                let mut dropped = Vec::new();
                for (key, child) in map.iter_mut() {
                    let known = properties.get(key.as_str()).or(additional.as_ref());
                    let start = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    match known {
                        Some(&next) => self.prune(next, child, keys, path, unknown, depth + 1),
                        None if keys == Keys::StrategicPatch && key.starts_with('$') => {}
                        None => {
                            unknown.push(path.clone());
                            dropped.push(key.clone());
                        }
                    }
                    path.truncate(start);
                }
                for key in dropped {
                    map.remove(&key);
                }
            }
            (Node::Array(items), Value::Array(values)) => {
                for (index, item) in values.iter_mut().enumerate() {
                    let start = path.len();
                    path.push_str(&format!("[{index}]"));
                    self.prune(*items, item, keys, path, unknown, depth + 1);
                    path.truncate(start);
                }
            }
            // Scalars, nulls, and values whose shape the schema does not pin down (a type
            // mismatch is validation's business, not pruning's).
            _ => {}
        }
    }
}

fn add<K: JsonSchema + k8s_openapi::Resource>(
    generator: &mut SchemaGenerator,
    names: &mut HashMap<(String, String, String), String>,
) {
    let _ = generator.subschema_for::<K>();
    names.insert(
        (
            K::GROUP.to_string(),
            K::VERSION.to_string(),
            K::KIND.to_string(),
        ),
        K::schema_name().into_owned(),
    );
}

struct Compiler<'a> {
    definitions: &'a Map<String, Value>,
    nodes: Vec<Node>,
    named: HashMap<String, usize>,
}

impl Compiler<'_> {
    /// The node of the named schema, compiling it once (recursive schemas such as
    /// `JSONSchemaProps` point back at their own node).
    fn named(&mut self, name: &str) -> usize {
        if let Some(&index) = self.named.get(name) {
            return index;
        }
        let index = self.nodes.len();
        self.nodes.push(Node::Any);
        self.named.insert(name.to_string(), index);
        if let Some(schema) = self.definitions.get(name) {
            let node = self.node(schema);
            self.nodes[index] = node;
        }
        index
    }

    fn push(&mut self, schema: &Value) -> usize {
        if let Some(name) = reference(schema) {
            return self.named(name);
        }
        let node = self.node(schema);
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn node(&mut self, schema: &Value) -> Node {
        if let Some(name) = reference(schema) {
            let index = self.named(name);
            return self.nodes[index].clone();
        }
        if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            return Node::Any;
        }
        let additional = schema
            .get("additionalProperties")
            .filter(|a| a.is_object())
            .map(|a| self.push(a));
        if let Some(Value::Object(properties)) = schema.get("properties") {
            let properties = properties
                .iter()
                .map(|(key, property)| (key.clone(), self.push(property)))
                .collect();
            return Node::Object {
                properties,
                additional,
            };
        }
        if additional.is_some() {
            return Node::Object {
                properties: HashMap::new(),
                additional,
            };
        }
        if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
            return Node::Array(self.push(items));
        }
        Node::Any
    }
}

/// The schema name a `$ref` (possibly wrapped in a one-element `allOf`, as OpenAPI 3 writes
/// a reference with a description) points at.
fn reference(schema: &Value) -> Option<&str> {
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        return target.strip_prefix(SCHEMA_REF_PREFIX);
    }
    match schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([only]) => reference(only),
        _ => None,
    }
}

/// Kubernetes' refusal of unknown fields under `fieldValidation=Strict`: 400 `BadRequest`,
/// `Deployment in version "v1" cannot be handled as a Deployment: strict decoding error:
/// unknown field "spec.foo"`.
pub fn strict_decoding_error(resource: &ResourceInfo, unknown: &[String]) -> Error {
    let fields = unknown
        .iter()
        .map(|field| format!("unknown field {field:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Error::bad_request(format!(
        "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {fields}",
        kind = resource.kind(),
        version = resource.version(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(group: &str, kind: &str) -> KindSchema<'static> {
        Schemas::builtin()
            .of(&ResourceInfo::builtin(group, kind).unwrap())
            .unwrap()
    }

    #[test]
    fn every_built_in_kind_has_a_schema_named_as_kubernetes_names_it() {
        for info in ResourceInfo::builtins() {
            assert!(
                Schemas::builtin().of(&info).is_some(),
                "{} has no schema",
                info.qualified_kind()
            );
        }
        assert_eq!(
            schema("apps", "Deployment").name(),
            "io.k8s.api.apps.v1.Deployment"
        );
        let deployment = &Schemas::builtin().definitions()["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
    }

    #[test]
    fn custom_kinds_have_no_schema() {
        let widget = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
        assert!(Schemas::builtin().of(&widget).is_none());
    }

    #[test]
    fn unknown_fields_are_pruned_and_named_with_their_paths() {
        let mut deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "colour": "red"},
            "spec": {
                "replicas": 2,
                "replica": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [
                        {"name": "a", "image": "nginx"},
                        {"name": "b", "image": "nginx", "imagePullPolic": "Always",
                         "ports": [{"containerPort": 80, "hostname": "x"}]}
                    ]}
                }
            },
            "extra": true
        });
        let unknown = schema("apps", "Deployment").prune(&mut deployment, Keys::Object);
        assert_eq!(
            unknown,
            [
                "extra",
                "metadata.colour",
                "spec.replica",
                "spec.template.spec.containers[1].imagePullPolic",
                "spec.template.spec.containers[1].ports[0].hostname",
            ]
        );
        assert!(deployment.get("extra").is_none());
        assert!(deployment["spec"].get("replica").is_none());
        assert_eq!(deployment["spec"]["replicas"], 2);
        assert_eq!(deployment["metadata"]["labels"]["app"], "web");
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][1]["ports"][0],
            json!({"containerPort": 80})
        );
        // Idempotent.
        let again = schema("apps", "Deployment").prune(&mut deployment, Keys::Object);
        assert!(again.is_empty());
    }

    #[test]
    fn maps_quantities_and_int_or_strings_keep_any_key_or_value() {
        let mut pod = json!({
            "metadata": {"name": "p", "annotations": {"any/key": "v"}},
            "spec": {"containers": [{
                "name": "c",
                "resources": {"limits": {"cpu": "500m", "example.com/gpu": 1}},
                "livenessProbe": {"httpGet": {"port": "http", "path": "/"}}
            }]}
        });
        let before = pod.clone();
        assert!(schema("", "Pod").prune(&mut pod, Keys::Object).is_empty());
        assert_eq!(pod, before);
    }

    #[test]
    fn free_form_and_recursive_schemas_are_walked_safely() {
        let mut crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "names": {"plural": "widgets", "kind": "Widget"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {
                    "openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer"}},
                                 "bogus": 1}
                    }}
                }}]}
        });
        let unknown = schema("apiextensions.k8s.io", "CustomResourceDefinition")
            .prune(&mut crd, Keys::Object);
        assert_eq!(
            unknown,
            ["spec.versions[0].schema.openAPIV3Schema.properties.spec.bogus"]
        );
    }

    #[test]
    fn pruning_a_value_deeper_than_the_bound_stops_at_the_bound() {
        // A CRD schema nested 50,000 `properties` deep follows the recursive JSONSchemaProps
        // schema all the way down; the walk stops at MAX_PRUNE_DEPTH instead of the stack's end.
        let mut nested = json!({"type": "string", "bogus": true});
        for _ in 0..50_000 {
            // Built by moving, not with `json!`, which would copy the value recursively.
            let mut properties = Map::new();
            properties.insert("x".into(), nested);
            let mut level = Map::new();
            level.insert("type".into(), "object".into());
            level.insert("properties".into(), Value::Object(properties));
            nested = Value::Object(level);
        }
        let mut schema_of_v1 = Map::new();
        schema_of_v1.insert("openAPIV3Schema".into(), nested);
        let mut version = Map::new();
        version.insert("name".into(), "v1".into());
        version.insert("schema".into(), Value::Object(schema_of_v1));
        let mut crd = json!({"spec": {"versions": []}});
        crd["spec"]["versions"]
            .as_array_mut()
            .unwrap()
            .push(Value::Object(version));
        let walk = std::thread::Builder::new()
            // 100,000 levels would overflow this stack without the bound.
            .stack_size(8 << 20)
            .spawn(move || {
                let unknown = schema("apiextensions.k8s.io", "CustomResourceDefinition")
                    .prune(&mut crd, Keys::Object);
                // Dropping the value recurses as deep as it nests: leak it instead.
                std::mem::forget(crd);
                unknown
            })
            .unwrap();
        let unknown = walk.join().expect("the walk stays within its stack");
        assert!(unknown.is_empty(), "{unknown:?}");
    }

    #[test]
    fn strategic_patch_directives_are_not_unknown_fields() {
        let mut patch = json!({
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"name": "a", "$patch": "delete"}],
                "bogus": 1
            }}}
        });
        let unknown = schema("apps", "Deployment").prune(&mut patch, Keys::StrategicPatch);
        assert_eq!(unknown, ["spec.template.spec.bogus"]);
        let mut object = json!({"spec": {"$retainKeys": ["a"]}});
        assert_eq!(
            schema("apps", "Deployment").prune(&mut object, Keys::Object),
            ["spec.$retainKeys"]
        );
    }

    #[test]
    fn the_strict_error_reads_like_kubernetes() {
        let error = strict_decoding_error(
            &ResourceInfo::builtin("apps", "Deployment").unwrap(),
            &["spec.foo".into(), "bar".into()],
        );
        assert_eq!(
            error.to_string(),
            r#"Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.foo", unknown field "bar""#
        );
    }
}
