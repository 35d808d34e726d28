//! Authentication: who is calling.
//!
//! An [`Authenticator`] reads a request's parts and names its [`UserInfo`]; [`AuthnLayer`] puts
//! that in the request's extensions for the layers and handlers behind it, serves callers
//! without credentials as `system:anonymous` when anonymous requests are allowed, and answers
//! 401 `Unauthorized` otherwise.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use axum::extract::Request;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use capstan_api::Error;
use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::is_public_path;
use crate::http::status::ApiError;

/// The user name of unauthenticated requests.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of unauthenticated requests.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// Who a request comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    /// The user name, e.g. `alice` or `system:serviceaccount:default:builder`.
    pub name: String,
    /// The user's unique id, if the authenticator knows one.
    pub uid: Option<String>,
    /// The groups the user is in.
    pub groups: Vec<String>,
    /// Further attributes the authenticator (or an impersonating caller) gives the user, as
    /// Kubernetes' `user.Info` extra: keys in lowercase, each with its values.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user named `name` in `groups`.
    pub fn new(
        name: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        UserInfo {
            name: name.into(),
            uid: None,
            groups: groups.into_iter().map(Into::into).collect(),
            extra: BTreeMap::new(),
        }
    }

    /// `system:anonymous` in group `system:unauthenticated`.
    pub fn anonymous() -> Self {
        UserInfo::new(ANONYMOUS_USER, [UNAUTHENTICATED_GROUP])
    }

    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS_USER
    }
}

/// Names the user behind a request.
///
/// `Ok(None)`: the request carries no credentials this authenticator understands.
/// `Err(Error::Unauthorized)`: it carries credentials, and they are wrong. Object-safe, so
/// [`AuthnLayer`] holds an `Arc<dyn Authenticator>`.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// Authenticates the request whose head is `parts`.
    async fn authenticate(&self, parts: &Parts) -> Result<Option<UserInfo>, Error>;
}

#[async_trait]
impl<A: Authenticator + ?Sized> Authenticator for Arc<A> {
    async fn authenticate(&self, parts: &Parts) -> Result<Option<UserInfo>, Error> {
        (**self).authenticate(parts).await
    }
}

/// Kubernetes' 401: `Unauthorized`.
pub fn unauthorized() -> Error {
    Error::Unauthorized {
        message: "Unauthorized".into(),
    }
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Bearer tokens mapped to users, like kube-apiserver's `--token-auth-file`.
///
/// A request with an unknown bearer token is refused; one without a bearer token is left to
/// the anonymous rule.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, UserInfo>,
}

impl StaticTokens {
    /// No tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `token` for `user`.
    pub fn with(mut self, token: impl Into<String>, user: UserInfo) -> Self {
        self.insert(token, user);
        self
    }

    /// Adds (or replaces) `token` for `user`.
    pub fn insert(&mut self, token: impl Into<String>, user: UserInfo) {
        self.tokens.insert(token.into(), user);
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Reads Kubernetes' static token file format: one `token,user,uid[,"group1,group2"]` a
    /// line. Blank lines and lines starting with `#` are skipped; a later line for the same
    /// token replaces an earlier one.
    ///
    /// Errors: [`std::io::ErrorKind::InvalidData`] for a line with fewer than three fields,
    /// an empty token or user, or an unterminated quote.
    pub fn from_csv(text: &str) -> std::io::Result<Self> {
        let invalid = |line: usize, why: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("token file line {line}: {why}"),
            )
        };
        let mut tokens = StaticTokens::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = csv_fields(line).ok_or_else(|| invalid(number, "unterminated quote"))?;
            let [token, name, uid, rest @ ..] = fields.as_slice() else {
                return Err(invalid(number, "expected token,user,uid[,groups]"));
            };
            if token.is_empty() || name.is_empty() {
                return Err(invalid(number, "empty token or user name"));
            }
            let groups = rest
                .first()
                .map(|groups| {
                    groups
                        .split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                token.clone(),
                UserInfo {
                    name: name.clone(),
                    uid: Some(uid.clone()).filter(|uid| !uid.is_empty()),
                    groups,
                    extra: BTreeMap::new(),
                },
            );
        }
        Ok(tokens)
    }

    /// Reads a static token file (see [`from_csv`](Self::from_csv)).
    ///
    /// Errors: the file cannot be read, or is malformed.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        Self::from_csv(&std::fs::read_to_string(path)?)
    }
}

/// Splits one CSV line, with `"`-quoted fields and `""` for a quote inside them. `None` for an
/// unterminated quote.
fn csv_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field).trim().to_string()),
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(field.trim().to_string());
    Some(fields)
}

#[async_trait]
impl Authenticator for StaticTokens {
    async fn authenticate(&self, parts: &Parts) -> Result<Option<UserInfo>, Error> {
        match bearer_token(parts) {
            None => Ok(None),
            Some(token) => self
                .tokens
                .get(token)
                .cloned()
                .map(Some)
                .ok_or_else(unauthorized),
        }
    }
}

/// Several authenticators as one, like kube-apiserver's union authenticator.
///
/// Each is asked in turn: the first to name a user wins. One that refuses the request's
/// credentials (`Err`) does not stop the others, since the request may carry several kinds
/// (a valid client certificate and a stale token); if none names a user, the first refusal
/// is the answer (401), and without any refusal the request has no credentials (`Ok(None)`).
#[derive(Clone, Default)]
pub struct Authenticators {
    chain: Vec<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for Authenticators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticators")
            .field("len", &self.chain.len())
            .finish()
    }
}

