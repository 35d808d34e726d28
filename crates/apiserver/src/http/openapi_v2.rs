//! OpenAPI v2 (Swagger 2.0): `/openapi/v2`, one document for every served kind.
//!
//! It is built from the OpenAPI v3 documents of [`super::openapi`], so both describe the same
//! schemas and paths: every group version's paths are merged, and its `components.schemas`
//! become `definitions`, with each `#/components/schemas/` reference rewritten to
//! `#/definitions/` and the OpenAPI 3 constructs Swagger 2.0 lacks rewritten to their v2
//! forms (a request body becomes a `body` parameter, a parameter's `schema.type` its `type`, a
//! lone `allOf` reference the reference itself, `nullable` and `oneOf`/`anyOf` dropped). Kinds
//! keep their `x-kubernetes-group-version-kind`, which is how `kubectl` finds a kind's
//! definition for client-side validation and `kubectl explain`.
//!
//! The document is served as JSON, or as gnostic's protobuf message to a client asking for
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` (kubectl, for client-side
//! validation), converted from this JSON by `openapi_v2_proto`.

use serde_json::{json, Map, Value};

use crate::schema::SCHEMA_REF_PREFIX;

/// Where Swagger 2.0 keeps named schemas.
pub const DEFINITION_REF_PREFIX: &str = "#/definitions/";

/// The Swagger 2.0 document merging the OpenAPI v3 `documents` (one per group version).
pub fn swagger<'a>(documents: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for document in documents {
        if let Some(schemas) = document["components"]["schemas"].as_object() {
            for (name, schema) in schemas {
                definitions
                    .entry(name.clone())
                    .or_insert_with(|| schema_v2(schema));
            }
        }
        if let Some(document_paths) = document["paths"].as_object() {
            for (path, item) in document_paths {
                paths.insert(path.clone(), path_item_v2(item));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": super::discovery::version().git_version },
        "paths": paths,
        "definitions": definitions,
    })
}

/// A schema in its Swagger 2.0 form.
fn schema_v2(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            // `allOf: [{$ref}]` beside a description is OpenAPI 3's way of annotating a
            // reference; Swagger 2.0 writes the reference itself.
            if let Some(Value::Array(all)) = map.get("allOf") {
                if all.len() == 1 && all[0].get("$ref").is_some() {
                    let mut merged = map.clone();
                    merged.remove("allOf");
                    merged.insert("$ref".into(), all[0]["$ref"].clone());
                    return schema_v2(&Value::Object(merged));
                }
            }
            let mut converted = Map::new();
            for (key, value) in map {
                match key.as_str() {
                    "$ref" => {
                        let target = value.as_str().unwrap_or_default();
                        let target = match target.strip_prefix(SCHEMA_REF_PREFIX) {
                            Some(name) => format!("{DEFINITION_REF_PREFIX}{name}"),
                            None => target.to_string(),
                        };
                        converted.insert(key.clone(), Value::String(target));
                    }
                    "nullable" | "oneOf" | "anyOf" | "writeOnly" | "deprecated" | "$schema"
                    | "examples" | "const" => {}
                    // A list of types (`["string", "null"]`) is one type in Swagger 2.0.
                    "type" if value.is_array() => {
                        let first = value
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|t| *t != "null")
                            .cloned();
                        if let Some(first) = first {
                            converted.insert(key.clone(), first);
                        }
                    }
                    // Property names and extension values are data, not schemas.
                    "properties" | "definitions" => {
                        let properties = value
                            .as_object()
                            .map(|properties| {
                                properties
                                    .iter()
                                    .map(|(name, schema)| (name.clone(), schema_v2(schema)))
                                    .collect::<Map<_, _>>()
                            })
                            .unwrap_or_default();
                        converted.insert(key.clone(), Value::Object(properties));
                    }
                    _ if key.starts_with("x-") => {
                        converted.insert(key.clone(), value.clone());
                    }
                    _ => {
                        converted.insert(key.clone(), schema_v2(value));
                    }
                }
            }
            Value::Object(converted)
        }
        Value::Array(items) => Value::Array(items.iter().map(schema_v2).collect()),
        other => other.clone(),
    }
}

/// A path item: each operation, and the path's own parameters, in Swagger 2.0 form.
fn path_item_v2(item: &Value) -> Value {
    let Some(item) = item.as_object() else {
        return item.clone();
    };
    item.iter()
        .map(|(key, value)| {
            let converted = match key.as_str() {
                "parameters" => parameters_v2(value),
                _ => operation_v2(value),
            };
            (key.clone(), converted)
        })
        .collect::<Map<_, _>>()
        .into()
}

fn parameters_v2(parameters: &Value) -> Value {
    parameters
        .as_array()
        .into_iter()
        .flatten()
        .map(|parameter| {
            let mut converted = parameter.as_object().cloned().unwrap_or_default();
            if let Some(schema) = converted.remove("schema") {
                if let Some(kind) = schema.get("type") {
                    converted.insert("type".into(), kind.clone());
                }
            }
            Value::Object(converted)
        })
        .collect::<Vec<_>>()
        .into()
}

fn operation_v2(operation: &Value) -> Value {
    let Some(operation) = operation.as_object() else {
        return operation.clone();
    };
    let mut converted = Map::new();
    let mut parameters = parameters_v2(operation.get("parameters").unwrap_or(&Value::Null))
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut produces: Vec<String> = Vec::new();
    for (key, value) in operation {
        match key.as_str() {
            "parameters" => {}
            "requestBody" => {
                let content = value["content"].as_object().cloned().unwrap_or_default();
                let consumes: Vec<&String> = content.keys().collect();
                converted.insert("consumes".into(), json!(consumes));
                let schema = content
                    .values()
                    .next()
                    .map(|media| schema_v2(&media["schema"]))
                    .unwrap_or_else(|| json!({}));
                parameters.push(json!({
                    "name": "body",
                    "in": "body",
                    "required": value["required"].as_bool().unwrap_or(true),
                    "schema": schema,
                }));
            }
            "responses" => {
                let mut responses = Map::new();
                for (code, response) in value.as_object().into_iter().flatten() {
                    let mut converted_response = json!({
                        "description": response["description"].clone(),
                    });
                    if let Some(content) = response["content"].as_object() {
                        for media_type in content.keys() {
                            if !produces.contains(media_type) {
                                produces.push(media_type.clone());
                            }
                        }
                        if let Some(media) = content.values().next() {
                            converted_response["schema"] = schema_v2(&media["schema"]);
                        }
                    }
                    responses.insert(code.clone(), converted_response);
                }
                converted.insert("responses".into(), Value::Object(responses));
            }
            _ => {
                converted.insert(key.clone(), value.clone());
            }
        }
    }
    if !produces.is_empty() {
        converted.insert("produces".into(), json!(produces));
    }
    converted.insert("schemes".into(), json!(["https"]));
    converted.insert("parameters".into(), Value::Array(parameters));
    Value::Object(converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::openapi::OpenApiV3;
    use capstan_api::ResourceInfo;

    fn swagger_of_builtins() -> Value {
        let mut served: Vec<ResourceInfo> = ResourceInfo::builtins().collect();
        served.push(ResourceInfo::new(
            "example.com",
            "v1",
            "Widget",
            "widgets",
            true,
        ));
        OpenApiV3::new(&served).swagger_v2().as_ref().clone()
    }

    fn refs(value: &Value, into: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(target) = map.get("$ref").and_then(Value::as_str) {
                    into.push(target.to_string());
                }
                map.values().for_each(|v| refs(v, into));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, into)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_points_at_a_definition_of_the_document() {
        let swagger = swagger_of_builtins();
        assert_eq!(swagger["swagger"], "2.0");
        let definitions = swagger["definitions"].as_object().unwrap();
        let mut targets = Vec::new();
        refs(&swagger, &mut targets);
        assert!(!targets.is_empty());
        for target in targets {
            let name = target
                .strip_prefix(DEFINITION_REF_PREFIX)
                .unwrap_or_else(|| panic!("a v3 reference is left: {target}"));
            assert!(definitions.contains_key(name), "dangling {target}");
        }
    }

    #[test]
    fn kinds_keep_their_group_version_kind_and_paths_are_merged() {
        let swagger = swagger_of_builtins();
        let deployment = &swagger["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert_eq!(
            swagger["definitions"]["com.example.v1.Widget"]["x-kubernetes-group-version-kind"][0]
                ["group"],
            "example.com"
        );
        let paths = swagger["paths"].as_object().unwrap();
        for path in [
            "/api/v1/namespaces/{namespace}/pods",
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            "/apis/batch/v1/namespaces/{namespace}/cronjobs",
            "/apis/example.com/v1/namespaces/{namespace}/widgets/{name}",
        ] {
            assert!(paths.contains_key(path), "{path} missing");
        }
    }

    #[test]
    fn operations_take_their_body_as_a_parameter_and_name_their_media_types() {
        let swagger = swagger_of_builtins();
        let create = &swagger["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"];
        let body = create["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["in"] == "body")
            .expect("a body parameter");
        assert_eq!(
            body["schema"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.Deployment"
        );
        assert!(create["consumes"]
            .as_array()
            .unwrap()
            .contains(&json!("application/json")));
        assert_eq!(
            create["responses"]["200"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.Deployment"
        );
        let validation = create["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "fieldValidation")
            .unwrap();
        assert_eq!(validation["type"], "string");
        assert!(validation.get("schema").is_none());
    }

    #[test]
    fn no_openapi_3_keyword_is_left_in_the_definitions() {
        fn check(value: &Value, at: &str) {
            match value {
                Value::Object(map) => {
                    for (key, value) in map {
                        if key.starts_with("x-") {
                            continue;
                        }
                        assert!(
                            !matches!(key.as_str(), "nullable" | "oneOf" | "anyOf" | "const"),
                            "{key} at {at}"
                        );
                        if key == "type" {
                            assert!(value.is_string(), "type {value} at {at}");
                        }
                        if key == "properties" {
                            for (name, property) in value.as_object().into_iter().flatten() {
                                check(property, &format!("{at}/{name}"));
                            }
                            continue;
                        }
                        check(value, &format!("{at}/{key}"));
                    }
                }
                Value::Array(items) => items.iter().for_each(|v| check(v, at)),
                _ => {}
            }
        }
        let swagger = swagger_of_builtins();
        for (name, definition) in swagger["definitions"].as_object().unwrap() {
            // Property maps hold names, which may be anything.
            check(definition, name);
        }
    }
}
