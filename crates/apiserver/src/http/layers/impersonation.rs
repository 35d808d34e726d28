//! Impersonation: acting as another user, as kube-apiserver's `WithImpersonation` filter.
//!
//! A request may ask to be served as someone else with the headers `Impersonate-User`,
//! `Impersonate-Group` (repeatable), `Impersonate-Uid` and `Impersonate-Extra-<key>`
//! (repeatable, one value each). [`ImpersonationLayer`] runs right after authentication: it
//! asks the server's [`Authorizer`] whether the authenticated caller may `impersonate` each
//! thing asked for, then replaces the request's [`UserInfo`] with the impersonated user and
//! removes the headers, so everything behind it (the in-flight limit, authorization, the
//! handlers) sees only the impersonated user.
//!
//! What is authorized, for the real caller, with verb `impersonate`:
//!
//! | header | resource | API group | name |
//! |---|---|---|---|
//! | `Impersonate-User: jane` | `users` | `""` | `jane` |
//! | `Impersonate-User: system:serviceaccount:<ns>:<sa>` | `serviceaccounts` in `<ns>` | `""` | `<sa>` |
//! | `Impersonate-Group: devs` | `groups` | `""` | `devs` |
//! | `Impersonate-Uid: 1234` | `uids` | `authentication.k8s.io` | `1234` |
//! | `Impersonate-Extra-<key>: v` | `userextras/<key>` | `authentication.k8s.io` | `v` |
//!
//! A refusal is 403 in Kubernetes' words (`users "jane" is forbidden: User "bob" cannot
//! impersonate resource "users" in API group "" at the cluster scope`); groups, a uid or
//! extras without a user are 400.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use capstan_api::Error;
use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::authn::{ANONYMOUS_USER, AUTHENTICATED_GROUP, UNAUTHENTICATED_GROUP};
use super::{Attributes, Authorizer, Decision, ResourceAttributes, UserInfo};
use crate::http::status::ApiError;
use crate::registry::validation::{is_dns1123_label, is_dns1123_subdomain};

/// The user to act as.
pub const IMPERSONATE_USER_HEADER: &str = "Impersonate-User";
/// A group to act as; repeatable.
pub const IMPERSONATE_GROUP_HEADER: &str = "Impersonate-Group";
/// The uid to act as.
pub const IMPERSONATE_UID_HEADER: &str = "Impersonate-Uid";
/// The prefix of the headers naming the impersonated user's extra values: the rest of the
/// header's name is the key (lowercased, then `%`-unescaped).
pub const IMPERSONATE_EXTRA_HEADER_PREFIX: &str = "Impersonate-Extra-";

/// The user name prefix of service accounts.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// The group of every service account.
const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// The API group of the `uids` and `userextras` resources.
const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";

/// One thing a request asks to act as, each authorized on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImpersonationRequest {
    /// A user (`Impersonate-User` not naming a service account).
    User(String),
    /// A service account (`Impersonate-User: system:serviceaccount:<namespace>:<name>`).
    ServiceAccount {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A group (`Impersonate-Group`).
    Group(String),
    /// One value of an extra (`Impersonate-Extra-<key>`).
    Extra {
        /// The key, lowercased and unescaped.
        key: String,
        /// The value.
        value: String,
    },
    /// A uid (`Impersonate-Uid`).
    Uid(String),
}

impl ImpersonationRequest {
    /// What the caller must be allowed: verb `impersonate` on this thing.
    pub fn attributes(&self, requester: &UserInfo) -> Attributes {
        let resource = |group: &str, resource: &str, namespace: Option<&str>, name: &str| {
            let (resource, subresource) = match resource.split_once('/') {
                Some((resource, sub)) => (resource, Some(sub.to_string())),
                None => (resource, None),
            };
            ResourceAttributes {
                group: group.to_string(),
                version: if group.is_empty() { "" } else { "v1" }.to_string(),
                resource: resource.to_string(),
                subresource,
                namespace: namespace.map(String::from),
                name: Some(name.to_string()),
            }
        };
        let resource = match self {
            ImpersonationRequest::User(name) => resource("", "users", None, name),
            ImpersonationRequest::ServiceAccount { namespace, name } => {
                resource("", "serviceaccounts", Some(namespace), name)
            }
            ImpersonationRequest::Group(name) => resource("", "groups", None, name),
            ImpersonationRequest::Extra { key, value } => {
                let mut r = resource(AUTHENTICATION_GROUP, "userextras", None, value);
                r.subresource = Some(key.clone());
                r
            }
            ImpersonationRequest::Uid(uid) => resource(AUTHENTICATION_GROUP, "uids", None, uid),
        };
        Attributes {
            user: requester.clone(),
            verb: "impersonate".into(),
            resource: Some(resource),
            path: String::new(),
        }
    }

