//! `/openapi/v2` as protobuf: gnostic's `openapi.v2.Document` message, which kubectl asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`) to validate objects on the
//! client (`kubectl create --validate=true` of a `kind: List`, for one).
//!
//! The message is converted from the Swagger 2.0 JSON document of [`super::openapi_v2`], so
//! both forms carry the same paths and definitions. kubectl builds its validation models from
//! the `definitions` only (`k8s.io/kube-openapi/pkg/util/proto`), and finds a kind's model by
//! its `x-kubernetes-group-version-kind` extension, so the conversion keeps every schema
//! parseable there:
//!
//! - a `$ref` schema carries neither `type` nor `properties`;
//! - an `array` always has exactly one `items` schema (an arbitrary one when none is given);
//! - a type other than Swagger's six (`"null"`) is dropped, leaving an arbitrary value;
//! - an object with `x-kubernetes-preserve-unknown-fields` loses its `properties` and
//!   `additionalProperties`, becoming a map of arbitrary values: kubectl's validation does not
//!   honour the extension and would refuse every field the schema does not name.
//!
//! Extension values and other free-form values (`default`, `enum`, `example`) are `Any`
//! messages holding YAML text, as gnostic writes them.
//!
//! [`serve`] negotiates the form by `Accept`, answers `ETag` and `Vary: Accept`, and `304 Not
//! Modified` to a matching `If-None-Match`.

use std::hash::{Hash, Hasher};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use bytes::Bytes;
use prost::Message as _;
use serde_json::{Map, Value};

use super::openapi::OpenApiV3;

/// The media type kubectl asks for the protobuf document with.
pub(crate) const PROTOBUF_ACCEPT: &str =
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The `Content-Type` of the protobuf document, as kube-apiserver writes it: the same type with
/// `.` for `@`, which is no token character, so Go's `mime.ParseMediaType` (in kubectl's
/// client) would refuse the type asked for.
pub(crate) const PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The forms `/openapi/v2` is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Swagger 2.0 JSON, the default.
    Json,
    /// gnostic's `openapi.v2.Document`.
    Protobuf,
}

impl Format {
    /// The `Content-Type` of a body in this form.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Protobuf => PROTOBUF_CONTENT_TYPE,
        }
    }
}

/// The form an `Accept` header asks for: the acceptable media type (`q` > 0) of highest
/// quality, the first one on a tie; JSON when none is known or the header is absent.
pub(crate) fn negotiate(accept: Option<&str>) -> Format {
    let mut best: Option<(f32, Format)> = None;
    for clause in accept.unwrap_or_default().split(',') {
        let mut parts = clause.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let format = match media.as_str() {
            PROTOBUF_ACCEPT | PROTOBUF_CONTENT_TYPE => Format::Protobuf,
            "application/json" | "application/*" | "*/*" => Format::Json,
            _ => continue,
        };
        let quality = parts
            .filter_map(|parameter| parameter.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, value)| value.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if quality > 0.0 && best.is_none_or(|(q, _)| quality > q) {
            best = Some((quality, format));
        }
    }
    best.map_or(Format::Json, |(_, format)| format)
}

/// An encoded `/openapi/v2` body with its strong entity tag (quoted, as sent in `ETag`).
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    /// The body.
    pub(crate) body: Bytes,
    /// A hash of `body`, quoted.
    pub(crate) etag: String,
}

impl Encoded {
    /// Wraps `body`, computing its entity tag.
    pub(crate) fn new(body: Vec<u8>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        Encoded {
            etag: format!("\"{:016X}\"", hasher.finish()),
            body: body.into(),
        }
    }
}

