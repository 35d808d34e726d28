//! The kubelet's HTTP API, as the real kubelet serves it on its port (10250): what the API
//! server's `pods/log`, `pods/exec`, `pods/attach`, `pods/portforward` and `nodes/proxy`
//! reach, and what metrics-server scrapes.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | `ok` (the only route without authentication) |
//! | `GET /pods` | a `PodList` of the Pods bound to the node, as the kubelet sees them |
//! | `GET /containerLogs/{ns}/{pod}/{container}` | the log as text (see *Logs* below) |
//! | `GET`/`POST /exec/{ns}/{pod}[/{uid}]/{container}` | `command`, `input`, `output`, `error`, `tty` |
//! | `GET`/`POST /attach/{ns}/{pod}[/{uid}]/{container}` | as exec, without a command |
//! | `GET`/`POST /portForward/{ns}/{pod}[/{uid}]` | port forwarding into the Pod's sandbox |
//! | `GET /stats/summary` | the Summary API (`stats/v1alpha1`): node, Pod and container CPU and memory |
//! | `GET /metrics/resource` | the resource metrics in the Prometheus text format |
//!
//! **Logs.** Lines are written as the container wrote them (with
//! `timestamps=true`, each after its RFC 3339 time with nanoseconds and a space);
//! `tailLines`, `sinceSeconds` and `sinceTime` select lines, `limitBytes` cuts the output,
//! `previous` reads the attempt before the current one, and `follow` streams (chunked) until
//! the container stops or the client goes away. Errors carry the kubelet's texts: `pod "p"
//! does not exist` and `container "c" not found in pod "p"` (404), `container "c" in pod "p"
//! is waiting to start: ContainerCreating` and `previous terminated container "c" in pod "p"
//! not found` (400).
//!
//! **Usage.** `/stats/summary` and `/metrics/resource` read the runtime's `container_stats`
//! for the running containers (newest attempt) of the ready sandboxes. A Pod's usage is the
//! sum of its containers', and the node's is the sum of its Pods' (the kubelet's own
//! processes and the rest of the system are not measured). `usageNanoCores` is the runtime's
//! rate, or the difference from the container's previous sample when the runtime gives none
//! (absent until there are two). A container whose usage cannot be read is listed without it
//! and `resource_scrape_error` is 1.
//!
//! **Security.** Every route but `/healthz` needs a credential, authenticated and
//! authorized as [`auth`] describes (the kubelet's `--anonymous-auth=false` with webhook
//! authentication and authorization). By default the server speaks plain HTTP and the
//! credential is a bearer token, so it should listen on an address only the control plane
//! reaches. With the `tls` feature and `KubeletConfig::server_tls` it serves HTTPS, as the
//! kubelet does on 10250 (`tls` module: a given serving certificate or a self-signed one
//! made for the node's name and addresses), and with a client CA (`--client-ca-file`) a
//! client certificate signed by it authenticates its requests as CN = user, O = groups,
//! before any bearer token; the API server reaches it with its kubelet client certificate
//! (kube-apiserver's `--kubelet-client-certificate`). Authorization is the same for both.
//!
//! The server starts with the kubelet when
//! [`KubeletConfig::server_listen`](crate::KubeletConfig::server_listen) is set, and
//! [`RunningKubelet::server_address`](crate::RunningKubelet::server_address) says where it
//! listens; the Node reports the port as `status.daemonEndpoints.kubeletEndpoint.port`.

pub mod auth;
mod logs;
mod query;
mod resolve;
mod stats;
mod streams;
#[cfg(feature = "tls")]
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use capstan_api::Client;
use capstan_runtime::{Clock, ContainerRuntime};
use http::{header, StatusCode};
use tokio::task::JoinHandle;

pub use auth::ServerAuth;
pub(crate) use resolve::PodView;
#[cfg(feature = "tls")]
pub use tls::KubeletTls;

use auth::{DelegatedAuth, Guard};