    /// How Kubernetes prints the request in its 400 message: an `ObjectReference` formatted
    /// field by field (kind, namespace, name, uid, apiVersion, resourceVersion, fieldPath).
    fn reference(&self) -> String {
        let authentication = format!("{AUTHENTICATION_GROUP}/v1");
        let (kind, namespace, name, api_version, field_path) = match self {
            ImpersonationRequest::User(name) => ("User", "", name.as_str(), "", ""),
            ImpersonationRequest::ServiceAccount { namespace, name } => {
                ("ServiceAccount", namespace.as_str(), name.as_str(), "", "")
            }
            ImpersonationRequest::Group(name) => ("Group", "", name.as_str(), "", ""),
            ImpersonationRequest::Extra { key, value } => (
                "UserExtra",
                "",
                value.as_str(),
                authentication.as_str(),
                key.as_str(),
            ),
            ImpersonationRequest::Uid(uid) => {
                ("UID", "", uid.as_str(), authentication.as_str(), "")
            }
        };
        format!("{{{kind} {namespace} {name}  {api_version}  {field_path}}}")
    }
}

/// Splits `system:serviceaccount:<namespace>:<name>` as Kubernetes does: exactly two parts,
/// a DNS-1123 label and a DNS-1123 subdomain.
fn split_service_account(user: &str) -> Option<(String, String)> {
    let (namespace, name) = user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':')?;
    (!name.contains(':') && is_dns1123_label(namespace) && is_dns1123_subdomain(name))
        .then(|| (namespace.to_string(), name.to_string()))
}

/// `%`-decodes `key` as Go's `url.PathUnescape`; a malformed escape leaves it as it was.
fn unescape_extra_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                _ => return key.to_string(),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_string())
}

fn header_text(value: &axum::http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// What `headers` ask to act as, in Kubernetes' order: the user, the groups, the extras (by
/// key), the uid. Empty when nothing is asked.
///
/// Errors: 400 `BadRequest` (`requested [...] without impersonating a user`) for groups, a
/// uid or extras without a user.
pub fn impersonation_requests(headers: &HeaderMap) -> Result<Vec<ImpersonationRequest>, Error> {
    let mut requests = Vec::new();
    let user = headers
        .get(IMPERSONATE_USER_HEADER)
        .map(header_text)
        .filter(|user| !user.is_empty());
    if let Some(user) = &user {
        requests.push(match split_service_account(user) {
            Some((namespace, name)) => ImpersonationRequest::ServiceAccount { namespace, name },
            None => ImpersonationRequest::User(user.clone()),
        });
    }
    for group in headers.get_all(IMPERSONATE_GROUP_HEADER) {
        requests.push(ImpersonationRequest::Group(header_text(group)));
    }
    let prefix = IMPERSONATE_EXTRA_HEADER_PREFIX.to_ascii_lowercase();
    // Header names are lowercase already; sorted, so the order does not depend on hashing.
    let mut extra_names: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(&prefix))
        .collect();
    extra_names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    for name in extra_names {
        let key = unescape_extra_key(&name.as_str()[prefix.len()..].to_ascii_lowercase());
        for value in headers.get_all(name) {
            requests.push(ImpersonationRequest::Extra {
                key: key.clone(),
                value: header_text(value),
            });
        }
    }
    if let Some(uid) = headers
        .get(IMPERSONATE_UID_HEADER)
        .map(header_text)
        .filter(|uid| !uid.is_empty())
    {
        requests.push(ImpersonationRequest::Uid(uid));
    }
    if user.is_none() && !requests.is_empty() {
        let references: Vec<String> = requests.iter().map(|r| r.reference()).collect();
        return Err(Error::bad_request(format!(
            "requested [{}] without impersonating a user",
            references.join(" ")
        )));
    }
    Ok(requests)
}

