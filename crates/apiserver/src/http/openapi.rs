//! OpenAPI v3: `/openapi/v3` lists one document per group version, and
//! `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>` are the documents.
//!
//! kubectl reads them to learn that the server validates fields itself (the `fieldValidation`
//! parameter of each kind's PATCH operation, found through
//! `x-kubernetes-group-version-kind`), and `kubectl explain` reads the schemas. Each document
//! has every path of its kinds with Kubernetes' operation extensions, and in
//! `components.schemas` the schemas of its kinds and all they refer to: k8s-openapi's for
//! built-in kinds (see [`crate::schema`]), an open object keeping unknown fields for custom
//! ones.
//!
//! A PATCH operation advertises JSON patch and JSON merge patch, though the server also takes
//! strategic merge patches of built-in kinds: the schemas carry no patch merge keys, and a client that
//! sees strategic merge advertised builds its patches from the schema instead of from its own
//! compiled-in types, merging lists such as `containers` wrongly.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use capstan_api::ResourceInfo;
use serde_json::{json, Map, Value};

use super::openapi_v2_proto::{self, Encoded};
use crate::schema::{Schemas, SCHEMA_REF_PREFIX};

/// The OpenAPI v3 documents of a set of served kinds, built once for that set, and the
/// OpenAPI v2 document made of them, built on first use.
#[derive(Debug, Clone)]
pub struct OpenApiV3 {
    resources: Vec<ResourceInfo>,
    /// Group-version path (`api/v1`, `apis/apps/v1`) → (document, hash of its bytes).
    documents: BTreeMap<String, (Value, String)>,
    /// `/openapi/v2`, merged from `documents` when first asked for.
    swagger: OnceLock<Arc<Value>>,
    /// `/openapi/v2` encoded as JSON, when first asked for.
    swagger_json: OnceLock<Arc<Encoded>>,
    /// `/openapi/v2` encoded as protobuf, when first asked for.
    swagger_protobuf: OnceLock<Arc<Encoded>>,
}

impl OpenApiV3 {
    /// Builds the documents of `resources`.
    pub fn new(resources: &[ResourceInfo]) -> Self {
        let mut by_group_version: BTreeMap<String, Vec<&ResourceInfo>> = BTreeMap::new();
        for resource in resources {
            by_group_version
                .entry(group_version_path(resource.group(), resource.version()))
                .or_default()
                .push(resource);
        }
        let documents = by_group_version
            .into_iter()
            .map(|(path, kinds)| {
                let document = document(&kinds);
                let hash = hash_of(&document);
                (path, (document, hash))
            })
            .collect();
        OpenApiV3 {
            resources: resources.to_vec(),
            documents,
            swagger: OnceLock::new(),
            swagger_json: OnceLock::new(),
            swagger_protobuf: OnceLock::new(),
        }
    }

    /// The OpenAPI v2 (Swagger 2.0) document of the same kinds (see [`super::openapi_v2`]),
    /// built once.
    pub fn swagger_v2(&self) -> Arc<Value> {
        self.swagger
            .get_or_init(|| {
                Arc::new(super::openapi_v2::swagger(
                    self.documents.values().map(|(document, _)| document),
                ))
            })
            .clone()
    }

    /// The OpenAPI v2 document as JSON, with its entity tag, encoded once.
    pub(crate) fn swagger_v2_json(&self) -> Arc<Encoded> {
        self.swagger_json
            .get_or_init(|| Arc::new(Encoded::new(self.swagger_v2().to_string().into_bytes())))
            .clone()
    }

    /// The OpenAPI v2 document as gnostic's `openapi.v2.Document` protobuf message (see
    /// [`super::openapi_v2_proto`]), with its entity tag, encoded once.
    pub(crate) fn swagger_v2_protobuf(&self) -> Arc<Encoded> {
        self.swagger_protobuf
            .get_or_init(|| Arc::new(Encoded::new(openapi_v2_proto::encode(&self.swagger_v2()))))
            .clone()
    }

    /// Whether these documents describe exactly `resources`.
    pub fn describes(&self, resources: &[ResourceInfo]) -> bool {
        self.resources == resources
    }

