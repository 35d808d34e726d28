//! The API server's security and limit layers, each a [`tower::Layer`] over axum's
//! `Request<Body>` that answers its own refusals as Kubernetes `Status` objects.
//!
//! Kubernetes' order (kube-apiserver's `DefaultBuildHandlerChain`), outermost first, and what
//! each refuses:
//!
//! 1. [`TimeoutLayer`] (504): a non-long-running request gets the request timeout, from its
//!    first byte of body to its last byte of answer.
//! 2. [`authn`]: [`AuthnLayer`] puts the caller's [`UserInfo`] in the request's extensions,
//!    or answers 401. It reads the request's head only, never its body. Authenticators:
//!    [`StaticTokens`] (bearer tokens), `X509ClientCerts` (`x509`, feature `tls`: verified
//!    client certificates), and [`Authenticators`], which tries several in turn.
//! 3. [`impersonation`]: [`ImpersonationLayer`] serves a request with `Impersonate-*` headers
//!    as the user they name, once the [`Authorizer`] allows the caller verb `impersonate` on
//!    each (403 otherwise; 400 for groups or extras without a user).
//! 4. [`InFlightLimitLayer`] (429 with `Retry-After`): authenticated callers share
//!    [`Limits::max_in_flight`]; when anonymous requests are allowed, anonymous callers draw
//!    from a small budget of their own ([`Limits::max_anonymous_in_flight`]), so a flood of
//!    them never takes an authenticated user's slot (when anonymous requests are off they
//!    were refused with 401 already). Watches, other long-running requests and health
//!    probes are exempt.
//! 5. [`authz`]: [`AuthzLayer`] asks an [`Authorizer`] about the request's [`Attributes`], and
//!    answers 403 on a denial. Authorizers: [`AllowAll`], [`StaticPolicy`], and
//!    [`RbacAuthorizer`] ([`rbac`]: kube-apiserver's RBAC mode, deciding from the cluster's
//!    Roles, ClusterRoles and bindings, kept current by shared informers).
//! 6. [`BodyLimitLayer`] (413): only now is the body read, up to [`Limits::max_body_bytes`].
//!
//! So nothing of a request's body is buffered before its caller is authenticated, admitted
//! by the in-flight limit and authorized. Before that, a connection pins only what hyper
//! reads of its head (at most hyper's read buffer, about 400 KiB, for at most
//! [`Limits::header_read_timeout`]); the body waits in the kernel's socket buffers.
//!
//! [`ApiServerOptions::apply`] stacks them all in that order on any axum [`Router`], and
//! [`ApiServer::bind_with`](super::ApiServer::bind_with) serves the result. The layers can also
//! be applied one by one:
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use capstan_apiserver::http::layers::{AuthnLayer, InFlightLimitLayer, TimeoutLayer};
//!
//! // `layer` wraps what is already there: the last one applied runs first.
//! let app: Router = Router::new()
//!     .route("/healthz", get(|| async { "ok" }))
//!     .layer(InFlightLimitLayer::new(400).anonymous(20))
//!     .layer(AuthnLayer::new(None, true))
//!     .layer(TimeoutLayer::new(Duration::from_secs(60)));
//! ```

pub mod authn;
pub mod authz;
pub mod impersonation;
pub mod limits;
pub mod rbac;
#[cfg(feature = "tls")]
pub mod x509;

use std::sync::Arc;

use axum::http::{Method, Uri};
use axum::Router;
use capstan_api::health::{HealthCheck, HealthEndpoints};

use crate::http::observe::MetricsLayer;
use crate::metrics::{ApiServerMetrics, StoreCheck};

pub use authn::{Authenticator, Authenticators, AuthnLayer, StaticTokens, UserInfo};
pub use authz::{
    AllowAll, Attributes, Authorizer, AuthzLayer, Decision, ResourceAttributes, Rule, StaticPolicy,
};
pub use impersonation::ImpersonationLayer;
pub use limits::{BodyLimitLayer, InFlightLimitLayer, Limits, TimeoutLayer};
pub use rbac::{RbacAuthorizer, RbacError, SUPERUSER_GROUP};
#[cfg(feature = "tls")]
pub use x509::X509ClientCerts;

