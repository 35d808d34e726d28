//! Who may call the kubelet's API, decided as the kubelet does with `--anonymous-auth=false`
//! and webhook authentication and authorization.
//!
//! Every request but `/healthz` must carry `Authorization: Bearer <token>`. The token is
//! given to a [`KubeletAuthenticator`]; no token, or a token it does not know, is answered
//! `401 Unauthorized`. The user it names is then checked by a [`KubeletAuthorizer`] against
//! the request's [`Attributes`], which map the HTTP request onto the Node as a resource:
//! the verb from the method (`GET`/`HEAD` → `get`, `POST` → `create`, `PUT` → `update`,
//! `PATCH` → `patch`, `DELETE` → `delete`), resource `nodes`, the node's name, and the
//! subresource from the path (`/stats/*` → `stats`, `/metrics*` → `metrics`, `/logs/*` →
//! `log`, `/spec/*` → `spec`, everything else, exec, attach, port-forward, container logs and
//! `/pods` included, → `proxy`). A denial is `403` with the kubelet's text, `Forbidden
//! (user=<u>, verb=<v>, resource=nodes, subresource=<s>)`; an authorizer that fails is
//! `500` with `Authorization error (...)`.
//!
//! Over HTTPS with a client CA (feature `tls`), a client certificate that chains to the CA
//! authenticates first (CN = user, O = groups, see `X509Authenticator`); requests without
//! one, or with one that does not verify, fall back to the bearer token.
//!
//! Implementations: [`DelegatedAuth`] asks the API server (`TokenReview` and
//! `SubjectAccessReview`, cached as the kubelet caches its webhooks), and [`StaticAuth`]
//! answers from a table, for tests.

mod delegated;
pub(crate) mod x509;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{header, Method, StatusCode};

use super::text;

pub use delegated::{CacheTtls, DelegatedAuth};
#[cfg(feature = "tls")]
pub use x509::{X509Authenticator, X509Error};

/// Why authentication or authorization could not decide (as opposed to deciding "no").
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The review could not be created on the API server (unreachable, refused, ...).
    #[error("creating a {kind} failed: {source}")]
    Api {
        /// `TokenReview` or `SubjectAccessReview`.
        kind: &'static str,
        /// The API error.
        #[source]
        source: capstan_api::Error,
    },
    /// The reviewer answered with an error of its own (`status.evaluationError`, ...).
    #[error("{0}")]
    Review(String),
}

/// An authenticated caller (Kubernetes' `user.Info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct User {
    /// The user name (`system:serviceaccount:ns:name`, `kube-apiserver-kubelet-client`).
    pub name: String,
    /// The user's uid, when the authenticator knows one.
    pub uid: String,
    /// The groups (`system:masters`, `system:authenticated`, ...).
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// A user named `name` in no group.
    pub fn new(name: impl Into<String>) -> Self {
        User {
            name: name.into(),
            ..User::default()
        }
    }

    /// Adds a group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }
}

/// What a request asks, as the kubelet's authorizer sees it: always resource `nodes` in the
/// core group, version `v1`, named after the node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// `get`, `create`, `update`, `patch`, `delete` (from the method).
    pub verb: String,
    /// Always `nodes`.
    pub resource: String,
    /// `stats`, `metrics`, `log`, `spec` or `proxy` (from the path).
    pub subresource: String,
    /// The node's name.
    pub name: String,
    /// The request's path.
    pub path: String,
}

impl Attributes {
    /// The attributes of `method path` on node `node_name`, mapped as the kubelet maps them.
    pub fn of(method: &Method, path: &str, node_name: &str) -> Self {
        let verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        };
        let subresource = if is_subpath(path, "/stats") {
            "stats"
        } else if is_subpath(path, "/metrics") {
            "metrics"
        } else if is_subpath(path, "/logs") {
            "log"
        } else if is_subpath(path, "/spec") {
            "spec"
        } else {
            "proxy"
        };
        Attributes {
            verb: verb.into(),
            resource: "nodes".into(),
            subresource: subresource.into(),
            name: node_name.into(),
            path: path.into(),
        }
    }
}

