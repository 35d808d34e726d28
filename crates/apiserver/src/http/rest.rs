//! The resource paths of the Kubernetes REST API, served from the registry.
//!
//! `/api/v1/...` and `/apis/<group>/<version>/...`, then `[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]`.
//! GET reads (a `watch=1` list streams newline-delimited JSON `WatchEvent`s), POST creates,
//! PUT replaces (`/status` replaces the status), PATCH merges (merge or strategic merge, by
//! content type), DELETE deletes (on a collection path, every object matching the selectors).
//! Writes honour `fieldValidation`: unknown fields of built-in kinds are dropped with a
//! `Warning` header each (`Warn`, the default), dropped silently (`Ignore`), or refused with 400
//! (`Strict`).

use capstan_api::ext::MetaExt;
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
    ValidationDirective, VersionMatch, WatchParams,
};
use capstan_api::kube_core::DynamicObject;
use capstan_api::{Client, Error, ResourceInfo};
use futures::StreamExt;
use serde_json::Value;

use super::status::{status_json, ApiError};
use super::table;
use crate::registry::Registry;
use crate::schema::{strict_decoding_error, Keys, Schemas};

fn to_value(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or_default()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// What a resource path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The kind.
    pub resource: ResourceInfo,
    /// The namespace, for namespaced paths.
    pub namespace: Option<String>,
    /// The object, for object paths.
    pub name: Option<String>,
    /// The subresource (`status`, `scale`), if any.
    pub subresource: Option<String>,
}

/// Resolves `path` against the served kinds.
///
/// Errors: [`Error::NotFound`] for a path that names no served kind or has the wrong shape.
pub fn resolve(path: &str, served: &[ResourceInfo]) -> Result<Target, Error> {
    let not_found = || Error::NotFound {
        resource: path.to_string(),
        name: String::new(),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    let find = |plural: &str| {
        served
            .iter()
            .find(|r| r.group() == group && r.version() == version && r.plural() == plural)
            .cloned()
    };
    let (namespace, rest) = match rest {
        // `namespaces/<ns>` and `namespaces/<ns>/status` are the Namespace object itself.
        ["namespaces", _] | ["namespaces", _, "status" | "finalize"] => (None, rest),
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(*namespace), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, subresource] => (*plural, Some(*name), Some(*subresource)),
        _ => return Err(not_found()),
    };
    let resource = find(plural).ok_or_else(not_found)?;
    if namespace.is_some() && !resource.namespaced() {
        return Err(not_found());
    }
    if namespace.is_none() && resource.namespaced() && name.is_some() {
        return Err(not_found());
    }
    Ok(Target {
        resource,
        namespace: namespace.map(String::from),
        name: name.map(String::from),
        subresource: subresource.map(String::from),
    })
}

/// Serves one request on a resource path from `registry`.
pub async fn handle(
    registry: Arc<Registry>,
    method: Method,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serve(registry, method, &path, &query, &headers, body).await {
        Ok(response) => response,
        Err(error) => ApiError(error).into_response(),
    }
}