/// `/openapi/v2` in the form `headers` ask for (see [`negotiate`]), with `ETag` and
/// `Vary: Accept`; `304 Not Modified` when `If-None-Match` names the current entity tag.
pub(crate) fn serve(openapi: &OpenApiV3, headers: &HeaderMap) -> HttpResponse {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = negotiate(accept);
    let encoded = match format {
        Format::Json => openapi.swagger_v2_json(),
        Format::Protobuf => openapi.swagger_v2_protobuf(),
    };
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == encoded.etag
        });
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, format.content_type())],
            encoded.body.clone(),
        )
            .into_response()
    };
    let response_headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&encoded.etag) {
        response_headers.insert(header::ETAG, etag);
    }
    response_headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

/// The protobuf encoding of the Swagger 2.0 JSON document `swagger`.
pub(crate) fn encode(swagger: &Value) -> Vec<u8> {
    document(swagger).encode_to_vec()
}

/// gnostic's `openapi.v2.Document` for the Swagger 2.0 JSON document `swagger`.
pub(crate) fn document(swagger: &Value) -> Document {
    let info = swagger.get("info").map(|info| Info {
        title: string(info, "title"),
        version: string(info, "version"),
        description: string(info, "description"),
        terms_of_service: string(info, "termsOfService"),
        vendor_extension: extensions(info),
    });
    let definitions = swagger
        .get("definitions")
        .and_then(Value::as_object)
        .map(|definitions| Definitions {
            additional_properties: named_schemas(definitions),
        });
    Document {
        swagger: string(swagger, "swagger"),
        info,
        host: string(swagger, "host"),
        base_path: string(swagger, "basePath"),
        schemes: strings(swagger, "schemes"),
        consumes: strings(swagger, "consumes"),
        produces: strings(swagger, "produces"),
        paths: swagger.get("paths").map(paths),
        definitions,
        external_docs: external_docs(swagger.get("externalDocs")),
        vendor_extension: extensions(swagger),
    }
}

/// A free-form value as gnostic keeps it: YAML text (JSON text if YAML cannot write it).
fn any(value: &Value) -> Any {
    let yaml = serde_yaml_ng::to_string(value).unwrap_or_else(|_| value.to_string());
    Any { yaml }
}

/// The `x-` members of `value`, in order, as named `Any` values.
fn extensions(value: &Value) -> Vec<NamedAny> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.starts_with("x-"))
        .map(|(name, value)| NamedAny {
            name: name.clone(),
            value: Some(any(value)),
        })
        .collect()
}