impl Authenticators {
    /// None yet: nobody has credentials.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `authenticator`, asked after those already added.
    pub fn with(mut self, authenticator: impl Authenticator + 'static) -> Self {
        self.push(Arc::new(authenticator));
        self
    }

    /// Adds `authenticator`, asked after those already added.
    pub fn push(&mut self, authenticator: Arc<dyn Authenticator>) {
        self.chain.push(authenticator);
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.chain.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }
}

#[async_trait]
impl Authenticator for Authenticators {
    async fn authenticate(&self, parts: &Parts) -> Result<Option<UserInfo>, Error> {
        let mut refusal = None;
        for authenticator in &self.chain {
            match authenticator.authenticate(parts).await {
                Ok(Some(user)) => return Ok(Some(user)),
                Ok(None) => {}
                Err(error) => {
                    refusal.get_or_insert(error);
                }
            }
        }
        refusal.map_or(Ok(None), Err)
    }
}

/// Authenticates every request and puts its [`UserInfo`] in the request's extensions.
///
/// - Credentials the authenticator accepts: that user, plus group `system:authenticated`.
/// - Credentials it refuses: 401 `Unauthorized`.
/// - No credentials: `system:anonymous` in group `system:unauthenticated` when anonymous
///   requests are allowed (or the path is public, see [`is_public_path`]), else 401.
#[derive(Clone)]
pub struct AuthnLayer {
    authenticator: Option<Arc<dyn Authenticator>>,
    anonymous: bool,
}

impl std::fmt::Debug for AuthnLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthnLayer")
            .field("authenticator", &self.authenticator.is_some())
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

impl AuthnLayer {
    /// Authenticates with `authenticator` (`None`: nobody has credentials), serving callers
    /// without credentials as anonymous when `anonymous`.
    pub fn new(authenticator: Option<Arc<dyn Authenticator>>, anonymous: bool) -> Self {
        AuthnLayer {
            authenticator,
            anonymous,
        }
    }
}

impl<S> Layer<S> for AuthnLayer {
    type Service = Authn<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authn {
            inner,
            authenticator: self.authenticator.clone(),
            anonymous: self.anonymous,
        }
    }
}

/// The service of [`AuthnLayer`].
#[derive(Clone)]
pub struct Authn<S> {
    inner: S,
    authenticator: Option<Arc<dyn Authenticator>>,
    anonymous: bool,
}

impl<S> Service<Request> for Authn<S>
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
        let mut inner = super::take(&mut self.inner);
        let authenticator = self.authenticator.clone();
        let anonymous = self.anonymous;
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let outcome = match &authenticator {
                Some(authenticator) => authenticator.authenticate(&parts).await,
                None => Ok(None),
            };
            let user = match outcome {
                Ok(Some(mut user)) => {
                    if !user.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                        user.groups.push(AUTHENTICATED_GROUP.into());
                    }
                    user
                }
                Ok(None) if anonymous || is_public_path(parts.uri.path()) => UserInfo::anonymous(),
                Ok(None) => return Ok(ApiError(unauthorized()).into_response()),
                Err(error) => return Ok(ApiError(error).into_response()),
            };
            parts.extensions.insert(user);
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_token_csv_reads_users_uids_and_quoted_groups() {
        let tokens = StaticTokens::from_csv(
            "# comment\nt1,alice,1001,\"dev,ops\"\n\nt2,bob,1002\nt3, carol ,,\"a \"\"b\"\"\"\n",
        )
        .unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            tokens.tokens["t1"],
            UserInfo {
                name: "alice".into(),
                uid: Some("1001".into()),
                groups: vec!["dev".into(), "ops".into()],
                extra: BTreeMap::new(),
            }
        );
        assert!(tokens.tokens["t2"].groups.is_empty());
        assert_eq!(tokens.tokens["t3"].name, "carol");
        assert_eq!(tokens.tokens["t3"].uid, None);
        assert_eq!(tokens.tokens["t3"].groups, vec!["a \"b\"".to_string()]);
    }

    fn request(token: Option<&str>) -> Parts {
        let mut request = axum::http::Request::builder().uri("/api/v1/pods");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn the_first_authenticator_naming_a_user_wins_and_refusals_count_only_after_all() {
        let first = StaticTokens::new().with("t1", UserInfo::new("alice", ["dev"]));
        let second = StaticTokens::new().with("t2", UserInfo::new("bob", ["ops"]));
        let union = Authenticators::new().with(first).with(second);
        assert_eq!(union.len(), 2);
        let alice = union.authenticate(&request(Some("t1"))).await.unwrap();
        assert_eq!(alice.unwrap().name, "alice");
        // The first refuses "t2", the second knows it.
        let bob = union.authenticate(&request(Some("t2"))).await.unwrap();
        assert_eq!(bob.unwrap().name, "bob");
        let unknown = union.authenticate(&request(Some("t3"))).await.unwrap_err();
        assert!(matches!(unknown, Error::Unauthorized { .. }), "{unknown:?}");
        assert_eq!(union.authenticate(&request(None)).await.unwrap(), None);
        assert_eq!(
            Authenticators::new()
                .authenticate(&request(Some("t1")))
                .await
                .unwrap(),
            None
        );
    }

    #[test]
    fn malformed_token_csv_lines_are_refused() {
        for text in ["t1,alice", ",alice,1", "t1,\"alice,1"] {
            assert!(StaticTokens::from_csv(text).is_err(), "{text}");
        }
    }
}
