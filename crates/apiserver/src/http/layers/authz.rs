//! Authorization: may this user do this.
//!
//! [`AuthzLayer`] turns each request into [`Attributes`] (the user from
//! [`AuthnLayer`](super::AuthnLayer), the Kubernetes verb, and the resource or path), asks an
//! [`Authorizer`], and answers a denial with 403 `Forbidden` in Kubernetes' words.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use capstan_api::k8s_openapi::api::authorization::v1::{
    NonResourceRule, ResourceRule, SubjectRulesReviewStatus,
};
use capstan_api::Error;
use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::{is_public_path, RequestInfo, UserInfo};
use crate::http::status::ApiError;

/// The resource a request addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    /// The API group; `""` for the core group.
    pub group: String,
    /// The API version, e.g. `v1`.
    pub version: String,
    /// The resource's plural name, e.g. `pods`.
    pub resource: String,
    /// The subresource, e.g. `status`.
    pub subresource: Option<String>,
    /// The namespace; `None` for cluster-scoped resources and for lists across namespaces.
    pub namespace: Option<String>,
    /// The object's name; `None` for collections.
    pub name: Option<String>,
}

/// What an [`Authorizer`] decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Who asks.
    pub user: UserInfo,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`), or the lowercase HTTP method for a non-resource path.
    pub verb: String,
    /// The resource, or `None` for a non-resource path (discovery, `/openapi`, ...).
    pub resource: Option<ResourceAttributes>,
    /// The request's path.
    pub path: String,
}

impl Attributes {
    /// Kubernetes' message for a denial of these attributes, e.g. `pods "web" is forbidden:
    /// User "alice" cannot get resource "pods" in API group "" in the namespace "default"`,
    /// followed by `: <reason>` when there is one.
    pub fn forbidden_message(&self, reason: &str) -> String {
        let user = &self.user.name;
        let verb = &self.verb;
        let mut message = match &self.resource {
            None => format!(
                "forbidden: User {user:?} cannot {verb} path {:?}",
                self.path
            ),
            Some(r) => {
                let qualified = if r.group.is_empty() {
                    r.resource.clone()
                } else {
                    format!("{}.{}", r.resource, r.group)
                };
                let subject = match &r.name {
                    Some(name) => format!("{qualified} {name:?} is forbidden"),
                    None => format!("{qualified} is forbidden"),
                };
                let resource = match &r.subresource {
                    Some(sub) => format!("{}/{sub}", r.resource),
                    None => r.resource.clone(),
                };
                let scope = match &r.namespace {
                    Some(ns) => format!("in the namespace {ns:?}"),
                    None => "at the cluster scope".to_string(),
                };
                format!(
                    "{subject}: User {user:?} cannot {verb} resource {resource:?} in API group {:?} {scope}",
                    r.group
                )
            }
        };
        if !reason.is_empty() {
            message.push_str(": ");
            message.push_str(reason);
        }
        message
    }
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, with a reason (may be empty) added to the 403's message.
    Deny(String),
}

/// Decides whether a request may proceed. Object-safe, so [`AuthzLayer`] holds an
/// `Arc<dyn Authorizer>`; an authorizer that cannot decide (a webhook that is down) denies
/// with a reason.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// Decides on `attributes`.
    async fn authorize(&self, attributes: &Attributes) -> Decision;

    /// The rules granting `user` anything in `namespace` (`""`: cluster-wide grants only), as
    /// a `SelfSubjectRulesReview` reports them. Default: none, with `incomplete: true`, as
    /// kube-apiserver answers for an authorizer that cannot list its rules.
    async fn rules_for(&self, user: &UserInfo, namespace: &str) -> SubjectRulesReviewStatus {
        let _ = (user, namespace);
        SubjectRulesReviewStatus {
            incomplete: true,
            ..Default::default()
        }
    }
}

#[async_trait]
impl<A: Authorizer + ?Sized> Authorizer for Arc<A> {
    async fn authorize(&self, attributes: &Attributes) -> Decision {
        (**self).authorize(attributes).await
    }

    async fn rules_for(&self, user: &UserInfo, namespace: &str) -> SubjectRulesReviewStatus {
        (**self).rules_for(user, namespace).await
    }
}

/// Allows everything (kube-apiserver's `--authorization-mode=AlwaysAllow`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

#[async_trait]
impl Authorizer for AllowAll {
    async fn authorize(&self, _: &Attributes) -> Decision {
        Decision::Allow
    }

    /// Everything: `*` on every resource and every path, as kube-apiserver's `AlwaysAllow`.
    async fn rules_for(&self, _: &UserInfo, _: &str) -> SubjectRulesReviewStatus {
        let all = || vec!["*".to_string()];
        SubjectRulesReviewStatus {
            resource_rules: vec![ResourceRule {
                verbs: all(),
                api_groups: Some(all()),
                resources: Some(all()),
                resource_names: None,
            }],
            non_resource_rules: vec![NonResourceRule {
                verbs: all(),
                non_resource_urls: Some(all()),
            }],
            incomplete: false,
            evaluation_error: None,
        }
    }
}