fn string(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    match value.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

fn boolean(value: &Value, key: &str) -> bool {
    value.get(key).and_then(Value::as_bool).unwrap_or_default()
}

fn number(value: &Value, key: &str) -> f64 {
    value.get(key).and_then(Value::as_f64).unwrap_or_default()
}

fn integer(value: &Value, key: &str) -> i64 {
    value.get(key).and_then(Value::as_i64).unwrap_or_default()
}

fn external_docs(value: Option<&Value>) -> Option<ExternalDocs> {
    value
        .filter(|value| value.is_object())
        .map(|docs| ExternalDocs {
            description: string(docs, "description"),
            url: string(docs, "url"),
            vendor_extension: extensions(docs),
        })
}

/// The types Swagger 2.0 and kubectl's validation know.
const TYPES: [&str; 6] = ["string", "number", "integer", "boolean", "object", "array"];

fn named_schemas(schemas: &Map<String, Value>) -> Vec<NamedSchema> {
    schemas
        .iter()
        .map(|(name, value)| NamedSchema {
            name: name.clone(),
            value: Some(schema(value)),
        })
        .collect()
}

/// A schema as a message, kept parseable by kubectl (see the module documentation). A
/// boolean or other non-object schema is the arbitrary (empty) schema.
pub(crate) fn schema(value: &Value) -> Schema {
    let Some(map) = value.as_object() else {
        return Schema::default();
    };
    let reference = string(value, "$ref");
    let preserve_unknown = boolean(value, "x-kubernetes-preserve-unknown-fields");
    let types: Vec<String> = if reference.is_empty() {
        strings(value, "type")
            .into_iter()
            .filter(|kind| TYPES.contains(&kind.as_str()))
            .take(1)
            .collect()
    } else {
        Vec::new()
    };
    let is_array = types.iter().any(|kind| kind == "array");
    let items = match map.get("items") {
        Some(Value::Array(items)) if items.len() == 1 => Some(vec![schema(&items[0])]),
        Some(Value::Array(_)) => Some(vec![Schema::default()]),
        Some(items) => Some(vec![schema(items)]),
        None if is_array => Some(vec![Schema::default()]),
        None => None,
    };
    let keeps_fields = reference.is_empty() && !preserve_unknown;
    let properties = map
        .get("properties")
        .and_then(Value::as_object)
        .filter(|_| keeps_fields)
        .map(|properties| Properties {
            additional_properties: named_schemas(properties),
        });
    let additional_properties = match map.get("additionalProperties") {
        _ if !keeps_fields => None,
        Some(Value::Bool(allowed)) => Some(AdditionalPropertiesOneof::Boolean(*allowed)),
        Some(additional @ Value::Object(_)) => Some(AdditionalPropertiesOneof::Schema(Box::new(
            schema(additional),
        ))),
        _ => None,
    }
    .map(|oneof| Box::new(AdditionalPropertiesItem { oneof: Some(oneof) }));
    Schema {
        reference,
        format: string(value, "format"),
        title: string(value, "title"),
        description: string(value, "description"),
        default: map.get("default").map(any),
        multiple_of: number(value, "multipleOf"),
        maximum: number(value, "maximum"),
        exclusive_maximum: boolean(value, "exclusiveMaximum"),
        minimum: number(value, "minimum"),
        exclusive_minimum: boolean(value, "exclusiveMinimum"),
        max_length: integer(value, "maxLength"),
        min_length: integer(value, "minLength"),
        pattern: string(value, "pattern"),
        max_items: integer(value, "maxItems"),
        min_items: integer(value, "minItems"),
        unique_items: boolean(value, "uniqueItems"),
        max_properties: integer(value, "maxProperties"),
        min_properties: integer(value, "minProperties"),
        required: strings(value, "required"),
        r#enum: map
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(any)
            .collect(),
        additional_properties,
        r#type: (!types.is_empty()).then_some(TypeItem { value: types }),
        items: items.map(|schema| ItemsItem { schema }),
        all_of: map
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(schema)
            .collect(),
        properties,
        discriminator: string(value, "discriminator"),
        read_only: boolean(value, "readOnly"),
        external_docs: external_docs(map.get("externalDocs")),
        example: map.get("example").map(any),
        vendor_extension: extensions(value),
    }
}

fn paths(value: &Value) -> Paths {
    Paths {
        vendor_extension: extensions(value),
        path: value
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| !name.starts_with("x-"))
            .map(|(name, item)| NamedPathItem {
                name: name.clone(),
                value: Some(path_item(item)),
            })
            .collect(),
    }
}

fn path_item(item: &Value) -> PathItem {
    let operation = |method: &str| item.get(method).map(operation);
    PathItem {
        reference: string(item, "$ref"),
        get: operation("get"),
        put: operation("put"),
        post: operation("post"),
        delete: operation("delete"),
        options: operation("options"),
        head: operation("head"),
        patch: operation("patch"),
        parameters: parameters(item.get("parameters")),
        vendor_extension: extensions(item),
    }
}

fn operation(value: &Value) -> Operation {
    Operation {
        tags: strings(value, "tags"),
        summary: string(value, "summary"),
        description: string(value, "description"),
        external_docs: external_docs(value.get("externalDocs")),
        operation_id: string(value, "operationId"),
        produces: strings(value, "produces"),
        consumes: strings(value, "consumes"),
        parameters: parameters(value.get("parameters")),
        responses: value.get("responses").map(responses),
        schemes: strings(value, "schemes"),
        deprecated: boolean(value, "deprecated"),
        vendor_extension: extensions(value),
    }
}

