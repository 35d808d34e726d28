//! Each component's small HTTP listener, as Kubernetes components serve theirs: `/metrics`
//! (Prometheus' text format) and `/healthz`, `/livez`, `/readyz` with the component's real
//! checks (and each check's own path, `/readyz/<name>`).
//!
//! The API server serves the same endpoints on its own port (`/metrics` behind
//! authorization there). The other components' listeners (`--metrics-listen`, loopback by
//! default) are plain HTTP without authentication, like Kubernetes' old insecure ports: keep
//! them on loopback or a private network.
//!
//! | component | metrics | readiness |
//! |---|---|---|
//! | controller manager | `workqueue_*` by controller | `informer-sync` (this term's informers) |
//! | scheduler | `scheduler_*` | `sched-handler-sync` (Pod and Node informers) |
//! | kubelet | `kubelet_*` | `registered` (Node registered, Pods listed) |
//! | service proxy | `kubeproxy_sync_proxy_rules_*` | `proxy-rules-synced` |
//! | cluster DNS | `coredns_dns_*` | `informer-sync` (Services, EndpointSlices) |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::health::HealthEndpoints;
use capstan_apiserver::http::observe::component_router;
use capstan_apiserver::http::ApiServer;
use prometheus_client::registry::Registry;

/// How long a scraper may take to send its request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The default `--metrics-listen`: loopback, a free port (printed and logged at start).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:0";

/// A component's running `/metrics` and health listener. Dropping it stops serving.
pub struct ComponentEndpoint {
    component: String,
    server: ApiServer,
}

impl std::fmt::Debug for ComponentEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentEndpoint")
            .field("component", &self.component)
            .field("url", &self.url())
            .finish()
    }
}

impl ComponentEndpoint {
    /// Serves `metrics` and `health` for `component` on `listen` (port 0 picks a free one),
    /// on the current tokio runtime.
    ///
    /// Errors: the address cannot be bound.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn bind(
        component: impl Into<String>,
        listen: SocketAddr,
        health: &HealthEndpoints,
        metrics: Registry,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let component = component.into();
        let server = ApiServer::serve(
            listener,
            component_router(health, Arc::new(metrics)),
            HEADER_READ_TIMEOUT,
        );
        tracing::info!(%component, url = %server.url(), "serving /metrics, /healthz, /livez and /readyz");
        Ok(ComponentEndpoint { component, server })
    }

    /// The component's name, e.g. `kube-scheduler/replica-0`.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// The address served.
    pub fn address(&self) -> SocketAddr {
        self.server.address()
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Where the metrics are: `<url>/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("{}/metrics", self.url())
    }
}

/// Binds `component`'s endpoint when `listen` is set, mapping a bind failure into `error`.
pub(crate) fn bind_optional<E>(
    component: &str,
    listen: Option<SocketAddr>,
    health: &HealthEndpoints,
    register: impl FnOnce(&mut Registry),
    error: impl FnOnce(SocketAddr, std::io::Error) -> E,
) -> Result<Option<ComponentEndpoint>, E> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let mut registry = Registry::default();
    register(&mut registry);
    ComponentEndpoint::bind(component, listen, health, registry)
        .map(Some)
        .map_err(|source| error(listen, source))
}
