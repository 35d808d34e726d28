//! The structure server-side apply merges by: which values are structs or maps (merged key by
//! key, or atomic), and which lists are atomic, sets or maps keyed by some of their elements'
//! fields.
//!
//! A [`StructuralSchema`] is compiled from an OpenAPI v3 schema whose nodes may carry
//! Kubernetes' extensions (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`, `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`), as
//! a CRD's structural schema does ([`StructuralSchema::from_openapi`]).
//!
//! For the built-in kinds ([`StructuralSchema::builtin`]) the structure is k8s-openapi's
//! schemars output (the one [`crate::schema`] builds), which carries none of these extensions.
//! They are overlaid from `kubernetes_list_semantics.json`, extracted mechanically from
//! Kubernetes' published OpenAPI document (`api/openapi-spec/swagger.json` of
//! kubernetes/kubernetes v1.36.0, as vendored by the k8s-pb project), keyed by the same
//! definition names (`io.k8s.api.core.v1.PodSpec`) and property names:
//!
//! ```text
//! jq -S '.definitions | with_entries(.value |= ((if has("x-kubernetes-map-type") then {".":
//!   {"x-kubernetes-map-type": .["x-kubernetes-map-type"]}} else {} end) + ((.properties // {})
//!   | with_entries(.value |= with_entries(select(.key | IN("x-kubernetes-list-type",
//!   "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-patch-merge-key",
//!   "x-kubernetes-patch-strategy")))) | with_entries(select(.value != {})))))
//!   | with_entries(select(.value != {}))' swagger.json
//! ```
//!
//! (`"."` holds a definition's own `x-kubernetes-map-type`.) Regenerate it with that command
//! when moving to a newer Kubernetes.
//!
//! Without a schema ([`StructuralSchema::deduced`], custom kinds until their CRD supplies
//! one) every object is a granular map and every list is atomic, as in Kubernetes' deduced
//! type.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use capstan_api::ResourceInfo;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::schema::{Schemas, SCHEMA_REF_PREFIX};

/// How a list merges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Replaced and owned as a whole.
    Atomic,
    /// Scalars, merged as a set; each element is owned on its own.
    Set,
    /// Objects keyed by these fields; elements merge by key and are owned field by field.
    Map(Vec<String>),
}

/// One compiled node.
#[derive(Clone, Debug)]
enum Shape {
    /// No schema: objects are granular maps of untyped values, lists are atomic.
    Untyped,
    /// A scalar, or anything owned as a whole.
    Leaf,
    /// A struct (known `fields`) or a map (`rest` for every other key).
    Map {
        fields: HashMap<String, usize>,
        rest: Option<usize>,
        atomic: bool,
    },
    /// A list of `items`.
    List { items: usize, list_type: ListType },
}

/// A handle on one node of a [`StructuralSchema`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node(usize);

/// What a node is, as the merge sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    /// Merged key by key (a struct, a granular map, or an untyped object).
    Granular,
    /// Owned and replaced as a whole.
    Atomic,
    /// A list, with how it merges.
    List(&'a ListType),
}

/// The structure of one kind, for merging and ownership; see the [module docs](self).
#[derive(Debug)]
pub struct StructuralSchema {
    shapes: Vec<Shape>,
    root: usize,
}

const UNTYPED: usize = 0;

impl StructuralSchema {
    /// No schema: objects granular, lists atomic.
    pub fn deduced() -> Arc<StructuralSchema> {
        static DEDUCED: OnceLock<Arc<StructuralSchema>> = OnceLock::new();
        DEDUCED
            .get_or_init(|| {
                Arc::new(StructuralSchema {
                    shapes: vec![Shape::Untyped],
                    root: UNTYPED,
                })
            })
            .clone()
    }

    /// The schema of a built-in kind (see the [module docs](self)), built once per kind; `None`
    /// for a kind k8s-openapi has no schema for.
    pub fn builtin(resource: &ResourceInfo) -> Option<Arc<StructuralSchema>> {
        static BUILT: OnceLock<Mutex<HashMap<String, Arc<StructuralSchema>>>> = OnceLock::new();
        let schemas = Schemas::builtin();
        let name = schemas.name_of(resource.group(), resource.version(), resource.kind())?;
        let cache = BUILT.get_or_init(Default::default);
        if let Some(found) = cache.lock().get(name) {
            return Some(found.clone());
        }
        let mut compiler = Compiler::new(schemas.definitions(), Some(builtin_extensions()));
        let root = compiler.named(name);
        let schema = Arc::new(StructuralSchema {
            shapes: compiler.shapes,
            root,
        });
        cache.lock().insert(name.to_string(), schema.clone());
        Some(schema)
    }