    /// `/openapi/v3`: every group version's document, with a URL that changes whenever the
    /// document does (so clients may cache by URL).
    pub fn root(&self) -> Value {
        let paths: Map<String, Value> = self
            .documents
            .iter()
            .map(|(path, (_, hash))| {
                (
                    path.clone(),
                    json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}") }),
                )
            })
            .collect();
        json!({ "paths": paths })
    }

    /// The document at `path` (`api/v1`, `apis/apps/v1`), if a served kind is there.
    pub fn document(&self, path: &str) -> Option<&Value> {
        self.documents
            .get(path.trim_matches('/'))
            .map(|(document, _)| document)
    }
}

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn hash_of(document: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    document.to_string().hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// The schema name of a custom kind, as Kubernetes names those of custom resources: the group
/// reversed, then version and kind (`com.example.v1.Widget`).
fn custom_schema_name(resource: &ResourceInfo) -> String {
    let group: Vec<&str> = resource.group().split('.').rev().collect();
    format!(
        "{}.{}.{}",
        group.join("."),
        resource.version(),
        resource.kind()
    )
}

fn document(kinds: &[&ResourceInfo]) -> Value {
    let schemas = Schemas::builtin();
    let mut paths = Map::new();
    let mut components = Map::new();
    let mut roots = Vec::new();
    for resource in kinds {
        let name = match schemas.name_of(resource.group(), resource.version(), resource.kind()) {
            Some(name) => name.to_string(),
            None => {
                let name = custom_schema_name(resource);
                components.insert(name.clone(), custom_schema(resource));
                roots.push(json!({"$ref": format!("{SCHEMA_REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")}));
                name
            }
        };
        roots.push(json!({ "$ref": format!("{SCHEMA_REF_PREFIX}{name}") }));
        add_paths(&mut paths, resource, &name);
        if resource.subresources().scale {
            roots.push(
                json!({ "$ref": format!("{SCHEMA_REF_PREFIX}io.k8s.api.autoscaling.v1.Scale") }),
            );
        }
    }
    // Every schema the kinds refer to, transitively.
    let mut wanted: Vec<String> = Vec::new();
    for root in &roots {
        collect_refs(root, &mut wanted);
    }
    let mut seen = BTreeSet::new();
    while let Some(name) = wanted.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = schemas.definitions().get(&name) {
            collect_refs(schema, &mut wanted);
            components.insert(name, schema.clone());
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": super::discovery::version().git_version },
        "paths": paths,
        "components": { "schemas": components },
    })
}

fn collect_refs(schema: &Value, into: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(SCHEMA_REF_PREFIX))
            {
                into.push(name.to_string());
            }
            map.values().for_each(|v| collect_refs(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}

fn custom_schema(resource: &ResourceInfo) -> Value {
    // A CustomResourceDefinition's version carries its own schema.
    if let Some(schema) = crate::apiextensions::openapi_schema(resource) {
        return schema;
    }
    json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "apiVersion": { "type": "string" },
            "kind": { "type": "string" },
            "metadata": {
                "allOf": [{ "$ref": format!("{SCHEMA_REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta") }]
            },
        },
        "x-kubernetes-group-version-kind": [{
            "group": resource.group(), "kind": resource.kind(), "version": resource.version(),
        }],
    })
}

fn query(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": { "type": "string" }, "uniqueItems": true })
}

fn path_parameter(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" }, "uniqueItems": true })
}

fn write_parameters() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "When present (All), the modification is checked but not persisted.",
        ),
        query("fieldManager", "The name of the actor making the change."),
        query(
            "fieldValidation",
            "How unknown fields in the object are treated: Ignore drops them, Warn (the default) \
             drops them and answers a Warning header per field, Strict refuses the request.",
        ),
    ]
}

fn list_parameters(watch: bool) -> Vec<Value> {
    let mut parameters = vec![
        query("labelSelector", "Only objects whose labels match."),
        query("fieldSelector", "Only objects whose fields match."),
        query("limit", "At most this many objects per page."),
        query("continue", "The token of the next page."),
        query("resourceVersion", "The state to read from."),
        query(
            "resourceVersionMatch",
            "How resourceVersion applies: NotOlderThan or Exact.",
        ),
        query("timeoutSeconds", "How long a watch lasts."),
    ];
    if watch {
        parameters.push(query("watch", "Stream changes as WatchEvents."));
        parameters.push(query("allowWatchBookmarks", "Send BOOKMARK events."));
    }
    parameters
}