fn parameters(value: Option<&Value>) -> Vec<ParametersItem> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(parameter)
        .collect()
}

/// A parameter: a reference, a body parameter, or a query, form, path or header parameter.
fn parameter(value: &Value) -> ParametersItem {
    if let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        return ParametersItem {
            oneof: Some(ParametersItemOneof::JsonReference(JsonReference {
                reference: reference.to_string(),
                description: string(value, "description"),
            })),
        };
    }
    let location = string(value, "in");
    let enumerated = || -> Vec<Any> {
        value
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(any)
            .collect()
    };
    let parameter = match location.as_str() {
        "body" => ParameterOneof::BodyParameter(Box::new(BodyParameter {
            description: string(value, "description"),
            name: string(value, "name"),
            r#in: location.clone(),
            required: boolean(value, "required"),
            schema: Some(value.get("schema").map(schema).unwrap_or_default()),
            vendor_extension: extensions(value),
        })),
        "query" | "formData" => {
            let sub_schema = QueryParameterSubSchema {
                required: boolean(value, "required"),
                r#in: location.clone(),
                description: string(value, "description"),
                name: string(value, "name"),
                allow_empty_value: boolean(value, "allowEmptyValue"),
                r#type: string(value, "type"),
                format: string(value, "format"),
                collection_format: string(value, "collectionFormat"),
                default: value.get("default").map(any),
                unique_items: boolean(value, "uniqueItems"),
                r#enum: enumerated(),
                vendor_extension: extensions(value),
            };
            ParameterOneof::NonBodyParameter(Box::new(NonBodyParameter {
                oneof: Some(if location == "query" {
                    NonBodyParameterOneof::Query(sub_schema)
                } else {
                    NonBodyParameterOneof::FormData(sub_schema)
                }),
            }))
        }
        _ => {
            let sub_schema = PathParameterSubSchema {
                required: boolean(value, "required"),
                r#in: location.clone(),
                description: string(value, "description"),
                name: string(value, "name"),
                r#type: string(value, "type"),
                format: string(value, "format"),
                collection_format: string(value, "collectionFormat"),
                default: value.get("default").map(any),
                unique_items: boolean(value, "uniqueItems"),
                r#enum: enumerated(),
                vendor_extension: extensions(value),
            };
            ParameterOneof::NonBodyParameter(Box::new(NonBodyParameter {
                oneof: Some(if location == "header" {
                    NonBodyParameterOneof::Header(sub_schema)
                } else {
                    NonBodyParameterOneof::Path(sub_schema)
                }),
            }))
        }
    };
    ParametersItem {
        oneof: Some(ParametersItemOneof::Parameter(Box::new(Parameter {
            oneof: Some(parameter),
        }))),
    }
}

fn responses(value: &Value) -> Responses {
    Responses {
        response_code: value
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(code, _)| !code.starts_with("x-"))
            .map(|(code, value)| {
                let oneof = match value.get("$ref").and_then(Value::as_str) {
                    Some(reference) => ResponseValueOneof::JsonReference(JsonReference {
                        reference: reference.to_string(),
                        description: string(value, "description"),
                    }),
                    None => ResponseValueOneof::Response(Box::new(response(value))),
                };
                NamedResponseValue {
                    name: code.clone(),
                    value: Some(ResponseValue { oneof: Some(oneof) }),
                }
            })
            .collect(),
        vendor_extension: extensions(value),
    }
}

fn response(value: &Value) -> Response {
    Response {
        description: string(value, "description"),
        schema: value.get("schema").map(|body| SchemaItem {
            oneof: Some(SchemaItemOneof::Schema(schema(body))),
        }),
        vendor_extension: extensions(value),
    }
}

// gnostic's `openapi.v2` messages (`openapiv2/OpenAPIv2.proto`), with the fields this server
// writes; field numbers are the proto file's.

