//! Observability over HTTP: the layer that measures every request (kube-apiserver's
//! `apiserver_*` series, see [`crate::metrics`]) and opens a `tracing` span for it, and the
//! `/metrics`, `/healthz`, `/livez` and `/readyz` endpoints, for the API server and for any
//! other component ([`component_router`]).
//!
//! The health endpoints answer as kube-apiserver's: `ok`, or with `?verbose` one line per
//! check (`[+]ping ok`) ending with `healthz check passed`; a failing check makes the
//! endpoint answer 500 with the lines (`[-]etcd failed: reason withheld`) ending with
//! `readyz check failed`. `?exclude=<name>` skips a check, and each check is served on its own
//! path (`/readyz/etcd`), with its reason when it fails.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use capstan_api::health::{render_single, HealthChecks, HealthEndpoints};
use futures::future::BoxFuture;
use futures::StreamExt;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};
use tracing::Instrument;

use super::layers::RequestInfo;
use crate::metrics::{ApiServerMetrics, RequestLabels, WatcherLabels};

/// Finds the kind of a resource: `(group, version, plural)` to `Some(kind)`.
pub type KindResolver = Arc<dyn Fn(&str, &str, &str) -> Option<String> + Send + Sync>;

/// Records every request in [`ApiServerMetrics`] and runs it in an `info` span named
/// `request` with its `verb`, `resource`, `namespace`, `name` (and, once answered, `code`).
/// Put it outermost, so refusals of the other layers (401, 403, 413, 429, 504) are counted.
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: ApiServerMetrics,
    kinds: Option<KindResolver>,
}

impl std::fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayer").finish_non_exhaustive()
    }
}

impl MetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: ApiServerMetrics) -> Self {
        MetricsLayer {
            metrics,
            kinds: None,
        }
    }

    /// Labels `apiserver_registered_watchers` with the kind `kinds` finds (else the
    /// resource's plural).
    #[must_use]
    pub fn kinds(mut self, kinds: KindResolver) -> Self {
        self.kinds = Some(kinds);
        self
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S> std::fmt::Debug for Metered<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered").finish_non_exhaustive()
    }
}

/// Subresources kube-apiserver reports as `CONNECT`.
const CONNECT_SUBRESOURCES: [&str; 4] = ["attach", "exec", "portforward", "proxy"];

/// Non-resource paths reported as themselves; any other is reported as `other`, so unknown
/// paths cannot grow the series without bound.
const KNOWN_PATHS: [&str; 8] = [
    "/api", "/apis", "/openapi", "/healthz", "/livez", "/readyz", "/version", "/metrics",
];

/// kube-apiserver's labels of a request: its verb (`LIST`, `WATCH`, `APPLY`, ...), dry run,
/// group, version, resource, subresource and scope.
pub fn request_labels(
    info: &RequestInfo,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> RequestLabels {
    let dry_run = {
        let mut values: Vec<&str> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.strip_prefix("dryRun="))
            .collect();
        values.sort_unstable();
        values.dedup();
        values.join(",")
    };
    let Some(resource) = &info.resource else {
        let path = info.path.as_str();
        let known = KNOWN_PATHS.iter().any(|known| {
            path == *known
                || path
                    .strip_prefix(known)
                    .is_some_and(|rest| rest.starts_with('/'))
        });
        return RequestLabels {
            verb: method.as_str().to_ascii_uppercase(),
            dry_run,
            subresource: if known {
                path.to_string()
            } else {
                "other".into()
            },
            ..RequestLabels::default()
        };
    };
    let subresource = resource.subresource.clone().unwrap_or_default();
    let verb = match info.verb.as_str() {
        _ if CONNECT_SUBRESOURCES.contains(&subresource.as_str()) => "CONNECT".to_string(),
        "create" => "POST".into(),
        "update" => "PUT".into(),
        "patch"
            if headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/apply-patch")) =>
        {
            "APPLY".into()
        }
        other => other.to_ascii_uppercase(),
    };
    let scope = if resource.name.is_some() || info.verb == "create" {
        "resource"
    } else if resource.namespace.is_some() {
        "namespace"
    } else {
        "cluster"
    };
    RequestLabels {
        verb,
        dry_run,
        group: resource.group.clone(),
        version: resource.version.clone(),
        resource: resource.resource.clone(),
        subresource,
        scope: scope.into(),
        component: "apiserver".into(),
    }
}

/// Decrements a gauge when dropped.
struct Held(Gauge);

