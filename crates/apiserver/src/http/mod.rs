//! The Kubernetes REST API over HTTP, served from a [`Registry`].
//!
//! [`router`] builds an axum router: discovery (`/version`, `/api`, `/apis`, group versions),
//! health (`/healthz`, `/livez`, `/readyz` with real checks, see [`observe`]), `/metrics`
//! (kube-apiserver's `apiserver_*` series), and every resource path of the kinds the registry
//! serves (see [`rest`]). [`ApiServer::bind`] serves it on a TCP address and can write a
//! kubeconfig for `kubectl`; [`ApiServer::shutdown`] stops it gracefully (requests in flight
//! finish, watches end cleanly, new connections are refused).
//!
//! [`layers`] holds the limit, authentication and authorization layers;
//! [`ApiServer::bind_with`] applies them as its [`ApiServerOptions`] say (and [`ApiServer::bind`]
//! with the defaults: everyone anonymous, everything allowed, Kubernetes' default limits).
//!
//! With the `tls` feature, a `tls::TlsConfig` in `ApiServerOptions::tls` makes the server
//! speak HTTPS only, optionally requesting client certificates (mutual TLS): a certificate
//! signed by the client CA authenticates its caller as the subject's Common Name, in the
//! subject's Organizations as groups (see `layers::X509ClientCerts`). With TLS, anonymous
//! requests are off unless [`ApiServerOptions::anonymous`] turns them on. [`Kubeconfig`] writes
//! kubeconfigs carrying a CA, a bearer token or a client certificate.
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

pub mod apiservices;
pub mod componentstatuses;
pub mod discovery;
pub mod layers;
pub mod metrics_api;
pub mod negotiation;
pub mod observe;
pub mod openapi;
pub mod openapi_v2;
mod openapi_v2_proto;
pub mod pod_streams;
mod requester;
pub mod rest;
pub mod reviews;
pub mod service_accounts;
pub mod status;
pub mod table;
#[cfg(feature = "tls")]
pub mod tls;
pub mod virtual_resources;

mod kubeconfig_writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use capstan_api::Error;

use crate::registry::Registry;
use status::ApiError;

pub use kubeconfig_writer::Kubeconfig;
pub use layers::ApiServerOptions;

#[derive(Clone)]
struct Served {
    registry: Arc<Registry>,
    address: String,
    /// The OpenAPI documents of the kinds served when they were last asked for.
    openapi: Arc<parking_lot::Mutex<Option<Arc<openapi::OpenApiV3>>>>,
}

impl Served {
    /// The OpenAPI documents of the kinds served now, rebuilt when a kind was registered.
    fn openapi(&self) -> Arc<openapi::OpenApiV3> {
        let resources = self.registry.resources();
        let mut cached = self.openapi.lock();
        match &*cached {
            Some(documents) if documents.describes(&resources) => documents.clone(),
            _ => {
                let documents = Arc::new(openapi::OpenApiV3::new(&resources));
                *cached = Some(documents.clone());
                documents
            }
        }
    }
}

/// The API's router over `registry`; `address` is what discovery reports as the server's
/// address. Health is [`ApiServerOptions::default`]'s (`ping`, and the store's `etcd` on
/// `/healthz` and `/readyz`); `/metrics` serves a registry of its own, which nothing records
/// into without [`ApiServerOptions::apply`]'s metrics layer.
pub fn router(registry: Arc<Registry>, address: String) -> Router {
    let options = ApiServerOptions::default();
    let health = options.health(&registry);
    router_with(registry, address, &health, options.metrics_registry)
}

/// The API's router over `registry`, serving `health` on `/healthz`, `/livez` and `/readyz`
/// (and each check's own path) and `metrics` on `/metrics`. [`ApiServerOptions::apply`] keeps
/// `/metrics` behind authentication and authorization, as in Kubernetes; health is public.
pub fn router_with(
    registry: Arc<Registry>,
    address: String,
    health: &capstan_api::health::HealthEndpoints,
    metrics: Arc<prometheus_client::registry::Registry>,
) -> Router {
    let virtual_routes = Router::new()
        .merge(reviews::routes())
        .merge(service_accounts::routes())
        .merge(apiservices::routes(registry.clone()))
        .merge(componentstatuses::routes(registry.clone()))
        .merge(pod_streams::routes(registry.clone()))
        .merge(metrics_api::routes(registry.clone()));
    let state = Served {
        registry,
        address,
        openapi: Arc::default(),
    };
    Router::new()
        .route("/version", get(|| async { Json(discovery::version()) }))
        // The Python client asks for `/version/`; kube-apiserver serves both.
        .route("/version/", get(|| async { Json(discovery::version()) }))
        .merge(observe::health_router(health))
        .merge(observe::metrics_router(metrics))
        .route("/api", get(core_versions))
        .route("/api/{version}", get(group_version))
        .route("/apis", get(groups))
        .route("/apis/{group}/{version}", get(group_version))
        .route("/openapi/v2", get(openapi_v2_document))
        .route("/openapi/v3", get(openapi_root))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .merge(virtual_routes)
        .fallback(resource)
        .with_state(state)
}

