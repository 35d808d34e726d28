//! Service account token claims, issuing and verifying, as Kubernetes' `pkg/serviceaccount`
//! (`claims.go`, `jwt.go`) lays them out.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::ServiceAccountKeys;
use super::TokenError;

/// The prefix of a service account's user name: `system:serviceaccount:<ns>:<name>`.
pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";
/// The group of every service account.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

/// The issuer and audience kube-apiserver's defaults give: its in-cluster URL.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The `UserInfo` extra keys a bound token adds, as Kubernetes names them.
pub mod extra {
    /// The bound Pod's name.
    pub const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
    /// The bound Pod's uid.
    pub const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
    /// The bound (or the bound Pod's) Node's name.
    pub const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
    /// The bound (or the bound Pod's) Node's uid.
    pub const NODE_UID: &str = "authentication.kubernetes.io/node-uid";
    /// The token's id: `JTI=<jti>`.
    pub const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
}

/// A name and uid inside the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectRef {
    /// The object's name.
    pub name: String,
    /// The object's uid.
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KubernetesClaims {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub serviceaccount: ObjectRef,
    /// The Pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The Secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The Node the token (or its Pod) is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// Every claim of a service account token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry, in seconds since the epoch.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// The issuer.
    pub iss: String,
    /// The token's unique id.
    pub jti: String,
    /// Kubernetes' own claims.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
    /// Not before.
    pub nbf: u64,
    /// `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
}

impl TokenClaims {
    /// The claims of a token for the service account `namespace/name` (uid `uid`), bound to
    /// `pod`/`secret`/`node` when given, for `audiences`, valid from `now` for `lifetime`,
    /// with a fresh `jti`. `iss` is the issuer's, set when signed.
    pub fn new(
        namespace: &str,
        service_account: ObjectRef,
        audiences: Vec<String>,
        now: SystemTime,
        lifetime: Duration,
    ) -> Self {
        let now = seconds(now);
        TokenClaims {
            aud: audiences,
            exp: now + lifetime.as_secs(),
            iat: now,
            iss: String::new(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaims {
                namespace: namespace.to_string(),
                serviceaccount: service_account.clone(),
                ..KubernetesClaims::default()
            },
            nbf: now,
            sub: format!(
                "{SERVICE_ACCOUNT_USER_PREFIX}{namespace}:{}",
                service_account.name
            ),
        }
    }

    /// The user name: `system:serviceaccount:<ns>:<name>`.
    pub fn user_name(&self) -> String {
        format!(
            "{SERVICE_ACCOUNT_USER_PREFIX}{}:{}",
            self.kubernetes.namespace, self.kubernetes.serviceaccount.name
        )
    }

    /// The groups Kubernetes puts a service account in: `system:serviceaccounts` and
    /// `system:serviceaccounts:<ns>` (the authentication layer adds `system:authenticated`).
    pub fn groups(&self) -> Vec<String> {
        vec![
            SERVICE_ACCOUNTS_GROUP.to_string(),
            format!("{SERVICE_ACCOUNTS_GROUP}:{}", self.kubernetes.namespace),
        ]
    }

    /// The user's extra attributes, as Kubernetes' service account authenticator gives them:
    /// the bound pod's and node's names and uids, and the credential id `JTI=<jti>`.
    pub fn extra(&self) -> BTreeMap<String, Vec<String>> {
        let mut extra = BTreeMap::new();
        if let Some(pod) = &self.kubernetes.pod {
            extra.insert(extra::POD_NAME.to_string(), vec![pod.name.clone()]);
            extra.insert(extra::POD_UID.to_string(), vec![pod.uid.clone()]);
        }
        if let Some(node) = &self.kubernetes.node {
            extra.insert(extra::NODE_NAME.to_string(), vec![node.name.clone()]);
            if !node.uid.is_empty() {
                extra.insert(extra::NODE_UID.to_string(), vec![node.uid.clone()]);
            }
        }
        if !self.jti.is_empty() {
            extra.insert(
                extra::CREDENTIAL_ID.to_string(),
                vec![format!("JTI={}", self.jti)],
            );
        }
        extra
    }
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Signs and verifies service account tokens: kube-apiserver's token generator and the
/// signature half of its service account authenticator.
///
/// `issuer` is `--service-account-issuer` (the `iss` of new tokens; the first of
/// [`accepted_issuers`](Self::accepted_issuers)); `audiences` is `--api-audiences` (what a
/// TokenRequest without audiences gets, and what the authenticator accepts; by default the
/// issuer); `max_expiration` is `--service-account-max-token-expiration` (longer requests
/// are shortened to it).
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    keys: ServiceAccountKeys,
    issuer: String,
    accepted_issuers: Vec<String>,
    audiences: Vec<String>,
    max_expiration: Option<Duration>,
}

impl TokenIssuer {
    /// An issuer named [`DEFAULT_ISSUER`] whose audience is the same URL, signing with `keys`,
    /// with no maximum expiration.
    pub fn new(keys: ServiceAccountKeys) -> Self {
        TokenIssuer {
            keys,
            issuer: DEFAULT_ISSUER.to_string(),
            accepted_issuers: vec![DEFAULT_ISSUER.to_string()],
            audiences: vec![DEFAULT_ISSUER.to_string()],
            max_expiration: None,
        }
    }

