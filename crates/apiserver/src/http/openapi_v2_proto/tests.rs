use std::time::Duration;

use capstan_api::ResourceInfo;
use prost::Message as _;
use serde_json::json;

use super::*;

fn served() -> OpenApiV3 {
    let mut served: Vec<ResourceInfo> = ResourceInfo::builtins().collect();
    served.push(ResourceInfo::new(
        "example.com",
        "v1",
        "Widget",
        "widgets",
        true,
    ));
    OpenApiV3::new(&served)
}

/// The document `/openapi/v2` serves as protobuf, decoded back.
fn decoded(openapi: &OpenApiV3) -> Document {
    Document::decode(openapi.swagger_v2_protobuf().body.clone()).expect("a Document")
}

fn definition<'a>(document: &'a Document, name: &str) -> &'a Schema {
    document
        .definitions
        .as_ref()
        .unwrap()
        .additional_properties
        .iter()
        .find(|named| named.name == name)
        .and_then(|named| named.value.as_ref())
        .unwrap_or_else(|| panic!("no definition {name}"))
}

fn property<'a>(schema: &'a Schema, name: &str) -> &'a Schema {
    schema
        .properties
        .as_ref()
        .unwrap()
        .additional_properties
        .iter()
        .find(|named| named.name == name)
        .and_then(|named| named.value.as_ref())
        .unwrap_or_else(|| panic!("no property {name}"))
}

/// An extension's value, parsed from its YAML text.
fn extension(extensions: &[NamedAny], name: &str) -> Option<Value> {
    extensions
        .iter()
        .find(|named| named.name == name)
        .map(|named| serde_yaml_ng::from_str(&named.value.as_ref().unwrap().yaml).expect("YAML"))
}

fn types(schema: &Schema) -> Vec<String> {
    schema
        .r#type
        .as_ref()
        .map(|kind| kind.value.clone())
        .unwrap_or_default()
}

/// Checks what kubectl's model parser requires of `schema` and of every schema inside it.
fn check_parseable(schema: &Schema, at: &str, names: &[String]) {
    let kinds = types(schema);
    assert!(kinds.len() <= 1, "{at}: {kinds:?}");
    assert!(
        kinds.iter().all(|kind| TYPES.contains(&kind.as_str())),
        "{at}: {kinds:?}"
    );
    if !schema.reference.is_empty() {
        let target = schema
            .reference
            .strip_prefix("#/definitions/")
            .unwrap_or_else(|| panic!("{at}: {}", schema.reference));
        assert!(names.iter().any(|name| name == target), "{at}: dangling");
        assert!(kinds.is_empty() && schema.properties.is_none(), "{at}");
    }
    if kinds.first().is_some_and(|kind| kind == "array") {
        assert_eq!(
            schema.items.as_ref().map(|items| items.schema.len()),
            Some(1),
            "{at}"
        );
    }
    for named in schema
        .properties
        .iter()
        .flat_map(|p| &p.additional_properties)
    {
        check_parseable(
            named.value.as_ref().unwrap(),
            &format!("{at}.{}", named.name),
            names,
        );
    }
    for item in schema.items.iter().flat_map(|items| &items.schema) {
        check_parseable(item, &format!("{at}[]"), names);
    }
    if let Some(AdditionalPropertiesOneof::Schema(values)) = schema
        .additional_properties
        .as_ref()
        .and_then(|item| item.oneof.as_ref())
    {
        check_parseable(values, &format!("{at}{{}}"), names);
    }
}

#[test]
fn the_encoded_document_decodes_back_with_every_definition_and_path() {
    let openapi = served();
    let swagger = openapi.swagger_v2();
    let document = decoded(&openapi);
    assert_eq!(document.swagger, "2.0");
    assert_eq!(document.info.as_ref().unwrap().title, "Kubernetes");
    let definitions = &document.definitions.as_ref().unwrap().additional_properties;
    assert_eq!(
        definitions.len(),
        swagger["definitions"].as_object().unwrap().len()
    );
    let paths = &document.paths.as_ref().unwrap().path;
    assert_eq!(paths.len(), swagger["paths"].as_object().unwrap().len());
}