/// Authorizes each of `requests` for `requester` with `authorizer` and, if all are allowed,
/// returns the impersonated user: the named user (or service account, with its groups when
/// no group is asked for), the groups asked for, the extras and the uid, plus
/// `system:authenticated` unless a group asked for is `system:authenticated` or
/// `system:unauthenticated` (for `system:anonymous`: plus `system:unauthenticated` unless
/// asked for).
///
/// Errors: 403 `Forbidden` for the first request refused, in Kubernetes' words.
pub async fn impersonate(
    authorizer: &dyn Authorizer,
    requester: &UserInfo,
    requests: &[ImpersonationRequest],
) -> Result<UserInfo, Error> {
    let groups_specified = requests
        .iter()
        .any(|r| matches!(r, ImpersonationRequest::Group(_)));
    let mut name = String::new();
    let mut groups = Vec::new();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut uid = None;
    for request in requests {
        match request {
            ImpersonationRequest::User(user) => name = user.clone(),
            ImpersonationRequest::ServiceAccount {
                namespace,
                name: account,
            } => {
                name = format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{account}");
                if !groups_specified {
                    groups = vec![
                        SERVICE_ACCOUNTS_GROUP.to_string(),
                        format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
                    ];
                }
            }
            ImpersonationRequest::Group(group) => groups.push(group.clone()),
            ImpersonationRequest::Extra { key, value } => {
                extra.entry(key.clone()).or_default().push(value.clone());
            }
            ImpersonationRequest::Uid(value) => uid = Some(value.clone()),
        }
        let attributes = request.attributes(requester);
        if let Decision::Deny(reason) = authorizer.authorize(&attributes).await {
            return Err(Error::Forbidden {
                message: attributes.forbidden_message(&reason),
            });
        }
    }
    if name != ANONYMOUS_USER {
        if !groups
            .iter()
            .any(|g| g == AUTHENTICATED_GROUP || g == UNAUTHENTICATED_GROUP)
        {
            groups.push(AUTHENTICATED_GROUP.into());
        }
    } else if !groups.iter().any(|g| g == UNAUTHENTICATED_GROUP) {
        groups.push(UNAUTHENTICATED_GROUP.into());
    }
    Ok(UserInfo {
        name,
        uid,
        groups,
        extra,
    })
}

/// Removes every impersonation header from `headers`.
pub fn remove_impersonation_headers(headers: &mut HeaderMap) {
    headers.remove(IMPERSONATE_USER_HEADER);
    headers.remove(IMPERSONATE_GROUP_HEADER);
    headers.remove(IMPERSONATE_UID_HEADER);
    let prefix = IMPERSONATE_EXTRA_HEADER_PREFIX.to_ascii_lowercase();
    let extras: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(&prefix))
        .cloned()
        .collect();
    for name in extras {
        headers.remove(name);
    }
}

/// Serves requests that carry impersonation headers as the impersonated user, when the
/// authenticated caller may impersonate it (see the [module](self)); requests without them
/// pass untouched.
///
/// Goes right after [`AuthnLayer`](super::AuthnLayer), whose [`UserInfo`] is the caller
/// (`system:anonymous` if there is none).
#[derive(Clone)]
pub struct ImpersonationLayer {
    authorizer: Arc<dyn Authorizer>,
}

impl std::fmt::Debug for ImpersonationLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImpersonationLayer").finish_non_exhaustive()
    }
}

impl ImpersonationLayer {
    /// Authorizes impersonation with `authorizer` (the server's own).
    pub fn new(authorizer: Arc<dyn Authorizer>) -> Self {
        ImpersonationLayer { authorizer }
    }
}