/// What the handlers share.
pub(crate) struct ServerState {
    pub(crate) node_name: String,
    pub(crate) runtime: Arc<dyn ContainerRuntime>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) pods: Arc<PodView>,
    pub(crate) sampler: stats::Sampler,
    /// When the kubelet started (the node's `startTime` in the summary).
    pub(crate) started: SystemTime,
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body))
        .expect("a valid response")
}

/// `GET /pods`.
async fn pods(State(state): State<Arc<ServerState>>) -> Response {
    let items: Vec<serde_json::Value> = state
        .pods
        .list()
        .iter()
        .filter_map(|pod| serde_json::to_value(pod.as_ref()).ok())
        .collect();
    let list = serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&list).unwrap_or_default()))
        .expect("a valid response")
}

/// The routes, behind authentication and authorization.
fn router(state: Arc<ServerState>, guard: Arc<Guard>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(streams::exec).post(streams::exec),
        )
        .route(
            "/exec/{namespace}/{pod}/{uid}/{container}",
            get(streams::exec_uid).post(streams::exec_uid),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(streams::attach).post(streams::attach),
        )
        .route(
            "/attach/{namespace}/{pod}/{uid}/{container}",
            get(streams::attach_uid).post(streams::attach_uid),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(streams::port_forward).post(streams::port_forward),
        )
        .route(
            "/portForward/{namespace}/{pod}/{uid}",
            get(streams::port_forward_uid).post(streams::port_forward_uid),
        )
        .route("/stats/summary", get(stats::stats_summary))
        .route("/metrics/resource", get(stats::metrics_resource))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "404 page not found\n".into()) })
        .layer(axum::middleware::from_fn_with_state(guard, auth::guard))
        .with_state(state)
}

/// Everything the server needs from the kubelet.
pub(crate) struct ServerParts {
    pub(crate) node_name: String,
    pub(crate) client: Arc<dyn Client>,
    pub(crate) runtime: Arc<dyn ContainerRuntime>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) pods: Arc<PodView>,
    pub(crate) auth: ServerAuth,
    /// HTTPS with this material, and the node's addresses for a self-signed certificate;
    /// `None`: plain HTTP.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<(KubeletTls, Vec<String>)>,
}

/// Binds `listen` (port 0 picks a free port) for [`spawn`], outside any runtime.
///
/// Errors: the address cannot be bound (in use, not local).
pub(crate) fn bind(listen: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the API on `listener` until the task is aborted.
///
/// # Panics
///
/// Outside a tokio runtime.
pub(crate) fn spawn(
    listener: std::net::TcpListener,
    parts: ServerParts,
) -> std::io::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    #[cfg(feature = "tls")]
    let tls = match &parts.tls {
        Some((tls, hosts)) => Some(tls::TlsServer::new(tls, &parts.node_name, hosts)?),
        None => None,
    };
    let (authenticator, authorizer) = match parts.auth {
        ServerAuth::Delegated(ttls) => {
            let delegated = Arc::new(DelegatedAuth::new(parts.client.clone(), ttls));
            (
                delegated.clone() as Arc<dyn auth::KubeletAuthenticator>,
                delegated as Arc<dyn auth::KubeletAuthorizer>,
            )
        }
        ServerAuth::Custom {
            authenticator,
            authorizer,
        } => (authenticator, authorizer),
    };
    let guard = Arc::new(Guard {
        authenticator,
        authorizer,
        node_name: parts.node_name.clone(),
    });
    let state = Arc::new(ServerState {
        node_name: parts.node_name,
        runtime: parts.runtime,
        started: parts.clock.now(),
        clock: parts.clock,
        pods: parts.pods,
        sampler: stats::Sampler::default(),
    });
    let app = router(state, guard);
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        return Ok(tokio::spawn(tls.serve(listener, app)));
    }
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "kubelet API: the server stopped");
        }
    }))
}
