//! `authorization.k8s.io/v1`: SelfSubjectAccessReview, SubjectAccessReview,
//! LocalSubjectAccessReview and SelfSubjectRulesReview, answered by the server's authorizer.
//!
//! Each is validated as Kubernetes validates it (422 naming the field), then its attributes
//! are asked of the configured [`Authorizer`] exactly as a request with those attributes
//! would be. A denial reports `allowed: false` and no `denied` or `reason`: Capstan's
//! authorizers, like kube-apiserver's RBAC, deny by having no rule that allows. Failures to
//! evaluate (an unsynced RBAC cache, a missing role) are reported as `evaluationError`.

use capstan_api::k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes as ReviewedResource, SubjectAccessReviewStatus,
};
use capstan_api::{Error, FieldError};

use crate::http::layers::{Attributes, Authorizer, Decision, ResourceAttributes, UserInfo};

/// The group version of these reviews.
pub const API_VERSION: &str = "authorization.k8s.io/v1";

/// The 422 of an invalid review of `kind`.
pub fn invalid(kind: &str, causes: Vec<FieldError>) -> Error {
    Error::Invalid {
        kind: format!("{kind}.authorization.k8s.io"),
        name: String::new(),
        causes,
    }
}

/// Kubernetes' check that a spec names exactly one of its resource and non-resource
/// attributes.
pub fn check_exactly_one(
    resource: Option<&ReviewedResource>,
    non_resource: Option<&NonResourceAttributes>,
    causes: &mut Vec<FieldError>,
) {
    match (resource, non_resource) {
        (Some(_), Some(_)) => causes.push(FieldError::invalid(
            "spec.nonResourceAttributes",
            serde_json::Value::Null,
            "cannot be specified in combination with resourceAttributes",
        )),
        (None, None) => causes.push(FieldError::invalid(
            "spec.resourceAttributes",
            serde_json::Value::Null,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
        _ => {}
    }
}

/// The [`Attributes`] a review asks about for `user`: a resource request (empty strings
/// mean none: all namespaces, every name, no subresource) or a non-resource one.
pub fn attributes_of(
    user: UserInfo,
    resource: Option<&ReviewedResource>,
    non_resource: Option<&NonResourceAttributes>,
) -> Attributes {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let some = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
    match (resource, non_resource) {
        (Some(r), _) => {
            let attributes = ResourceAttributes {
                group: text(&r.group),
                version: text(&r.version),
                resource: text(&r.resource),
                subresource: some(&r.subresource),
                namespace: some(&r.namespace),
                name: some(&r.name),
            };
            Attributes {
                user,
                verb: text(&r.verb),
                path: resource_path(&attributes),
                resource: Some(attributes),
            }
        }
        (None, Some(n)) => Attributes {
            user,
            verb: text(&n.verb),
            resource: None,
            path: text(&n.path),
        },
        (None, None) => Attributes {
            user,
            verb: String::new(),
            resource: None,
            path: String::new(),
        },
    }
}

/// The URL path a request with these attributes would have.
fn resource_path(r: &ResourceAttributes) -> String {
    let mut path = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    if let Some(namespace) = &r.namespace {
        path.push_str(&format!("/namespaces/{namespace}"));
    }
    path.push('/');
    path.push_str(&r.resource);
    for part in [&r.name, &r.subresource].into_iter().flatten() {
        path.push('/');
        path.push_str(part);
    }
    path
}

/// What `authorizer` decides on `attributes`, as a review's status.
pub async fn decide(
    authorizer: &dyn Authorizer,
    attributes: &Attributes,
) -> SubjectAccessReviewStatus {
    match authorizer.authorize(attributes).await {
        Decision::Allow => SubjectAccessReviewStatus {
            allowed: true,
            ..Default::default()
        },
        // kube-apiserver's RBAC has no opinion rather than a reason when nothing allows, so
        // the review says only `allowed: false` (kubectl prints a bare `no`); a denial
        // caused by a failure (an unsynced cache, a missing role) is the evaluation error.
        Decision::Deny(reason) => SubjectAccessReviewStatus {
            allowed: false,
            evaluation_error: Some(reason).filter(|r| is_evaluation_error(r)),
            ..Default::default()
        },
    }
}

/// Whether a denial's reason reports a failure to evaluate rather than a missing grant.
fn is_evaluation_error(reason: &str) -> bool {
    reason.contains("not yet synced") || reason.contains("not found")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::layers::{Rule, StaticPolicy};

    fn pods(verb: &str, namespace: &str) -> ReviewedResource {
        ReviewedResource {
            verb: Some(verb.into()),
            resource: Some("pods".into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        }
    }

    #[test]
    fn empty_review_fields_mean_all_namespaces_and_names() {
        let mut resource = pods("list", "");
        resource.name = Some(String::new());
        let attributes = attributes_of(UserInfo::new("alice", ["devs"]), Some(&resource), None);
        let r = attributes.resource.unwrap();
        assert_eq!((r.namespace, r.name, r.subresource), (None, None, None));
        assert_eq!(attributes.verb, "list");
    }

    #[test]
    fn a_spec_must_name_exactly_one_kind_of_attributes() {
        let mut causes = Vec::new();
        check_exactly_one(None, None, &mut causes);
        assert_eq!(causes[0].field, "spec.resourceAttributes");
        causes.clear();
        let non_resource = NonResourceAttributes::default();
        check_exactly_one(Some(&pods("get", "a")), Some(&non_resource), &mut causes);
        assert_eq!(causes[0].field, "spec.nonResourceAttributes");
    }

    #[tokio::test]
    async fn the_authorizer_decides_a_review_as_it_would_the_request() {
        let policy = StaticPolicy::new([Rule::new()
            .users(["alice"])
            .verbs(["get"])
            .api_groups([""])
            .resources(["pods"])
            .namespaces(["default"])]);
        let alice = || UserInfo::new("alice", Vec::<String>::new());
        let allowed = attributes_of(alice(), Some(&pods("get", "default")), None);
        assert!(decide(&policy, &allowed).await.allowed);
        let denied = attributes_of(alice(), Some(&pods("delete", "default")), None);
        let status = decide(&policy, &denied).await;
        assert!(!status.allowed);
        assert_eq!(status.denied, None);
    }

    #[test]
    fn a_resource_review_names_the_path_its_request_would_have() {
        let mut resource = pods("get", "team");
        resource.group = Some("apps".into());
        resource.version = Some("v1".into());
        resource.resource = Some("deployments".into());
        resource.name = Some("web".into());
        resource.subresource = Some("scale".into());
        let attributes = attributes_of(UserInfo::default(), Some(&resource), None);
        assert_eq!(
            attributes.path,
            "/apis/apps/v1/namespaces/team/deployments/web/scale"
        );
    }
}