async fn serve(
    registry: Arc<Registry>,
    method: Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let target = resolve(path, &registry.resources())?;
    let client: Arc<dyn Client> = registry.clone();
    let resource = &target.resource;
    let namespace = target.namespace.as_deref();
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    match (
        method,
        target.name.as_deref(),
        target.subresource.as_deref(),
    ) {
        (Method::GET, None, None) => {
            if query.get("watch").is_some_and(|w| w == "1" || w == "true") {
                return watch(registry, &target, query, as_table(headers, query)?).await;
            }
            let as_table = as_table(headers, query)?;
            let mut list = client
                .list(resource, namespace, &list_params(query)?)
                .await?;
            if let Some(include) = as_table {
                let objects = list.items.iter().map(to_value).collect::<Vec<_>>();
                let metadata = serde_json::to_value(&list.metadata).unwrap_or_default();
                let table = table::table(resource.kind(), &objects, metadata, true, include, now());
                return Ok(json(StatusCode::OK, &table));
            }
            list.types.kind = format!("{}List", resource.kind());
            list.types.api_version = resource.api_version();
            Ok(json(StatusCode::OK, &list))
        }
        (Method::GET, Some(name), None | Some("status")) => {
            let as_table = as_table(headers, query)?;
            let object = client.get(resource, namespace, name).await?;
            if let Some(include) = as_table {
                let value = to_value(&object);
                let metadata = serde_json::json!({
                    "resourceVersion": object.metadata.resource_version.clone().unwrap_or_default(),
                });
                let table = table::table(resource.kind(), &[value], metadata, true, include, now());
                return Ok(json(StatusCode::OK, &table));
            }
            Ok(json(StatusCode::OK, &object))
        }
        (method @ (Method::GET | Method::PUT | Method::PATCH), Some(name), Some("scale"))
            if resource.subresources().scale =>
        {
            scale(
                &*client, resource, namespace, name, method, headers, &body, dry_run,
            )
            .await
        }
        (Method::POST, None, None) => {
            let validation = field_validation(query)?;
            let (object, unknown) = decode_object(headers, &body, resource, &validation)?;
            let created = client
                .create(resource, namespace, object, &post_params(dry_run, query))
                .await?;
            Ok(warn(
                json(StatusCode::CREATED, &created),
                &unknown,
                &validation,
            ))
        }
        (Method::PUT, Some(name), subresource @ (None | Some("status"))) => {
            let validation = field_validation(query)?;
            let (object, unknown) = decode_object(headers, &body, resource, &validation)?;
            if object.metadata.name.as_deref().is_some_and(|n| n != name) {
                return Err(Error::bad_field(
                    "metadata.name",
                    format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        object.name_str()
                    ),
                ));
            }
            let params = post_params(dry_run, query);
            let updated = match subresource {
                Some(_) => {
                    client
                        .update_status(resource, namespace, object, &params)
                        .await?
                }
                None => client.update(resource, namespace, object, &params).await?,
            };
            Ok(warn(json(StatusCode::OK, &updated), &unknown, &validation))
        }
        (Method::PATCH, Some(name), None) => {
            let validation = field_validation(query)?;
            let patch = decode_patch(headers, &body)?;
            // The registry refuses unknown fields in the patched object under Strict; the
            // patch's own unknown fields are what a Warn reports.
            let unknown = match (&patch, Schemas::builtin().of(resource)) {
                (Patch::Merge(body), Some(schema)) => schema.prune(&mut body.clone(), Keys::Object),
                (Patch::Strategic(body), Some(schema)) => {
                    schema.prune(&mut body.clone(), Keys::StrategicPatch)
                }
                _ => Vec::new(),
            };
            let params = PatchParams {
                dry_run,
                field_manager: query.get("fieldManager").cloned(),
                field_validation: Some(validation.clone()),
                ..Default::default()
            };
            let patched = client
                .patch(resource, namespace, name, &patch, &params)
                .await?;
            Ok(warn(json(StatusCode::OK, &patched), &unknown, &validation))
        }
        (Method::DELETE, None, None) => {
            let params = delete_params(dry_run, query, &body)?;
            let deleted = client
                .delete_collection(resource, namespace, &params, &list_params(query)?)
                .await?;
            Ok(json(StatusCode::OK, &deleted))
        }
        (Method::DELETE, Some(name), None) => {
            let params = delete_params(dry_run, query, &body)?;
            // 200 either way, as kube-apiserver answers: a deletion still waiting (finalizers,
            // a grace period) shows in the object's deletionTimestamp.
            let object = client
                .delete(resource, namespace, name, &params)
                .await?
                .into_inner();
            Ok(json(StatusCode::OK, &object))
        }
        (method, _, subresource) => Err(Error::MethodNotAllowed {
            message: format!(
                "the server does not allow this method on the requested resource: {method} {}{}",
                resource.qualified_resource(),
                subresource.map(|s| format!("/{s}")).unwrap_or_default()
            ),
        }),
    }
}