/// Calls a ready clone of `inner`, leaving the clone in its place (tower's usual pattern for
/// services whose future outlives `&mut self`).
pub(crate) fn take<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// Paths every caller may reach, authenticated or not: health and version.
const PUBLIC_PATHS: [&str; 5] = ["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// Whether `path` is open to everyone (`/healthz`, `/livez`, `/readyz`, `/version`, and the
/// health checks' sub-paths such as `/readyz/ping`). [`AuthnLayer`] lets unauthenticated callers
/// through to these even when anonymous requests are disabled, and [`AuthzLayer`] always allows
/// them.
pub fn is_public_path(path: &str) -> bool {
    PUBLIC_PATHS.iter().any(|public| {
        path == *public
            || (!public.starts_with("/version")
                && path
                    .strip_prefix(public)
                    .is_some_and(|rest| rest.starts_with('/')))
    })
}

/// What a request asks for, parsed from its method and URI alone, as kube-apiserver's
/// `RequestInfoFactory` does (no knowledge of which kinds are served).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for a non-resource path, the lowercase HTTP method.
    pub verb: String,
    /// The resource addressed, or `None` for a non-resource path (discovery, health).
    pub resource: Option<ResourceAttributes>,
    /// The request's path.
    pub path: String,
}

/// Subresources that stream for as long as the client wants, like watches.
const LONG_RUNNING_SUBRESOURCES: [&str; 5] = ["attach", "exec", "log", "portforward", "proxy"];

impl RequestInfo {
    /// Parses `method` and `uri`.
    ///
    /// `/api/<version>/...` and `/apis/<group>/<version>/...` are resource paths; an optional
    /// `watch/` segment makes the verb `watch`; then `[namespaces/<ns>/]<plural>[/<name>[/<sub>]]`.
    /// `namespaces/<ns>` (and its `status` and `finalize`) is the Namespace object itself. A GET
    /// without a name lists, and with `watch=1` or `watch=true` watches; a DELETE without a name
    /// is `deletecollection`.
    pub fn new(method: &Method, uri: &Uri) -> Self {
        let path = uri.path().to_string();
        let non_resource = |path: String| RequestInfo {
            verb: method.as_str().to_ascii_lowercase(),
            resource: None,
            path,
        };
        let segments: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let (group, version, mut rest) = match segments.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
            ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
            _ => return non_resource(path),
        };
        let mut verb = match *method {
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => return non_resource(path),
        };
        if rest.first() == Some(&"watch") {
            verb = "watch";
            rest = &rest[1..];
        }
        let mut namespace = None;
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            namespace = Some(rest[1].to_string());
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        let Some(plural) = rest.first() else {
            return non_resource(path);
        };
        let name = rest.get(1).map(|s| s.to_string());
        let subresource = rest.get(2).map(|s| s.to_string());
        if name.is_none() {
            verb = match verb {
                "get" if is_watch_query(uri) => "watch",
                "get" => "list",
                "delete" => "deletecollection",
                other => other,
            };
        }
        RequestInfo {
            verb: verb.to_string(),
            resource: Some(ResourceAttributes {
                group: group.to_string(),
                version: version.to_string(),
                resource: plural.to_string(),
                subresource,
                namespace,
                name,
            }),
            path,
        }
    }

    /// Whether the request streams for as long as the client wants: a watch, or an `exec`,
    /// `attach`, `log`, `portforward` or `proxy` subresource. Such requests are exempt from
    /// the in-flight limit and the request timeout.
    pub fn is_long_running(&self) -> bool {
        self.verb == "watch"
            || self.resource.as_ref().is_some_and(|r| {
                r.subresource
                    .as_deref()
                    .is_some_and(|s| LONG_RUNNING_SUBRESOURCES.contains(&s))
            })
    }
}