/// `openapi.v2.Document`: the whole Swagger 2.0 document.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Document {
    #[prost(string, tag = "1")]
    pub(crate) swagger: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) info: Option<Info>,
    #[prost(string, tag = "3")]
    pub(crate) host: String,
    #[prost(string, tag = "4")]
    pub(crate) base_path: String,
    #[prost(string, repeated, tag = "5")]
    pub(crate) schemes: Vec<String>,
    #[prost(string, repeated, tag = "6")]
    pub(crate) consumes: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub(crate) produces: Vec<String>,
    #[prost(message, optional, tag = "8")]
    pub(crate) paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub(crate) definitions: Option<Definitions>,
    #[prost(message, optional, tag = "15")]
    pub(crate) external_docs: Option<ExternalDocs>,
    #[prost(message, repeated, tag = "16")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Info`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Info {
    #[prost(string, tag = "1")]
    pub(crate) title: String,
    #[prost(string, tag = "2")]
    pub(crate) version: String,
    #[prost(string, tag = "3")]
    pub(crate) description: String,
    #[prost(string, tag = "4")]
    pub(crate) terms_of_service: String,
    #[prost(message, repeated, tag = "7")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Any`: a free-form value as YAML text (its `google.protobuf.Any` alternative,
/// field 1, is never written).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Any {
    #[prost(string, tag = "2")]
    pub(crate) yaml: String,
}

/// `openapi.v2.NamedAny`: one member of a map of [`Any`] (vendor extensions).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NamedAny {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) value: Option<Any>,
}

/// `openapi.v2.ExternalDocs`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExternalDocs {
    #[prost(string, tag = "1")]
    pub(crate) description: String,
    #[prost(string, tag = "2")]
    pub(crate) url: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Definitions`: the named schemas kubectl builds its models from.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub(crate) additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.NamedSchema`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NamedSchema {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) value: Option<Schema>,
}

/// `openapi.v2.Schema`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Schema {
    #[prost(string, tag = "1")]
    pub(crate) reference: String,
    #[prost(string, tag = "2")]
    pub(crate) format: String,
    #[prost(string, tag = "3")]
    pub(crate) title: String,
    #[prost(string, tag = "4")]
    pub(crate) description: String,
    #[prost(message, optional, tag = "5")]
    pub(crate) default: Option<Any>,
    #[prost(double, tag = "6")]
    pub(crate) multiple_of: f64,
    #[prost(double, tag = "7")]
    pub(crate) maximum: f64,
    #[prost(bool, tag = "8")]
    pub(crate) exclusive_maximum: bool,
    #[prost(double, tag = "9")]
    pub(crate) minimum: f64,
    #[prost(bool, tag = "10")]
    pub(crate) exclusive_minimum: bool,
    #[prost(int64, tag = "11")]
    pub(crate) max_length: i64,
    #[prost(int64, tag = "12")]
    pub(crate) min_length: i64,
    #[prost(string, tag = "13")]
    pub(crate) pattern: String,
    #[prost(int64, tag = "14")]
    pub(crate) max_items: i64,
    #[prost(int64, tag = "15")]
    pub(crate) min_items: i64,
    #[prost(bool, tag = "16")]
    pub(crate) unique_items: bool,
    #[prost(int64, tag = "17")]
    pub(crate) max_properties: i64,
    #[prost(int64, tag = "18")]
    pub(crate) min_properties: i64,
    #[prost(string, repeated, tag = "19")]
    pub(crate) required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub(crate) r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    pub(crate) additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub(crate) r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub(crate) items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub(crate) all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub(crate) properties: Option<Properties>,
    #[prost(string, tag = "26")]
    pub(crate) discriminator: String,
    #[prost(bool, tag = "27")]
    pub(crate) read_only: bool,
    #[prost(message, optional, tag = "29")]
    pub(crate) external_docs: Option<ExternalDocs>,
    #[prost(message, optional, tag = "30")]
    pub(crate) example: Option<Any>,
    #[prost(message, repeated, tag = "31")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.AdditionalPropertiesItem`: a schema for the values, or whether any are allowed.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AdditionalPropertiesItem {
    #[prost(oneof = "AdditionalPropertiesOneof", tags = "1, 2")]
    pub(crate) oneof: Option<AdditionalPropertiesOneof>,
}