async fn core_versions(State(served): State<Served>, headers: HeaderMap) -> Response {
    match discovery::aggregated_version(&headers) {
        Some(version) => aggregated_discovery(&served, true, version),
        None => with_vary_accept(Json(discovery::core_versions(&served.address)).into_response()),
    }
}

/// Aggregated discovery of the core group (`core`) or the named groups, in `version` of
/// `apidiscovery.k8s.io`, with the `Content-Type` naming it.
fn aggregated_discovery(served: &Served, core: bool, version: &'static str) -> Response {
    let mut document = discovery::aggregated(&served.registry.resources(), core, version);
    virtual_resources::extend_aggregated(&mut document.list, core);
    let mut response = Json(document).into_response();
    if let Ok(value) = discovery::aggregated_content_type(version).parse() {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, value);
    }
    with_vary_accept(response)
}

/// Marks a discovery response as negotiated by `Accept`, so caches keep both forms apart.
fn with_vary_accept(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::VARY,
        axum::http::HeaderValue::from_static("Accept"),
    );
    response
}

/// `/openapi/v2`: the Swagger 2.0 document, as JSON or as protobuf by `Accept`.
async fn openapi_v2_document(State(served): State<Served>, headers: HeaderMap) -> Response {
    openapi_v2_proto::serve(&served.openapi(), &headers)
}

async fn openapi_root(State(served): State<Served>) -> Response {
    Json(served.openapi().root()).into_response()
}

async fn openapi_document(State(served): State<Served>, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches("/openapi/v3/");
    match served.openapi().document(path) {
        Some(document) => Json(document).into_response(),
        None => ApiError(Error::NotFound {
            resource: uri.path().to_string(),
            name: String::new(),
        })
        .into_response(),
    }
}

async fn groups(State(served): State<Served>, headers: HeaderMap) -> Response {
    match discovery::aggregated_version(&headers) {
        Some(version) => aggregated_discovery(&served, false, version),
        None => {
            let mut groups = discovery::groups(&served.registry.resources());
            virtual_resources::extend_groups(&mut groups);
            with_vary_accept(Json(groups).into_response())
        }
    }
}

async fn group_version(State(served): State<Served>, uri: Uri) -> Response {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let (group, version) = match segments.as_slice() {
        ["api", version] => ("", *version),
        [_, group, version] => (*group, *version),
        _ => ("", ""),
    };
    let served_by_registry = discovery::resources(&served.registry.resources(), group, version);
    match virtual_resources::extend_resources(served_by_registry, group, version) {
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
    user: Option<axum::Extension<layers::UserInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let handling = rest::handle(
        served.registry,
        method,
        uri.path().to_string(),
        query,
        uri.query().map(String::from),
        headers,
        body,
    );
    let handling = crate::registry::admission::warnings::with_warning_headers(handling);
    requester::as_requester(user.map(|axum::Extension(user)| user), handling).await
}

/// A running API server.
///
/// [`shutdown`](Self::shutdown) stops it gracefully; dropping it stops it at once (every
/// connection is dropped).
pub struct ApiServer {
    address: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    task: tokio::task::JoinHandle<()>,
    /// Set to `true` to stop accepting, end watches and drain the connections.
    stop: tokio::sync::watch::Sender<bool>,
    /// Compacts the registry's store while the server lives ([`ApiServer::bind_with`]).
    compactor: Option<crate::compactor::Compactor>,
    /// Serves the registry's CustomResourceDefinitions while the server lives
    /// ([`ApiServer::bind_with`]).
    custom_resources: Option<crate::apiextensions::CustomResourceController>,
    /// Keeps the `kubernetes` Service pointing at this server ([`ApiServer::bind_with`]).
    kubernetes_service: Option<crate::registry::bootstrap::KubernetesServiceReconciler>,
    /// Signs approved CertificateSigningRequests while the server lives, when its TLS
    /// configuration has a signing CA ([`ApiServer::bind_with`]).
    #[cfg(feature = "tls")]
    csr_signer: Option<crate::certificates::CsrSigner>,
}

tokio::task_local! {
    /// The shutdown signal of the server a connection belongs to (see [`serve_io`]).
    static SHUTDOWN: tokio::sync::watch::Receiver<bool>;
}

/// The listen backlog: the system's maximum (`/proc/sys/net/core/somaxconn`), at least 4096,
/// so that a burst of clients connecting at once is queued rather than dropped (a dropped SYN
/// costs the client a one-second retransmission).
fn listen_backlog() -> u32 {
    let system = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(0);
    system.max(4096)
}

/// Binds `address` as Go's `net.Listen` does: `SO_REUSEADDR` (a restarted server rebinds its
/// port while old connections linger in TIME_WAIT), and a backlog of the system's maximum
/// (`/proc/sys/net/core/somaxconn`), at least 4096.
///
/// Errors: the address cannot be bound.
pub fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(listen_backlog())
}

