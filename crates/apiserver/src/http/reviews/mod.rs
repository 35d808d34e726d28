//! The review APIs: create-only virtual resources that are answered, never stored.
//!
//! - `authorization.k8s.io/v1`: `selfsubjectaccessreviews`, `subjectaccessreviews`,
//!   `namespaces/<ns>/localsubjectaccessreviews` and `selfsubjectrulesreviews`, decided by
//!   the server's [`Authorizer`] (see [`authorization`]).
//! - `authentication.k8s.io/v1`: `tokenreviews` and `selfsubjectreviews`, answered by the
//!   server's [`Authenticator`] (see [`authentication`]).
//!
//! The handlers find the requesting user where [`AuthnLayer`](crate::http::layers::AuthnLayer)
//! left it (the request's [`UserInfo`] extension; anonymous without one), and the server's
//! authorizer and authenticator in a [`ReviewBackends`] extension, which
//! [`ApiServerOptions::apply`](crate::http::layers::ApiServerOptions::apply) adds to every
//! request. Without it (a bare [`router`](crate::http::router)) reviews are decided by
//! [`AllowAll`] and no token authenticates. Bodies are JSON, or protobuf as kubectl's typed
//! clients send them ([`crate::protobuf`]); answers are JSON, `201 Created` as kube-apiserver's.

pub mod authentication;
pub mod authorization;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::{Json, Router};
use capstan_api::k8s_openapi::api::authentication::v1::{
    SelfSubjectReview, SelfSubjectReviewStatus, TokenReview,
};
use capstan_api::k8s_openapi::api::authorization::v1::{
    LocalSubjectAccessReview, SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
};
use capstan_api::Error;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::protobuf;

use crate::http::layers::{AllowAll, Authenticator, Authorizer, UserInfo};
use crate::http::status::ApiError;

/// The server's authorizer and authenticator, as the review handlers use them. Put in every
/// request's extensions by `ApiServerOptions::apply`.
#[derive(Clone)]
pub struct ReviewBackends {
    /// What the server authorizes requests with.
    pub authorizer: Arc<dyn Authorizer>,
    /// What the server authenticates requests with (`None`: nobody has credentials).
    pub authenticator: Option<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for ReviewBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewBackends")
            .field("authenticator", &self.authenticator.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for ReviewBackends {
    /// Everything allowed, nobody authenticated: the bare router's server.
    fn default() -> Self {
        ReviewBackends {
            authorizer: Arc::new(AllowAll),
            authenticator: None,
        }
    }
}

/// The routes of the review APIs, for any router state. Every other method on their paths
/// is 405 `MethodNotAllowed`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    const AUTHZ: &str = "/apis/authorization.k8s.io/v1";
    const AUTHN: &str = "/apis/authentication.k8s.io/v1";
    Router::new()
        .route(
            &format!("{AUTHZ}/selfsubjectaccessreviews"),
            create_only(post(self_subject_access_review)),
        )
        .route(
            &format!("{AUTHZ}/subjectaccessreviews"),
            create_only(post(subject_access_review)),
        )
        .route(
            &format!("{AUTHZ}/namespaces/{{namespace}}/localsubjectaccessreviews"),
            create_only(post(local_subject_access_review)),
        )
        .route(
            &format!("{AUTHZ}/selfsubjectrulesreviews"),
            create_only(post(self_subject_rules_review)),
        )
        .route(
            &format!("{AUTHN}/tokenreviews"),
            create_only(post(token_review)),
        )
        .route(
            &format!("{AUTHN}/selfsubjectreviews"),
            create_only(post(self_subject_review)),
        )
}

fn create_only<S: Clone + Send + Sync + 'static>(route: MethodRouter<S>) -> MethodRouter<S> {
    route.fallback(|request: Request| async move {
        ApiError(Error::MethodNotAllowed {
            message: format!(
                "the server does not allow this method on the requested resource: {} {}",
                request.method(),
                request.uri().path()
            ),
        })
        .into_response()
    })
}

/// What a review handler reads from its request.
struct Review {
    user: UserInfo,
    backends: ReviewBackends,
    headers: HeaderMap,
    body: Bytes,
}

