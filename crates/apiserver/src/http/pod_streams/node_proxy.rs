//! `/api/v1/nodes/{name}/proxy/{path}`: any request relayed to the node's kubelet at
//! `/{path}` with its query, as kube-apiserver's `nodes/proxy` subresource.
//!
//! Every method is relayed (authorized by the layer as verb `get`, `create`, `update`,
//! `patch` or `delete` on `nodes/proxy`), the body streams both ways, and an upgrade
//! (`Connection: Upgrade`) is spliced like exec's. The caller's credentials and impersonation
//! headers stay here; the kubelet sees the server's kubelet credential. A kubelet that cannot
//! be reached is 503 `error trying to reach service: dial tcp ...`. As in Kubernetes, the
//! node may be named `name:port` (or `scheme:name:port`): another port than the kubelet's is
//! reached on the same address, without the kubelet credential (only `http` is dialled).
//! Unlike kube-apiserver, loopback node addresses are allowed, since embedded cluster nodes
//! have them.

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};

use super::upgrade_proxy::{forwarded_headers, is_upgrade_request, relay};
use super::{kubelet_client, StreamError, Streams};

/// The handler of `nodes/{name}/proxy` and `nodes/{name}/proxy/`.
pub(crate) async fn proxy_root(
    State(streams): State<Streams>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    serve(&streams, &name, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The handler of `nodes/{name}/proxy/{*path}`.
pub(crate) async fn proxy(
    State(streams): State<Streams>,
    Path((name, _)): Path<(String, String)>,
    request: Request,
) -> Response {
    serve(&streams, &name, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The kubelet path of a `nodes/{name}/proxy...` request path (still percent-encoded):
/// what follows `/proxy`, or `/`.
pub fn kubelet_path(request_path: &str) -> String {
    let rest = request_path
        .strip_prefix("/api/v1/nodes/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.strip_prefix("proxy"))
        .unwrap_or_default();
    if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    }
}

/// A `nodes/{id}/proxy` id as Kubernetes splits it: `name`, `name:port` or
/// `scheme:name:port` (scheme `http` or `https`), as `(scheme, name, port)`; `None` when it
/// is none of these.
pub fn split_node_id(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

async fn serve(streams: &Streams, id: &str, mut request: Request) -> Result<Response, StreamError> {
    let invalid = || {
        StreamError::Api(capstan_api::Error::bad_request(format!(
            "invalid node request {id:?}"
        )))
    };
    let (scheme, name, port) = split_node_id(id).ok_or_else(invalid)?;
    let kubelet = kubelet_client(request.extensions());
    let mut location = kubelet
        .node_location(streams.client(), name)
        .await
        .map_err(super::log::location_error)?;
    // Another port than the kubelet's is reached without the kubelet credential.
    let other_port = !port.is_empty() && port != location.port.to_string();
    if other_port {
        location.port = port.parse().map_err(|_| invalid())?;
        location.scheme = if scheme.is_empty() { "http" } else { scheme }.to_string();
    }
    let mut path = kubelet_path(request.uri().path());
    if let Some(query) = request.uri().query() {
        path.push('?');
        path.push_str(query);
    }
    let upgrade = is_upgrade_request(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let mut outgoing = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(&path)
        .body(body)
        .map_err(|e| StreamError::unknown(500, e.to_string()))?;
    *outgoing.headers_mut() = forwarded_headers(&parts.headers, upgrade);
    if let Some(length) = parts.headers.get(axum::http::header::CONTENT_LENGTH) {
        outgoing
            .headers_mut()
            .insert(axum::http::header::CONTENT_LENGTH, length.clone());
    }
    let sent = if other_port {
        kubelet.send_without_credential(&location, outgoing).await
    } else {
        kubelet.send(&location, outgoing).await
    };
    let response = sent.map_err(|e| StreamError::Status {
        code: 503,
        reason: Some("ServiceUnavailable"),
        message: format!("error trying to reach service: {e}"),
    })?;
    Ok(relay(response, client_upgrade))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_may_name_a_scheme_and_a_port() {
        assert_eq!(split_node_id("n1"), Some(("", "n1", "")));
        assert_eq!(split_node_id("n1:10255"), Some(("", "n1", "10255")));
        assert_eq!(split_node_id("https:n1:443"), Some(("https", "n1", "443")));
        assert_eq!(split_node_id("ftp:n1:21"), None);
        assert_eq!(split_node_id(":80"), None);
        assert_eq!(split_node_id("a:b:c:d"), None);
    }

    #[test]
    fn the_kubelet_path_is_what_follows_proxy() {
        assert_eq!(
            kubelet_path("/api/v1/nodes/n1/proxy/stats/summary"),
            "/stats/summary"
        );
        assert_eq!(kubelet_path("/api/v1/nodes/n1/proxy"), "/");
        assert_eq!(kubelet_path("/api/v1/nodes/n1/proxy/"), "/");
        assert_eq!(
            kubelet_path("/api/v1/nodes/n1/proxy/logs/a%20b/"),
            "/logs/a%20b/"
        );
    }
}