    /// Compiles an inline OpenAPI v3 schema (a CRD version's `openAPIV3Schema`), reading the
    /// `x-kubernetes-*` extensions on its nodes. `x-kubernetes-preserve-unknown-fields` and
    /// nodes without a type make untyped subtrees.
    pub fn from_openapi(schema: &Value) -> StructuralSchema {
        let definitions = Map::new();
        let mut compiler = Compiler::new(&definitions, None);
        let root = compiler.push(schema);
        StructuralSchema {
            shapes: compiler.shapes,
            root,
        }
    }

    /// The root node (the object).
    pub fn root(&self) -> Node {
        Node(self.root)
    }

    /// What `node` is.
    pub fn kind(&self, node: Node) -> Kind<'_> {
        match &self.shapes[node.0] {
            Shape::Untyped => Kind::Granular,
            Shape::Leaf => Kind::Atomic,
            Shape::Map { atomic: true, .. } => Kind::Atomic,
            Shape::Map { .. } => Kind::Granular,
            Shape::List { list_type, .. } => Kind::List(list_type),
        }
    }

    /// Whether `node` is untyped (values below it are read by their own shape).
    pub fn is_untyped(&self, node: Node) -> bool {
        matches!(self.shapes[node.0], Shape::Untyped)
    }

    /// The node of the field or map key `key` of `node` (untyped when the schema does not
    /// know it).
    pub fn field(&self, node: Node, key: &str) -> Node {
        match &self.shapes[node.0] {
            Shape::Map { fields, rest, .. } => {
                Node(fields.get(key).copied().or(*rest).unwrap_or(UNTYPED))
            }
            _ => Node(UNTYPED),
        }
    }

    /// The node of `node`'s list items.
    pub fn items(&self, node: Node) -> Node {
        match &self.shapes[node.0] {
            Shape::List { items, .. } => Node(*items),
            _ => Node(UNTYPED),
        }
    }
}

/// The extensions overlaid on the built-in kinds' schemas, by definition and property name.
fn builtin_extensions() -> &'static Map<String, Value> {
    static EXTENSIONS: OnceLock<Map<String, Value>> = OnceLock::new();
    EXTENSIONS.get_or_init(|| {
        serde_json::from_str(include_str!("kubernetes_list_semantics.json"))
            .expect("kubernetes_list_semantics.json is a JSON object")
    })
}

struct Compiler<'a> {
    definitions: &'a Map<String, Value>,
    extensions: Option<&'a Map<String, Value>>,
    shapes: Vec<Shape>,
    named: HashMap<String, usize>,
}

impl<'a> Compiler<'a> {
    fn new(
        definitions: &'a Map<String, Value>,
        extensions: Option<&'a Map<String, Value>>,
    ) -> Self {
        Compiler {
            definitions,
            extensions,
            shapes: vec![Shape::Untyped],
            named: HashMap::new(),
        }
    }

    /// The node of a named definition, compiled once (recursive definitions point back at
    /// their own node).
    fn named(&mut self, name: &str) -> usize {
        if let Some(&index) = self.named.get(name) {
            return index;
        }
        let index = self.shapes.len();
        self.shapes.push(Shape::Untyped);
        self.named.insert(name.to_string(), index);
        let Some(schema) = self.definitions.get(name) else {
            return index;
        };
        let overlay = self
            .extensions
            .and_then(|e| e.get(name))
            .and_then(Value::as_object);
        let mut schema = schema.clone();
        if let (Some(overlay), Value::Object(object)) = (overlay, &mut schema) {
            if let Some(Value::Object(own)) = overlay.get(".") {
                object.extend(own.clone());
            }
            if let Some(Value::Object(properties)) = object.get_mut("properties") {
                for (property, extensions) in overlay {
                    if let (Some(Value::Object(target)), Value::Object(extensions)) =
                        (properties.get_mut(property), extensions)
                    {
                        target.extend(extensions.clone());
                    }
                }
            }
        }
        let shape = self.shape(&schema);
        self.shapes[index] = shape;
        index
    }

    fn push(&mut self, schema: &Value) -> usize {
        if let (Some(name), false) = (reference(schema), has_list_or_map_extensions(schema)) {
            return self.named(name);
        }
        let shape = self.shape(schema);
        self.shapes.push(shape);
        self.shapes.len() - 1
    }

