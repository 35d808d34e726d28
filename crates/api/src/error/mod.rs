//! The crate's error type, shaped after the Kubernetes `Status` object.
//!
//! Every [`Error`] variant is one Kubernetes status reason with its HTTP code, and its
//! `Display` is the message kube-apiserver would put in `Status.message`. A server turns an
//! error into a wire [`Status`] with [`Error::to_status`]; a client turns a received
//! [`Status`] back into an error with [`Error::from_status`]. The two are inverse for every
//! error this crate produces.
//!
//! Field-level validation problems are [`FieldError`]s, mirroring apimachinery's
//! `field.Error`: an [`Error::Invalid`] carries one per offending field, and each becomes a
//! `StatusCause` on the wire.
//!
//! The module's files: this one holds [`Error`] with its constructors and classification;
//! `status` converts errors to and from the wire [`Status`], and `field_error` holds
//! [`FieldError`] and [`FieldErrorKind`].
//!
//! [`Status`]: kube_core::response::Status

mod field_error;
mod status;
#[cfg(test)]
mod tests;

use std::time::Duration;

use kube_core::response::reason;

pub use field_error::{FieldError, FieldErrorKind};

/// One field of an [`Error::ApplyConflict`]: the field (`.spec.replicas`) and whom it conflicts
/// with (`conflict with "kubectl" using apps/v1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldManagerConflict {
    /// The field's path, as Kubernetes prints it (`.spec.containers[name="web"].image`).
    pub field: String,
    /// `conflict with "<manager>"`, plus ` using <apiVersion>` for an `Update` manager.
    pub message: String,
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed API call, one variant per Kubernetes `Status` reason.
///
/// Resource names in messages are qualified as kube-apiserver prints them: the plural for the
/// core group (`pods`), `plural.group` otherwise (`deployments.apps`); see
/// [`ResourceInfo::qualified_resource`](crate::ResourceInfo::qualified_resource).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 404 `NotFound`: no object with this name exists (or the namespace does not).
    ///
    /// Not retryable; message: `pods "web" not found`.
    #[error("{resource} {} not found", quote(.name))]
    NotFound {
        /// Qualified resource, e.g. `pods` or `deployments.apps`.
        resource: String,
        /// Name of the missing object.
        name: String,
    },

    /// 409 `AlreadyExists`: a create named an object that already exists.
    ///
    /// Not retryable; message: `pods "web" already exists`.
    #[error("{resource} {} already exists", quote(.name))]
    AlreadyExists {
        /// Qualified resource, e.g. `pods` or `deployments.apps`.
        resource: String,
        /// Name of the existing object.
        name: String,
    },

    /// 409 `Conflict`: the write was based on a stale `resourceVersion` or failed a precondition.
    ///
    /// Not retryable unchanged: re-read the object, re-apply the change, then retry.
    /// Message: `Operation cannot be fulfilled on pods "web": <message>`.
    #[error("Operation cannot be fulfilled on {resource} {}: {message}", quote(.name))]
    Conflict {
        /// Qualified resource, e.g. `pods` or `deployments.apps`.
        resource: String,
        /// Name of the contested object.
        name: String,
        /// Why, e.g. [`Error::OBJECT_MODIFIED`].
        message: String,
    },

    /// 409 `Conflict` from server-side apply: the applied configuration changes fields that
    /// other field managers own.
    ///
    /// Not retryable unchanged: apply with `force` to take the fields over, or stop applying
    /// them. Message: kube-apiserver's, e.g. `Apply failed with 1 conflict: conflict with
    /// "kubectl" using apps/v1: .spec.replicas`; each conflict becomes a
    /// `FieldManagerConflict` cause.
    #[error("{message}")]
    ApplyConflict {
        /// The whole message.
        message: String,
        /// One per contested field.
        conflicts: Vec<FieldManagerConflict>,
    },

    /// 422 `Invalid`: the object failed validation; one [`FieldError`] per problem.
    ///
    /// Not retryable; fix the object. Message:
    /// `Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be ...`,
    /// several causes joined as `[cause1, cause2]`.
    #[error("{}", invalid_message(.kind, .name, .causes))]
    Invalid {
        /// Qualified kind, e.g. `Pod` or `Deployment.apps`.
        kind: String,
        /// Name of the invalid object.
        name: String,
        /// What is wrong, field by field.
        causes: Vec<FieldError>,
    },

    /// 400 `BadRequest`: the request itself makes no sense (bad selector, namespace mismatch,
    /// malformed body) and can never succeed as sent.
    ///
    /// Not retryable. Build one with [`Error::bad_request`], or [`Error::bad_field`] to name the
    /// offending field in the status details.
    #[error("{message}")]
    BadRequest {
        /// Human-readable reason.
        message: String,
        /// The offending field or parameter, carried as a `StatusCause` on the wire.
        field: Option<String>,
    },

    /// 410 `Gone`: a watch asked for a `resourceVersion` that has been compacted away.
    ///
    /// Not retryable as is: relist to get a fresh `resourceVersion`, then watch from it.
    #[error("{message}")]
    Gone {
        /// Human-readable reason, e.g. `too old resource version: 5 (42)`.
        message: String,
    },

    /// 410 `Expired`: a list `continue` token is too old to give a consistent page.
    ///
    /// Not retryable as is: restart the list without the token.
    #[error("{message}")]
    Expired {
        /// Human-readable reason.
        message: String,
    },

    /// 413 `RequestEntityTooLarge`: the object or request body exceeds the size limit.
    ///
    /// Not retryable.
    #[error("{message}")]
    RequestEntityTooLarge {
        /// Human-readable reason.
        message: String,
    },

    /// 429 `TooManyRequests`: the server is shedding load.
    ///
    /// Retryable after [`Error::retry_after`], when given.
    #[error("{message}")]
    TooManyRequests {
        /// Human-readable reason.
        message: String,
        /// How long the server asks the client to wait, if it said.
        retry_after_seconds: Option<u32>,
    },

    /// 401 `Unauthorized`: missing or invalid credentials.
    ///
    /// Not retryable with the same credentials.
    #[error("{message}")]
    Unauthorized {
        /// Human-readable reason.
        message: String,
    },

    /// 403 `Forbidden`: the caller may not do this (RBAC, admission, a terminating namespace).
    ///
    /// Not retryable.
    #[error("{message}")]
    Forbidden {
        /// Human-readable reason.
        message: String,
    },

    /// 405 `MethodNotAllowed`: the resource does not support this verb.
    ///
    /// Not retryable.
    #[error("{message}")]
    MethodNotAllowed {
        /// Human-readable reason.
        message: String,
    },

    /// 415 `UnsupportedMediaType`: e.g. a patch type the resource does not accept.
    ///
    /// Not retryable.
    #[error("{message}")]
    UnsupportedMediaType {
        /// Human-readable reason.
        message: String,
    },

    /// 504 `Timeout`: the operation did not finish in time; its outcome is unknown.
    ///
    /// Retryable (reads freely; writes after checking whether they took effect).
    #[error("{message}")]
    Timeout {
        /// Human-readable reason.
        message: String,
    },

    /// 503 `ServiceUnavailable`: the server or its storage is temporarily unavailable.
    ///
    /// Retryable.
    #[error("{message}")]
    ServiceUnavailable {
        /// Human-readable reason.
        message: String,
    },

    /// 500 `InternalError`: an unexpected failure (storage, encoding, a bug).
    ///
    /// Retryable; message: `Internal error occurred: <message>`.
    #[error("Internal error occurred: {message}")]
    Internal {
        /// What went wrong, without the `Internal error occurred: ` prefix.
        message: String,
    },
}

