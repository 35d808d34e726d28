//! "Into the pods": the subresources kube-apiserver proxies to the node's kubelet.
//!
//! - `GET /api/v1/namespaces/{ns}/pods/{name}/log` ([`log`]): the container's log, streamed
//!   from the kubelet's `/containerLogs/...` as it comes (chunk by chunk, with backpressure:
//!   nothing is buffered beyond what the client reads).
//! - `GET|POST .../pods/{name}/exec`, `/attach`, `/portforward` ([`upgrade_proxy`]): the
//!   connection upgrade (WebSocket or SPDY/3.1) relayed to the kubelet's `/exec/...`,
//!   `/attach/...`, `/portForward/...`, then the two upgraded connections spliced byte for
//!   byte.
//! - `/api/v1/nodes/{name}/proxy/{path}` ([`node_proxy`]): any request relayed to the
//!   kubelet's `/{path}`, streamed, upgrades included.
//!
//! Kubelets are reached as [`KubeletClientConfig`] says (set in
//! [`ApiServerOptions::kubelet_client`](crate::http::ApiServerOptions::kubelet_client), which
//! puts a [`KubeletClient`] in every request's extensions; without one the defaults apply).
//! These requests are long-running (`layers::RequestInfo::is_long_running`): the request
//! timeout and the in-flight limit leave them alone, as kube-apiserver's
//! `longRunningRequestCheck` does. Authorization is the layer's, on the subresource
//! (`pods/log`, `pods/exec`, `nodes/proxy`, ...); a WebSocket upgrade of `pods/exec`,
//! `pods/attach` or `pods/portforward` arrives as a GET and must also be allowed `create`
//! (Kubernetes' `AuthorizePodWebsocketUpgradeCreatePermission`), as the SPDY POST is.

pub mod kubelet_client;
pub mod log;
pub mod node_proxy;
pub mod upgrade_proxy;

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::{Api, Client};

use crate::http::status::ApiError;
use crate::registry::Registry;

pub use kubelet_client::{
    KubeletClient, KubeletClientConfig, KubeletDialer, KubeletError, KubeletLocation,
    DEFAULT_KUBELET_PORT, KUBELET_CLIENT_USER,
};

/// What the handlers share: the registry the Pods and Nodes are read from.
#[derive(Clone)]
pub(crate) struct Streams {
    registry: Arc<Registry>,
}

impl Streams {
    fn client(&self) -> Arc<dyn Client> {
        self.registry.clone()
    }
}

/// The routes of `pods/log`, `pods/exec`, `pods/attach`, `pods/portforward` and
/// `nodes/proxy`, reading Pods and Nodes from `registry`.
pub fn routes<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> Router<S> {
    let pods = "/api/v1/namespaces/{namespace}/pods/{name}";
    Router::new()
        .route(&format!("{pods}/log"), get(log::pod_log))
        .route(
            &format!("{pods}/exec"),
            get(upgrade_proxy::exec).post(upgrade_proxy::exec),
        )
        .route(
            &format!("{pods}/attach"),
            get(upgrade_proxy::attach).post(upgrade_proxy::attach),
        )
        .route(
            &format!("{pods}/portforward"),
            get(upgrade_proxy::port_forward).post(upgrade_proxy::port_forward),
        )
        .route("/api/v1/nodes/{name}/proxy", any(node_proxy::proxy_root))
        .route("/api/v1/nodes/{name}/proxy/", any(node_proxy::proxy_root))
        .route("/api/v1/nodes/{name}/proxy/{*path}", any(node_proxy::proxy))
        .with_state(Streams { registry })
}

/// Why a streaming request was refused or failed, answered as kube-apiserver answers it.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A Kubernetes error with its reason (404 for a missing Pod, 400 for a bad container,
    /// 422 for invalid log options, 403, ...).
    #[error(transparent)]
    Api(#[from] capstan_api::Error),
    /// A failure answered with a code, an optional reason and a message: a plain Go error
    /// in kube-apiserver has no reason (500 `Get "http://...": dial tcp ...: connect:
    /// connection refused`); a kubelet's refusal is relayed with the reason of its code.
    #[error("{message}")]
    Status {
        /// The HTTP status code.
        code: u16,
        /// The `Status.reason`, if any.
        reason: Option<&'static str>,
        /// The message.
        message: String,
    },
}

impl StreamError {
    /// A reasonless failure with `code` and `message`.
    pub fn unknown(code: u16, message: impl Into<String>) -> Self {
        StreamError::Status {
            code,
            reason: None,
            message: message.into(),
        }
    }
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        match self {
            StreamError::Api(error) => ApiError(error).into_response(),
            StreamError::Status {
                code,
                reason,
                message,
            } => status_response(code, reason, &message),
        }
    }
}

/// A failure `Status` with `code`, `reason` (none: as kube-apiserver writes a plain Go
/// error) and `message`.
pub(crate) fn status_response(code: u16, reason: Option<&str>, message: &str) -> Response {
    let mut status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    });
    if let Some(reason) = reason {
        status["reason"] = reason.into();
    }
    status["code"] = code.into();
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        crate::protobuf::struct_order::to_vec(&status),
    )
        .into_response()
}

/// The [`KubeletClient`] of the request (the default one when the server set none).
pub(crate) fn kubelet_client(extensions: &axum::http::Extensions) -> KubeletClient {
    extensions
        .get::<KubeletClient>()
        .cloned()
        .unwrap_or_default()
}

/// Reads Pod `namespace/name`.
async fn read_pod(streams: &Streams, namespace: &str, name: &str) -> Result<Pod, StreamError> {
    Ok(Api::<Pod>::namespaced(streams.client(), namespace)
        .get(name)
        .await?)
}