    fn shape(&mut self, schema: &Value) -> Shape {
        if let Some(name) = reference(schema) {
            let index = self.named(name);
            let mut shape = self.shapes[index].clone();
            // A property's own extensions win over its type's.
            if schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic") {
                if let Shape::Map { atomic, .. } = &mut shape {
                    *atomic = true;
                }
            }
            return shape;
        }
        if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            return Shape::Untyped;
        }
        let atomic = schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
        if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
            let list_type = list_type(schema);
            let items = self.push(items);
            return Shape::List { items, list_type };
        }
        let rest = schema
            .get("additionalProperties")
            .filter(|a| a.is_object())
            .map(|a| self.push(a));
        let fields: HashMap<String, usize> = match schema.get("properties") {
            Some(Value::Object(properties)) => properties
                .iter()
                .map(|(key, property)| (key.clone(), self.push(property)))
                .collect(),
            _ => HashMap::new(),
        };
        if !fields.is_empty() || rest.is_some() {
            return Shape::Map {
                fields,
                rest,
                atomic,
            };
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") if atomic => Shape::Leaf,
            Some("object") | None => Shape::Untyped,
            Some(_) => Shape::Leaf,
        }
    }
}

/// How a list merges: `x-kubernetes-list-type` when present, else the patch strategy
/// (`merge` with a merge key: a map by that key; `merge` alone: a set), else atomic.
fn list_type(schema: &Value) -> ListType {
    let text = |key: &str| schema.get(key).and_then(Value::as_str);
    match text("x-kubernetes-list-type") {
        Some("set") => return ListType::Set,
        Some("map") => {
            let keys = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            return ListType::Map(keys);
        }
        Some(_) => return ListType::Atomic,
        None => {}
    }
    let merges = text("x-kubernetes-patch-strategy")
        .is_some_and(|s| s.split(',').any(|part| part.trim() == "merge"));
    match (merges, text("x-kubernetes-patch-merge-key")) {
        (true, Some(key)) => ListType::Map(vec![key.to_string()]),
        (true, None) => ListType::Set,
        _ => ListType::Atomic,
    }
}

fn has_list_or_map_extensions(schema: &Value) -> bool {
    schema.get("x-kubernetes-map-type").is_some()
}

/// The definition a `$ref` (possibly wrapped in a one-element `allOf`) names.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Arc<StructuralSchema> {
        StructuralSchema::builtin(&ResourceInfo::builtin("apps", "Deployment").unwrap()).unwrap()
    }

    fn at(schema: &StructuralSchema, path: &[&str]) -> Node {
        path.iter().fold(schema.root(), |node, step| match *step {
            "[]" => schema.items(node),
            field => schema.field(node, field),
        })
    }

    #[test]
    fn containers_are_a_list_map_keyed_by_name_in_built_in_kinds() {
        let schema = deployment();
        let containers = at(&schema, &["spec", "template", "spec", "containers"]);
        assert_eq!(
            schema.kind(containers),
            Kind::List(&ListType::Map(vec!["name".into()]))
        );
        let ports = at(
            &schema,
            &["spec", "template", "spec", "containers", "[]", "ports"],
        );
        assert_eq!(
            schema.kind(ports),
            Kind::List(&ListType::Map(vec![
                "containerPort".into(),
                "protocol".into()
            ]))
        );
        let args = at(
            &schema,
            &["spec", "template", "spec", "containers", "[]", "args"],
        );
        assert_eq!(schema.kind(args), Kind::List(&ListType::Atomic));
        let finalizers = at(&schema, &["metadata", "finalizers"]);
        assert_eq!(schema.kind(finalizers), Kind::List(&ListType::Set));
    }

    #[test]
    fn label_selectors_are_atomic_and_labels_are_granular() {
        let schema = deployment();
        assert_eq!(
            schema.kind(at(&schema, &["spec", "selector"])),
            Kind::Atomic
        );
        assert_eq!(
            schema.kind(at(&schema, &["metadata", "labels"])),
            Kind::Granular
        );
        assert_eq!(
            schema.kind(at(&schema, &["spec", "replicas"])),
            Kind::Atomic
        );
    }

    #[test]
    fn without_a_schema_lists_are_atomic_and_maps_granular() {
        let schema = StructuralSchema::deduced();
        let node = at(&schema, &["spec", "items"]);
        assert_eq!(schema.kind(node), Kind::Granular);
        assert!(schema.is_untyped(node));
    }

    #[test]
    fn a_crd_schema_supplies_its_own_list_types() {
        let schema = StructuralSchema::from_openapi(&json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "ports": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["port"],
                          "items": {"type": "object", "properties": {"port": {"type": "integer"}}}},
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "args": {"type": "array", "items": {"type": "string"}}
            }}}
        }));
        assert_eq!(
            schema.kind(at(&schema, &["spec", "ports"])),
            Kind::List(&ListType::Map(vec!["port".into()]))
        );
        assert_eq!(
            schema.kind(at(&schema, &["spec", "tags"])),
            Kind::List(&ListType::Set)
        );
        assert_eq!(
            schema.kind(at(&schema, &["spec", "args"])),
            Kind::List(&ListType::Atomic)
        );
    }
}
