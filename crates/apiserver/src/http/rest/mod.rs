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

use super::negotiation::{negotiate_output, transform, Output, Shape};
use super::status::{status_json, ApiError};
use crate::registry::Registry;
use crate::schema::{strict_decoding_error, Keys, Schemas};

mod body;
mod params;
mod pods;
mod scale;
mod watch;

use body::*;
use params::*;
use scale::*;
use watch::*;

pub use body::{BLOCKING_PARSE_BYTES, MAX_NESTING_DEPTH};
pub use params::query_values;

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
            let watching = query.get("watch").is_some_and(|w| w == "1" || w == "true");
            let shape = if watching { Shape::Watch } else { Shape::List };
            let output = match negotiate_output(headers, query, shape) {
                Ok(output) => output,
                Err(refusal) => return Ok(refusal.into_response()),
            };
            if watching {
                return watch(registry, &target, query, output).await;
            }
            let mut list = client
                .list(resource, namespace, &list_params(query)?)
                .await?;
            if output != Output::Object {
                let objects = list.items.iter().map(to_value).collect::<Vec<_>>();
                let metadata = serde_json::to_value(&list.metadata).unwrap_or_default();
                let body = transform(resource, &objects, metadata, output, shape, true, now());
                return Ok(json(StatusCode::OK, &body));
            }
            list.types.kind = format!("{}List", resource.kind());
            list.types.api_version = resource.api_version();
            Ok(json(StatusCode::OK, &list))
        }
        (Method::GET, Some(name), None | Some("status")) => {
            let output = match negotiate_output(headers, query, Shape::Object) {
                Ok(output) => output,
                Err(refusal) => return Ok(refusal.into_response()),
            };
            let object = client.get(resource, namespace, name).await?;
            if output != Output::Object {
                let value = to_value(&object);
                let metadata = serde_json::json!({
                    "resourceVersion": object.metadata.resource_version.clone().unwrap_or_default(),
                });
                let body = transform(
                    resource,
                    &[value],
                    metadata,
                    output,
                    Shape::Object,
                    true,
                    now(),
                );
                return Ok(json(StatusCode::OK, &body));
            }
            Ok(json(StatusCode::OK, &object))
        }
        (method @ (Method::GET | Method::PUT | Method::PATCH), Some(name), Some("scale"))
            if resource.subresources().scale =>
        {
            let paths = crate::apiextensions::scale_paths(&registry, resource);
            scale(
                &*client, resource, namespace, name, method, headers, body, dry_run, paths,
            )
            .await
        }
        (Method::POST, Some(name), Some("eviction"))
            if pods::is_pod_subresource(&target, "eviction") =>
        {
            let namespace = namespace.unwrap_or_default();
            pods::eviction(&registry, namespace, name, headers, body, dry_run).await
        }
        (
            method @ (Method::GET | Method::PUT | Method::PATCH),
            Some(name),
            Some("ephemeralcontainers"),
        ) if pods::is_pod_subresource(&target, "ephemeralcontainers") => {
            let namespace = namespace.unwrap_or_default();
            pods::ephemeral_containers(&registry, method, namespace, name, request, body, dry_run)
                .await
        }
        (Method::POST, None, None) => {
            let validation = field_validation(query)?;
            let (mut object, unknown) =
                decode_object(headers, body, resource.clone(), validation.clone()).await?;
            super::requester::set_requester_fields(resource, &mut object);
            let created = client
                .create(
                    resource,
                    namespace,
                    object,
                    &post_params(dry_run, query, headers),
                )
                .await?;
            Ok(warn(
                json(StatusCode::CREATED, &created),
                &unknown,
                &validation,
            ))
        }
        (method @ (Method::GET | Method::PUT), Some(name), Some("approval"))
            if resource.group() == "certificates.k8s.io"
                && resource.kind() == "CertificateSigningRequest" =>
        {
            if method == Method::GET {
                return Ok(json(
                    StatusCode::OK,
                    &client.get(resource, None, name).await?,
                ));
            }
            let validation = field_validation(query)?;
            let (mut object, unknown) =
                decode_object(headers, body, resource.clone(), validation.clone()).await?;
            if object.metadata.name.as_deref().is_some_and(|n| n != name) {
                return Err(Error::bad_field(
                    "metadata.name",
                    format!("the name of the object does not match the name on the URL ({name})"),
                ));
            }
            object.metadata.name = Some(name.to_string());
            let params = post_params(dry_run, query, headers);
            let updated = registry.update_approval(resource, object, &params).await?;
            Ok(warn(json(StatusCode::OK, &updated), &unknown, &validation))
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
                .finalize_namespace(object, &post_params(dry_run, query, headers))
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
            let params = post_params(dry_run, query, headers);
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
        (Method::PATCH, Some(name), subresource @ (None | Some("status"))) => {
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
                    (Patch::Apply(body), Some(schema)) => {
                        schema.prune(&mut body.clone(), Keys::Object)
                    }
                    _ => Vec::new(),
                };
                Ok::<_, Error>((patch, unknown))
            })
            .await?;
            let params = PatchParams {
                dry_run,
                force: query.get("force").is_some_and(|f| f == "true" || f == "1"),
                // An apply names its manager itself (kube-apiserver refuses one without).
                field_manager: match patch {
                    Patch::Apply(_) => query.get("fieldManager").cloned(),
                    _ => field_manager(query, request.headers),
                },
                field_validation: Some(validation.clone()),
            };
            let patched = match subresource {
                Some(_) => {
                    registry
                        .patch_status(resource, namespace, name, &patch, &params)
                        .await?
                }
                None => {
                    client
                        .patch(resource, namespace, name, &patch, &params)
                        .await?
                }
            };
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
            let params = delete_params(dry_run, query, headers, body).await?;
            let deleted = client
                .delete_collection(resource, namespace, &params, &list_params(query)?)
                .await?;
            Ok(json(StatusCode::OK, &deleted))
        }
        (Method::DELETE, Some(name), None) => {
            let params = delete_params(dry_run, query, headers, body).await?;
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

/// `value` as a JSON response, in Go struct order for built-in kinds, their lists, `Status`
/// and `Table` (see [`crate::protobuf::struct_order`]), with sorted keys otherwise.
fn json<T: serde::Serialize>(code: StatusCode, value: &T) -> Response {
    match serde_json::to_value(value).map(|value| crate::protobuf::struct_order::to_vec(&value)) {
        Ok(body) => (code, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError(Error::internal(format!("encoding the response: {e}"))).into_response(),
    }
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

#[cfg(test)]
mod tests;