#[test]
fn kinds_carry_their_group_version_kind_as_yaml() {
    let document = decoded(&served());
    let deployment = definition(&document, "io.k8s.api.apps.v1.Deployment");
    let gvk = extension(
        &deployment.vendor_extension,
        "x-kubernetes-group-version-kind",
    );
    assert_eq!(
        gvk,
        Some(json!([{"group": "apps", "kind": "Deployment", "version": "v1"}]))
    );
    let config_map = definition(&document, "io.k8s.api.core.v1.ConfigMap");
    let gvk = extension(
        &config_map.vendor_extension,
        "x-kubernetes-group-version-kind",
    );
    assert_eq!(gvk.unwrap()[0]["group"], "");
    let widget = definition(&document, "com.example.v1.Widget");
    let gvk = extension(&widget.vendor_extension, "x-kubernetes-group-version-kind");
    assert_eq!(gvk.unwrap()[0]["kind"], "Widget");
}

#[test]
fn every_definition_is_one_kubectl_can_parse() {
    let document = decoded(&served());
    let definitions = &document.definitions.as_ref().unwrap().additional_properties;
    let names: Vec<String> = definitions.iter().map(|named| named.name.clone()).collect();
    for named in definitions {
        check_parseable(named.value.as_ref().unwrap(), &named.name, &names);
    }
}