/// `path` is `prefix` or below it (`/stats` and `/stats/summary`, not `/statsx`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Turns a bearer token into a user. Called once per request (implementations cache).
#[async_trait]
pub trait KubeletAuthenticator: Send + Sync + 'static {
    /// The token's user; `Ok(None)` when the token is unknown or invalid (answered `401`).
    /// An error is also answered `401` (the kubelet lets no one in it cannot identify).
    async fn authenticate(&self, token: &str) -> Result<Option<User>, AuthError>;
}

/// Decides whether a user may do what a request asks.
#[async_trait]
pub trait KubeletAuthorizer: Send + Sync + 'static {
    /// `Ok(true)` to allow, `Ok(false)` to deny (`403`); an error is answered `500`.
    async fn authorize(&self, user: &User, attributes: &Attributes) -> Result<bool, AuthError>;
}

/// How the kubelet's API authenticates and authorizes its callers.
#[derive(Clone)]
pub enum ServerAuth {
    /// Through the API server with the kubelet's own client: `TokenReview` and
    /// `SubjectAccessReview`, cached for these durations ([`DelegatedAuth`]).
    Delegated(CacheTtls),
    /// Through the given implementations (for example [`StaticAuth`] in tests).
    Custom {
        /// Who a token is.
        authenticator: Arc<dyn KubeletAuthenticator>,
        /// What a user may do.
        authorizer: Arc<dyn KubeletAuthorizer>,
    },
}

impl ServerAuth {
    /// Both decisions from one value that implements both traits.
    pub fn custom<A: KubeletAuthenticator + KubeletAuthorizer>(auth: A) -> Self {
        let auth = Arc::new(auth);
        ServerAuth::Custom {
            authenticator: auth.clone(),
            authorizer: auth,
        }
    }
}

impl Default for ServerAuth {
    /// Delegated, with the kubelet's default cache durations.
    fn default() -> Self {
        ServerAuth::Delegated(CacheTtls::default())
    }
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAuth::Delegated(ttls) => f.debug_tuple("Delegated").field(ttls).finish(),
            ServerAuth::Custom { .. } => f.write_str("Custom"),
        }
    }
}

/// A fixed table: tokens to users, and who may do what. For tests and single-user setups.
/// Tokens not in the table authenticate nobody; users not allowed are denied.
#[derive(Debug, Clone, Default)]
pub struct StaticAuth {
    tokens: HashMap<String, User>,
    /// (user, subresource); `None` allows every subresource.
    allowed: HashSet<(String, Option<String>)>,
}

impl StaticAuth {
    /// An empty table: nobody authenticates.
    pub fn new() -> Self {
        Self::default()
    }

    /// `token` authenticates as `user`.
    pub fn token(mut self, token: impl Into<String>, user: User) -> Self {
        self.tokens.insert(token.into(), user);
        self
    }

    /// The user named `user` may do everything.
    pub fn allow(mut self, user: impl Into<String>) -> Self {
        self.allowed.insert((user.into(), None));
        self
    }

    /// The user named `user` may use `subresource` (`proxy`, `stats`, `metrics`, ...) only.
    pub fn allow_subresource(
        mut self,
        user: impl Into<String>,
        subresource: impl Into<String>,
    ) -> Self {
        self.allowed.insert((user.into(), Some(subresource.into())));
        self
    }
}

#[async_trait]
impl KubeletAuthenticator for StaticAuth {
    async fn authenticate(&self, token: &str) -> Result<Option<User>, AuthError> {
        Ok(self.tokens.get(token).cloned())
    }
}

#[async_trait]
impl KubeletAuthorizer for StaticAuth {
    async fn authorize(&self, user: &User, attributes: &Attributes) -> Result<bool, AuthError> {
        Ok(self.allowed.contains(&(user.name.clone(), None))
            || self
                .allowed
                .contains(&(user.name.clone(), Some(attributes.subresource.clone()))))
    }
}

/// The server's authenticator, authorizer and node name, as the middleware uses them.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) authenticator: Arc<dyn KubeletAuthenticator>,
    pub(crate) authorizer: Arc<dyn KubeletAuthorizer>,
    pub(crate) node_name: String,
}