impl Held {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Ends a long-running request's measurement when its body is dropped (the watch ended).
struct Finish {
    metrics: ApiServerMetrics,
    labels: RequestLabels,
    code: u16,
    started: Instant,
    _held: Vec<Held>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.metrics.record(
            std::mem::take(&mut self.labels),
            self.code,
            self.started.elapsed(),
        );
    }
}

impl<S> Service<Request> for Metered<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let mut inner = super::layers::take(&mut self.inner);
        let info = RequestInfo::new(request.method(), request.uri());
        let labels = request_labels(&info, request.method(), request.uri(), request.headers());
        let resource = info.resource.as_ref();
        let span = tracing::info_span!(
            "request",
            verb = %info.verb,
            resource = resource.map(|r| r.resource.as_str()).unwrap_or_default(),
            namespace = resource.and_then(|r| r.namespace.as_deref()).unwrap_or_default(),
            name = resource.and_then(|r| r.name.as_deref()).unwrap_or_default(),
            code = tracing::field::Empty,
        );
        let long_running = info.is_long_running();
        let metrics = self.layer.metrics.clone();
        let inflight = (!long_running).then(|| {
            let kind = if matches!(info.verb.as_str(), "get" | "list" | "watch" | "head") {
                "readOnly"
            } else {
                "mutating"
            };
            Held::new(metrics.inflight(kind))
        });
        let watcher = (labels.verb == "WATCH").then(|| {
            let kind = self
                .layer
                .kinds
                .as_ref()
                .and_then(|kinds| kinds(&labels.group, &labels.version, &labels.resource))
                .unwrap_or_else(|| labels.resource.clone());
            WatcherLabels {
                group: labels.group.clone(),
                version: labels.version.clone(),
                kind,
            }
        });
        let started = Instant::now();
        let call = inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let response = call.await?;
            drop(inflight);
            let code = response.status().as_u16();
            span.record("code", code);
            if !(long_running && response.status().is_success()) {
                metrics.record(labels, code, started.elapsed());
                return Ok(response);
            }
            let mut held = vec![Held::new(metrics.longrunning(&labels))];
            if let Some(watcher) = &watcher {
                held.push(Held::new(metrics.watchers(watcher)));
            }
            let finish = Finish {
                metrics,
                labels,
                code,
                started,
                _held: held,
            };
            // The measurement ends when the stream is dropped: the watch ended.
            Ok(response.map(|body| {
                Body::from_stream(body.into_data_stream().map(move |chunk| {
                    let _measuring = &finish;
                    chunk
                }))
            }))
        })
    }
}

/// Finds kinds in `registry`'s served resources, for `apiserver_registered_watchers`.
pub fn registry_kinds(registry: &Arc<crate::registry::Registry>) -> KindResolver {
    let registry = Arc::downgrade(registry);
    Arc::new(move |group: &str, version: &str, plural: &str| {
        registry
            .upgrade()?
            .resources()
            .into_iter()
            .find_map(|info| {
                (info.group() == group && info.version() == version && info.plural() == plural)
                    .then(|| info.kind().to_string())
            })
    })
}

/// The text answers of the health endpoints: `text/plain; charset=utf-8`, `nosniff`.
fn text(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Decodes `%XX` escapes and `+` in a query value.
fn unescape(value: &str) -> String {
    let hex = |byte: u8| (byte as char).to_digit(16);
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the query has `verbose`, and the names it asks to `exclude`.
fn health_query(uri: &Uri) -> (bool, Vec<String>) {
    let mut verbose = false;
    let mut excluded = Vec::new();
    for pair in uri.query().unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "verbose" => verbose = true,
            "exclude" => excluded.push(unescape(value)),
            _ => {}
        }
    }
    (verbose, excluded)
}

async fn run_endpoint(endpoint: &'static str, checks: HealthChecks, uri: Uri) -> Response {
    let (verbose, excluded) = health_query(&uri);
    let report = checks.run(endpoint, &excluded).await;
    if report.passed() {
        text(StatusCode::OK, report.render(verbose))
    } else {
        tracing::info!(
            "{} check failed: {}\n{}",
            endpoint,
            report
                .failures()
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
                .join(","),
            report.reasons()
        );
        text(StatusCode::INTERNAL_SERVER_ERROR, report.render(verbose))
    }
}

async fn run_single(checks: HealthChecks, name: String) -> Response {
    let Some(check) = checks.get(&name) else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n".into());
    };
    let result = check.check().await;
    let status = if result.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    text(status, render_single(&result))
}