impl Review {
    async fn read(request: Request) -> Result<Review, Error> {
        let (parts, body) = request.into_parts();
        // The body limit layer bounds what arrives here.
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|e| Error::bad_request(format!("reading the body: {e}")))?;
        Ok(Review {
            user: parts
                .extensions
                .get::<UserInfo>()
                .cloned()
                .unwrap_or_else(UserInfo::anonymous),
            backends: parts
                .extensions
                .get::<ReviewBackends>()
                .cloned()
                .unwrap_or_default(),
            headers: parts.headers,
            body,
        })
    }

    /// The body as a `T` of `kind`: JSON, or protobuf read as `kind`'s message of
    /// `api_version` (from the crate's protobuf message table).
    fn decode<T: DeserializeOwned>(&self, api_version: &str, kind: &str) -> Result<T, Error> {
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        let value: Value = if content_type.starts_with(protobuf::MEDIA_TYPE) {
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let message = format!(
                "k8s.io.api.{}.{version}.{kind}",
                group.trim_end_matches(".k8s.io")
            );
            let mut value = protobuf::decode_options(&self.body, &message, kind)?;
            if let Value::Object(object) = &mut value {
                object.insert("apiVersion".into(), Value::String(api_version.into()));
                object.insert("kind".into(), Value::String(kind.into()));
            }
            value
        } else if content_type.starts_with("application/json") {
            serde_json::from_slice(&self.body)
                .map_err(|e| Error::bad_request(format!("the body is not valid JSON: {e}")))?
        } else {
            return Err(Error::UnsupportedMediaType {
                message: format!("the body of a {kind} cannot be {content_type}"),
            });
        };
        if let Some(sent) = value.get("kind").and_then(Value::as_str) {
            if !sent.is_empty() && sent != kind {
                return Err(Error::bad_request(format!(
                    "the body is a {sent}, not a {kind}"
                )));
            }
        }
        serde_json::from_value(value)
            .map_err(|e| Error::bad_request(format!("the body is not a valid {kind}: {e}")))
    }
}

fn created<T: serde::Serialize>(object: &T) -> Response {
    (StatusCode::CREATED, Json(object)).into_response()
}

fn answer(outcome: Result<Response, Error>) -> Response {
    outcome.unwrap_or_else(|error| ApiError(error).into_response())
}

async fn self_subject_access_review(request: Request) -> Response {
    answer(
        async {
            let review = Review::read(request).await?;
            let mut object: SelfSubjectAccessReview =
                review.decode(authorization::API_VERSION, "SelfSubjectAccessReview")?;
            let spec = &object.spec;
            let mut causes = Vec::new();
            authorization::check_exactly_one(
                spec.resource_attributes.as_ref(),
                spec.non_resource_attributes.as_ref(),
                &mut causes,
            );
            if !causes.is_empty() {
                return Err(authorization::invalid("SelfSubjectAccessReview", causes));
            }
            let attributes = authorization::attributes_of(
                review.user,
                spec.resource_attributes.as_ref(),
                spec.non_resource_attributes.as_ref(),
            );
            object.status =
                Some(authorization::decide(&*review.backends.authorizer, &attributes).await);
            Ok(created(&object))
        }
        .await,
    )
}