/// The alternatives of [`AdditionalPropertiesItem`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum AdditionalPropertiesOneof {
    #[prost(message, tag = "1")]
    Schema(Box<Schema>),
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

/// `openapi.v2.TypeItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub(crate) value: Vec<String>,
}

/// `openapi.v2.ItemsItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub(crate) schema: Vec<Schema>,
}

/// `openapi.v2.Properties`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub(crate) additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.Paths`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Paths {
    #[prost(message, repeated, tag = "1")]
    pub(crate) vendor_extension: Vec<NamedAny>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) path: Vec<NamedPathItem>,
}

/// `openapi.v2.NamedPathItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) value: Option<PathItem>,
}

/// `openapi.v2.PathItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PathItem {
    #[prost(string, tag = "1")]
    pub(crate) reference: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub(crate) put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub(crate) post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub(crate) delete: Option<Operation>,
    #[prost(message, optional, tag = "6")]
    pub(crate) options: Option<Operation>,
    #[prost(message, optional, tag = "7")]
    pub(crate) head: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub(crate) patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    pub(crate) parameters: Vec<ParametersItem>,
    #[prost(message, repeated, tag = "10")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Operation`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Operation {
    #[prost(string, repeated, tag = "1")]
    pub(crate) tags: Vec<String>,
    #[prost(string, tag = "2")]
    pub(crate) summary: String,
    #[prost(string, tag = "3")]
    pub(crate) description: String,
    #[prost(message, optional, tag = "4")]
    pub(crate) external_docs: Option<ExternalDocs>,
    #[prost(string, tag = "5")]
    pub(crate) operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub(crate) produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub(crate) consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub(crate) parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub(crate) responses: Option<Responses>,
    #[prost(string, repeated, tag = "10")]
    pub(crate) schemes: Vec<String>,
    #[prost(bool, tag = "11")]
    pub(crate) deprecated: bool,
    #[prost(message, repeated, tag = "13")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.ParametersItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ParametersItem {
    #[prost(oneof = "ParametersItemOneof", tags = "1, 2")]
    pub(crate) oneof: Option<ParametersItemOneof>,
}

/// The alternatives of [`ParametersItem`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum ParametersItemOneof {
    #[prost(message, tag = "1")]
    Parameter(Box<Parameter>),
    #[prost(message, tag = "2")]
    JsonReference(JsonReference),
}

/// `openapi.v2.JsonReference`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct JsonReference {
    #[prost(string, tag = "1")]
    pub(crate) reference: String,
    #[prost(string, tag = "2")]
    pub(crate) description: String,
}

/// `openapi.v2.Parameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Parameter {
    #[prost(oneof = "ParameterOneof", tags = "1, 2")]
    pub(crate) oneof: Option<ParameterOneof>,
}

/// The alternatives of [`Parameter`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum ParameterOneof {
    #[prost(message, tag = "1")]
    BodyParameter(Box<BodyParameter>),
    #[prost(message, tag = "2")]
    NonBodyParameter(Box<NonBodyParameter>),
}

/// `openapi.v2.BodyParameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BodyParameter {
    #[prost(string, tag = "1")]
    pub(crate) description: String,
    #[prost(string, tag = "2")]
    pub(crate) name: String,
    #[prost(string, tag = "3")]
    pub(crate) r#in: String,
    #[prost(bool, tag = "4")]
    pub(crate) required: bool,
    #[prost(message, optional, tag = "5")]
    pub(crate) schema: Option<Schema>,
    #[prost(message, repeated, tag = "6")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.NonBodyParameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NonBodyParameter {
    #[prost(oneof = "NonBodyParameterOneof", tags = "1, 2, 3, 4")]
    pub(crate) oneof: Option<NonBodyParameterOneof>,
}