fn json<T: serde::Serialize>(code: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (code, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError(Error::internal(format!("encoding the response: {e}"))).into_response(),
    }
}

/// The request's `fieldValidation` directive: `Strict`, `Warn` (the default, as in
/// Kubernetes) or `Ignore`.
///
/// Errors: [`Error::BadRequest`] naming `fieldValidation` for any other value.
fn field_validation(query: &HashMap<String, String>) -> Result<ValidationDirective, Error> {
    match query.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(ValidationDirective::Warn),
        Some("Strict") => Ok(ValidationDirective::Strict),
        Some("Ignore") => Ok(ValidationDirective::Ignore),
        Some(other) => Err(Error::bad_field(
            "fieldValidation",
            format!(
                "invalid fieldValidation directive {other:?}: must be one of Ignore, Warn or Strict"
            ),
        )),
    }
}

/// Whether the client asked for a Table (kubectl's `Accept` header), and then what its rows
/// carry of each object (`includeObject`).
///
/// Errors: [`Error::BadRequest`] naming `includeObject` for a value other than `None`,
/// `Metadata` or `Object`.
fn as_table(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Option<table::IncludeObject>, Error> {
    if !table::wants_table(headers) {
        return Ok(None);
    }
    let value = query.get("includeObject").map_or("", String::as_str);
    table::IncludeObject::parse(value).map(Some).ok_or_else(|| {
        Error::bad_field(
            "includeObject",
            format!("invalid includeObject {value:?}: must be one of None, Metadata or Object"),
        )
    })
}

/// Adds a `Warning: 299` header per unknown field under the `Warn` directive, which kubectl
/// prints as `Warning: unknown field "spec.foo"`.
fn warn(mut response: Response, unknown: &[String], validation: &ValidationDirective) -> Response {
    if !matches!(validation, ValidationDirective::Warn) {
        return response;
    }
    for field in unknown {
        let text = format!("unknown field {field:?}");
        let value = format!("299 - {}", Value::String(text));
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// Reads a request body as JSON or YAML (by content type) into an object of `resource`,
/// dropping the fields a built-in kind's schema does not know; returns them too.
///
/// Errors: [`Error::BadRequest`] for a malformed body, one that is not an object, one of
/// another kind than the path names, or, under `Strict` validation, one with unknown fields.
fn decode_object(
    headers: &HeaderMap,
    body: &[u8],
    resource: &ResourceInfo,
    validation: &ValidationDirective,
) -> Result<(DynamicObject, Vec<String>), Error> {
    let mut value = decode_value(headers, body)?;
    if !value.is_object() {
        return Err(Error::bad_request("the request body must be a JSON object"));
    }
    if let Some(kind) = value.get("kind").and_then(Value::as_str) {
        if kind != resource.kind() {
            return Err(Error::bad_field(
                "kind",
                format!(
                    "{kind} does not match the resource {}",
                    resource.qualified_resource()
                ),
            ));
        }
    }
    if let Some(api_version) = value.get("apiVersion").and_then(Value::as_str) {
        if api_version != resource.api_version() {
            return Err(Error::bad_field(
                "apiVersion",
                format!(
                    "{api_version} does not match the resource's version {}",
                    resource.api_version()
                ),
            ));
        }
    }
    let unknown = match Schemas::builtin().of(resource) {
        Some(schema) => schema.prune(&mut value, Keys::Object),
        None => Vec::new(),
    };
    if matches!(validation, ValidationDirective::Strict) && !unknown.is_empty() {
        return Err(strict_decoding_error(resource, &unknown));
    }
    let object = serde_json::from_value(value)
        .map_err(|e| Error::bad_request(format!("decoding the object: {e}")))?;
    Ok((object, unknown))
}

/// Reads a body as JSON or YAML. Errors: [`Error::UnsupportedMediaType`] for another content
/// type (protobuf and CBOR are not served), [`Error::BadRequest`] for a malformed body.
fn decode_value(headers: &HeaderMap, body: &[u8]) -> Result<Value, Error> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    match content_type.split(';').next().unwrap_or_default().trim() {
        "application/json" | "" => serde_json::from_slice(body)
            .map_err(|e| Error::bad_request(format!("malformed JSON: {e}"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml_ng::from_slice(body)
            .map_err(|e| Error::bad_request(format!("malformed YAML: {e}"))),
        other => Err(Error::UnsupportedMediaType {
            message: format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: application/json, application/yaml (got {other:?})"
            ),
        }),
    }
}

fn decode_patch(headers: &HeaderMap, body: &[u8]) -> Result<Patch<Value>, Error> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("malformed patch: {e}")))?;
    match content_type.split(';').next().unwrap_or_default().trim() {
        "application/merge-patch+json" => Ok(Patch::Merge(value)),
        "application/strategic-merge-patch+json" => Ok(Patch::Strategic(value)),
        "application/json-patch+json" => serde_json::from_value(value)
            .map(Patch::Json)
            .map_err(|e| Error::bad_request(format!("malformed JSON patch: {e}"))),
        other => Err(Error::UnsupportedMediaType {
            message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"),
        }),
    }
}

fn post_params(dry_run: bool, query: &HashMap<String, String>) -> PostParams {
    PostParams {
        dry_run,
        field_manager: query.get("fieldManager").cloned(),
    }
}

fn list_params(query: &HashMap<String, String>) -> Result<ListParams, Error> {
    let limit = match query.get("limit") {
        Some(limit) => Some(
            limit
                .parse::<u32>()
                .map_err(|_| Error::bad_field("limit", format!("invalid limit {limit:?}")))?,
        ),
        None => None,
    };
    let mut params = ListParams {
        label_selector: query.get("labelSelector").cloned(),
        field_selector: query.get("fieldSelector").cloned(),
        limit: limit.filter(|limit| *limit > 0),
        continue_token: query.get("continue").cloned().filter(|t| !t.is_empty()),
        resource_version: query.get("resourceVersion").cloned(),
        ..Default::default()
    };
    params.version_match = match query.get("resourceVersionMatch").map(String::as_str) {
        None | Some("") => None,
        Some("NotOlderThan") => Some(VersionMatch::NotOlderThan),
        Some("Exact") => Some(VersionMatch::Exact),
        Some(other) => {
            return Err(Error::bad_field(
                "resourceVersionMatch",
                format!("unsupported value {other:?}"),
            ))
        }
    };
    Ok(params)
}

fn delete_params(
    dry_run: bool,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<DeleteParams, Error> {
    let options: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Error::bad_request(format!("malformed DeleteOptions: {e}")))?
    };
    let policy = query
        .get("propagationPolicy")
        .map(String::as_str)
        .or_else(|| options.get("propagationPolicy").and_then(Value::as_str));
    let propagation_policy = match policy {
        None => None,
        Some("Orphan") => Some(PropagationPolicy::Orphan),
        Some("Background") => Some(PropagationPolicy::Background),
        Some("Foreground") => Some(PropagationPolicy::Foreground),
        Some(other) => {
            return Err(Error::bad_field(
                "propagationPolicy",
                format!("unsupported value {other:?}"),
            ))
        }
    };
    let preconditions = options.get("preconditions").map(|p| Preconditions {
        uid: p.get("uid").and_then(Value::as_str).map(String::from),
        resource_version: p
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
    });
    let dry_run = dry_run
        || options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    Ok(DeleteParams {
        dry_run,
        grace_period_seconds: query
            .get("gracePeriodSeconds")
            .and_then(|s| s.parse().ok())
            .or_else(|| {
                options
                    .get("gracePeriodSeconds")
                    .and_then(Value::as_u64)
                    .map(|s| s as u32)
            }),
        propagation_policy,
        preconditions,
    })
}