#[test]
fn built_in_schemas_keep_types_formats_references_and_maps() {
    let document = decoded(&served());
    let config_map = definition(&document, "io.k8s.api.core.v1.ConfigMap");
    assert_eq!(types(config_map), ["object"]);
    assert!(!config_map.description.is_empty());
    assert_eq!(
        property(config_map, "metadata").reference,
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    let data = property(config_map, "data");
    assert_eq!(types(data), ["object"]);
    let Some(AdditionalPropertiesOneof::Schema(values)) = data
        .additional_properties
        .as_ref()
        .and_then(|item| item.oneof.as_ref())
    else {
        panic!("data has no value schema: {data:?}");
    };
    assert_eq!(types(values), ["string"]);
    let spec = definition(&document, "io.k8s.api.apps.v1.DeploymentSpec");
    assert!(
        spec.required.contains(&"selector".to_string()),
        "{:?}",
        spec.required
    );
    let replicas = property(spec, "replicas");
    assert_eq!(types(replicas), ["integer"]);
    assert_eq!(replicas.format, "int32");
    let pod = definition(&document, "io.k8s.api.core.v1.PodSpec");
    let containers = property(pod, "containers");
    assert_eq!(types(containers), ["array"]);
    assert_eq!(
        containers.items.as_ref().unwrap().schema[0].reference,
        "#/definitions/io.k8s.api.core.v1.Container"
    );
}

#[test]
fn schema_conversion_keeps_enums_extensions_and_drops_what_kubectl_cannot_parse() {
    let converted = schema(&json!({
        "type": ["string", "null"],
        "enum": ["Always", "Never"],
        "default": "Always",
        "x-kubernetes-list-type": "atomic",
    }));
    assert_eq!(types(&converted), ["string"]);
    let values: Vec<&str> = converted.r#enum.iter().map(|any| any.yaml.trim()).collect();
    assert_eq!(values, ["Always", "Never"]);
    assert_eq!(converted.default.unwrap().yaml.trim(), "Always");
    assert_eq!(
        extension(&converted.vendor_extension, "x-kubernetes-list-type"),
        Some(json!("atomic"))
    );

    let reference =
        schema(&json!({"$ref": "#/definitions/a.B", "type": "object", "description": "d"}));
    assert_eq!(reference.reference, "#/definitions/a.B");
    assert!(reference.r#type.is_none());
    assert_eq!(reference.description, "d");

    let list = schema(&json!({"type": "array"}));
    assert_eq!(list.items.unwrap().schema, vec![Schema::default()]);
    assert!(schema(&json!({"type": "null"})).r#type.is_none());
    assert_eq!(schema(&json!(true)), Schema::default());

    let open = schema(&json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {"spec": {"type": "object"}},
    }));
    assert_eq!(types(&open), ["object"]);
    assert!(open.properties.is_none());
    assert_eq!(
        extension(
            &open.vendor_extension,
            "x-kubernetes-preserve-unknown-fields"
        ),
        Some(json!(true))
    );
    let int_or_string = schema(&json!({"x-kubernetes-int-or-string": true}));
    assert!(int_or_string.r#type.is_none());
    assert_eq!(
        int_or_string.vendor_extension[0].name,
        "x-kubernetes-int-or-string"
    );

    let any_values = schema(&json!({"type": "object", "additionalProperties": true}));
    assert_eq!(
        any_values.additional_properties.unwrap().oneof,
        Some(AdditionalPropertiesOneof::Boolean(true))
    );
}

#[test]
fn operations_keep_their_parameters_responses_and_extensions() {
    let document = decoded(&served());
    let collection = document
        .paths
        .as_ref()
        .unwrap()
        .path
        .iter()
        .find(|named| named.name == "/apis/apps/v1/namespaces/{namespace}/deployments")
        .and_then(|named| named.value.as_ref())
        .expect("the deployments path");
    let post = collection.post.as_ref().unwrap();
    assert_eq!(post.operation_id, "createAppsV1NamespacedDeployment");
    assert!(post.consumes.contains(&"application/json".to_string()));
    let gvk = extension(&post.vendor_extension, "x-kubernetes-group-version-kind").unwrap();
    assert_eq!(gvk["kind"], "Deployment");
    let mut body = None;
    let mut queries = Vec::new();
    for item in &post.parameters {
        let Some(ParametersItemOneof::Parameter(parameter)) = &item.oneof else {
            panic!("{item:?}");
        };
        match &parameter.oneof {
            Some(ParameterOneof::BodyParameter(parameter)) => body = Some((**parameter).clone()),
            Some(ParameterOneof::NonBodyParameter(parameter)) => match &parameter.oneof {
                Some(NonBodyParameterOneof::Query(query)) => queries.push(query.name.clone()),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }
    let body = body.expect("a body parameter");
    assert!(body.required);
    assert_eq!(
        body.schema.unwrap().reference,
        "#/definitions/io.k8s.api.apps.v1.Deployment"
    );
    assert!(
        queries.contains(&"fieldValidation".to_string()),
        "{queries:?}"
    );
    let Some(ParametersItemOneof::Parameter(namespace)) = &collection.parameters[0].oneof else {
        panic!("{:?}", collection.parameters[0]);
    };
    let Some(ParameterOneof::NonBodyParameter(namespace)) = &namespace.oneof else {
        panic!("{namespace:?}");
    };
    assert!(matches!(
        &namespace.oneof,
        Some(NonBodyParameterOneof::Path(path)) if path.name == "namespace" && path.required
    ));
    let ok = post
        .responses
        .as_ref()
        .unwrap()
        .response_code
        .iter()
        .find(|named| named.name == "200")
        .and_then(|named| named.value.as_ref())
        .and_then(|value| value.oneof.as_ref());
    let Some(ResponseValueOneof::Response(ok)) = ok else {
        panic!("no 200 response");
    };
    assert_eq!(
        ok.schema.as_ref().and_then(|item| item.oneof.as_ref()),
        Some(&SchemaItemOneof::Schema(Schema {
            reference: "#/definitions/io.k8s.api.apps.v1.Deployment".into(),
            ..Schema::default()
        }))
    );
}

#[test]
fn accept_chooses_protobuf_only_when_a_client_asks_for_it() {
    assert_eq!(negotiate(None), Format::Json);
    assert_eq!(negotiate(Some("application/json")), Format::Json);
    assert_eq!(negotiate(Some("*/*")), Format::Json);
    assert_eq!(negotiate(Some("text/html")), Format::Json);
    assert_eq!(negotiate(Some(PROTOBUF_ACCEPT)), Format::Protobuf);
    assert_eq!(negotiate(Some(PROTOBUF_CONTENT_TYPE)), Format::Protobuf);
    assert_eq!(
        negotiate(Some(&format!("{PROTOBUF_ACCEPT}, application/json"))),
        Format::Protobuf
    );
    assert_eq!(
        negotiate(Some(&format!("application/json, {PROTOBUF_ACCEPT}"))),
        Format::Json
    );
    assert_eq!(
        negotiate(Some(&format!(
            "application/json;q=0.5, {PROTOBUF_CONTENT_TYPE}"
        ))),
        Format::Protobuf
    );
    assert_eq!(
        negotiate(Some(&format!("{PROTOBUF_ACCEPT};q=0, application/json"))),
        Format::Json
    );
}

#[tokio::test]
async fn serving_answers_the_negotiated_body_with_an_etag_and_not_modified() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let openapi = served();
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(PROTOBUF_ACCEPT));
        let response = serve(&openapi, &headers);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            PROTOBUF_CONTENT_TYPE
        );
        assert_eq!(response.headers()[header::VARY], "Accept");
        let etag = response.headers()[header::ETAG].clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(Document::decode(body).unwrap(), decoded(&openapi));

        headers.insert(header::IF_NONE_MATCH, etag.clone());
        let response = serve(&openapi, &headers);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::ETAG], etag);

        let response = serve(&openapi, &HeaderMap::new());
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_ne!(response.headers()[header::ETAG], etag);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json, *openapi.swagger_v2());
    })
    .await
    .expect("within the deadline");
}