    /// Names the issuer (`iss`); tokens of that issuer are accepted. Sets the default
    /// audience to it too, as kube-apiserver does when `--api-audiences` is not given.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        let issuer = issuer.into();
        self.accepted_issuers = vec![issuer.clone()];
        self.audiences = vec![issuer.clone()];
        self.issuer = issuer;
        self
    }

    /// Also accepts tokens of `issuer` (an issuer the cluster had before).
    #[must_use]
    pub fn accept_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.accepted_issuers.push(issuer.into());
        self
    }

    /// The API audiences: a TokenRequest without audiences gets them, and the authenticator
    /// accepts only tokens for one of them.
    #[must_use]
    pub fn audiences(mut self, audiences: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// Shortens longer requested lifetimes to `max`.
    #[must_use]
    pub fn max_expiration(mut self, max: Duration) -> Self {
        self.max_expiration = Some(max);
        self
    }

    /// The `iss` of new tokens.
    pub fn issuer_url(&self) -> &str {
        &self.issuer
    }

    /// The API audiences.
    pub fn api_audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The accepted issuers.
    pub fn accepted_issuers(&self) -> &[String] {
        &self.accepted_issuers
    }

    /// The keys.
    pub fn keys(&self) -> &ServiceAccountKeys {
        &self.keys
    }

    /// The lifetime a request for `requested` gets: at most the maximum expiration.
    pub fn lifetime(&self, requested: Duration) -> Duration {
        match self.max_expiration {
            Some(max) if requested > max => max,
            _ => requested,
        }
    }

    /// Signs `claims` (setting `iss`) with the signing key, its `kid` in the header.
    ///
    /// Errors: [`TokenError::Signing`] when the key cannot sign (a corrupt key).
    pub fn sign(&self, mut claims: TokenClaims) -> Result<String, TokenError> {
        claims.iss = self.issuer.clone();
        let (kid, algorithm, key) = self.keys.encoding();
        let mut header = Header::new(algorithm);
        header.typ = None;
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, &claims, key).map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Whether `token` looks like one of ours (a JWT whose `iss` is an accepted issuer), so
    /// that other bearer tokens are left to other authenticators, as Kubernetes' JWT
    /// authenticator does.
    pub fn is_ours(&self, token: &str) -> bool {
        let Some(payload) = token.split('.').nth(1) else {
            return false;
        };
        use base64::Engine;
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
            return false;
        };
        #[derive(Deserialize)]
        struct Issuer {
            iss: Option<String>,
        }
        serde_json::from_slice::<Issuer>(&bytes)
            .ok()
            .and_then(|claims| claims.iss)
            .is_some_and(|iss| self.accepted_issuers.contains(&iss))
    }

    /// Verifies `token` at `now`: the signature by the key its `kid` names (any key when it
    /// names none), an accepted issuer, one of the API audiences, `nbf <= now < exp`, and the
    /// `kubernetes.io` claims present.
    ///
    /// Errors: the [`TokenError`] saying what failed.
    pub fn verify_at(&self, token: &str, now: SystemTime) -> Result<TokenClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let candidates: Vec<_> = self
            .keys
            .verification_keys()
            .iter()
            .filter(|key| header.kid.as_deref().is_none_or(|kid| kid == key.kid))
            .filter(|key| key.algorithm == header.alg)
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        let mut last = TokenError::BadSignature;
        for key in candidates {
            let mut validation = Validation::new(key.algorithm);
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.set_issuer(&self.accepted_issuers);
            validation.set_audience(&self.audiences);
            match jsonwebtoken::decode::<TokenClaims>(token, &key.decoding, &validation) {
                Ok(data) => return check_times(data.claims, now),
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match error.kind() {
                        ErrorKind::InvalidSignature => TokenError::BadSignature,
                        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                        ErrorKind::InvalidAudience => TokenError::WrongAudience,
                        _ => TokenError::Malformed(error.to_string()),
                    };
                    if !matches!(last, TokenError::BadSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// [`verify_at`](Self::verify_at) the current time.
    ///
    /// Errors: as `verify_at`.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, TokenError> {
        self.verify_at(token, SystemTime::now())
    }
}

fn check_times(claims: TokenClaims, now: SystemTime) -> Result<TokenClaims, TokenError> {
    let now = seconds(now);
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if now < claims.nbf {
        return Err(TokenError::NotYetValid);
    }
    if claims.kubernetes.namespace.is_empty() || claims.kubernetes.serviceaccount.name.is_empty() {
        return Err(TokenError::Malformed(
            "the kubernetes.io claims name no service account".into(),
        ));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> ObjectRef {
        ObjectRef {
            name: "builder".into(),
            uid: "sa-uid".into(),
        }
    }

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(ServiceAccountKeys::generate().unwrap())
    }

    fn claims(now: SystemTime, audiences: &[&str]) -> TokenClaims {
        TokenClaims::new(
            "team",
            account(),
            audiences.iter().map(|a| a.to_string()).collect(),
            now,
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn a_signed_token_carries_kubernetes_claims_and_verifies() {
        let issuer = issuer();
        let now = SystemTime::now();
        let mut claims = claims(now, &[DEFAULT_ISSUER]);
        claims.kubernetes.pod = Some(ObjectRef {
            name: "web".into(),
            uid: "pod-uid".into(),
        });
        let token = issuer.sign(claims.clone()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(issuer.keys().key_id()));
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
        let verified = issuer.verify_at(&token, now).unwrap();
        assert_eq!(verified.iss, DEFAULT_ISSUER);
        assert_eq!(verified.sub, "system:serviceaccount:team:builder");
        assert_eq!(verified.exp, verified.iat + 3600);
        assert_eq!(verified.kubernetes, claims.kubernetes);
        assert_eq!(verified.user_name(), "system:serviceaccount:team:builder");
        assert_eq!(
            verified.groups(),
            ["system:serviceaccounts", "system:serviceaccounts:team"]
        );
        let extra = verified.extra();
        assert_eq!(extra[extra::POD_NAME], ["web"]);
        assert_eq!(
            extra[extra::CREDENTIAL_ID],
            [format!("JTI={}", verified.jti)]
        );
        assert!(issuer.is_ours(&token));
        assert!(!issuer.is_ours("static-token"));
    }

    #[test]
    fn an_expired_or_future_token_is_refused() {
        let issuer = issuer();
        let now = SystemTime::now();
        let token = issuer.sign(claims(now, &[DEFAULT_ISSUER])).unwrap();
        let later = now + Duration::from_secs(3600);
        assert!(matches!(
            issuer.verify_at(&token, later),
            Err(TokenError::Expired)
        ));
        let earlier = now - Duration::from_secs(10);
        assert!(matches!(
            issuer.verify_at(&token, earlier),
            Err(TokenError::NotYetValid)
        ));
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let issuer = issuer();
        let now = SystemTime::now();
        let token = issuer.sign(claims(now, &["vault"])).unwrap();
        assert!(matches!(
            issuer.verify_at(&token, now),
            Err(TokenError::WrongAudience)
        ));
        let vault = issuer.clone().audiences(["vault"]);
        assert!(vault.verify_at(&token, now).is_ok());
    }

    #[test]
    fn a_token_of_another_issuer_is_refused_unless_accepted() {
        let keys = ServiceAccountKeys::generate().unwrap();
        let old = TokenIssuer::new(keys.clone()).issuer("https://old.example");
        let now = SystemTime::now();
        let token = old.sign(claims(now, &[DEFAULT_ISSUER])).unwrap();
        let current = TokenIssuer::new(keys);
        assert!(matches!(
            current.verify_at(&token, now),
            Err(TokenError::WrongIssuer)
        ));
        assert!(current
            .accept_issuer("https://old.example")
            .verify_at(&token, now)
            .is_ok());
    }

    #[test]
    fn a_rotated_key_still_verifies_and_an_unknown_key_is_refused() {
        let old = issuer();
        let now = SystemTime::now();
        let token = old.sign(claims(now, &[DEFAULT_ISSUER])).unwrap();
        let fresh = ServiceAccountKeys::generate().unwrap();
        let rotated = TokenIssuer::new(
            fresh
                .clone()
                .with_verification_keys_pem(old.keys().signing_key_pem())
                .unwrap(),
        );
        assert!(rotated.verify_at(&token, now).is_ok());
        assert!(matches!(
            TokenIssuer::new(fresh).verify_at(&token, now),
            Err(TokenError::UnknownKey)
        ));
    }

    #[test]
    fn a_tampered_token_fails_its_signature() {
        let issuer = issuer();
        let now = SystemTime::now();
        let token = issuer.sign(claims(now, &[DEFAULT_ISSUER])).unwrap();
        let other = issuer.sign(claims(now, &[DEFAULT_ISSUER])).unwrap();
        // Another token's payload under this token's signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = other.split('.').nth(1).unwrap();
        let forged = parts.join(".");
        assert!(matches!(
            issuer.verify_at(&forged, now),
            Err(TokenError::BadSignature)
        ));
        assert!(issuer.verify_at("not-a-jwt", now).is_err());
    }

    // Test-only keys (`testdata/`), made with openssl for these tests.
    const RSA_PKCS1: &str = include_str!("testdata/rsa-pkcs1.pem");
    const RSA_PKCS8: &str = include_str!("testdata/rsa-pkcs8.pem");
    const RSA_PUBLIC: &str = include_str!("testdata/rsa-public.pem");
    const EC_P384: &str = include_str!("testdata/ec-p384.pem");

    #[test]
    fn an_rsa_key_signs_rs256_and_its_public_key_alone_verifies() {
        let pkcs1 = ServiceAccountKeys::from_signing_key_pem(RSA_PKCS1).unwrap();
        let pkcs8 = ServiceAccountKeys::from_signing_key_pem(RSA_PKCS8).unwrap();
        assert_eq!(pkcs1.algorithm(), jsonwebtoken::Algorithm::RS256);
        assert_eq!(pkcs1.key_id(), pkcs8.key_id());
        let now = SystemTime::now();
        let token = TokenIssuer::new(pkcs1.clone())
            .sign(claims(now, &[DEFAULT_ISSUER]))
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        let verifier = TokenIssuer::new(
            ServiceAccountKeys::generate()
                .unwrap()
                .with_verification_keys_pem(RSA_PUBLIC)
                .unwrap(),
        );
        assert_eq!(
            verifier.keys().jwks().keys[1].common.key_id.as_deref(),
            Some(pkcs1.key_id())
        );
        assert!(verifier.verify_at(&token, now).is_ok());
    }

    #[test]
    fn a_key_of_another_curve_is_refused() {
        assert!(matches!(
            ServiceAccountKeys::from_signing_key_pem(EC_P384),
            Err(crate::serviceaccount::KeyError::Unsupported(_))
        ));
    }

    #[test]
    fn the_lifetime_is_capped_by_the_maximum_expiration() {
        let issuer = issuer().max_expiration(Duration::from_secs(7200));
        assert_eq!(
            issuer.lifetime(Duration::from_secs(600)),
            Duration::from_secs(600)
        );
        assert_eq!(
            issuer.lifetime(Duration::from_secs(86400)),
            Duration::from_secs(7200)
        );
    }
}
