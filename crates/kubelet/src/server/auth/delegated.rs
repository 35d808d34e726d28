//! Authentication and authorization delegated to the API server: `TokenReview`
//! (`authentication.k8s.io/v1`) and `SubjectAccessReview` (`authorization.k8s.io/v1`), created
//! through the kubelet's own client, with answers cached as the kubelet caches its webhooks.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::authentication::v1::TokenReview;
use capstan_api::k8s_openapi::api::authorization::v1::SubjectAccessReview;
use capstan_api::kube_core::params::PostParams;
use capstan_api::{Api, Client};
use parking_lot::Mutex;

use super::{Attributes, AuthError, KubeletAuthenticator, KubeletAuthorizer, User};

/// How long review answers are reused. The defaults are the kubelet's:
/// `authentication.webhook.cacheTTL` 2 min (for valid and invalid tokens alike),
/// `authorization.webhook.cacheAuthorizedTTL` 5 min and `cacheUnauthorizedTTL` 30 s.
/// A zero duration disables that cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTtls {
    /// How long a token's answer is reused.
    pub authentication: Duration,
    /// How long an "allowed" is reused.
    pub authorized: Duration,
    /// How long a "denied" is reused.
    pub unauthorized: Duration,
}

impl Default for CacheTtls {
    fn default() -> Self {
        CacheTtls {
            authentication: Duration::from_secs(120),
            authorized: Duration::from_secs(300),
            unauthorized: Duration::from_secs(30),
        }
    }
}

/// Entries expire after their time to live; the map is swept when it grows.
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

/// Past this many entries, expired ones are dropped on insert.
const SWEEP_AT: usize = 4096;

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    fn new() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock();
        let (value, expires) = entries.get(key)?;
        (Instant::now() < *expires).then(|| value.clone())
    }

    fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, (_, expires)| *expires > now);
        }
        entries.insert(key, (value, now + ttl));
    }
}

/// Asks the API server who a token is and what a user may do, through `client` (the
/// kubelet's own identity must be allowed to create `tokenreviews` and
/// `subjectaccessreviews`). Implements both [`KubeletAuthenticator`] and
/// [`KubeletAuthorizer`]; answers are cached for [`CacheTtls`], errors are not.
pub struct DelegatedAuth {
    tokens: Api<TokenReview>,
    reviews: Api<SubjectAccessReview>,
    ttls: CacheTtls,
    authenticated: TtlCache<String, Option<User>>,
    authorized: TtlCache<(User, Attributes), bool>,
}

impl std::fmt::Debug for DelegatedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedAuth")
            .field("ttls", &self.ttls)
            .finish_non_exhaustive()
    }
}

impl DelegatedAuth {
    /// Reviews through `client`, cached for `ttls`.
    pub fn new(client: Arc<dyn Client>, ttls: CacheTtls) -> Self {
        DelegatedAuth {
            tokens: Api::all(client.clone()),
            reviews: Api::all(client),
            ttls,
            authenticated: TtlCache::new(),
            authorized: TtlCache::new(),
        }
    }
}

#[async_trait]
impl KubeletAuthenticator for DelegatedAuth {
    async fn authenticate(&self, token: &str) -> Result<Option<User>, AuthError> {
        if let Some(cached) = self.authenticated.get(&token.to_string()) {
            return Ok(cached);
        }
        // Built and read as JSON: the field types differ between Kubernetes versions.
        let review: TokenReview = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {},
            "spec": {"token": token},
        }))
        .map_err(|e| AuthError::Review(e.to_string()))?;
        let answered = self
            .tokens
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AuthError::Api {
                kind: "TokenReview",
                source,
            })?;
        let answered = serde_json::to_value(&answered).unwrap_or_default();
        let status = &answered["status"];
        let user = (status["authenticated"] == true).then(|| {
            let info = &status["user"];
            User {
                name: info["username"].as_str().unwrap_or_default().to_string(),
                uid: info["uid"].as_str().unwrap_or_default().to_string(),
                groups: serde_json::from_value(info["groups"].clone()).unwrap_or_default(),
                extra: serde_json::from_value(info["extra"].clone()).unwrap_or_default(),
            }
        });
        self.authenticated
            .insert(token.to_string(), user.clone(), self.ttls.authentication);
        Ok(user)
    }
}

#[async_trait]
impl KubeletAuthorizer for DelegatedAuth {
    async fn authorize(&self, user: &User, attributes: &Attributes) -> Result<bool, AuthError> {
        let key = (user.clone(), attributes.clone());
        if let Some(cached) = self.authorized.get(&key) {
            return Ok(cached);
        }
        let review = subject_access_review(user, attributes)?;
        let answered = self
            .reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AuthError::Api {
                kind: "SubjectAccessReview",
                source,
            })?;
        let answered = serde_json::to_value(&answered).unwrap_or_default();
        let status = &answered["status"];
        let allowed = status["allowed"] == true;
        let error = status["evaluationError"].as_str().unwrap_or_default();
        if !allowed && !error.is_empty() && status["denied"] != true {
            // The reviewer could not decide: an error, not a cached denial.
            return Err(AuthError::Review(error.to_string()));
        }
        let ttl = if allowed {
            self.ttls.authorized
        } else {
            self.ttls.unauthorized
        };
        self.authorized.insert(key, allowed, ttl);
        Ok(allowed)
    }
}

/// The review of `user` doing `attributes`, as the kubelet's webhook authorizer sends it.
fn subject_access_review(
    user: &User,
    attributes: &Attributes,
) -> Result<SubjectAccessReview, AuthError> {
    let mut spec = serde_json::json!({
        "user": user.name,
        "resourceAttributes": {
            "verb": attributes.verb,
            "version": "v1",
            "group": "",
            "resource": attributes.resource,
            "subresource": attributes.subresource,
            "name": attributes.name,
        },
    });
    if !user.uid.is_empty() {
        spec["uid"] = user.uid.clone().into();
    }
    if !user.groups.is_empty() {
        spec["groups"] = serde_json::json!(user.groups);
    }
    if !user.extra.is_empty() {
        spec["extra"] = serde_json::json!(user.extra);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "metadata": {},
        "spec": spec,
    }))
    .map_err(|e| AuthError::Review(e.to_string()))
}

#[cfg(test)]
mod tests;