/// How connections are served.
#[derive(Clone)]
enum Transport {
    /// Plain HTTP.
    Plain,
    /// HTTPS.
    #[cfg(feature = "tls")]
    Tls(tokio_rustls::TlsAcceptor),
}

impl ApiServer {
    /// Serves `registry` on `address` (port 0 picks a free one) on the current tokio runtime,
    /// with the default [`ApiServerOptions`]: everyone anonymous, everything allowed, default
    /// limits.
    ///
    /// Errors: the address cannot be bound.
    pub async fn bind(registry: Arc<Registry>, address: SocketAddr) -> std::io::Result<Self> {
        Self::bind_with(registry, address, ApiServerOptions::default()).await
    }

    /// Serves `registry` on `address` with `options`: the layers in Kubernetes' order (timeout,
    /// authentication, in-flight limit, authorization, body limit, then the API; see
    /// [`ApiServerOptions::apply`]) and the header-read timeout. The socket is bound by
    /// [`listen`] (large backlog, `SO_REUSEADDR`). With `ApiServerOptions::tls` set (feature `tls`), it serves
    /// HTTPS only (see the `tls` module).
    ///
    /// Before serving, it creates what kube-apiserver bootstraps and is missing
    /// ([`Registry::bootstrap`], [`Registry::bootstrap_kubernetes_service`] for the bound
    /// address, kept so every 10 s as kube-apiserver does). While it serves, a [`Compactor`](crate::compactor::Compactor) compacts the
    /// store every [`ApiServerOptions::compaction_interval`], and the
    /// [CustomResourceDefinition controller](crate::apiextensions::serve_custom_resources)
    /// serves the stored and new CRDs. With a signing CA in `ApiServerOptions::tls` (feature
    /// `tls`), a `certificates::CsrSigner` signs approved
    /// CertificateSigningRequests; without one they stay unsigned.
    ///
    /// Errors: the address cannot be bound, the bootstrap objects cannot be written, or (with
    /// TLS) rustls refuses the TLS material.
    pub async fn bind_with(
        registry: Arc<Registry>,
        address: SocketAddr,
        options: ApiServerOptions,
    ) -> std::io::Result<Self> {
        #[cfg(feature = "tls")]
        let transport = match &options.tls {
            Some(tls) => Transport::Tls(tokio_rustls::TlsAcceptor::from(Arc::new(
                tls.server_config()?,
            ))),
            None => Transport::Plain,
        };
        #[cfg(not(feature = "tls"))]
        let transport = Transport::Plain;
        let listener = listen(address)?;
        let address = listener.local_addr()?;
        let mut listeners = vec![listener];
        for additional in &options.additional_listeners {
            let additional = additional.try_clone()?;
            additional.set_nonblocking(true)?;
            listeners.push(tokio::net::TcpListener::from_std(additional)?);
        }
        // kube-apiserver's bootstrap: system namespaces, default RBAC, `kubernetes` Service.
        registry.bootstrap().await.map_err(std::io::Error::other)?;
        let advertised = options.advertise_address.unwrap_or(address);
        registry
            .bootstrap_kubernetes_service(advertised)
            .await
            .map_err(std::io::Error::other)?;
        let kubernetes_service = registry.reconcile_kubernetes_service(
            advertised,
            crate::registry::bootstrap::KUBERNETES_SERVICE_INTERVAL,
        );
        let health = options.health(&registry);
        let kinds = observe::registry_kinds(&registry);
        let store = registry.store().clone();
        let custom_resources = crate::apiextensions::serve_custom_resources(registry.clone());
        #[cfg(feature = "tls")]
        let csr_signer = options
            .tls
            .as_ref()
            .and_then(|tls| tls.signing_ca().cloned())
            .map(|ca| crate::certificates::CsrSigner::start(registry.clone(), ca));
        let app = router_with(
            registry,
            address.to_string(),
            &health,
            options.metrics_registry.clone(),
        );
        let app = options.apply_with_kinds(app, Some(kinds));
        let mut server = Self::serve_on(
            listeners,
            app,
            options.limits.header_read_timeout,
            transport,
        );
        server.compactor = crate::compactor::Compactor::start(store, options.compaction_interval);
        server.custom_resources = Some(custom_resources);
        server.kubernetes_service = Some(kubernetes_service);
        #[cfg(feature = "tls")]
        {
            server.csr_signer = csr_signer;
        }
        Ok(server)
    }

