//! Service account tokens over HTTP: `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`
//! (TokenRequest), the token authenticator, and the issuer's OpenID discovery documents
//! (`/.well-known/openid-configuration`, `/openid/v1/jwks`).
//!
//! The handlers find the server's [`ServiceAccountTokens`] in a request extension, which
//! [`ApiServerOptions::apply`](crate::http::layers::ApiServerOptions::apply) adds when
//! `ApiServerOptions::service_account_tokens` is set. Without it the token subresource is 405
//! and the discovery documents 404, as on a server with no issuer.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use capstan_api::Error;
use serde_json::{json, Value};

use crate::http::layers::authn::{bearer_token, unauthorized};
use crate::http::layers::{Authenticator, UserInfo};
use crate::http::status::ApiError;
use crate::protobuf;
use crate::serviceaccount::ServiceAccountTokens;

/// The routes, for any router state.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            post(token_request).fallback(not_allowed),
        )
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/openid/v1/jwks", get(jwks))
}

async fn not_allowed(request: Request) -> Response {
    ApiError(Error::MethodNotAllowed {
        message: format!(
            "the server does not allow this method on the requested resource: {} {}",
            request.method(),
            request.uri().path()
        ),
    })
    .into_response()
}

fn tokens_of(parts: &Parts) -> Option<Arc<ServiceAccountTokens>> {
    parts.extensions.get::<Arc<ServiceAccountTokens>>().cloned()
}

/// The TokenRequest body as JSON: JSON as sent, or protobuf read as
/// `k8s.io.api.authentication.v1.TokenRequest`.
fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Value, Error> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if content_type.starts_with(protobuf::MEDIA_TYPE) {
        return protobuf::decode_options(
            body,
            "k8s.io.api.authentication.v1.TokenRequest",
            "TokenRequest",
        );
    }
    if !content_type.starts_with("application/json") {
        return Err(Error::UnsupportedMediaType {
            message: format!("the body of a TokenRequest cannot be {content_type}"),
        });
    }
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("the body is not valid JSON: {e}")))
}

async fn token_request(
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let Some(tokens) = tokens_of(&parts) else {
        return not_allowed(Request::from_parts(parts, axum::body::Body::empty())).await;
    };
    let outcome = async {
        // The body limit layer bounds what arrives here.
        let body: Bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|e| Error::bad_request(format!("reading the body: {e}")))?;
        let request = decode(&parts.headers, &body)?;
        tokens.create_token(&namespace, &name, request).await
    }
    .await;
    match outcome {
        Ok(answer) => (StatusCode::CREATED, Json(answer)).into_response(),
        Err(error) => ApiError(error).into_response(),
    }
}

fn not_found(path: &str) -> Response {
    ApiError(Error::NotFound {
        resource: path.to_string(),
        name: String::new(),
    })
    .into_response()
}

/// The OpenID provider configuration of the service account issuer, as kube-apiserver
/// serves it: the issuer, the JWKS at this server's `/openid/v1/jwks`, and the algorithms.
async fn openid_configuration(request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let Some(tokens) = tokens_of(&parts) else {
        return not_found(parts.uri.path());
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let issuer = tokens.issuer();
    let algorithms: Vec<String> = issuer
        .keys()
        .jwks()
        .keys
        .iter()
        .filter_map(|key| key.common.key_algorithm.map(|a| a.to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Json(json!({
        "issuer": issuer.issuer_url(),
        "jwks_uri": format!("https://{host}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
    }))
    .into_response()
}

/// The issuer's public keys as a JSON Web Key Set.
async fn jwks(request: Request) -> Response {
    let (parts, _) = request.into_parts();
    match tokens_of(&parts) {
        Some(tokens) => {
            let mut response = Json(tokens.issuer().keys().jwks()).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/jwk-set+json"),
            );
            response
        }
        None => not_found(parts.uri.path()),
    }
}

/// Kubernetes' service account token authenticator: a bearer JWT of this issuer names its
/// service account (`system:serviceaccount:<ns>:<name>`, uid the account's, groups
/// `system:serviceaccounts` and `system:serviceaccounts:<ns>`, extra the bound Pod and Node and
/// `credential-id`); one that fails any check is 401. Any other bearer token is refused too
/// (401, as Kubernetes' bearer token authenticator answers an unknown token), which in an
/// [`Authenticators`](crate::http::layers::Authenticators) union only counts when no other
/// authenticator knows it; a request without a bearer token is left to the others.
#[async_trait]
impl Authenticator for ServiceAccountTokens {
    async fn authenticate(&self, parts: &Parts) -> Result<Option<UserInfo>, Error> {
        let Some(token) = bearer_token(parts) else {
            return Ok(None);
        };
        match self.authenticate_at(token, SystemTime::now()).await {
            Ok(Some(user)) => Ok(Some(UserInfo {
                name: user.name,
                uid: Some(user.uid),
                groups: user.groups,
                extra: user.extra,
            })),
            // Kubernetes' bearer token rule: a token no authenticator knows is 401, never
            // anonymous; the union still asks the other authenticators first.
            Ok(None) => Err(unauthorized()),
            Err(error) => {
                tracing::debug!("service account token refused: {error}");
                Err(unauthorized())
            }
        }
    }
}