/// The container a request means, as kube-apiserver's `validateContainer`: the one asked for
/// if the Pod has it (init and ephemeral containers included), else the Pod's only container.
///
/// Errors: 400 `container c is not valid for pod p`, or `a container name must be specified
/// for pod p, choose one of: [a b]`.
pub fn choose_container(pod: &Pod, requested: Option<&str>) -> Result<String, capstan_api::Error> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let containers: Vec<&str> = spec
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let mut all: Vec<&str> = Vec::new();
    if let Some(spec) = spec {
        all.extend(
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| c.name.as_str()),
        );
        all.extend(containers.iter().copied());
        all.extend(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| c.name.as_str()),
        );
    }
    match requested.filter(|c| !c.is_empty()) {
        Some(container) if all.contains(&container) => Ok(container.to_string()),
        Some(container) => Err(capstan_api::Error::bad_request(format!(
            "container {container} is not valid for pod {name}"
        ))),
        None => match containers.as_slice() {
            [only] => Ok(only.to_string()),
            [] => Err(capstan_api::Error::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => Err(capstan_api::Error::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                all.join(" ")
            ))),
        },
    }
}

/// Reads a boolean query parameter as Kubernetes' query conversion does: absent, empty,
/// `false`, `f` or `0` (any case) is false, anything else true.
pub(crate) fn query_bool(raw_query: &str, name: &str) -> bool {
    crate::http::rest::query_values(raw_query, name)
        .first()
        .is_some_and(|value| {
            !matches!(
                value.to_ascii_lowercase().as_str(),
                "" | "false" | "f" | "0"
            )
        })
}

/// Reads an integer query parameter; `None` when absent.
///
/// Errors: 400 with Go's `strconv.ParseInt` message.
pub(crate) fn query_int(raw_query: &str, name: &str) -> Result<Option<i64>, capstan_api::Error> {
    match crate::http::rest::query_values(raw_query, name).first() {
        None => Ok(None),
        Some(value) => value.parse::<i64>().map(Some).map_err(|_| {
            capstan_api::Error::bad_request(format!(
                "strconv.ParseInt: parsing {value:?}: invalid syntax"
            ))
        }),
    }
}

/// Encodes `pairs` as Go's `url.Values.Encode` does: sorted by key (a key's values keep
/// their order), each part query-escaped (space as `+`).
pub(crate) fn encode_query(pairs: &[(&str, String)]) -> String {
    let mut sorted: Vec<&(&str, String)> = pairs.iter().collect();
    sorted.sort_by_key(|(key, _)| *key);
    sorted
        .iter()
        .map(|(key, value)| format!("{}={}", query_escape(key), query_escape(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Go's `url.QueryEscape`.
pub(crate) fn query_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                escaped.push(byte as char)
            }
            b' ' => escaped.push('+'),
            other => escaped.push_str(&format!("%{other:02X}")),
        }
    }
    escaped
}

/// Go's `url.PathEscape` of one path segment.
pub(crate) fn path_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'$'
            | b'&'
            | b'+'
            | b','
            | b'='
            | b':'
            | b'@' => escaped.push(byte as char),
            other => escaped.push_str(&format!("%{other:02X}")),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::k8s_openapi::api::core::v1::{Container, PodSpec};

    fn pod(containers: &[&str], init: &[&str]) -> Pod {
        let container = |name: &&str| Container {
            name: name.to_string(),
            ..Default::default()
        };
        Pod {
            metadata: capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: containers.iter().map(container).collect(),
                init_containers: (!init.is_empty()).then(|| init.iter().map(container).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_only_container_is_the_default_and_named_ones_must_exist() {
        assert_eq!(choose_container(&pod(&["app"], &[]), None).unwrap(), "app");
        assert_eq!(
            choose_container(&pod(&["app", "side"], &["setup"]), Some("setup")).unwrap(),
            "setup"
        );
        assert_eq!(
            choose_container(&pod(&["app"], &[]), Some("db"))
                .unwrap_err()
                .to_string(),
            "container db is not valid for pod web"
        );
        let many = choose_container(&pod(&["app", "side"], &["setup"]), None).unwrap_err();
        assert_eq!(many.code(), 400);
        assert_eq!(
            many.to_string(),
            "a container name must be specified for pod web, choose one of: [setup app side]"
        );
    }

    #[test]
    fn query_values_convert_as_kubernetes_does() {
        assert!(query_bool("follow=true", "follow"));
        assert!(query_bool("follow=1", "follow"));
        assert!(query_bool("follow=yes", "follow"));
        assert!(!query_bool("follow=false", "follow"));
        assert!(!query_bool("follow=0", "follow"));
        assert!(!query_bool("other=1", "follow"));
        assert_eq!(query_int("tailLines=10", "tailLines").unwrap(), Some(10));
        assert_eq!(query_int("", "tailLines").unwrap(), None);
        assert_eq!(
            query_int("tailLines=x", "tailLines")
                .unwrap_err()
                .to_string(),
            r#"strconv.ParseInt: parsing "x": invalid syntax"#
        );
    }

    #[test]
    fn queries_encode_sorted_by_key_as_go_does() {
        let query = encode_query(&[
            ("output", "1".into()),
            ("command", "sh".into()),
            ("command", "-c".into()),
            ("command", "echo a&b".into()),
            ("error", "1".into()),
        ]);
        assert_eq!(
            query,
            "command=sh&command=-c&command=echo+a%26b&error=1&output=1"
        );
        assert_eq!(path_escape("a b/c"), "a%20b%2Fc");
    }
}