impl<S> Layer<S> for ImpersonationLayer {
    type Service = Impersonation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Impersonation {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

/// The service of [`ImpersonationLayer`].
#[derive(Clone)]
pub struct Impersonation<S> {
    inner: S,
    authorizer: Arc<dyn Authorizer>,
}

impl<S> Service<Request> for Impersonation<S>
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
        let authorizer = self.authorizer.clone();
        Box::pin(async move {
            let requests = match impersonation_requests(request.headers()) {
                Ok(requests) if requests.is_empty() => return inner.call(request).await,
                Ok(requests) => requests,
                Err(error) => return Ok(ApiError(error).into_response()),
            };
            let (mut parts, body) = request.into_parts();
            let requester = parts
                .extensions
                .get::<UserInfo>()
                .cloned()
                .unwrap_or_else(UserInfo::anonymous);
            match impersonate(&*authorizer, &requester, &requests).await {
                Ok(user) => {
                    parts.extensions.insert(user);
                    remove_impersonation_headers(&mut parts.headers);
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(error) => Ok(ApiError(error).into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::layers::{AllowAll, Rule, StaticPolicy};
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::{Extension, Json, Router};
    use tower::ServiceExt;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    fn bob() -> UserInfo {
        UserInfo::new("bob", [AUTHENTICATED_GROUP])
    }

    /// An app that answers with the user it is served as and the headers it still sees,
    /// behind impersonation authorized by `authorizer`, with `bob` as the caller.
    fn app(authorizer: impl Authorizer + 'static) -> Router {
        Router::new()
            .route(
                "/whoami",
                get(
                    |Extension(user): Extension<UserInfo>, headers: HeaderMap| async move {
                        let impersonation_headers = headers
                            .keys()
                            .filter(|name| name.as_str().starts_with("impersonate-"))
                            .count();
                        Json(serde_json::json!({
                            "name": user.name,
                            "uid": user.uid,
                            "groups": user.groups,
                            "extra": user.extra,
                            "impersonationHeaders": impersonation_headers,
                        }))
                    },
                ),
            )
            .layer(ImpersonationLayer::new(Arc::new(authorizer)))
            .layer(Extension(bob()))
    }

    async fn whoami(app: &Router, pairs: &[(&str, &str)]) -> (StatusCode, serde_json::Value) {
        let mut request = axum::http::Request::builder().uri("/whoami");
        for (name, value) in pairs {
            request = request.header(*name, *value);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn the_headers_become_one_request_per_user_group_extra_value_and_uid() {
        let requests = impersonation_requests(&headers(&[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate-Extra-Scopes", "edit"),
            ("Impersonate-Extra-Example.com%2fteam", "blue"),
            ("Impersonate-Uid", "1234"),
        ]))
        .unwrap();
        assert_eq!(
            requests,
            vec![
                ImpersonationRequest::User("jane".into()),
                ImpersonationRequest::Group("devs".into()),
                ImpersonationRequest::Group("ops".into()),
                ImpersonationRequest::Extra {
                    key: "example.com/team".into(),
                    value: "blue".into()
                },
                ImpersonationRequest::Extra {
                    key: "scopes".into(),
                    value: "view".into()
                },
                ImpersonationRequest::Extra {
                    key: "scopes".into(),
                    value: "edit".into()
                },
                ImpersonationRequest::Uid("1234".into()),
            ]
        );
        assert!(impersonation_requests(&headers(&[("Accept", "*/*")]))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_service_account_user_name_is_a_service_account_only_when_well_formed() {
        let one = |user: &str| {
            impersonation_requests(&headers(&[("Impersonate-User", user)])).unwrap()[0].clone()
        };
        assert_eq!(
            one("system:serviceaccount:kube-system:builder"),
            ImpersonationRequest::ServiceAccount {
                namespace: "kube-system".into(),
                name: "builder".into()
            }
        );
        for user in [
            "system:serviceaccount:kube-system",
            "system:serviceaccount:a:b:c",
            "system:serviceaccount:Bad:builder",
            "system:serviceaccount::builder",
        ] {
            assert_eq!(one(user), ImpersonationRequest::User(user.into()), "{user}");
        }
    }

    #[test]
    fn groups_a_uid_or_extras_without_a_user_are_a_bad_request_in_kubernetes_words() {
        let error = impersonation_requests(&headers(&[("Impersonate-Group", "devs")])).unwrap_err();
        assert_eq!(
            error,
            Error::bad_request("requested [{Group  devs    }] without impersonating a user")
        );
        let error = impersonation_requests(&headers(&[
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate-Uid", "1234"),
        ]))
        .unwrap_err();
        assert_eq!(
            error,
            Error::bad_request(
                "requested [{UserExtra  view  authentication.k8s.io/v1  scopes} \
                 {UID  1234  authentication.k8s.io/v1  }] without impersonating a user"
            )
        );
    }

    #[test]
    fn each_request_is_authorized_as_verb_impersonate_on_its_resource() {
        let attributes = |request: ImpersonationRequest| {
            let a = request.attributes(&bob());
            assert_eq!(a.verb, "impersonate");
            assert_eq!(a.user.name, "bob");
            let r = a.resource.unwrap();
            (
                r.group,
                r.resource,
                r.subresource,
                r.namespace,
                r.name.unwrap(),
            )
        };
        assert_eq!(
            attributes(ImpersonationRequest::User("jane".into())),
            ("".into(), "users".into(), None, None, "jane".into())
        );
        assert_eq!(
            attributes(ImpersonationRequest::ServiceAccount {
                namespace: "ci".into(),
                name: "builder".into()
            }),
            (
                "".into(),
                "serviceaccounts".into(),
                None,
                Some("ci".into()),
                "builder".into()
            )
        );
        assert_eq!(
            attributes(ImpersonationRequest::Extra {
                key: "scopes".into(),
                value: "view".into()
            }),
            (
                AUTHENTICATION_GROUP.into(),
                "userextras".into(),
                Some("scopes".into()),
                None,
                "view".into()
            )
        );
        assert_eq!(
            attributes(ImpersonationRequest::Uid("1234".into())),
            (
                AUTHENTICATION_GROUP.into(),
                "uids".into(),
                None,
                None,
                "1234".into()
            )
        );
    }

    #[tokio::test]
    async fn an_allowed_request_is_served_as_the_impersonated_user_without_the_headers() {
        let app = app(AllowAll);
        let (status, user) = whoami(
            &app,
            &[
                ("Impersonate-User", "jane"),
                ("Impersonate-Group", "devs"),
                ("Impersonate-Extra-Scopes", "view"),
                ("Impersonate-Uid", "1234"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(user["name"], "jane");
        assert_eq!(user["uid"], "1234");
        assert_eq!(
            user["groups"],
            serde_json::json!(["devs", AUTHENTICATED_GROUP])
        );
        assert_eq!(user["extra"], serde_json::json!({"scopes": ["view"]}));
        assert_eq!(user["impersonationHeaders"], 0);

        let (_, plain) = whoami(&app, &[]).await;
        assert_eq!(plain["name"], "bob");
    }

    #[tokio::test]
    async fn groups_follow_kubernetes_for_service_accounts_and_the_anonymous_user() {
        let app = app(AllowAll);
        let (_, account) = whoami(
            &app,
            &[("Impersonate-User", "system:serviceaccount:ci:builder")],
        )
        .await;
        assert_eq!(account["name"], "system:serviceaccount:ci:builder");
        assert_eq!(
            account["groups"],
            serde_json::json!([
                "system:serviceaccounts",
                "system:serviceaccounts:ci",
                AUTHENTICATED_GROUP
            ])
        );
        let (_, anonymous) = whoami(&app, &[("Impersonate-User", ANONYMOUS_USER)]).await;
        assert_eq!(
            anonymous["groups"],
            serde_json::json!([UNAUTHENTICATED_GROUP])
        );
        let (_, unauthenticated) = whoami(
            &app,
            &[
                ("Impersonate-User", "jane"),
                ("Impersonate-Group", UNAUTHENTICATED_GROUP),
            ],
        )
        .await;
        assert_eq!(
            unauthenticated["groups"],
            serde_json::json!([UNAUTHENTICATED_GROUP])
        );
    }

    #[tokio::test]
    async fn a_refused_impersonation_is_forbidden_in_kubernetes_words() {
        let policy = StaticPolicy::new([Rule::new()
            .users(["bob"])
            .verbs(["impersonate"])
            .api_groups([""])
            .resources(["users"])]);
        let app = app(policy);
        let (status, user) = whoami(&app, &[("Impersonate-User", "jane")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(user["name"], "jane");

        let (status, refusal) = whoami(
            &app,
            &[
                ("Impersonate-User", "jane"),
                ("Impersonate-Group", "admins"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(refusal["reason"], "Forbidden");
        assert_eq!(
            refusal["message"],
            r#"groups "admins" is forbidden: User "bob" cannot impersonate resource "groups" in API group "" at the cluster scope"#
        );

        let (status, refusal) = whoami(&app, &[("Impersonate-Uid", "1")]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(refusal["reason"], "BadRequest");

        let nobody = self::app(StaticPolicy::default());
        let (status, refusal) = whoami(&nobody, &[("Impersonate-User", "jane")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            refusal["message"],
            r#"users "jane" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
    }

    #[test]
    fn malformed_escapes_in_extra_keys_are_kept_as_sent() {
        assert_eq!(unescape_extra_key("a%2fb"), "a/b");
        assert_eq!(unescape_extra_key("a%zzb"), "a%zzb");
        assert_eq!(unescape_extra_key("a%2"), "a%2");
    }
}