/// Checks a SubjectAccessReview's or LocalSubjectAccessReview's spec as Kubernetes does.
fn check_subject_spec(
    kind: &str,
    spec: &capstan_api::k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec,
) -> Result<(), Error> {
    let mut causes = Vec::new();
    if kind == "LocalSubjectAccessReview" && spec.non_resource_attributes.is_some() {
        causes.push(capstan_api::FieldError::invalid(
            "spec.nonResourceAttributes",
            Value::Null,
            "disallowed on this kind of request",
        ));
    } else {
        authorization::check_exactly_one(
            spec.resource_attributes.as_ref(),
            spec.non_resource_attributes.as_ref(),
            &mut causes,
        );
    }
    let no_user = spec.user.as_deref().unwrap_or_default().is_empty();
    if no_user && spec.groups.as_deref().unwrap_or_default().is_empty() {
        causes.push(capstan_api::FieldError::invalid(
            "spec.user",
            "",
            "at least one of user or group must be specified",
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(authorization::invalid(kind, causes))
    }
}

/// The user a SubjectAccessReview's spec names.
fn subject_of(
    spec: &capstan_api::k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec,
) -> UserInfo {
    UserInfo {
        name: spec.user.clone().unwrap_or_default(),
        uid: spec.uid.clone().filter(|uid| !uid.is_empty()),
        groups: spec.groups.clone().unwrap_or_default(),
        extra: spec.extra.clone().unwrap_or_default(),
    }
}

async fn subject_access_review(request: Request) -> Response {
    answer(
        async {
            let review = Review::read(request).await?;
            let mut object: SubjectAccessReview =
                review.decode(authorization::API_VERSION, "SubjectAccessReview")?;
            check_subject_spec("SubjectAccessReview", &object.spec)?;
            let spec = &object.spec;
            let attributes = authorization::attributes_of(
                subject_of(spec),
                spec.resource_attributes.as_ref(),
                spec.non_resource_attributes.as_ref(),
            );
            object.status =
                Some(authorization::decide(&*review.backends.authorizer, &attributes).await);
            Ok(created(&object))
        }
        .await,
    )
}

async fn local_subject_access_review(Path(namespace): Path<String>, request: Request) -> Response {
    answer(
        async {
            let review = Review::read(request).await?;
            let mut object: LocalSubjectAccessReview =
                review.decode(authorization::API_VERSION, "LocalSubjectAccessReview")?;
            match object.metadata.namespace.as_deref() {
                None | Some("") => object.metadata.namespace = Some(namespace.clone()),
                Some(sent) if sent != namespace => {
                    return Err(Error::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                Some(_) => {}
            }
            check_subject_spec("LocalSubjectAccessReview", &object.spec)?;
            if let Some(resource) = object.spec.resource_attributes.as_mut() {
                match resource.namespace.as_deref() {
                    None | Some("") => resource.namespace = Some(namespace.clone()),
                    Some(sent) if sent != namespace => {
                        return Err(Error::bad_request(format!(
                            "spec.resourceAttributes.namespace must match namespace: {namespace}"
                        )))
                    }
                    Some(_) => {}
                }
            }
            let spec = &object.spec;
            let attributes = authorization::attributes_of(
                subject_of(spec),
                spec.resource_attributes.as_ref(),
                spec.non_resource_attributes.as_ref(),
            );
            object.status =
                Some(authorization::decide(&*review.backends.authorizer, &attributes).await);
            Ok(created(&object))
        }
        .await,
    )
}

async fn self_subject_rules_review(request: Request) -> Response {
    answer(
        async {
            let review = Review::read(request).await?;
            let mut object: SelfSubjectRulesReview =
                review.decode(authorization::API_VERSION, "SelfSubjectRulesReview")?;
            let namespace = object.spec.namespace.clone().unwrap_or_default();
            if namespace.is_empty() {
                return Err(Error::bad_request("no namespace on request"));
            }
            object.status = Some(
                review
                    .backends
                    .authorizer
                    .rules_for(&review.user, &namespace)
                    .await,
            );
            Ok(created(&object))
        }
        .await,
    )
}

async fn token_review(request: Request) -> Response {
    answer(
        async {
            let review = Review::read(request).await?;
            let mut object: TokenReview =
                review.decode(authentication::API_VERSION, "TokenReview")?;
            // Read through JSON: the field's optionality differs between Kubernetes versions.
            let spec = serde_json::to_value(&object.spec).unwrap_or_default();
            let token = spec["token"].as_str().unwrap_or_default().to_string();
            let audiences = object.spec.audiences.clone();
            object.status = Some(
                authentication::review_token(
                    review.backends.authenticator.as_ref(),
                    &token,
                    audiences,
                )
                .await?,
            );
            Ok(created(&object))
        }
        .await,
    )
}

async fn self_subject_review(request: Request) -> Response {
    answer(
        async {
            let review = Review::read(request).await?;
            let mut object: SelfSubjectReview =
                review.decode(authentication::API_VERSION, "SelfSubjectReview")?;
            object.status = Some(SelfSubjectReviewStatus {
                user_info: Some(authentication::reviewed_user(&review.user)),
            });
            Ok(created(&object))
        }
        .await,
    )
}
