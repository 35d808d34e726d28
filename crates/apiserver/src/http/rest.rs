//! The resource paths of the Kubernetes REST API, served from the registry.
//!
//! `/api/v1/...` and `/apis/<group>/<version>/...`, then `[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]`.
//! GET reads (a `watch=1` list streams newline-delimited JSON `WatchEvent`s), POST creates,
//! PUT replaces (`/status` replaces the status), PATCH merges (merge or strategic merge, by
//! content type), DELETE deletes (on a collection path, every object matching the selectors).
//! Writes honour `fieldValidation`: unknown fields of built-in kinds are dropped with a
//! `Warning` header each (`Warn`, the default), dropped silently (`Ignore`), or refused with 400
//! (`Strict`).
//!
//! Before anything is read or written, a write's `dryRun` (a list: the query may repeat it,
//! and a `DeleteOptions` body carries one) must be all `All`, else 422 as Kubernetes'
//! `ValidateDryRun` answers. A body nesting deeper than [`MAX_NESTING_DEPTH`] is refused with
//! 400 by a linear pre-scan before any parse, and bodies over [`BLOCKING_PARSE_BYTES`] are
//! parsed on a blocking thread. A watch that cannot start after its parameters were checked
//! (a resourceVersion too old, ...) is answered `200` with one `ERROR` event, as
//! kube-apiserver does.

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
///
/// `query` holds the last value of each query parameter; `raw_query` is the query string as
/// sent, from which list parameters such as `dryRun` (which may repeat) are read.
pub async fn handle(
    registry: Arc<Registry>,
    method: Method,
    path: String,
    query: HashMap<String, String>,
    raw_query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Request {
        query: &query,
        raw_query: raw_query.as_deref().unwrap_or_default(),
        headers: &headers,
    };
    match serve(registry, method, &path, &request, body).await {
        Ok(response) => response,
        Err(error) => ApiError(error).into_response(),
    }
}

/// The parts of a request the handlers read besides its method, path and body.
struct Request<'a> {
    query: &'a HashMap<String, String>,
    raw_query: &'a str,
    headers: &'a HeaderMap,
}