/// Streams a watch as newline-delimited JSON `WatchEvent`s; an error ends the stream with an
/// `ERROR` event carrying its `Status`. Objects go out as the watch cache encoded them, once
/// for every watcher; only tables (and kinds served without the cache) are encoded here.
async fn watch(
    registry: Arc<Registry>,
    target: &Target,
    query: &HashMap<String, String>,
    as_table: Option<table::IncludeObject>,
) -> Result<Response, Error> {
    let timeout = match query.get("timeoutSeconds") {
        Some(timeout) => Some(timeout.parse().map_err(|_| {
            Error::bad_field("timeoutSeconds", format!("invalid timeout {timeout:?}"))
        })?),
        None => None,
    };
    let params = WatchParams {
        label_selector: query.get("labelSelector").cloned(),
        field_selector: query.get("fieldSelector").cloned(),
        bookmarks: query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true"),
        send_initial_events: query.get("sendInitialEvents").is_some_and(|v| v == "true"),
        timeout,
    };
    let resource_version = query.get("resourceVersion").cloned().unwrap_or_default();
    if as_table.is_none() {
        let encoded = registry
            .watch_encoded(
                &target.resource,
                target.namespace.as_deref(),
                &params,
                &resource_version,
            )
            .await?;
        if let Some(events) = encoded {
            return stream_lines(events.map(|event| {
                event.map(|event| {
                    let mut line = Vec::with_capacity(event.object.len() + 32);
                    line.extend_from_slice(br#"{"type":""#);
                    line.extend_from_slice(event.event_type.as_bytes());
                    line.extend_from_slice(br#"","object":"#);
                    line.extend_from_slice(&event.object);
                    line.extend_from_slice(b"}\n");
                    Bytes::from(line)
                })
            }));
        }
    }
    let events = registry
        .watch(
            &target.resource,
            target.namespace.as_deref(),
            &params,
            &resource_version,
        )
        .await?;
    let kind = target.resource.kind().to_string();
    let mut first = true;
    let lines = events.map(move |event| {
        event.map(|event| {
            // Objects become one-row Tables; the first carries the column definitions.
            let event = if let Some(include) = as_table {
                table_event(&kind, event, std::mem::take(&mut first), include)
            } else {
                serde_json::to_value(&event).unwrap_or_default()
            };
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            Bytes::from(line)
        })
    });
    stream_lines(lines)
}

/// The chunked response of a watch: each `Ok` item is one event's line; an error becomes an
/// `ERROR` event carrying its `Status`, and ends the stream, as in Kubernetes.
fn stream_lines(
    lines: impl futures::Stream<Item = Result<Bytes, Error>> + Send + 'static,
) -> Result<Response, Error> {
    let mut ended = false;
    let lines = lines
        .take_while(move |line| {
            let keep = !ended;
            ended |= line.is_err();
            futures::future::ready(keep)
        })
        .map(|line| {
            Ok::<_, std::convert::Infallible>(line.unwrap_or_else(|error| {
                let mut line = serde_json::to_vec(&serde_json::json!({
                    "type": "ERROR",
                    "object": status_json(&error),
                }))
                .unwrap_or_default();
                line.push(b'\n');
                Bytes::from(line)
            }))
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(lines))
        .map_err(|e| Error::internal(e.to_string()))
}

/// The `scale` subresource: an `autoscaling/v1` `Scale` view of `spec.replicas`. PUT and
/// PATCH change the object's replicas, with the Scale's resourceVersion as a precondition
/// when it carries one (409 when stale).
#[allow(clippy::too_many_arguments)]
async fn scale(
    client: &dyn Client,
    resource: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    method: Method,
    headers: &HeaderMap,
    body: &[u8],
    dry_run: bool,
) -> Result<Response, Error> {
    let current = client.get(resource, namespace, name).await?;
    let object = if method == Method::GET {
        current
    } else {
        let requested: Value = if method == Method::PUT {
            decode_value(headers, body)?
        } else {
            let patch = match decode_patch(headers, body)? {
                Patch::Merge(patch) | Patch::Strategic(patch) => patch,
                _ => return Err(Error::bad_request("unsupported patch for scale")),
            };
            let mut scale = scale_of(&current);
            json_patch::merge(&mut scale, &patch);
            scale
        };
        let replicas = requested["spec"]["replicas"].as_i64().ok_or_else(|| {
            Error::bad_field("spec.replicas", "Required value: the desired replicas")
        })?;
        if replicas < 0 {
            return Err(Error::bad_field(
                "spec.replicas",
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            ));
        }
        let mut patch = serde_json::json!({ "spec": { "replicas": replicas } });
        if let Some(version) = requested["metadata"]["resourceVersion"].as_str() {
            patch["metadata"] = serde_json::json!({ "resourceVersion": version });
        }
        let params = PatchParams {
            dry_run,
            ..Default::default()
        };
        client
            .patch(resource, namespace, name, &Patch::Merge(patch), &params)
            .await?
    };
    Ok(json(StatusCode::OK, &scale_of(&object)))
}

/// The `Scale` of a scalable object.
fn scale_of(object: &DynamicObject) -> Value {
    let value = to_value(object);
    let selector = value["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    serde_json::json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": value["metadata"]["name"],
            "namespace": value["metadata"]["namespace"],
            "uid": value["metadata"]["uid"],
            "resourceVersion": value["metadata"]["resourceVersion"],
            "creationTimestamp": value["metadata"]["creationTimestamp"],
        },
        "spec": { "replicas": value["spec"]["replicas"].as_i64().unwrap_or(0) },
        "status": {
            "replicas": value["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector,
        },
    })
}

/// A watch event whose object is a one-row Table (bookmarks and errors pass unchanged).
fn table_event(
    kind: &str,
    event: capstan_api::kube_core::WatchEvent<DynamicObject>,
    with_columns: bool,
    include: table::IncludeObject,
) -> Value {
    use capstan_api::kube_core::WatchEvent;
    let (kind_name, object) = match event {
        WatchEvent::Added(object) => ("ADDED", object),
        WatchEvent::Modified(object) => ("MODIFIED", object),
        WatchEvent::Deleted(object) => ("DELETED", object),
        other => return serde_json::to_value(&other).unwrap_or_default(),
    };
    let metadata = serde_json::json!({
        "resourceVersion": object.metadata.resource_version.clone().unwrap_or_default(),
    });
    serde_json::json!({
        "type": kind_name,
        "object": table::table(kind, &[to_value(&object)], metadata, with_columns, include, now()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Vec<ResourceInfo> {
        ResourceInfo::builtins().collect()
    }

    #[test]
    fn paths_resolve_to_kind_namespace_name_and_subresource() {
        let pods = resolve("/api/v1/namespaces/default/pods", &served()).unwrap();
        assert_eq!(
            (pods.resource.kind(), pods.namespace.as_deref(), pods.name),
            ("Pod", Some("default"), None)
        );
        let status = resolve(
            "/apis/apps/v1/namespaces/default/deployments/web/status",
            &served(),
        )
        .unwrap();
        assert_eq!(status.resource.kind(), "Deployment");
        assert_eq!(status.name.as_deref(), Some("web"));
        assert_eq!(status.subresource.as_deref(), Some("status"));
        let all = resolve("/api/v1/pods", &served()).unwrap();
        assert_eq!(all.namespace, None);
        let namespace = resolve("/api/v1/namespaces/default", &served()).unwrap();
        assert_eq!(
            (namespace.resource.kind(), namespace.name.as_deref()),
            ("Namespace", Some("default"))
        );
        let node = resolve("/api/v1/nodes/node01", &served()).unwrap();
        assert_eq!(node.resource.kind(), "Node");
    }

    #[test]
    fn unknown_or_misshapen_paths_are_not_found() {
        for path in [
            "/api/v2/pods",
            "/apis/apps/v1/widgets",
            "/api/v1/pods/web",
            "/api/v1/namespaces/default/nodes/node01",
            "/api/v1/namespaces/default/pods/web/status/extra",
            "/nonsense",
        ] {
            assert!(
                resolve(path, &served()).unwrap_err().is_not_found(),
                "{path}"
            );
        }
    }
}
