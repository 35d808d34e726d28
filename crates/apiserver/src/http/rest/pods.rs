//! The Pod subresources served from the registry: `eviction` (`POST`, a `policy/v1` or
//! `policy/v1beta1` Eviction, JSON, YAML or protobuf) and `ephemeralcontainers` (`GET`, `PUT`,
//! `PATCH`).

use super::*;
use crate::registry::EvictionError;

/// The protobuf message of an Eviction (the same wire form in `policy/v1` and `v1beta1`).
const EVICTION_MESSAGE: &str = "k8s.io.api.policy.v1.Eviction";

/// Whether `target` is a Pod's subresource `name`.
pub(super) fn is_pod_subresource(target: &Target, name: &str) -> bool {
    target.resource.group().is_empty()
        && target.resource.kind() == "Pod"
        && target.subresource.as_deref() == Some(name)
}

/// `POST .../pods/{name}/eviction`: 201 with a `Success` Status once the Pod is being
/// deleted; a refusal is the Status Kubernetes answers (429 with a `DisruptionBudget` cause,
/// 500 for several budgets).
pub(super) async fn eviction(
    registry: &Registry,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: Bytes,
    dry_run: bool,
) -> Result<Response, Error> {
    let headers = headers.clone();
    let eviction = off_thread(body.len(), move || {
        if is_protobuf(&headers)? {
            let mut value = crate::protobuf::decode_options(&body, EVICTION_MESSAGE, "Eviction")?;
            if let Some(object) = value.as_object_mut() {
                object.insert("kind".into(), "Eviction".into());
            }
            Ok(value)
        } else {
            decode_value(&headers, &body)
        }
    })
    .await?;
    match registry.evict(namespace, name, &eviction, dry_run).await {
        Ok(()) => Ok(json(
            StatusCode::CREATED,
            &crate::registry::eviction_success_status(),
        )),
        Err(EvictionError::Api(error)) => Err(error),
        Err(refusal) => {
            let code =
                StatusCode::from_u16(refusal.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut status = serde_json::to_value(refusal.to_status()).unwrap_or_default();
            if let Some(object) = status.as_object_mut() {
                object.insert("kind".into(), "Status".into());
                object.insert("apiVersion".into(), "v1".into());
                object.insert("metadata".into(), Value::Object(Default::default()));
            }
            Ok(json(code, &status))
        }
    }
}

/// `GET`, `PUT` and `PATCH` of `.../pods/{name}/ephemeralcontainers`: the whole Pod, of
/// which writes change `spec.ephemeralContainers` only.
#[allow(clippy::too_many_arguments)]
pub(super) async fn ephemeral_containers(
    registry: &Registry,
    method: Method,
    namespace: &str,
    name: &str,
    request: &Request<'_>,
    body: Bytes,
    dry_run: bool,
) -> Result<Response, Error> {
    let resource = ResourceInfo::builtin("", "Pod").expect("Pods are a built-in kind");
    let (query, headers) = (request.query, request.headers);
    match method {
        Method::GET => {
            let pod = Client::get(registry, &resource, Some(namespace), name).await?;
            Ok(json(StatusCode::OK, &pod))
        }
        Method::PUT => {
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
            let mut object = object;
            object.metadata.name = Some(name.to_string());
            let params = post_params(dry_run, query, headers);
            let updated = registry
                .update_ephemeral_containers(namespace, object, &params)
                .await?;
            Ok(warn(json(StatusCode::OK, &updated), &unknown, &validation))
        }
        _ => {
            let validation = field_validation(query)?;
            let headers = headers.clone();
            let patch = off_thread(body.len(), move || decode_patch(&headers, &body)).await?;
            let params = PatchParams {
                dry_run,
                force: false,
                field_manager: field_manager(query, request.headers),
                field_validation: Some(validation),
            };
            let patched = registry
                .patch_ephemeral_containers(namespace, name, &patch, &params)
                .await?;
            Ok(json(StatusCode::OK, &patched))
        }
    }
}