async fn serve(
    registry: Arc<Registry>,
    method: Method,
    path: &str,
    request: &Request<'_>,
    body: Bytes,
) -> Result<Response, Error> {
    let (query, headers) = (request.query, request.headers);
    let target = resolve(path, &registry.resources())?;
    let client: Arc<dyn Client> = registry.clone();
    let resource = &target.resource;
    let namespace = target.namespace.as_deref();
    // Kubernetes validates a write's options before it reads the body or the store: a
    // `dryRun` other than `All` is 422, and nothing happens.
    let options_kind = match method {
        Method::POST => Some("CreateOptions"),
        Method::PUT => Some("UpdateOptions"),
        Method::PATCH => Some("PatchOptions"),
        Method::DELETE => Some("DeleteOptions"),
        _ => None,
    };
    let dry_run = match options_kind {
        Some(kind) => validate_dry_run(kind, &query_values(request.raw_query, "dryRun"))?,
        None => false,
    };
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
                &*client, resource, namespace, name, method, headers, body, dry_run,
            )
            .await
        }
        (Method::POST, None, None) => {
            let validation = field_validation(query)?;
            let (object, unknown) =
                decode_object(headers, body, resource.clone(), validation.clone()).await?;
            let created = client
                .create(resource, namespace, object, &post_params(dry_run, query))
                .await?;
            Ok(warn(
                json(StatusCode::CREATED, &created),
                &unknown,
                &validation,
            ))
        }
        (Method::PUT, Some(name), Some("finalize"))
            if resource.group().is_empty() && resource.kind() == "Namespace" =>
        {
            let validation = field_validation(query)?;
            let (object, unknown) =
                decode_object(headers, body, resource.clone(), validation.clone()).await?;
            if object.metadata.name.as_deref().is_some_and(|n| n != name) {
                return Err(Error::bad_field(
                    "metadata.name",
                    format!("the name of the object does not match the name on the URL ({name})"),
                ));
            }
            let mut object = object;
            object.metadata.name = Some(name.to_string());
            let finalized = registry
                .finalize_namespace(object, &post_params(dry_run, query))
                .await?;
            Ok(warn(
                json(StatusCode::OK, &finalized),
                &unknown,
                &validation,
            ))
        }
        (Method::PUT, Some(name), subresource @ (None | Some("status"))) => {
            let validation = field_validation(query)?;
            let (object, unknown) =
                decode_object(headers, body, resource.clone(), validation.clone()).await?;
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
            let headers = headers.clone();
            let resource_info = resource.clone();
            let (patch, unknown) = off_thread(body.len(), move || {
                let patch = decode_patch(&headers, &body)?;
                // The registry refuses unknown fields in the patched object under Strict; the
                // patch's own unknown fields are what a Warn reports.
                let unknown = match (&patch, Schemas::builtin().of(&resource_info)) {
                    (Patch::Merge(body), Some(schema)) => {
                        schema.prune(&mut body.clone(), Keys::Object)
                    }
                    (Patch::Strategic(body), Some(schema)) => {
                        schema.prune(&mut body.clone(), Keys::StrategicPatch)
                    }
                    _ => Vec::new(),
                };
                Ok::<_, Error>((patch, unknown))
            })
            .await?;
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
        // kube-apiserver serves no deletecollection for Namespaces (each is deleted on its
        // own, and the system namespaces never), so the method is not allowed.
        (Method::DELETE, None, None) if !supports_delete_collection(resource) => {
            Err(Error::MethodNotAllowed {
                message: format!(
                    "the server does not allow this method on the requested resource: DELETE {}",
                    resource.qualified_resource()
                ),
            })
        }
        (Method::DELETE, None, None) => {
            let params = delete_params(dry_run, query, body).await?;
            let deleted = client
                .delete_collection(resource, namespace, &params, &list_params(query)?)
                .await?;
            Ok(json(StatusCode::OK, &deleted))
        }
        (Method::DELETE, Some(name), None) => {
            let params = delete_params(dry_run, query, body).await?;
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

/// Whether the kind serves `deletecollection`: every kind but core Namespaces, as in
/// kube-apiserver.
pub fn supports_delete_collection(resource: &ResourceInfo) -> bool {
    !(resource.group().is_empty() && resource.kind() == "Namespace")
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
async fn decode_object(
    headers: &HeaderMap,
    body: Bytes,
    resource: ResourceInfo,
    validation: ValidationDirective,
) -> Result<(DynamicObject, Vec<String>), Error> {
    let headers = headers.clone();
    off_thread(body.len(), move || {
        decode_object_now(&headers, &body, &resource, &validation)
    })
    .await
}

fn decode_object_now(
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
    let content_type = content_type(headers, "application/json")?;
    match content_type.split(';').next().unwrap_or_default().trim() {
        "application/json" | "" => {
            check_json_depth(body)?;
            serde_json::from_slice(body)
                .map_err(|e| Error::bad_request(format!("malformed JSON: {e}")))
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            check_yaml_depth(body)?;
            serde_yaml_ng::from_slice(body)
                .map_err(|e| Error::bad_request(format!("malformed YAML: {e}")))
        }
        other => Err(Error::UnsupportedMediaType {
            message: format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: application/json, application/yaml (got {other:?})"
            ),
        }),
    }
}

fn decode_patch(headers: &HeaderMap, body: &[u8]) -> Result<Patch<Value>, Error> {
    let content_type = content_type(headers, "")?;
    check_json_depth(body)?;
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

/// The request's `Content-Type`, or `default` when it has none.
///
/// Errors: [`Error::UnsupportedMediaType`] for a header that is not visible ASCII, which
/// names no media type this server knows.
fn content_type<'h>(headers: &'h HeaderMap, default: &'h str) -> Result<&'h str, Error> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(default),
        Some(value) => value.to_str().map_err(|_| Error::UnsupportedMediaType {
            message: format!(
                "the body of the request was in an unknown format - the Content-Type header \
                 {:?} is not a media type",
                String::from_utf8_lossy(value.as_bytes())
            ),
        }),
    }
}

/// The deepest nesting of lists and objects a request body may have: 100 levels.
///
/// serde_json refuses more than 127 on its own and serde_yaml_ng has no bound we rely on, so
/// every body is pre-scanned in linear time against this bound before any parse. Kubernetes'
/// own decoders allow more (10000), but no real manifest comes near 100: the deepest built-in
/// objects nest about 20 levels, and a CRD's schema with 30 nested `properties` about 70.
pub const MAX_NESTING_DEPTH: usize = 100;

/// Bodies above this size are parsed (and pruned) on a blocking thread, so a large body
/// never holds up the async workers that serve every other request.
pub const BLOCKING_PARSE_BYTES: usize = 64 * 1024;

fn too_deep() -> Error {
    Error::bad_request(format!(
        "the request body nests deeper than the limit of {MAX_NESTING_DEPTH} levels"
    ))
}

/// Refuses a JSON body whose lists and objects nest deeper than [`MAX_NESTING_DEPTH`]: one
/// pass counting `[` and `{` outside strings. Malformed JSON passes; the parse reports it.
///
/// Errors: [`Error::BadRequest`] naming the limit.
fn check_json_depth(body: &[u8]) -> Result<(), Error> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING_DEPTH {
                    return Err(too_deep());
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Refuses a YAML body nesting deeper than [`MAX_NESTING_DEPTH`], in one pass over its lines:
/// block nesting is the stack of indentation columns (each `- ` sequence entry opens one
/// more), plus the depth of flow collections (`[`, `{`) outside quotes and comments. Block
/// scalars (`|`, `>`) are text and skipped. It errs on the side of counting a level too
/// many, never too few.
///
/// Errors: [`Error::BadRequest`] naming the limit.
fn check_yaml_depth(body: &[u8]) -> Result<(), Error> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<u8> = None;
    // The indentation of the line that opened a block scalar, while inside it.
    let mut block_scalar: Option<usize> = None;
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let mut rest = &line[indent..];
        if let Some(parent) = block_scalar {
            if rest.is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        if quote.is_none() && flow == 0 {
            if rest.is_empty() || rest[0] == b'#' {
                continue;
            }
            if indent == 0 && (rest.starts_with(b"---") || rest.starts_with(b"...")) {
                indents.clear();
                continue;
            }
            while indents.last().is_some_and(|&top| top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            // `- - item`: each sequence entry nests one level deeper.
            let mut column = indent;
            while rest.first() == Some(&b'-') && matches!(rest.get(1), None | Some(b' ')) {
                let spaces = rest[1..].iter().take_while(|&&b| b == b' ').count();
                column += 1 + spaces;
                rest = &rest[1 + spaces..];
                indents.push(column);
            }
        }
        let mut previous = b' ';
        let mut last = b' ';
        let mut escaped = false;
        for (index, &byte) in rest.iter().enumerate() {
            if let Some(open) = quote {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' if open == b'"' => escaped = true,
                    _ if byte == open => quote = None,
                    _ => {}
                }
                previous = byte;
                continue;
            }
            match byte {
                b'#' if previous == b' ' || previous == b'\t' || index == 0 => break,
                b'"' | b'\'' if flow > 0 || matches!(last, b' ' | b':' | b'-' | b',') => {
                    quote = Some(byte)
                }
                b'[' | b'{' if flow > 0 || matches!(last, b' ' | b':' | b'-' | b'?') => {
                    flow += 1;
                }
                b']' | b'}' if flow > 0 => flow -= 1,
                _ => {}
            }
            if indents.len() + flow > MAX_NESTING_DEPTH {
                return Err(too_deep());
            }
            previous = byte;
            if byte != b' ' && byte != b'\t' {
                last = byte;
            }
        }
        if indents.len() + flow > MAX_NESTING_DEPTH {
            return Err(too_deep());
        }
        // `key: |`, `key: >-`, `- |2`: the lines below, indented more, are text.
        if quote.is_none() && flow == 0 {
            let trimmed = rest.trim_ascii_end();
            let indicator = trimmed
                .iter()
                .rposition(|&b| b == b'|' || b == b'>')
                .filter(|&at| {
                    trimmed[at + 1..]
                        .iter()
                        .all(|b| matches!(b, b'-' | b'+' | b'0'..=b'9'))
                        && (at == 0 || matches!(trimmed[at - 1], b' ' | b':' | b'-'))
                });
            if indicator.is_some() {
                block_scalar = Some(indent);
            }
        }
    }
    Ok(())
}

/// Runs `parse` on a blocking thread when `len` is over [`BLOCKING_PARSE_BYTES`], inline
/// otherwise.
async fn off_thread<T: Send + 'static>(
    len: usize,
    parse: impl FnOnce() -> T + Send + 'static,
) -> T {
    if len <= BLOCKING_PARSE_BYTES {
        return parse();
    }
    match tokio::task::spawn_blocking(parse).await {
        Ok(parsed) => parsed,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Every value of the query parameter `name` in `raw_query`, percent-decoded (`+` is a
/// space), in order: list parameters such as `dryRun` may repeat.
pub fn query_values(raw_query: &str, name: &str) -> Vec<String> {
    raw_query
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|&b| (b as char).to_digit(16))
                .map(|d| d as u8)
        };
        match bytes[index] {
            b'%' => match (hex(index + 1), hex(index + 2)) {
                (Some(high), Some(low)) => {
                    decoded.push(high << 4 | low);
                    index += 3;
                    continue;
                }
                _ => decoded.push(b'%'),
            },
            b'+' => decoded.push(b' '),
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Kubernetes' `ValidateDryRun`: every value must be `All`. Returns whether the request is a
/// dry run (some value given).
///
/// Errors: [`Error::Invalid`] on `<kind>.meta.k8s.io ""` with a `FieldValueNotSupported`
/// cause on `dryRun`, e.g. `dryRun: Unsupported value: []string{"true"}: supported values:
/// "All"`.
fn validate_dry_run(kind: &str, values: &[String]) -> Result<bool, Error> {
    if values.iter().all(|v| v == "All") {
        return Ok(!values.is_empty());
    }
    let mut cause = capstan_api::error::FieldError::not_supported("dryRun", "", ["All"]);
    // Go's `%#v` of the `[]string`, as Kubernetes prints it.
    let quoted: Vec<String> = values
        .iter()
        .map(|v| Value::from(v.as_str()).to_string())
        .collect();
    cause.kind = capstan_api::error::FieldErrorKind::NotSupported {
        value: format!("[]string{{{}}}", quoted.join(", ")),
        supported: vec!["All".into()],
    };
    Err(Error::Invalid {
        kind: format!("{kind}.meta.k8s.io"),
        name: String::new(),
        causes: vec![cause],
    })
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

/// The options of a delete: the query's, then the `DeleteOptions` body's.
///
/// Errors: [`Error::BadRequest`] for a malformed body or an unknown `propagationPolicy`;
/// [`Error::Invalid`] for a `dryRun` in the body other than `["All"]`.
async fn delete_params(
    dry_run: bool,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<DeleteParams, Error> {
    let options: Value = if body.is_empty() {
        Value::Null
    } else {
        off_thread(body.len(), move || {
            check_json_depth(&body)?;
            serde_json::from_slice(&body)
                .map_err(|e| Error::bad_request(format!("malformed DeleteOptions: {e}")))
        })
        .await?
    };
    let body_dry_run = match options.get("dryRun") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| {
                v.as_str().map(String::from).ok_or_else(|| {
                    Error::bad_field(
                        "dryRun",
                        "malformed DeleteOptions: dryRun must be a list of strings",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(Error::bad_field(
                "dryRun",
                "malformed DeleteOptions: dryRun must be a list of strings",
            ))
        }
    };
    let dry_run = validate_dry_run("DeleteOptions", &body_dry_run)? || dry_run;
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
/// `ERROR` event carrying its `Status`, including one that keeps the watch from starting
/// (see [`watch_failed`]); only bad parameters are refused with their own HTTP code. Objects go out as the watch cache encoded them, once
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
            .await;
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(error) => return watch_failed(error),
        };
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
    let events = match registry
        .watch(
            &target.resource,
            target.namespace.as_deref(),
            &params,
            &resource_version,
        )
        .await
    {
        Ok(events) => events,
        Err(error) => return watch_failed(error),
    };
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

/// Answers a watch that could not start. A malformed request (a selector that does not
/// parse: 400, or 422) is refused with its code, as before any stream; any other error (a
/// resourceVersion too old: 410, the store unavailable, ...) is what kube-apiserver sends
/// once the watch is accepted: `200`, then one `ERROR` event carrying the `Status`, then the
/// end. Clients such as client-go's reflector and kube-rs' watcher relist on that 410 event.
fn watch_failed(error: Error) -> Result<Response, Error> {
    if matches!(error, Error::BadRequest { .. } | Error::Invalid { .. }) {
        return Err(error);
    }
    stream_lines(futures::stream::iter([Err(error)]))
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
    body: Bytes,
    dry_run: bool,
) -> Result<Response, Error> {
    // The body is decoded before the object is read, so a malformed one reads nothing.
    let request = match method {
        Method::GET => None,
        Method::PUT => {
            let headers = headers.clone();
            let scale = off_thread(body.len(), move || decode_value(&headers, &body)).await?;
            Some(ScaleChange::Replace(scale))
        }
        _ => {
            let headers = headers.clone();
            let patch = off_thread(body.len(), move || decode_patch(&headers, &body)).await?;
            match patch {
                Patch::Merge(patch) | Patch::Strategic(patch) => Some(ScaleChange::Merge(patch)),
                _ => return Err(Error::bad_request("unsupported patch for scale")),
            }
        }
    };
    let current = client.get(resource, namespace, name).await?;
    let object = match request {
        None => current,
        Some(request) => {
            let requested: Value = match request {
                ScaleChange::Replace(scale) => scale,
                ScaleChange::Merge(patch) => {
                    let mut scale = scale_of(&current);
                    json_patch::merge(&mut scale, &patch);
                    scale
                }
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
        }
    };
    Ok(json(StatusCode::OK, &scale_of(&object)))
}

/// What a write to the `scale` subresource asks for.
enum ScaleChange {
    /// A PUT: the whole Scale.
    Replace(Value),
    /// A PATCH: merged into the current Scale.
    Merge(Value),
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
    fn dry_run_accepts_only_all_and_reads_like_kubernetes_otherwise() {
        assert!(!validate_dry_run("CreateOptions", &[]).unwrap());
        assert!(validate_dry_run("CreateOptions", &["All".into(), "All".into()]).unwrap());
        let error = validate_dry_run("DeleteOptions", &["true".into()]).unwrap_err();
        assert_eq!(error.code(), 422);
        assert_eq!(
            error.to_string(),
            r#"DeleteOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: []string{"true"}: supported values: "All""#
        );
        let status = status_json(&error);
        assert_eq!(status["details"]["causes"][0]["field"], "dryRun");
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "FieldValueNotSupported"
        );
        let mixed = validate_dry_run("PatchOptions", &["All".into(), "x".into()]).unwrap_err();
        assert!(
            mixed.to_string().contains(r#"[]string{"All", "x"}"#),
            "{mixed}"
        );
    }

    #[test]
    fn list_query_parameters_keep_every_repeat_percent_decoded() {
        assert_eq!(
            query_values("dryRun=All&limit=5&dryRun=tr%75e&dry%52un=a+b", "dryRun"),
            ["All", "true", "a b"]
        );
        assert!(query_values("", "dryRun").is_empty());
        assert_eq!(query_values("dryRun", "dryRun"), [""]);
    }

    #[test]
    fn json_nesting_is_counted_outside_strings_only() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_json_depth(deep(MAX_NESTING_DEPTH).as_bytes()).is_ok());
        let error = check_json_depth(deep(MAX_NESTING_DEPTH + 1).as_bytes()).unwrap_err();
        assert_eq!(error.code(), 400);
        assert!(error.to_string().contains("nests deeper"), "{error}");
        let text = format!(r#"{{"a":"{}"[{{"}}"#, "[".repeat(500));
        assert!(check_json_depth(text.as_bytes()).is_ok());
        // Siblings do not add up.
        let wide = "[[]]".repeat(10_000);
        assert!(check_json_depth(format!("[{wide}]").as_bytes()).is_ok());
    }

    #[test]
    fn yaml_nesting_counts_indentation_sequence_entries_and_flow_collections() {
        let manifest = b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {app: web, tier: \"[front\"}\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        args: [\"a[\", 'b{']\n        command:\n        - sh\n        - -c\n        - |\n          for x in a b; do\n              echo [[[[[[ $x\n          done\n  # a comment with [[[[ brackets\n  replicas: 3 # [[[\n---\nkind: ConfigMap\ndata:\n  key: a[0]\n";
        assert!(check_yaml_depth(manifest).is_ok());
        let flow = format!(
            "a: {}{}",
            "[".repeat(MAX_NESTING_DEPTH),
            "]".repeat(MAX_NESTING_DEPTH)
        );
        assert!(check_yaml_depth(flow.as_bytes()).is_err());
        let mut block = String::new();
        for level in 0..=MAX_NESTING_DEPTH {
            block.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
        }
        assert!(check_yaml_depth(block.as_bytes()).is_err());
        let sequences = format!("{}x\n", "- ".repeat(MAX_NESTING_DEPTH + 1));
        assert!(check_yaml_depth(sequences.as_bytes()).is_err());
        let shallow = format!("{}x\n", "- ".repeat(MAX_NESTING_DEPTH / 2));
        assert!(check_yaml_depth(shallow.as_bytes()).is_ok());
    }

    #[test]
    fn a_content_type_that_is_not_ascii_is_an_unsupported_media_type() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_bytes(b"application/json\xff").unwrap(),
        );
        let error = decode_value(&headers, b"{}").unwrap_err();
        assert_eq!(error.code(), 415);
        assert_eq!(decode_patch(&headers, b"{}").unwrap_err().code(), 415);
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