/// The alternatives of [`NonBodyParameter`]: header and path parameters share one layout,
/// query and form parameters another.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum NonBodyParameterOneof {
    #[prost(message, tag = "1")]
    Header(PathParameterSubSchema),
    #[prost(message, tag = "2")]
    FormData(QueryParameterSubSchema),
    #[prost(message, tag = "3")]
    Query(QueryParameterSubSchema),
    #[prost(message, tag = "4")]
    Path(PathParameterSubSchema),
}

/// `openapi.v2.QueryParameterSubSchema` (and `FormDataParameterSubSchema`, numbered alike).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct QueryParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub(crate) required: bool,
    #[prost(string, tag = "2")]
    pub(crate) r#in: String,
    #[prost(string, tag = "3")]
    pub(crate) description: String,
    #[prost(string, tag = "4")]
    pub(crate) name: String,
    #[prost(bool, tag = "5")]
    pub(crate) allow_empty_value: bool,
    #[prost(string, tag = "6")]
    pub(crate) r#type: String,
    #[prost(string, tag = "7")]
    pub(crate) format: String,
    #[prost(string, tag = "9")]
    pub(crate) collection_format: String,
    #[prost(message, optional, tag = "10")]
    pub(crate) default: Option<Any>,
    #[prost(bool, tag = "20")]
    pub(crate) unique_items: bool,
    #[prost(message, repeated, tag = "21")]
    pub(crate) r#enum: Vec<Any>,
    #[prost(message, repeated, tag = "23")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.PathParameterSubSchema` (and `HeaderParameterSubSchema`, numbered alike).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PathParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub(crate) required: bool,
    #[prost(string, tag = "2")]
    pub(crate) r#in: String,
    #[prost(string, tag = "3")]
    pub(crate) description: String,
    #[prost(string, tag = "4")]
    pub(crate) name: String,
    #[prost(string, tag = "5")]
    pub(crate) r#type: String,
    #[prost(string, tag = "6")]
    pub(crate) format: String,
    #[prost(string, tag = "8")]
    pub(crate) collection_format: String,
    #[prost(message, optional, tag = "9")]
    pub(crate) default: Option<Any>,
    #[prost(bool, tag = "19")]
    pub(crate) unique_items: bool,
    #[prost(message, repeated, tag = "20")]
    pub(crate) r#enum: Vec<Any>,
    #[prost(message, repeated, tag = "22")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Responses`: status code → response.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub(crate) response_code: Vec<NamedResponseValue>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.NamedResponseValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) value: Option<ResponseValue>,
}

/// `openapi.v2.ResponseValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResponseValue {
    #[prost(oneof = "ResponseValueOneof", tags = "1, 2")]
    pub(crate) oneof: Option<ResponseValueOneof>,
}

/// The alternatives of [`ResponseValue`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum ResponseValueOneof {
    #[prost(message, tag = "1")]
    Response(Box<Response>),
    #[prost(message, tag = "2")]
    JsonReference(JsonReference),
}

/// `openapi.v2.Response` (its `headers` and `examples` are not written).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Response {
    #[prost(string, tag = "1")]
    pub(crate) description: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) schema: Option<SchemaItem>,
    #[prost(message, repeated, tag = "5")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.SchemaItem` (only its `schema` alternative is written).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SchemaItem {
    #[prost(oneof = "SchemaItemOneof", tags = "1")]
    pub(crate) oneof: Option<SchemaItemOneof>,
}

/// The alternative of [`SchemaItem`] this server writes.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum SchemaItemOneof {
    #[prost(message, tag = "1")]
    Schema(Schema),
}

#[cfg(test)]
mod tests;