/// Whether the query string says `watch=1` or `watch=true`.
fn is_watch_query(uri: &Uri) -> bool {
    uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| matches!(pair, "watch=1" | "watch=true"))
    })
}

/// How [`ApiServer::bind_with`](super::ApiServer::bind_with) secures and limits the API.
///
/// The default is today's open server: plain HTTP, everyone is `system:anonymous`, everything
/// is allowed, and the default [`Limits`] apply. With TLS (feature `tls`), anonymous requests
/// are off unless turned on explicitly.
#[derive(Clone)]
pub struct ApiServerOptions {
    /// Who the caller is. `None`: nobody is authenticated, so every caller is anonymous (and
    /// refused with 401 when anonymous requests are off). With a client CA in
    /// `tls`, verified client certificates are tried first (`X509ClientCerts`).
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// What the caller may do. Default: [`AllowAll`].
    pub authorizer: Arc<dyn Authorizer>,
    /// Whether requests without credentials are served as `system:anonymous` (group
    /// `system:unauthenticated`) rather than refused with 401. `None` (the default): yes over
    /// plain HTTP, no over TLS. See [`allows_anonymous`](Self::allows_anonymous).
    pub anonymous: Option<bool>,
    /// Body size, in-flight, timeout and header-read limits.
    pub limits: Limits,
    /// Serve HTTPS with this serving certificate, and with its client CA, verify client
    /// certificates. Default: `None`, plain HTTP.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::http::tls::TlsConfig>,
    /// The request metrics recorded (kube-apiserver's `apiserver_*` series).
    pub metrics: ApiServerMetrics,
    /// What `/metrics` serves (behind authorization): by default a registry holding
    /// `metrics` alone.
    pub metrics_registry: Arc<prometheus_client::registry::Registry>,
    /// Checks served on `/readyz` (and `/healthz`) after `ping` and the store's `etcd`.
    pub readyz_checks: Vec<Arc<dyn HealthCheck>>,
    /// How often `ApiServer::bind_with` compacts the store's history (kube-apiserver's
    /// `--etcd-compaction-interval`; see [`crate::compactor`]). Default: 5 minutes; zero
    /// turns compaction off.
    pub compaction_interval: std::time::Duration,
    /// How `pods/log`, `pods/exec`, `nodes/proxy`, the metrics API, ... reach kubelets
    /// (see [`crate::http::pod_streams`]). Its token, if any, authenticates as
    /// `kube-apiserver-kubelet-client` in `system:masters` (added to
    /// [`effective_authenticator`](Self::effective_authenticator)). Default: plain HTTP, no
    /// credential.
    pub kubelet_client: crate::http::pod_streams::KubeletClientConfig,
    /// Service account tokens: with them, `serviceaccounts/{name}/token` (TokenRequest) issues
    /// tokens, they authenticate their callers (after every other authenticator), and the
    /// issuer's OpenID documents are served. Default: `None`.
    pub service_account_tokens: Option<Arc<crate::serviceaccount::ServiceAccountTokens>>,
    /// Where Pods reach this server: the address `ApiServer::bind_with` publishes in the
    /// `kubernetes` Service's Endpoints and EndpointSlice (kube-apiserver's
    /// `--advertise-address`). Default: `None`, the bound address.
    pub advertise_address: Option<std::net::SocketAddr>,
    /// Listeners the caller bound itself (in another network namespace, say), served with
    /// the same API, layers and transport as the main address. Each is duplicated when the
    /// server starts (`try_clone`), so options stay cloneable. Default: none.
    pub additional_listeners: Vec<Arc<std::net::TcpListener>>,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        let metrics = ApiServerMetrics::new();
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        ApiServerOptions {
            authenticator: None,
            authorizer: Arc::new(AllowAll),
            anonymous: None,
            limits: Limits::default(),
            #[cfg(feature = "tls")]
            tls: None,
            metrics: metrics.clone(),
            metrics_registry: Arc::new(registry),
            readyz_checks: Vec::new(),
            compaction_interval: crate::compactor::DEFAULT_COMPACTION_INTERVAL,
            kubelet_client: Default::default(),
            service_account_tokens: None,
            advertise_address: None,
            additional_listeners: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ApiServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("ApiServerOptions");
        debug
            .field("authenticator", &self.authenticator.is_some())
            .field("anonymous", &self.anonymous)
            .field("limits", &self.limits);
        #[cfg(feature = "tls")]
        debug.field("tls", &self.tls);
        debug.finish_non_exhaustive()
    }
}

