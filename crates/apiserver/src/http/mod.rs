//! The Kubernetes REST API over HTTP, served from a [`Registry`].
//!
//! [`router`] builds an axum router: discovery (`/version`, `/api`, `/apis`, group versions),
//! health (`/healthz`, `/livez`, `/readyz`), and every resource path of the kinds the registry
//! serves (see [`rest`]). [`ApiServer::bind`] serves it on a TCP address and can write a
//! kubeconfig for `kubectl`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_apiserver::{http::ApiServer, registry::Registry};
//! use capstan_store::memory::MemoryStore;
//!
//! # async fn run() -> std::io::Result<()> {
//! let registry = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
//! let server = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap()).await?;
//! server.write_kubeconfig("kubeconfig".as_ref())?;
//! println!("kubectl --kubeconfig kubeconfig get pods   # against {}", server.url());
//! server.wait().await;
//! # Ok(()) }
//! ```

pub mod discovery;
pub mod rest;
pub mod status;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use capstan_api::{Client, Error};

use crate::registry::Registry;
use status::ApiError;

#[derive(Clone)]
struct Served {
    registry: Arc<Registry>,
    address: String,
}

/// The API's router over `registry`; `address` is what discovery reports as the server's
/// address.
pub fn router(registry: Arc<Registry>, address: String) -> Router {
    let state = Served { registry, address };
    Router::new()
        .route("/version", get(|| async { Json(discovery::version()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/api", get(core_versions))
        .route("/api/{version}", get(group_version))
        .route("/apis", get(groups))
        .route("/apis/{group}/{version}", get(group_version))
        .fallback(resource)
        .with_state(state)
}

async fn core_versions(State(served): State<Served>) -> Response {
    Json(discovery::core_versions(&served.address)).into_response()
}

async fn groups(State(served): State<Served>) -> Response {
    Json(discovery::groups(&served.registry.resources())).into_response()
}

async fn group_version(State(served): State<Served>, uri: Uri) -> Response {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let (group, version) = match segments.as_slice() {
        ["api", version] => ("", *version),
        [_, group, version] => (*group, *version),
        _ => ("", ""),
    };
    match discovery::resources(&served.registry.resources(), group, version) {
        Some(list) => Json(list).into_response(),
        None => ApiError(Error::NotFound {
            resource: uri.path().to_string(),
            name: String::new(),
        })
        .into_response(),
    }
}

async fn resource(
    State(served): State<Served>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client: Arc<dyn Client> = served.registry.clone();
    rest::handle(
        client,
        served.registry.resources(),
        method,
        uri.path().to_string(),
        query,
        headers,
        body,
    )
    .await
}

/// A running API server.
pub struct ApiServer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Serves `registry` on `address` (port 0 picks a free one) on the current tokio runtime.
    ///
    /// Errors: the address cannot be bound.
    pub async fn bind(registry: Arc<Registry>, address: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let app = router(registry, address.to_string());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("the API server stopped: {e}");
            }
        });
        Ok(ApiServer { address, task })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its base URL, e.g. `http://127.0.0.1:6443`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Writes a kubeconfig at `path` whose current context points at this server.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, kubeconfig(&self.url()))
    }

    /// Waits until the server stops (it runs until dropped or the runtime ends).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A kubeconfig with one cluster, user and context, named `capstan`, for `server`.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: capstan\n  cluster:\n    server: {server}\nusers:\n- name: capstan\n  user: {{}}\ncontexts:\n- name: capstan\n  context:\n    cluster: capstan\n    user: capstan\n    namespace: default\ncurrent-context: capstan\n"
    )
}