impl Error {
    /// The Kubernetes message for a write based on a stale `resourceVersion`.
    pub const OBJECT_MODIFIED: &'static str =
        "the object has been modified; please apply your changes to the latest version and try again";

    /// A [`Error::BadRequest`] that names no field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest {
            message: message.into(),
            field: None,
        }
    }

    /// A [`Error::BadRequest`] about one field or parameter: the message reads
    /// `<field>: <message>` and [`Error::to_status`] adds a `StatusCause` naming `field`.
    pub fn bad_field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Error::BadRequest {
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    /// A [`Error::Internal`] with this message.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal {
            message: message.into(),
        }
    }

    /// The HTTP status code Kubernetes uses for this error.
    pub fn code(&self) -> u16 {
        match self {
            Error::NotFound { .. } => 404,
            Error::AlreadyExists { .. } | Error::Conflict { .. } | Error::ApplyConflict { .. } => {
                409
            }
            Error::Invalid { .. } => 422,
            Error::BadRequest { .. } => 400,
            Error::Gone { .. } | Error::Expired { .. } => 410,
            Error::RequestEntityTooLarge { .. } => 413,
            Error::TooManyRequests { .. } => 429,
            Error::Unauthorized { .. } => 401,
            Error::Forbidden { .. } => 403,
            Error::MethodNotAllowed { .. } => 405,
            Error::UnsupportedMediaType { .. } => 415,
            Error::Timeout { .. } => 504,
            Error::ServiceUnavailable { .. } => 503,
            Error::Internal { .. } => 500,
        }
    }

    /// The Kubernetes `Status.reason` string, e.g. `"NotFound"` or `"InternalError"`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => reason::NOT_FOUND,
            Error::AlreadyExists { .. } => reason::ALREADY_EXISTS,
            Error::Conflict { .. } | Error::ApplyConflict { .. } => reason::CONFLICT,
            Error::Invalid { .. } => reason::INVALID,
            Error::BadRequest { .. } => reason::BAD_REQUEST,
            Error::Gone { .. } => reason::GONE,
            Error::Expired { .. } => reason::EXPIRED,
            Error::RequestEntityTooLarge { .. } => reason::REQUEST_ENTITY_TOO_LARGE,
            Error::TooManyRequests { .. } => reason::TOO_MANY_REQUESTS,
            Error::Unauthorized { .. } => reason::UNAUTHORIZED,
            Error::Forbidden { .. } => reason::FORBIDDEN,
            Error::MethodNotAllowed { .. } => reason::METHOD_NOT_ALLOWED,
            Error::UnsupportedMediaType { .. } => reason::UNSUPPORTED_MEDIA_TYPE,
            Error::Timeout { .. } => reason::TIMEOUT,
            Error::ServiceUnavailable { .. } => reason::SERVICE_UNAVAILABLE,
            Error::Internal { .. } => reason::INTERNAL_ERROR,
        }
    }

    /// Whether repeating the same request later may succeed: true for `TooManyRequests`,
    /// `Internal`, `ServiceUnavailable` and `Timeout`.
    ///
    /// A [`Error::Conflict`] is not: re-read and re-apply first. [`Error::Gone`] and
    /// [`Error::Expired`] are not: relist first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::TooManyRequests { .. }
                | Error::Internal { .. }
                | Error::ServiceUnavailable { .. }
                | Error::Timeout { .. }
        )
    }

    /// How long the server asked the client to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::TooManyRequests {
                retry_after_seconds: Some(seconds),
                ..
            } => Some(Duration::from_secs(u64::from(*seconds))),
            _ => None,
        }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Whether this is [`Error::Conflict`] or [`Error::ApplyConflict`] (not
    /// [`Error::AlreadyExists`], which shares 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::ApplyConflict { .. })
    }

    /// Whether this is [`Error::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }

    /// Whether this is a 410: [`Error::Gone`] or [`Error::Expired`]; the caller must relist.
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::Gone { .. } | Error::Expired { .. })
    }
}

/// Quotes a string the way Kubernetes messages quote names and values (`"web"`).
pub(crate) fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The message of an [`Error::Invalid`]: the object, then its causes.
fn invalid_message(kind: &str, name: &str, causes: &[FieldError]) -> String {
    let head = format!("{kind} {} is invalid", quote(name));
    match causes {
        [] => head,
        [only] => format!("{head}: {only}"),
        many => {
            let all: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("{head}: [{}]", all.join(", "))
        }
    }
}