/// The bearer token of `request`, if it has one.
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The middleware: `/healthz` passes; everything else is authenticated, then authorized.
pub(crate) async fn guard(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    if path == "/healthz" {
        return next.run(request).await;
    }
    // A verified client certificate first (over HTTPS with a client CA), then the token.
    let certificate = request
        .extensions()
        .get::<x509::CertificateUser>()
        .map(|c| c.0.clone());
    let user = match (certificate, bearer(&request)) {
        (Some(user), _) => user,
        (None, Some(token)) => match guard.authenticator.authenticate(token).await {
            Ok(Some(user)) => user,
            Ok(None) => return text(StatusCode::UNAUTHORIZED, "Unauthorized".into()),
            Err(error) => {
                tracing::warn!(%error, "kubelet API: unable to authenticate the request");
                return text(StatusCode::UNAUTHORIZED, "Unauthorized".into());
            }
        },
        (None, None) => return text(StatusCode::UNAUTHORIZED, "Unauthorized".into()),
    };
    let attributes = Attributes::of(request.method(), &path, &guard.node_name);
    let describe = |what: &str| {
        format!(
            "{what} (user={}, verb={}, resource={}, subresource={})",
            user.name, attributes.verb, attributes.resource, attributes.subresource
        )
    };
    match guard.authorizer.authorize(&user, &attributes).await {
        Ok(true) => next.run(request).await,
        Ok(false) => text(StatusCode::FORBIDDEN, describe("Forbidden")),
        Err(error) => {
            tracing::warn!(%error, user = %user.name, "kubelet API: authorization error");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                describe("Authorization error"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn methods_map_to_verbs_and_paths_to_subresources_as_the_kubelet_does() {
        let of = |method: Method, path: &str| {
            let a = Attributes::of(&method, path, "node-1");
            (a.verb, a.subresource)
        };
        let pair = |v: &str, s: &str| (v.to_string(), s.to_string());
        assert_eq!(of(Method::GET, "/stats/summary"), pair("get", "stats"));
        assert_eq!(of(Method::HEAD, "/stats"), pair("get", "stats"));
        assert_eq!(of(Method::GET, "/metrics"), pair("get", "metrics"));
        assert_eq!(of(Method::GET, "/metrics/resource"), pair("get", "metrics"));
        assert_eq!(of(Method::GET, "/metricsx"), pair("get", "proxy"));
        assert_eq!(of(Method::GET, "/logs/syslog"), pair("get", "log"));
        assert_eq!(of(Method::GET, "/spec/"), pair("get", "spec"));
        assert_eq!(of(Method::POST, "/exec/ns/p/c"), pair("create", "proxy"));
        assert_eq!(of(Method::PUT, "/pods"), pair("update", "proxy"));
        assert_eq!(of(Method::PATCH, "/pods"), pair("patch", "proxy"));
        assert_eq!(of(Method::DELETE, "/pods"), pair("delete", "proxy"));
        assert_eq!(
            of(Method::GET, "/containerLogs/ns/p/c"),
            pair("get", "proxy")
        );
        let a = Attributes::of(&Method::GET, "/pods", "node-7");
        assert_eq!((a.resource.as_str(), a.name.as_str()), ("nodes", "node-7"));
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_empty_ones_ignored() {
        let request = |value: &str| {
            Request::builder()
                .header(header::AUTHORIZATION, value)
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(bearer(&request("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&request("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&request("Basic abc")), None);
        assert_eq!(bearer(&request("Bearer ")), None);
    }

    #[tokio::test]
    async fn the_static_table_authenticates_known_tokens_and_allows_listed_users() {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let auth = StaticAuth::new()
                .token("t1", User::new("alice"))
                .token("t2", User::new("bob"))
                .allow("alice")
                .allow_subresource("bob", "stats");
            let alice = auth.authenticate("t1").await.unwrap().unwrap();
            let bob = auth.authenticate("t2").await.unwrap().unwrap();
            assert_eq!(auth.authenticate("nope").await.unwrap(), None);
            let logs = Attributes::of(&Method::GET, "/containerLogs/a/b/c", "n");
            let stats = Attributes::of(&Method::GET, "/stats/summary", "n");
            assert!(auth.authorize(&alice, &logs).await.unwrap());
            assert!(!auth.authorize(&bob, &logs).await.unwrap());
            assert!(auth.authorize(&bob, &stats).await.unwrap());
        })
        .await
        .expect("in time");
    }
}
