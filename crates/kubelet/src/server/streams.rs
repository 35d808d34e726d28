//! `exec`, `attach` and `portForward`: the requests are checked and the container or sandbox
//! found here; the protocols themselves (WebSocket and SPDY, the upgrade, the streams) are
//! [`crate::streaming`]'s, given closures that open the process or the connection through the
//! runtime.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_runtime::{self as rt, AttachRequest, RuntimeError, StreamingExecRequest};
use futures::FutureExt;
use http::StatusCode;

use super::query::StreamQuery;
use super::resolve::{attempts, ready_sandbox};
use super::{text, ServerState};
use crate::streaming::{
    serve_port_forward, serve_remote_command, ConnectPort, OpenProcess, StreamError,
};

/// A runtime error as the client sees it on the error stream.
pub(crate) fn stream_error(error: RuntimeError) -> StreamError {
    let (code, reason) = match &error {
        RuntimeError::NotFound { .. } => (404, "NotFound"),
        RuntimeError::InvalidArgument(_) | RuntimeError::FailedPrecondition(_) => {
            (400, "BadRequest")
        }
        RuntimeError::Unavailable(_) => (503, "ServiceUnavailable"),
        RuntimeError::Timeout(_) => (504, "Timeout"),
        _ => (500, "InternalError"),
    };
    StreamError {
        code,
        reason: reason.into(),
        message: error.to_string(),
    }
}

/// A refusal before any protocol: the status and the kubelet's text.
type Refusal = (StatusCode, String);

/// The Pod `namespace/name`.
fn find_pod(state: &ServerState, namespace: &str, name: &str) -> Result<Arc<Pod>, Refusal> {
    state
        .pods
        .get(namespace, name)
        .ok_or_else(|| (StatusCode::NOT_FOUND, "pod does not exist".into()))
}

/// The runtime id of the newest attempt of `container` in the Pod (with uid `uid` when
/// given); the kubelet's `container not found ("c")` otherwise.
async fn find_container(
    state: &ServerState,
    pod: &Pod,
    uid: Option<&str>,
    container: &str,
) -> Result<String, Refusal> {
    let not_found = || {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("container not found ({container:?})"),
        )
    };
    let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if uid.is_some_and(|uid| uid != pod_uid) {
        return Err(not_found());
    }
    let found = attempts(state.runtime.as_ref(), pod_uid, container)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // The running attempt if there is one, else the newest.
    found
        .iter()
        .find(|c| c.state == rt::ContainerState::Running)
        .or(found.first())
        .map(|c| c.id.clone())
        .ok_or_else(not_found)
}

/// The path parameters of exec and attach, with or without the Pod's uid.
pub(crate) struct Target {
    namespace: String,
    pod: String,
    uid: Option<String>,
    container: String,
}

impl From<(String, String, String)> for Target {
    fn from((namespace, pod, container): (String, String, String)) -> Self {
        Target {
            namespace,
            pod,
            uid: None,
            container,
        }
    }
}

impl From<(String, String, String, String)> for Target {
    fn from((namespace, pod, uid, container): (String, String, String, String)) -> Self {
        Target {
            namespace,
            pod,
            uid: Some(uid),
            container,
        }
    }
}

/// Exec (`attach: false`) or attach (`attach: true`) into `target`.
async fn remote_command(
    state: Arc<ServerState>,
    target: Target,
    request: Request,
    attach: bool,
) -> Response {
    let query = match StreamQuery::parse(request.uri().query().unwrap_or("")) {
        Ok(query) => query,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let pod = match find_pod(&state, &target.namespace, &target.pod) {
        Ok(pod) => pod,
        Err((status, message)) => return text(status, message),
    };
    let container_id =
        match find_container(&state, &pod, target.uid.as_deref(), &target.container).await {
            Ok(id) => id,
            Err((status, message)) => return text(status, message),
        };
    let runtime = state.runtime.clone();
    let command = query.command;
    let open: OpenProcess = Box::new(move |stdio| {
        async move {
            let opened = if attach {
                runtime
                    .attach(AttachRequest {
                        container_id,
                        stdio,
                    })
                    .await
            } else {
                runtime
                    .exec(StreamingExecRequest {
                        container_id,
                        cmd: command,
                        stdio,
                    })
                    .await
            };
            opened.map_err(stream_error)
        }
        .boxed()
    });
    serve_remote_command(request, query.stdio, open)
}

/// `/exec/{namespace}/{pod}/{container}`.
pub(crate) async fn exec(
    State(state): State<Arc<ServerState>>,
    Path(target): Path<(String, String, String)>,
    request: Request,
) -> Response {
    remote_command(state, target.into(), request, false).await
}

/// `/exec/{namespace}/{pod}/{uid}/{container}`.
pub(crate) async fn exec_uid(
    State(state): State<Arc<ServerState>>,
    Path(target): Path<(String, String, String, String)>,
    request: Request,
) -> Response {
    remote_command(state, target.into(), request, false).await
}

/// `/attach/{namespace}/{pod}/{container}`.
pub(crate) async fn attach(
    State(state): State<Arc<ServerState>>,
    Path(target): Path<(String, String, String)>,
    request: Request,
) -> Response {
    remote_command(state, target.into(), request, true).await
}

/// `/attach/{namespace}/{pod}/{uid}/{container}`.
pub(crate) async fn attach_uid(
    State(state): State<Arc<ServerState>>,
    Path(target): Path<(String, String, String, String)>,
    request: Request,
) -> Response {
    remote_command(state, target.into(), request, true).await
}

async fn forward(
    state: Arc<ServerState>,
    namespace: String,
    name: String,
    uid: Option<String>,
    request: Request,
) -> Response {
    let pod = match find_pod(&state, &namespace, &name) {
        Ok(pod) => pod,
        Err((status, message)) => return text(status, message),
    };
    let not_found = || {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("pod not found ({:?})", format!("{name}_{namespace}")),
        )
    };
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    if uid.is_some_and(|uid| uid != pod_uid) {
        return not_found();
    }
    let sandbox = match ready_sandbox(state.runtime.as_ref(), &pod_uid).await {
        Ok(Some(sandbox)) => sandbox.id,
        Ok(None) => return not_found(),
        Err(error) => return text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    let runtime = state.runtime.clone();
    let connect: ConnectPort = Arc::new(move |port| {
        let (runtime, sandbox) = (runtime.clone(), sandbox.clone());
        async move {
            runtime
                .port_forward(&sandbox, port)
                .await
                .map_err(stream_error)
        }
        .boxed()
    });
    serve_port_forward(request, connect)
}

/// `/portForward/{namespace}/{pod}`.
pub(crate) async fn port_forward(
    State(state): State<Arc<ServerState>>,
    Path((namespace, pod)): Path<(String, String)>,
    request: Request,
) -> Response {
    forward(state, namespace, pod, None, request).await
}

/// `/portForward/{namespace}/{pod}/{uid}`.
pub(crate) async fn port_forward_uid(
    State(state): State<Arc<ServerState>>,
    Path((namespace, pod, uid)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    forward(state, namespace, pod, Some(uid), request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_become_statuses_with_kubernetes_reasons() {
        let e = stream_error(RuntimeError::NotFound {
            kind: "container",
            id: "x".into(),
        });
        assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
        let e = stream_error(RuntimeError::FailedPrecondition("not running".into()));
        assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
        assert!(e.message.contains("not running"));
        let e = stream_error(RuntimeError::Internal("boom".into()));
        assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    }
}
