//! `authentication.k8s.io/v1`: TokenReview (is this bearer token valid, and whose is it) and
//! SelfSubjectReview (who am I), answered by the server's own authenticators.

use std::sync::Arc;

use capstan_api::k8s_openapi::api::authentication::v1::{
    TokenReviewStatus, UserInfo as ReviewedUser,
};
use capstan_api::Error;

use crate::http::layers::authn::AUTHENTICATED_GROUP;
use crate::http::layers::{Authenticator, UserInfo};

/// The group version of these reviews.
pub const API_VERSION: &str = "authentication.k8s.io/v1";

/// `user` as a review reports it.
pub fn reviewed_user(user: &UserInfo) -> ReviewedUser {
    ReviewedUser {
        username: Some(user.name.clone()),
        uid: user.uid.clone(),
        groups: Some(user.groups.clone()),
        extra: Some(user.extra.clone()).filter(|extra| !extra.is_empty()),
    }
}

/// Whether `token` authenticates with `authenticator`, and as whom (with
/// `system:authenticated` added, as for a request). `audiences` are echoed back as the
/// authenticated audiences: Capstan's tokens are not audience-bound.
///
/// Errors: 400 when `token` is empty, as kube-apiserver answers.
pub async fn review_token(
    authenticator: Option<&Arc<dyn Authenticator>>,
    token: &str,
    audiences: Option<Vec<String>>,
) -> Result<TokenReviewStatus, Error> {
    if token.is_empty() {
        return Err(Error::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let request = axum::http::Request::builder()
        .uri("/")
        .header(axum::http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .map_err(|_| Error::bad_request("the token cannot be sent in an Authorization header"))?;
    let (parts, ()) = request.into_parts();
    let outcome = match authenticator {
        Some(authenticator) => authenticator.authenticate(&parts).await,
        None => Ok(None),
    };
    Ok(match outcome {
        Ok(Some(mut user)) => {
            if !user.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                user.groups.push(AUTHENTICATED_GROUP.into());
            }
            TokenReviewStatus {
                authenticated: Some(true),
                user: Some(reviewed_user(&user)),
                audiences,
                error: None,
            }
        }
        // An unknown token is not an error of the review: it is simply not authenticated.
        Ok(None) | Err(Error::Unauthorized { .. }) => TokenReviewStatus {
            authenticated: Some(false),
            ..Default::default()
        },
        Err(error) => TokenReviewStatus {
            authenticated: Some(false),
            error: Some(error.to_string()),
            ..Default::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::layers::StaticTokens;

    fn tokens() -> Arc<dyn Authenticator> {
        Arc::new(StaticTokens::new().with("t1", UserInfo::new("alice", ["devs"])))
    }

    #[tokio::test]
    async fn a_known_token_reviews_as_its_user_in_the_authenticated_group() {
        let status = review_token(Some(&tokens()), "t1", None).await.unwrap();
        assert_eq!(status.authenticated, Some(true));
        let user = status.user.unwrap();
        assert_eq!(user.username.as_deref(), Some("alice"));
        assert_eq!(
            user.groups.unwrap(),
            vec!["devs".to_string(), AUTHENTICATED_GROUP.to_string()]
        );
    }

    #[tokio::test]
    async fn an_unknown_token_is_not_authenticated_and_an_empty_one_is_refused() {
        let status = review_token(Some(&tokens()), "nope", None).await.unwrap();
        assert_eq!(status.authenticated, Some(false));
        assert!(status.user.is_none() && status.error.is_none());
        let none = review_token(None, "t1", None).await.unwrap();
        assert_eq!(none.authenticated, Some(false));
        let empty = review_token(Some(&tokens()), "", None).await.unwrap_err();
        assert_eq!(empty.code(), 400);
    }
}
