//! Service accounts in the control plane, as kube-apiserver has them:
//!
//! - [`ServiceAccountKeys`]: the signing key (`--service-account-signing-key-file`: RSA for
//!   RS256, P-256 for ES256; generated when none is configured) and further verification keys
//!   (`--service-account-key-file`, so that tokens signed by a rotated-out key verify until
//!   they expire).
//! - [`TokenIssuer`]: signs tokens with Kubernetes' claims ([`TokenClaims`]: `iss`, `sub`
//!   `system:serviceaccount:<ns>:<name>`, `aud`, `exp`, `iat`, `nbf`, `jti`, and the
//!   `kubernetes.io` claim naming the account and its bound Pod, Secret or Node) and verifies
//!   them (signature by `kid`, issuer, audience, times).
//! - [`ServiceAccountTokens`]: the `serviceaccounts/token` subresource (TokenRequest) and the
//!   token authenticator, which also checks that the account and bound objects still exist
//!   with the uids the token names. The HTTP server (feature `server`) serves and chains them
//!   when `ApiServerOptions::service_account_tokens` is set.
//! - [`ServiceAccountAdmission`]: the `ServiceAccount` admission plugin (default account,
//!   the projected `kube-api-access-*` token volume), an option of the registry.
//!
//! The controller that creates each namespace's `default` account and the `kube-root-ca.crt`
//! ConfigMap is in `capstan-controllers` (`serviceaccount`).

mod admission;
mod claims;
mod der;
mod keys;
mod tokens;

use std::path::PathBuf;

pub use admission::{
    token_volume, ServiceAccountAdmission, DEFAULT_ACCOUNT_ATTEMPTS, DEFAULT_SERVICE_ACCOUNT,
    MIRROR_POD_ANNOTATION, PROJECTED_TOKEN_EXPIRATION_SECONDS, ROOT_CA_CONFIG_MAP, ROOT_CA_KEY,
    TOKEN_MOUNT_PATH, TOKEN_VOLUME_PREFIX,
};
pub use claims::{
    extra, KubernetesClaims, ObjectRef, TokenClaims, TokenIssuer, DEFAULT_ISSUER,
    SERVICE_ACCOUNTS_GROUP, SERVICE_ACCOUNT_USER_PREFIX,
};
pub use keys::ServiceAccountKeys;
pub use tokens::{
    ServiceAccountTokens, ServiceAccountUser, DEFAULT_EXPIRATION_SECONDS, DELETED_GRACE,
    MAX_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS, TOKEN_REQUEST_API_VERSION,
};

/// Why a key file or key text cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM text is malformed (no end line, bad base64, encrypted).
    #[error("malformed PEM: {0}")]
    Pem(String),
    /// The text holds no key of the kind wanted.
    #[error("no {0} key found")]
    NoKey(&'static str),
    /// A key's DER structure is malformed.
    #[error("malformed key: {0}")]
    Malformed(String),
    /// A key of a kind tokens are not signed with (a curve other than P-256, Ed25519, ...).
    #[error("unsupported key: {0}")]
    Unsupported(String),
}

/// Why a service account token is refused. The HTTP server answers every one with 401
/// `Unauthorized`; the text is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed JWT with the claims Kubernetes puts in one.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Its `kid` (and algorithm) names none of the verification keys.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// Another issuer's token.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// For none of the API audiences.
    #[error("token audiences are invalid")]
    WrongAudience,
    /// Past its `exp`.
    #[error("token has expired")]
    Expired,
    /// Before its `nbf`.
    #[error("token is not valid yet")]
    NotYetValid,
    /// The service account or a bound object is gone, replaced or deleted.
    #[error("{kind} {name} {why}")]
    Gone {
        /// The object's kind.
        kind: &'static str,
        /// `namespace/name`.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The account or a bound object could not be read.
    #[error("looking up the token's objects: {0}")]
    Lookup(String),
    /// Signing failed (a corrupt key).
    #[error("signing failed: {0}")]
    Signing(String),
}