impl ApiServerOptions {
    /// Sets the authenticator.
    pub fn authenticator(mut self, authenticator: impl Authenticator + 'static) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// Sets the authorizer.
    pub fn authorizer(mut self, authorizer: impl Authorizer + 'static) -> Self {
        self.authorizer = Arc::new(authorizer);
        self
    }

    /// Sets whether requests without credentials are served as anonymous.
    pub fn anonymous(mut self, anonymous: bool) -> Self {
        self.anonymous = Some(anonymous);
        self
    }

    /// Whether requests without credentials are served as anonymous: as set by
    /// [`anonymous`](Self::anonymous), else true over plain HTTP and false over TLS.
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous.unwrap_or(!self.serves_tls())
    }

    /// Whether the server speaks HTTPS (always false without the `tls` feature).
    pub fn serves_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Serves HTTPS with `tls`; with a client CA in it, verified client certificates
    /// authenticate their callers before [`authenticator`](Self::authenticator) is asked.
    /// Turns anonymous requests off unless [`anonymous`](Self::anonymous) says otherwise.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::http::tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The authenticator [`apply`](Self::apply) uses: with a client CA, `X509ClientCerts`
    /// then [`authenticator`](Self::authenticator); else `authenticator` alone. The kubelet
    /// client's token ([`kubelet_client`](Self::kubelet_client)), if any, is tried first.
    pub fn effective_authenticator(&self) -> Option<Arc<dyn Authenticator>> {
        let chain = self.with_service_accounts(self.chained_authenticator());
        match self.kubelet_client.authenticator() {
            None => chain,
            Some(kubelet) => {
                let mut with_kubelet = Authenticators::new().with(kubelet);
                if let Some(chain) = chain {
                    with_kubelet.push(chain);
                }
                Some(Arc::new(with_kubelet))
            }
        }
    }

    /// `chain`, then the service account tokens when set.
    fn with_service_accounts(
        &self,
        chain: Option<Arc<dyn Authenticator>>,
    ) -> Option<Arc<dyn Authenticator>> {
        let Some(tokens) = &self.service_account_tokens else {
            return chain;
        };
        let mut with_tokens = Authenticators::new();
        if let Some(chain) = chain {
            with_tokens.push(chain);
        }
        with_tokens.push(tokens.clone());
        Some(Arc::new(with_tokens))
    }

    /// Issues and authenticates service account tokens with `tokens` (see
    /// [`service_account_tokens`](Self::service_account_tokens)).
    pub fn service_account_tokens(
        mut self,
        tokens: crate::serviceaccount::ServiceAccountTokens,
    ) -> Self {
        self.service_account_tokens = Some(Arc::new(tokens));
        self
    }

    /// [`effective_authenticator`](Self::effective_authenticator) without the kubelet
    /// client's token.
    fn chained_authenticator(&self) -> Option<Arc<dyn Authenticator>> {
        #[cfg(feature = "tls")]
        if self
            .tls
            .as_ref()
            .is_some_and(|tls| tls.verifies_client_certificates())
        {
            let mut chain = Authenticators::new().with(X509ClientCerts);
            if let Some(authenticator) = &self.authenticator {
                chain.push(authenticator.clone());
            }
            return Some(Arc::new(chain));
        }
        self.authenticator.clone()
    }