    /// Serves any `app` on `listener` (which it owns from now on): HTTP/1.1 and HTTP/2, each
    /// connection closed if a request's headers take longer than `header_read_timeout` to
    /// arrive. Apply [`ApiServerOptions::apply`] (or the [`layers`] one by one) to `app` first,
    /// and bind `listener` with [`listen`] for a backlog that absorbs bursts of clients.
    pub fn serve(
        listener: tokio::net::TcpListener,
        app: Router,
        header_read_timeout: Duration,
    ) -> Self {
        Self::serve_with(listener, app, header_read_timeout, Transport::Plain)
    }

    /// Serves any `app` over HTTPS on `listener`, as [`serve`](Self::serve) does over HTTP:
    /// the TLS handshake and the first bytes of the first request must arrive within
    /// `header_read_timeout`, and the verified client certificates of each connection reach
    /// its requests as a [`tls::PeerCertificates`] extension. Build `config` with
    /// [`tls::TlsConfig::server_config`].
    #[cfg(feature = "tls")]
    pub fn serve_tls(
        listener: tokio::net::TcpListener,
        app: Router,
        header_read_timeout: Duration,
        config: Arc<rustls::ServerConfig>,
    ) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        Self::serve_with(listener, app, header_read_timeout, Transport::Tls(acceptor))
    }

    fn serve_with(
        listener: tokio::net::TcpListener,
        app: Router,
        header_read_timeout: Duration,
        transport: Transport,
    ) -> Self {
        Self::serve_on(vec![listener], app, header_read_timeout, transport)
    }

    /// Serves `app` on every listener; the first one's address is the server's.
    fn serve_on(
        listeners: Vec<tokio::net::TcpListener>,
        app: Router,
        header_read_timeout: Duration,
        transport: Transport,
    ) -> Self {
        let address = listeners
            .first()
            .and_then(|listener| listener.local_addr().ok())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let scheme = match transport {
            Transport::Plain => "http",
            #[cfg(feature = "tls")]
            Transport::Tls(_) => "https",
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(accept(
            listeners,
            app,
            header_read_timeout,
            transport,
            stopped,
        ));
        ApiServer {
            address,
            scheme,
            task,
            stop,
            compactor: None,
            custom_resources: None,
            kubernetes_service: None,
            #[cfg(feature = "tls")]
            csr_signer: None,
        }
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its base URL, e.g. `http://127.0.0.1:6443`, or `https://127.0.0.1:6443` with TLS.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    /// A [`Kubeconfig`] for this server, to add a CA, a token or a client certificate to and
    /// write.
    pub fn kubeconfig(&self) -> Kubeconfig {
        Kubeconfig::new(self.url())
    }

    /// Writes a kubeconfig at `path` whose current context points at this server.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, kubeconfig(&self.url()))
    }

    /// Writes a kubeconfig at `path` like [`write_kubeconfig`](Self::write_kubeconfig), whose
    /// user authenticates with the bearer `token`.
    pub fn write_kubeconfig_with_token(&self, path: &Path, token: &str) -> std::io::Result<()> {
        std::fs::write(path, kubeconfig_with_token(&self.url(), token))
    }

    /// Waits until the server stops (it runs until dropped, shut down, or the runtime ends).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }

    /// Stops the server gracefully, as kube-apiserver does on SIGTERM: it closes the listener
    /// at once (new connections are refused), ends every watch cleanly (the chunked stream
    /// ends with its last chunk, so clients see an end, not a truncated body, and reconnect
    /// elsewhere), lets requests in flight finish, and closes each connection once idle.
    /// Whatever is still running after `grace` is dropped. Returns when every connection is
    /// closed.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop.send_replace(true);
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}

/// Resolves once `stop` says the server stops (never, if its sender is gone without saying
/// so).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let sender_gone = stop.wait_for(|stopped| *stopped).await.is_err();
    if sender_gone {
        std::future::pending::<()>().await;
    }
}