fn operation(
    action: &str,
    id: String,
    resource: &ResourceInfo,
    gvk: (&str, &str, &str),
    schema: &str,
    parameters: Vec<Value>,
    body: Option<&[&str]>,
) -> Value {
    let reference = json!({ "$ref": format!("{SCHEMA_REF_PREFIX}{schema}") });
    let mut operation = json!({
        "operationId": id,
        "description": format!("{action} {}", resource.qualified_resource()),
        "parameters": parameters,
        "responses": {
            "200": { "description": "OK", "content": { "application/json": { "schema": reference } } },
            "401": { "description": "Unauthorized" },
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": { "group": gvk.0, "version": gvk.1, "kind": gvk.2 },
    });
    if let Some(media_types) = body {
        let content: Map<String, Value> = media_types
            .iter()
            .map(|media| (media.to_string(), json!({ "schema": reference })))
            .collect();
        operation["requestBody"] = json!({ "content": content, "required": true });
    }
    operation
}

fn add_paths(paths: &mut Map<String, Value>, resource: &ResourceInfo, schema: &str) {
    let prefix = format!(
        "/{}",
        group_version_path(resource.group(), resource.version())
    );
    let plural = resource.plural();
    let gvk = (resource.group(), resource.version(), resource.kind());
    let id = |verb: &str, suffix: &str| {
        let mut id = String::from(verb);
        for part in resource.group().split('.').chain([resource.version()]) {
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                id.push(first.to_ascii_uppercase());
                id.push_str(chars.as_str());
            }
        }
        if resource.namespaced() {
            id.push_str("Namespaced");
        }
        id.push_str(resource.kind());
        id.push_str(suffix);
        id
    };
    let (collection, mut scope_parameters) = if resource.namespaced() {
        (
            format!("{prefix}/namespaces/{{namespace}}/{plural}"),
            vec![path_parameter("namespace")],
        )
    } else {
        (format!("{prefix}/{plural}"), Vec::new())
    };
    let object_media = ["application/json", "application/yaml"];
    paths.insert(
        collection.clone(),
        json!({
            "get": operation("list", id("list", ""), resource, gvk, schema, list_parameters(true), None),
            "post": operation("post", id("create", ""), resource, gvk, schema, write_parameters(), Some(&object_media)),
            "delete": operation("deletecollection", id("deleteCollection", ""), resource, gvk, schema, list_parameters(false), None),
            "parameters": scope_parameters,
        }),
    );
    if !super::rest::supports_delete_collection(resource) {
        if let Some(collection) = paths.get_mut(&collection).and_then(Value::as_object_mut) {
            collection.remove("delete");
        }
    }
    if resource.namespaced() {
        paths.insert(
            format!("{prefix}/{plural}"),
            json!({
                "get": operation("list", id("list", "ForAllNamespaces").replace("Namespaced", ""), resource, gvk, schema, list_parameters(true), None),
            }),
        );
    }
    scope_parameters.push(path_parameter("name"));
    let mut patch_parameters = write_parameters();
    patch_parameters.push(query("force", "Force an apply patch."));
    let object = json!({
        "get": operation("get", id("read", ""), resource, gvk, schema, Vec::new(), None),
        "put": operation("put", id("replace", ""), resource, gvk, schema, write_parameters(), Some(&object_media)),
        "patch": operation("patch", id("patch", ""), resource, gvk, schema, patch_parameters.clone(), Some(&["application/json-patch+json", "application/merge-patch+json"])),
        "delete": operation("delete", id("delete", ""), resource, gvk, schema, vec![query("propagationPolicy", "Orphan, Background or Foreground."), query("gracePeriodSeconds", "Seconds before deletion.")], None),
        "parameters": scope_parameters,
    });
    paths.insert(format!("{collection}/{{name}}"), object);
    if resource.subresources().status {
        paths.insert(
            format!("{collection}/{{name}}/status"),
            json!({
                "get": operation("get", id("read", "Status"), resource, gvk, schema, Vec::new(), None),
                "put": operation("put", id("replace", "Status"), resource, gvk, schema, write_parameters(), Some(&object_media)),
                "parameters": scope_parameters,
            }),
        );
    }
    if resource.subresources().scale {
        let scale = ("autoscaling", "v1", "Scale");
        let scale_schema = "io.k8s.api.autoscaling.v1.Scale";
        paths.insert(
            format!("{collection}/{{name}}/scale"),
            json!({
                "get": operation("get", id("read", "Scale"), resource, scale, scale_schema, Vec::new(), None),
                "put": operation("put", id("replace", "Scale"), resource, scale, scale_schema, write_parameters(), Some(&object_media)),
                "patch": operation("patch", id("patch", "Scale"), resource, scale, scale_schema, patch_parameters, Some(&["application/json-patch+json", "application/merge-patch+json"])),
                "parameters": scope_parameters,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Vec<ResourceInfo> {
        let mut served: Vec<ResourceInfo> = ResourceInfo::builtins().collect();
        served.push(ResourceInfo::new(
            "example.com",
            "v1",
            "Widget",
            "widgets",
            true,
        ));
        served
    }

    /// The PATCH operation of `kind` in `document`, found as kubectl finds it.
    fn patch_of<'a>(document: &'a Value, group: &str, kind: &str) -> Option<&'a Value> {
        document["paths"].as_object()?.values().find_map(|path| {
            let patch = path.get("patch")?;
            let gvk = &patch["x-kubernetes-group-version-kind"];
            (gvk["group"] == group && gvk["kind"] == kind).then_some(patch)
        })
    }

    #[test]
    fn the_root_lists_every_group_version_with_a_hashed_url() {
        let openapi = OpenApiV3::new(&served());
        let root = openapi.root();
        for path in [
            "api/v1",
            "apis/apps/v1",
            "apis/batch/v1",
            "apis/example.com/v1",
        ] {
            let url = root["paths"][path]["serverRelativeURL"].as_str().unwrap();
            assert!(
                url.starts_with(&format!("/openapi/v3/{path}?hash=")),
                "{url}"
            );
            assert!(openapi.document(path).is_some(), "{path}");
        }
        assert!(openapi.document("apis/nothing/v1").is_none());
        assert_eq!(
            OpenApiV3::new(&served()).root(),
            root,
            "stable across builds"
        );
    }

    #[test]
    fn every_kind_patch_operation_takes_field_validation() {
        let openapi = OpenApiV3::new(&served());
        for resource in served() {
            let document = openapi
                .document(&group_version_path(resource.group(), resource.version()))
                .unwrap();
            let patch = patch_of(document, resource.group(), resource.kind())
                .unwrap_or_else(|| panic!("no PATCH for {}", resource.qualified_kind()));
            let names: Vec<&str> = patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert!(names.contains(&"fieldValidation"), "{names:?}");
            assert!(patch["requestBody"]["content"]
                .get("application/merge-patch+json")
                .is_some());
        }
    }

    #[test]
    fn documents_carry_the_schemas_their_kinds_refer_to() {
        let openapi = OpenApiV3::new(&served());
        let apps = openapi.document("apis/apps/v1").unwrap();
        let schemas = apps["components"]["schemas"].as_object().unwrap();
        for name in [
            "io.k8s.api.apps.v1.Deployment",
            "io.k8s.api.apps.v1.DeploymentSpec",
            "io.k8s.api.core.v1.PodSpec",
            "io.k8s.api.core.v1.Container",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
            "io.k8s.api.autoscaling.v1.Scale",
        ] {
            assert!(schemas.contains_key(name), "{name} missing");
        }
        // Every reference resolves inside the document.
        let mut refs = Vec::new();
        collect_refs(apps, &mut refs);
        for name in refs {
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        let widgets = openapi.document("apis/example.com/v1").unwrap();
        let widget = &widgets["components"]["schemas"]["com.example.v1.Widget"];
        assert_eq!(widget["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(
            widget["x-kubernetes-group-version-kind"][0]["kind"],
            "Widget"
        );
    }

    #[test]
    fn paths_follow_the_kinds_scope_and_subresources() {
        let openapi = OpenApiV3::new(&served());
        let core = openapi.document("api/v1").unwrap();
        let paths = core["paths"].as_object().unwrap();
        for path in [
            "/api/v1/namespaces/{namespace}/pods",
            "/api/v1/namespaces/{namespace}/pods/{name}",
            "/api/v1/namespaces/{namespace}/pods/{name}/status",
            "/api/v1/pods",
            "/api/v1/nodes/{name}",
            "/api/v1/namespaces/{name}",
        ] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        assert!(!paths.contains_key("/api/v1/namespaces/{namespace}/configmaps/{name}/status"));
        let apps = openapi.document("apis/apps/v1").unwrap();
        assert!(apps["paths"]
            .get("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale")
            .is_some());
    }
}
