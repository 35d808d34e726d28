//! The `scale` subresource (`autoscaling/v1` `Scale`) of kinds that serve one.

use super::*;

/// The `scale` subresource: an `autoscaling/v1` `Scale` view of `spec.replicas`. PUT and
/// PATCH change the object's replicas, with the Scale's resourceVersion as a precondition
/// when it carries one (409 when stale).
#[allow(clippy::too_many_arguments)]
pub(super) async fn scale(
    client: &dyn Client,
    resource: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    method: Method,
    headers: &HeaderMap,
    body: Bytes,
    dry_run: bool,
    paths: Option<crate::apiextensions::ScalePaths>,
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
                    let mut scale = scale_of(&current, paths.as_ref());
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
            let mut patch = match &paths {
                Some(paths) => paths.replicas_patch(replicas),
                None => serde_json::json!({ "spec": { "replicas": replicas } }),
            };
            if let Some(version) = requested["metadata"]["resourceVersion"].as_str() {
                patch["metadata"] = serde_json::json!({ "resourceVersion": version });
            }
            let params = PatchParams {
                dry_run,
                field_manager: field_manager(&HashMap::new(), headers),
                ..Default::default()
            };
            client
                .patch(resource, namespace, name, &Patch::Merge(patch), &params)
                .await?
        }
    };
    Ok(json(StatusCode::OK, &scale_of(&object, paths.as_ref())))
}

/// What a write to the `scale` subresource asks for.
enum ScaleChange {
    /// A PUT: the whole Scale.
    Replace(Value),
    /// A PATCH: merged into the current Scale.
    Merge(Value),
}

/// The `Scale` of a scalable object: read at a custom kind's `paths`, else from
/// `spec.replicas`, `status.replicas` and `spec.selector`.
pub(super) fn scale_of(
    object: &DynamicObject,
    paths: Option<&crate::apiextensions::ScalePaths>,
) -> Value {
    let value = to_value(object);
    if let Some(paths) = paths {
        return paths.scale_of(&value);
    }
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