/// Accepts connections until aborted (which drops every connection too) or until `stop`
/// turns true: then it closes the listener and waits for the connections to drain.
async fn accept(
    listeners: Vec<tokio::net::TcpListener>,
    app: Router,
    header_read_timeout: Duration,
    transport: Transport,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = accept_any(&listeners) => match accepted {
                Ok((stream, _)) => match &transport {
                    Transport::Plain => {
                        connections.spawn(SHUTDOWN.scope(
                            stop.clone(),
                            connection(stream, app.clone(), header_read_timeout),
                        ));
                    }
                    #[cfg(feature = "tls")]
                    Transport::Tls(acceptor) => {
                        connections.spawn(SHUTDOWN.scope(
                            stop.clone(),
                            tls::connection(
                                stream,
                                app.clone(),
                                header_read_timeout,
                                acceptor.clone(),
                            ),
                        ));
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listeners);
    while connections.join_next().await.is_some() {}
}

/// The next connection on any of `listeners`.
async fn accept_any(
    listeners: &[tokio::net::TcpListener],
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    if let [listener] = listeners {
        return listener.accept().await;
    }
    std::future::poll_fn(|cx| {
        for listener in listeners {
            if let std::task::Poll::Ready(accepted) = listener.poll_accept(cx) {
                return std::task::Poll::Ready(accepted);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Serves one connection. A client must start its first request within `header_read_timeout`
/// (before hyper even knows whether it speaks HTTP/1 or HTTP/2), and send each request's
/// headers within it.
async fn connection(stream: tokio::net::TcpStream, app: Router, header_read_timeout: Duration) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    let mut stop = SHUTDOWN.try_with(Clone::clone).ok();
    let stopped = async {
        match &mut stop {
            Some(stop) => stopped(stop).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        peeked = tokio::time::timeout(header_read_timeout, stream.peek(&mut first)) => match peeked {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        },
        // A connection that has not sent a request yet is simply closed.
        _ = stopped => return,
    }
    let io = hyper_util::rt::TokioIo::new(stream);
    serve_io(io, app, axum::http::Extensions::new(), header_read_timeout).await;
}

/// Serves HTTP/1.1 or HTTP/2 on `io` (whose first bytes have arrived), adding `extensions`
/// (the connection's, such as its client certificates) to every request.
async fn serve_io<I>(
    io: I,
    app: Router,
    extensions: axum::http::Extensions,
    header_read_timeout: Duration,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    let stop = SHUTDOWN.try_with(Clone::clone).ok();
    let service_stop = stop.clone();
    let app = tower::service_fn(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            if !extensions.is_empty() {
                request.extensions_mut().extend(extensions.clone());
            }
            let long_running =
                layers::RequestInfo::new(request.method(), request.uri()).is_long_running();
            let response = tower::ServiceExt::oneshot(app.clone(), request);
            let stop = service_stop.clone().filter(|_| long_running);
            async move {
                let response = response.await?;
                // A watch's stream ends when the server stops, so that graceful shutdown
                // can finish its response with the last chunk rather than cut it.
                Ok::<_, std::convert::Infallible>(match stop {
                    Some(mut stop) => response.map(|body| {
                        let stopped = async move { stopped(&mut stop).await };
                        axum::body::Body::from_stream(futures::StreamExt::take_until(
                            body.into_data_stream(),
                            stopped,
                        ))
                    }),
                    None => response,
                })
            }
        },
    );
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let service = hyper_util::service::TowerToHyperService::new(app);
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let outcome = match stop {
        Some(mut stop) => {
            tokio::select! {
                outcome = connection.as_mut() => outcome,
                _ = stopped(&mut stop) => {
                    // Finish the requests in flight, then close (HTTP/2: GOAWAY).
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
        None => connection.await,
    };
    if let Err(e) = outcome {
        tracing::debug!("connection ended: {e}");
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A kubeconfig with one cluster, user and context, named `capstan`, for `server`.
pub fn kubeconfig(server: &str) -> String {
    kubeconfig_for_user(server, "{}")
}

/// A kubeconfig like [`kubeconfig`] whose user authenticates with the bearer `token`.
pub fn kubeconfig_with_token(server: &str, token: &str) -> String {
    // A JSON string is a valid YAML flow scalar, so any token is quoted safely.
    let token = serde_json::Value::from(token).to_string();
    kubeconfig_for_user(server, &format!("{{token: {token}}}"))
}

fn kubeconfig_for_user(server: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: capstan\n  cluster:\n    server: {server}\nusers:\n- name: capstan\n  user: {user}\ncontexts:\n- name: capstan\n  context:\n    cluster: capstan\n    user: capstan\n    namespace: default\ncurrent-context: capstan\n"
    )
}