/// `/healthz`, `/livez` and `/readyz` with `health`'s checks, and each check on its own path
/// (`/readyz/<name>`).
pub fn health_router<S: Clone + Send + Sync + 'static>(health: &HealthEndpoints) -> Router<S> {
    let mut router = Router::new();
    for endpoint in HealthEndpoints::NAMES {
        let checks = health.endpoint(endpoint).cloned().unwrap_or_default();
        let all = checks.clone();
        router = router
            .route(
                &format!("/{endpoint}"),
                get(move |uri: Uri| run_endpoint(endpoint, all.clone(), uri)),
            )
            .route(
                &format!("/{endpoint}/{{*name}}"),
                get(move |Path(name): Path<String>| run_single(checks.clone(), name)),
            );
    }
    router
}

/// The content type of Prometheus' text format, version 0.0.4, which Kubernetes serves.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes `registry` in Prometheus' text format.
pub fn encode_metrics(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// `/metrics`: `registry` in Prometheus' text format.
pub fn metrics_router<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut response = encode_metrics(&registry).into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(METRICS_CONTENT_TYPE),
                );
                response
            }
        }),
    )
}

/// The small HTTP service every component but the API server runs, as Kubernetes components
/// serve theirs: `/metrics` from `metrics`, and `/healthz`, `/livez`, `/readyz` (and each
/// check's path) from `health`. Serve it with [`ApiServer::serve`](super::ApiServer::serve).
pub fn component_router(health: &HealthEndpoints, metrics: Arc<Registry>) -> Router {
    health_router(health).merge(metrics_router(metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: Method, uri: &str, content_type: Option<&str>) -> RequestLabels {
        let uri: Uri = uri.parse().unwrap();
        let mut headers = HeaderMap::new();
        if let Some(content_type) = content_type {
            headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        }
        request_labels(&RequestInfo::new(&method, &uri), &method, &uri, &headers)
    }

    #[test]
    fn verbs_and_scopes_follow_kube_apiserver() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/web",
                None,
                "GET",
                "resource",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods",
                None,
                "LIST",
                "namespace",
            ),
            (Method::GET, "/api/v1/pods", None, "LIST", "cluster"),
            (
                Method::GET,
                "/api/v1/pods?watch=true",
                None,
                "WATCH",
                "cluster",
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/d/pods",
                None,
                "WATCH",
                "namespace",
            ),
            (
                Method::POST,
                "/apis/apps/v1/namespaces/d/deployments",
                None,
                "POST",
                "resource",
            ),
            (
                Method::PUT,
                "/apis/apps/v1/namespaces/d/deployments/web",
                None,
                "PUT",
                "resource",
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/web",
                Some("application/merge-patch+json"),
                "PATCH",
                "resource",
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/web",
                Some("application/apply-patch+yaml"),
                "APPLY",
                "resource",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/pods/web",
                None,
                "DELETE",
                "resource",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/pods",
                None,
                "DELETECOLLECTION",
                "namespace",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/web/exec",
                None,
                "CONNECT",
                "resource",
            ),
            (Method::GET, "/healthz", None, "GET", ""),
        ];
        for (method, uri, content_type, verb, scope) in cases {
            let labels = labels(method, uri, content_type);
            assert_eq!(
                (labels.verb.as_str(), labels.scope.as_str()),
                (verb, scope),
                "{uri}"
            );
        }
        let deploy = labels(
            Method::POST,
            "/apis/apps/v1/namespaces/d/deployments?dryRun=All",
            None,
        );
        assert_eq!(
            (
                deploy.group.as_str(),
                deploy.version.as_str(),
                deploy.resource.as_str()
            ),
            ("apps", "v1", "deployments")
        );
        assert_eq!(
            (deploy.dry_run.as_str(), deploy.component.as_str()),
            ("All", "apiserver")
        );
        let status = labels(Method::PUT, "/api/v1/namespaces/d/pods/web/status", None);
        assert_eq!(status.subresource, "status");
        let health = labels(Method::GET, "/readyz/etcd", None);
        assert_eq!(
            (health.subresource.as_str(), health.resource.as_str()),
            ("/readyz/etcd", "")
        );
        assert_eq!(
            labels(Method::GET, "/wp-login.php", None).subresource,
            "other"
        );
    }

    #[test]
    fn health_queries_read_verbose_and_escaped_exclusions() {
        let (verbose, excluded) = health_query(
            &"/readyz?verbose&exclude=etcd&exclude=poststarthook%2Fx"
                .parse()
                .unwrap(),
        );
        assert!(verbose);
        assert_eq!(excluded, ["etcd", "poststarthook/x"]);
        let (verbose, excluded) = health_query(&"/readyz".parse().unwrap());
        assert!(!verbose && excluded.is_empty());
        assert_eq!(unescape("a%2"), "a%2");
        assert_eq!(unescape("%41+b"), "A b");
    }
}