/// One grant of a [`StaticPolicy`]: these subjects may use these verbs on these resources in
/// these namespaces (or on these non-resource paths).
///
/// Every list is matched by `*`. An empty `users`, `user_groups`, `verbs`, `resources` or
/// `paths` matches nothing. [`Rule::default`] sets `api_groups` and `namespaces` to `["*"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// User names granted.
    pub users: Vec<String>,
    /// Groups granted (any of the user's groups).
    pub user_groups: Vec<String>,
    /// Verbs granted (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; lowercase HTTP methods for paths).
    pub verbs: Vec<String>,
    /// API groups of the resources (`""` for core).
    pub api_groups: Vec<String>,
    /// Resources: `pods`, `pods/status`, `pods/*`, `*/status` or `*` (which includes
    /// subresources). `pods` alone does not grant `pods/status`.
    pub resources: Vec<String>,
    /// Namespaces; `*` also matches cluster-scoped resources and lists across namespaces.
    pub namespaces: Vec<String>,
    /// Non-resource paths: exact, or a prefix ending in `*` (`/apis/*`).
    pub paths: Vec<String>,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            users: Vec::new(),
            user_groups: Vec::new(),
            verbs: Vec::new(),
            api_groups: vec!["*".into()],
            resources: Vec::new(),
            namespaces: vec!["*".into()],
            paths: Vec::new(),
        }
    }
}

fn strings<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Vec<String> {
    items.into_iter().map(Into::into).collect()
}

fn matches(list: &[String], value: &str) -> bool {
    list.iter().any(|item| item == "*" || item == value)
}

impl Rule {
    /// A rule granting nothing yet: every API group and namespace, no subject, verb or
    /// resource.
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants these users.
    pub fn users<I: IntoIterator<Item = S>, S: Into<String>>(mut self, users: I) -> Self {
        self.users = strings(users);
        self
    }

    /// Grants these groups.
    pub fn user_groups<I: IntoIterator<Item = S>, S: Into<String>>(mut self, groups: I) -> Self {
        self.user_groups = strings(groups);
        self
    }

    /// These verbs.
    pub fn verbs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, verbs: I) -> Self {
        self.verbs = strings(verbs);
        self
    }

    /// In these API groups.
    pub fn api_groups<I: IntoIterator<Item = S>, S: Into<String>>(mut self, groups: I) -> Self {
        self.api_groups = strings(groups);
        self
    }

    /// On these resources.
    pub fn resources<I: IntoIterator<Item = S>, S: Into<String>>(mut self, resources: I) -> Self {
        self.resources = strings(resources);
        self
    }

    /// In these namespaces.
    pub fn namespaces<I: IntoIterator<Item = S>, S: Into<String>>(mut self, namespaces: I) -> Self {
        self.namespaces = strings(namespaces);
        self
    }

    /// On these non-resource paths.
    pub fn paths<I: IntoIterator<Item = S>, S: Into<String>>(mut self, paths: I) -> Self {
        self.paths = strings(paths);
        self
    }

    /// Whether this rule grants `attributes`.
    pub fn allows(&self, attributes: &Attributes) -> bool {
        let user = &attributes.user;
        let subject = matches(&self.users, &user.name)
            || user.groups.iter().any(|g| matches(&self.user_groups, g));
        if !subject || !matches(&self.verbs, &attributes.verb) {
            return false;
        }
        match &attributes.resource {
            None => self
                .paths
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => attributes.path.starts_with(prefix),
                    None => attributes.path == *pattern,
                }),
            Some(r) => {
                let namespace_ok = match &r.namespace {
                    Some(ns) => matches(&self.namespaces, ns),
                    None => self.namespaces.iter().any(|n| n == "*"),
                };
                namespace_ok
                    && matches(&self.api_groups, &r.group)
                    && self.resources.iter().any(|pattern| {
                        resource_matches(pattern, &r.resource, r.subresource.as_deref())
                    })
            }
        }
    }
}

fn resource_matches(pattern: &str, resource: &str, subresource: Option<&str>) -> bool {
    if pattern == "*" {
        return true;
    }
    match (pattern.split_once('/'), subresource) {
        (None, None) => pattern == resource,
        (Some((r, s)), Some(sub)) => (r == "*" || r == resource) && (s == "*" || s == sub),
        _ => false,
    }
}

/// A fixed list of [`Rule`]s that denies whatever no rule grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticPolicy {
    rules: Vec<Rule>,
}

impl StaticPolicy {
    /// A policy of `rules`.
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Self {
        StaticPolicy {
            rules: rules.into_iter().collect(),
        }
    }