    /// Publishes `address` in the `kubernetes` Service's endpoints instead of the bound one
    /// (see [`advertise_address`](Self::advertise_address)).
    pub fn advertise_address(mut self, address: std::net::SocketAddr) -> Self {
        self.advertise_address = Some(address);
        self
    }

    /// Also serves on `listener` (see [`additional_listeners`](Self::additional_listeners)).
    pub fn additional_listener(mut self, listener: std::net::TcpListener) -> Self {
        self.additional_listeners.push(Arc::new(listener));
        self
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Records requests into `metrics` and serves `registry` (which should hold them) on
    /// `/metrics`.
    pub fn metrics(
        mut self,
        metrics: ApiServerMetrics,
        registry: Arc<prometheus_client::registry::Registry>,
    ) -> Self {
        self.metrics = metrics;
        self.metrics_registry = registry;
        self
    }

    /// Sets how often the store's history is compacted (zero: never).
    pub fn compaction_interval(mut self, interval: std::time::Duration) -> Self {
        self.compaction_interval = interval;
        self
    }

    /// Reaches kubelets as `config` says; its token (if any) is the server's own credential
    /// for kubelets, which the server's authenticator then knows as
    /// `kube-apiserver-kubelet-client` in `system:masters` (whatever authenticator is set,
    /// before or after this call).
    pub fn kubelet_client(mut self, config: crate::http::pod_streams::KubeletClientConfig) -> Self {
        self.kubelet_client = config;
        self
    }

    /// Adds `check` to `/readyz` (and `/healthz`).
    pub fn readyz_check(mut self, check: impl HealthCheck) -> Self {
        self.readyz_checks.push(Arc::new(check));
        self
    }

    /// The health endpoints of a server of `registry`: `ping` everywhere; the store's `etcd`
    /// check ([`StoreCheck`]) on `/healthz` and `/readyz`, so readiness fails while the store
    /// is unreachable; then [`readyz_checks`](Self::readyz_checks). `/livez` does not depend
    /// on the store: restarting the server would not bring the store back.
    pub fn health(&self, registry: &crate::registry::Registry) -> HealthEndpoints {
        let mut health = HealthEndpoints::new().readyz(StoreCheck::new(registry.store().clone()));
        for check in &self.readyz_checks {
            health.readyz.push(check.clone());
            health.healthz.push(check.clone());
        }
        health
    }

    /// Stacks the layers on `router` in Kubernetes' order, outermost first: timeout,
    /// authentication, impersonation, in-flight limit (with the anonymous budget when
    /// anonymous requests are allowed), authorization, body limit, then the router's handlers.
    ///
    /// The header-read timeout is the HTTP server's, not a layer; `ApiServer::bind_with` and
    /// `ApiServer::serve` apply it.
    pub fn apply(&self, router: Router) -> Router {
        self.apply_with_kinds(router, None)
    }

    /// As [`apply`](Self::apply), with the metrics layer outermost (so every refusal is
    /// counted), labelling watchers with the kinds `kinds` finds.
    pub fn apply_with_kinds(
        &self,
        router: Router,
        kinds: Option<crate::http::observe::KindResolver>,
    ) -> Router {
        let mut metrics = MetricsLayer::new(self.metrics.clone());
        if let Some(kinds) = kinds {
            metrics = metrics.kinds(kinds);
        }
        let mut in_flight = InFlightLimitLayer::new(self.limits.max_in_flight);
        if self.allows_anonymous() {
            in_flight = in_flight.anonymous(self.limits.max_anonymous_in_flight);
        }
        // The review APIs answer with the server's own authorizer and authenticator.
        let review_backends = crate::http::reviews::ReviewBackends {
            authorizer: self.authorizer.clone(),
            authenticator: self.effective_authenticator(),
        };
        let kubelet_client =
            crate::http::pod_streams::KubeletClient::new(self.kubelet_client.clone());
        let router = match &self.service_account_tokens {
            Some(tokens) => router.layer(axum::Extension(tokens.clone())),
            None => router,
        };
        router
            .layer(axum::Extension(review_backends))
            .layer(axum::Extension(kubelet_client))
            .layer(BodyLimitLayer::new(self.limits.max_body_bytes))
            .layer(AuthzLayer::new(self.authorizer.clone()))
            .layer(in_flight)
            .layer(ImpersonationLayer::new(self.authorizer.clone()))
            .layer(AuthnLayer::new(
                self.effective_authenticator(),
                self.allows_anonymous(),
            ))
            .layer(TimeoutLayer::new(self.limits.request_timeout))
            .layer(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, uri: &str) -> RequestInfo {
        RequestInfo::new(&method, &uri.parse().unwrap())
    }

    #[test]
    fn verbs_follow_kubernetes_from_method_and_path() {
        let cases = [
            (Method::GET, "/api/v1/namespaces/default/pods/web", "get"),
            (Method::GET, "/api/v1/namespaces/default/pods", "list"),
            (Method::GET, "/api/v1/pods?watch=1", "watch"),
            (Method::GET, "/api/v1/pods?limit=5&watch=true", "watch"),
            (
                Method::GET,
                "/api/v1/watch/namespaces/default/pods",
                "watch",
            ),
            (Method::POST, "/api/v1/namespaces/default/pods", "create"),
            (Method::PUT, "/api/v1/namespaces/default/pods/web", "update"),
            (
                Method::PATCH,
                "/api/v1/namespaces/default/pods/web",
                "patch",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/default/pods/web",
                "delete",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/default/pods",
                "deletecollection",
            ),
            (Method::GET, "/apis", "get"),
            (Method::POST, "/healthz", "post"),
        ];
        for (method, uri, verb) in cases {
            assert_eq!(info(method, uri).verb, verb, "{uri}");
        }
    }

    #[test]
    fn resource_paths_name_group_resource_namespace_name_and_subresource() {
        let status = info(
            Method::PUT,
            "/apis/apps/v1/namespaces/prod/deployments/web/status",
        );
        let r = status.resource.unwrap();
        assert_eq!(
            (
                r.group.as_str(),
                r.version.as_str(),
                r.resource.as_str(),
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            (
                "apps",
                "v1",
                "deployments",
                Some("prod"),
                Some("web"),
                Some("status")
            )
        );
        let namespace = info(Method::GET, "/api/v1/namespaces/prod")
            .resource
            .unwrap();
        assert_eq!(
            (namespace.resource.as_str(), namespace.name.as_deref()),
            ("namespaces", Some("prod"))
        );
        let nodes = info(Method::GET, "/api/v1/nodes").resource.unwrap();
        assert_eq!((nodes.resource.as_str(), nodes.namespace), ("nodes", None));
        assert!(info(Method::GET, "/api/v1").resource.is_none());
        assert!(info(Method::GET, "/apis/apps/v1").resource.is_none());
    }

    #[test]
    fn watches_and_streaming_subresources_are_long_running() {
        assert!(info(Method::GET, "/api/v1/pods?watch=1").is_long_running());
        assert!(info(Method::GET, "/api/v1/namespaces/d/pods/web/log").is_long_running());
        assert!(!info(Method::GET, "/api/v1/pods").is_long_running());
        assert!(!info(Method::GET, "/api/v1/pods?watch=0").is_long_running());
    }

    #[test]
    fn health_and_version_are_public() {
        for path in [
            "/healthz",
            "/livez",
            "/readyz",
            "/readyz/ping",
            "/version",
            "/version/",
        ] {
            assert!(is_public_path(path), "{path}");
        }
        for path in ["/api", "/healthzz", "/version/x", "/apis/apps/v1"] {
            assert!(!is_public_path(path), "{path}");
        }
    }
}