    /// Adds a rule.
    pub fn with(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

#[async_trait]
impl Authorizer for StaticPolicy {
    async fn authorize(&self, attributes: &Attributes) -> Decision {
        if self.rules.iter().any(|rule| rule.allows(attributes)) {
            Decision::Allow
        } else {
            Decision::Deny(String::new())
        }
    }

    /// The rules naming `user` (or one of its groups) whose namespaces hold `namespace`.
    async fn rules_for(&self, user: &UserInfo, namespace: &str) -> SubjectRulesReviewStatus {
        let mut status = SubjectRulesReviewStatus::default();
        for rule in &self.rules {
            let subject = matches(&rule.users, &user.name)
                || user.groups.iter().any(|g| matches(&rule.user_groups, g));
            if !subject || !matches(&rule.namespaces, namespace) {
                continue;
            }
            if !rule.resources.is_empty() {
                status.resource_rules.push(ResourceRule {
                    verbs: rule.verbs.clone(),
                    api_groups: Some(rule.api_groups.clone()),
                    resources: Some(rule.resources.clone()),
                    resource_names: None,
                });
            }
            if !rule.paths.is_empty() {
                status.non_resource_rules.push(NonResourceRule {
                    verbs: rule.verbs.clone(),
                    non_resource_urls: Some(rule.paths.clone()),
                });
            }
        }
        status
    }
}

/// Authorizes every request with an [`Authorizer`]; a denial is 403 `Forbidden` with
/// [`Attributes::forbidden_message`].
///
/// The user is the [`UserInfo`] that [`AuthnLayer`](super::AuthnLayer) put in the request's
/// extensions (`system:anonymous` if there is none). Public paths
/// ([`is_public_path`]) are always allowed.
#[derive(Clone)]
pub struct AuthzLayer {
    authorizer: Arc<dyn Authorizer>,
}

impl std::fmt::Debug for AuthzLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzLayer").finish_non_exhaustive()
    }
}

impl AuthzLayer {
    /// Authorizes with `authorizer`.
    pub fn new(authorizer: Arc<dyn Authorizer>) -> Self {
        AuthzLayer { authorizer }
    }
}

impl<S> Layer<S> for AuthzLayer {
    type Service = Authz<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authz {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

/// The service of [`AuthzLayer`].
#[derive(Clone)]
pub struct Authz<S> {
    inner: S,
    authorizer: Arc<dyn Authorizer>,
}

impl<S> Service<Request> for Authz<S>
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
            if is_public_path(request.uri().path()) {
                return inner.call(request).await;
            }
            let info = RequestInfo::new(request.method(), request.uri());
            let attributes = Attributes {
                user: request
                    .extensions()
                    .get::<UserInfo>()
                    .cloned()
                    .unwrap_or_else(UserInfo::anonymous),
                verb: info.verb,
                resource: info.resource,
                path: info.path,
            };
            match authorizer.authorize(&attributes).await {
                Decision::Allow => inner.call(request).await,
                Decision::Deny(reason) => Ok(ApiError(Error::Forbidden {
                    message: attributes.forbidden_message(&reason),
                })
                .into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(user: &str, verb: &str, resource: &str, namespace: Option<&str>) -> Attributes {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (resource, None),
        };
        Attributes {
            user: UserInfo::new(user, ["devs"]),
            verb: verb.into(),
            resource: Some(ResourceAttributes {
                group: String::new(),
                version: "v1".into(),
                resource: resource.into(),
                subresource,
                namespace: namespace.map(String::from),
                name: Some("web".into()),
            }),
            path: "/api/v1/...".into(),
        }
    }

    #[test]
    fn a_static_policy_denies_what_no_rule_grants() {
        let policy = StaticPolicy::new([
            Rule::new()
                .users(["alice"])
                .verbs(["get", "list"])
                .api_groups([""])
                .resources(["pods"])
                .namespaces(["default"]),
            Rule::new()
                .user_groups(["admins"])
                .verbs(["*"])
                .resources(["*"]),
        ]);
        let allows = |a: &Attributes| policy.rules().iter().any(|r| r.allows(a));
        assert!(allows(&attributes("alice", "get", "pods", Some("default"))));
        assert!(!allows(&attributes(
            "alice",
            "delete",
            "pods",
            Some("default")
        )));
        assert!(!allows(&attributes("alice", "get", "pods", Some("prod"))));
        assert!(!allows(&attributes("alice", "get", "pods", None)));
        assert!(!allows(&attributes(
            "alice",
            "get",
            "pods/status",
            Some("default")
        )));
        assert!(!allows(&attributes("bob", "get", "pods", Some("default"))));
        let mut admin = attributes("carol", "delete", "nodes/status", None);
        admin.user.groups.push("admins".into());
        assert!(allows(&admin));
        assert!(!StaticPolicy::default()
            .rules()
            .iter()
            .any(|r| r.allows(&admin)));
    }

    #[test]
    fn forbidden_messages_read_like_kubernetes() {
        let a = attributes("alice", "get", "pods", Some("default"));
        assert_eq!(
            a.forbidden_message(""),
            r#"pods "web" is forbidden: User "alice" cannot get resource "pods" in API group "" in the namespace "default""#
        );
        let mut b = attributes("bob", "list", "nodes", None);
        b.resource.as_mut().unwrap().name = None;
        b.resource.as_mut().unwrap().group = "apps".into();
        assert_eq!(
            b.forbidden_message("no rule"),
            r#"nodes.apps is forbidden: User "bob" cannot list resource "nodes" in API group "apps" at the cluster scope: no rule"#
        );
    }
}
