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

use std::time::Duration;

use kube_core::response::{reason, Status, StatusCause, StatusDetails, StatusSummary};

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
            Error::AlreadyExists { .. } | Error::Conflict { .. } => 409,
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
            Error::Conflict { .. } => reason::CONFLICT,
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

    /// Whether this is [`Error::Conflict`] (not [`Error::AlreadyExists`], which shares 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// Whether this is [`Error::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }

    /// Whether this is a 410: [`Error::Gone`] or [`Error::Expired`]; the caller must relist.
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::Gone { .. } | Error::Expired { .. })
    }

    /// The wire form: a `Failure` [`Status`] with code, reason, message and, where Kubernetes
    /// sets them, details (name, group, resource or kind, causes, retryAfterSeconds).
    pub fn to_status(&self) -> Status {
        let mut status = Status {
            status: Some(StatusSummary::Failure),
            code: self.code(),
            message: self.to_string(),
            metadata: None,
            reason: self.reason().to_string(),
            details: None,
        };
        status.details = match self {
            Error::NotFound { resource, name }
            | Error::AlreadyExists { resource, name }
            | Error::Conflict { resource, name, .. } => {
                let (plural, group) = split_qualified(resource);
                Some(details(name, group, plural, Vec::new()))
            }
            Error::Invalid { kind, name, causes } => {
                let (kind, group) = split_qualified(kind);
                let causes = causes.iter().map(FieldError::to_cause).collect();
                Some(details(name, group, kind, causes))
            }
            Error::BadRequest {
                message,
                field: Some(field),
            } => Some(details(
                "",
                "",
                "",
                vec![StatusCause {
                    reason: "FieldValueInvalid".to_string(),
                    message: message.clone(),
                    field: field.clone(),
                }],
            )),
            Error::TooManyRequests {
                retry_after_seconds: Some(seconds),
                ..
            } => Some(StatusDetails {
                retry_after_seconds: *seconds,
                ..details("", "", "", Vec::new())
            }),
            Error::Internal { message } => Some(details(
                "",
                "",
                "",
                vec![StatusCause {
                    reason: String::new(),
                    message: message.clone(),
                    field: String::new(),
                }],
            )),
            _ => None,
        };
        status
    }

    /// The error a received [`Status`] describes; the inverse of [`Error::to_status`].
    ///
    /// The reason decides the variant; an empty or unknown reason falls back to the code.
    /// Reasons Capstan does not model map to their closest variant (`ServerTimeout` to
    /// [`Error::Timeout`], `StorageReadError` and anything unrecognised to [`Error::Internal`],
    /// `NotAcceptable` to [`Error::UnsupportedMediaType`]).
    pub fn from_status(status: Status) -> Self {
        let Status {
            code,
            message,
            reason,
            details,
            ..
        } = status;
        let reason = if reason::is_known(&reason) {
            reason
        } else {
            reason_for_code(code).to_string()
        };
        let details = details.as_ref();
        let causes = details.map(|d| d.causes.as_slice()).unwrap_or_default();
        let named = |message: &str| -> (String, String) {
            match details {
                Some(d) if !d.name.is_empty() || !d.kind.is_empty() => {
                    (qualify(&d.kind, &d.group), d.name.clone())
                }
                _ => parse_resource_and_name(message)
                    .map(|(resource, name, _)| (resource, name))
                    .unwrap_or_default(),
            }
        };
        match reason.as_str() {
            reason::NOT_FOUND => {
                let (resource, name) = named(&message);
                Error::NotFound { resource, name }
            }
            reason::ALREADY_EXISTS => {
                let (resource, name) = named(&message);
                Error::AlreadyExists { resource, name }
            }
            reason::CONFLICT => {
                let (resource, name) = named(&message);
                let prefix = format!(
                    "Operation cannot be fulfilled on {resource} {}: ",
                    quote(&name)
                );
                let message = match message.strip_prefix(&prefix) {
                    Some(rest) => rest.to_string(),
                    None => message,
                };
                Error::Conflict {
                    resource,
                    name,
                    message,
                }
            }
            reason::INVALID => {
                let (kind, name) = named(&message);
                Error::Invalid {
                    kind,
                    name,
                    causes: causes.iter().map(FieldError::from_cause).collect(),
                }
            }
            reason::BAD_REQUEST => Error::BadRequest {
                message,
                field: causes
                    .iter()
                    .find(|c| !c.field.is_empty())
                    .map(|c| c.field.clone()),
            },
            reason::GONE => Error::Gone { message },
            reason::EXPIRED => Error::Expired { message },
            reason::REQUEST_ENTITY_TOO_LARGE => Error::RequestEntityTooLarge { message },
            reason::TOO_MANY_REQUESTS => Error::TooManyRequests {
                message,
                retry_after_seconds: details.map(|d| d.retry_after_seconds).filter(|&s| s > 0),
            },
            reason::UNAUTHORIZED => Error::Unauthorized { message },
            reason::FORBIDDEN => Error::Forbidden { message },
            reason::METHOD_NOT_ALLOWED => Error::MethodNotAllowed { message },
            reason::UNSUPPORTED_MEDIA_TYPE | reason::NOT_ACCEPTABLE => {
                Error::UnsupportedMediaType { message }
            }
            reason::TIMEOUT | reason::SERVER_TIMEOUT => Error::Timeout { message },
            reason::SERVICE_UNAVAILABLE => Error::ServiceUnavailable { message },
            _ => {
                let message = match causes.first() {
                    Some(cause) if !cause.message.is_empty() => cause.message.clone(),
                    _ => match message.strip_prefix("Internal error occurred: ") {
                        Some(rest) => rest.to_string(),
                        None => message,
                    },
                };
                Error::Internal { message }
            }
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Error::from_status(status)
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        error.to_status()
    }
}

/// One problem with one field, mirroring apimachinery's `field.Error`.
///
/// `Display` is Kubernetes' `field.Error.Error()`:
/// `spec.replicas: Invalid value: -1: must be greater than or equal to 0`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct FieldError {
    /// Path of the field, e.g. `spec.containers[0].image`.
    pub field: String,
    /// What kind of problem, with the offending value where Kubernetes reports one.
    pub kind: FieldErrorKind,
    /// Free-form explanation; may be empty.
    pub detail: String,
}

/// The kind of a [`FieldError`], mirroring apimachinery's `field.ErrorType`.
///
/// Values are stored rendered as Kubernetes prints them: strings quoted (`"web"`), numbers and
/// booleans bare (`-1`, `true`). An empty value means "not reported".
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldErrorKind {
    /// `FieldValueNotFound`: a referenced value does not exist.
    NotFound {
        /// The rendered value.
        value: String,
    },
    /// `FieldValueRequired`: the field must be set.
    Required,
    /// `FieldValueDuplicate`: the value must be unique within its collection.
    Duplicate {
        /// The rendered value.
        value: String,
    },
    /// `FieldValueInvalid`: the value is malformed or out of range.
    Invalid {
        /// The rendered value.
        value: String,
    },
    /// `FieldValueNotSupported`: the value is not one of an enumerated set.
    NotSupported {
        /// The rendered value.
        value: String,
        /// The accepted values, unquoted.
        supported: Vec<String>,
    },
    /// `FieldValueForbidden`: the field may not be set (here, now, or by this caller).
    Forbidden,
    /// `FieldValueTooLong`: the value exceeds `max` bytes.
    TooLong {
        /// Maximum length in bytes.
        max: usize,
    },
    /// `FieldValueTooMany`: the collection exceeds `max` items.
    TooMany {
        /// Maximum number of items.
        max: usize,
    },
    /// `InternalError`: validation itself failed.
    Internal,
    /// `FieldValueTypeInvalid`: the value has the wrong type.
    TypeInvalid {
        /// The rendered value.
        value: String,
    },
}

impl FieldErrorKind {
    /// The `StatusCause.reason` string, e.g. `"FieldValueInvalid"`.
    pub fn reason(&self) -> &'static str {
        match self {
            FieldErrorKind::NotFound { .. } => "FieldValueNotFound",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Duplicate { .. } => "FieldValueDuplicate",
            FieldErrorKind::Invalid { .. } => "FieldValueInvalid",
            FieldErrorKind::NotSupported { .. } => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong { .. } => "FieldValueTooLong",
            FieldErrorKind::TooMany { .. } => "FieldValueTooMany",
            FieldErrorKind::Internal => "InternalError",
            FieldErrorKind::TypeInvalid { .. } => "FieldValueTypeInvalid",
        }
    }

    /// The phrase Kubernetes starts the message with, e.g. `"Invalid value"`.
    fn label(&self) -> &'static str {
        match self {
            FieldErrorKind::NotFound { .. } => "Not found",
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Duplicate { .. } => "Duplicate value",
            FieldErrorKind::Invalid { .. } | FieldErrorKind::TypeInvalid { .. } => "Invalid value",
            FieldErrorKind::NotSupported { .. } => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong { .. } => "Too long",
            FieldErrorKind::TooMany { .. } => "Too many",
            FieldErrorKind::Internal => "Internal error",
        }
    }

    fn value(&self) -> Option<&str> {
        match self {
            FieldErrorKind::NotFound { value }
            | FieldErrorKind::Duplicate { value }
            | FieldErrorKind::Invalid { value }
            | FieldErrorKind::NotSupported { value, .. }
            | FieldErrorKind::TypeInvalid { value } => Some(value),
            _ => None,
        }
    }
}

impl FieldError {
    fn new(field: impl Into<String>, kind: FieldErrorKind, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind,
            detail: detail.into(),
        }
    }

    /// `field: Required value: detail`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::Required, detail)
    }

    /// `field: Invalid value: <value>: detail`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<serde_json::Value>,
        detail: impl Into<String>,
    ) -> Self {
        let value = render_value(&value.into());
        Self::new(field, FieldErrorKind::Invalid { value }, detail)
    }

    /// `field: Invalid value: <value>: detail`, with reason `FieldValueTypeInvalid`.
    pub fn type_invalid(
        field: impl Into<String>,
        value: impl Into<serde_json::Value>,
        detail: impl Into<String>,
    ) -> Self {
        let value = render_value(&value.into());
        Self::new(field, FieldErrorKind::TypeInvalid { value }, detail)
    }

    /// `field: Not found: <value>`.
    pub fn not_found(field: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        let value = render_value(&value.into());
        Self::new(field, FieldErrorKind::NotFound { value }, "")
    }

    /// `field: Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        let value = render_value(&value.into());
        Self::new(field, FieldErrorKind::Duplicate { value }, "")
    }

    /// `field: Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported<S: Into<String>>(
        field: impl Into<String>,
        value: impl Into<serde_json::Value>,
        supported: impl IntoIterator<Item = S>,
    ) -> Self {
        let value = render_value(&value.into());
        let supported: Vec<String> = supported.into_iter().map(Into::into).collect();
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(
            field,
            FieldErrorKind::NotSupported { value, supported },
            detail,
        )
    }

    /// `field: Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::Forbidden, detail)
    }

    /// `field: Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        let unit = if max == 1 { "byte" } else { "bytes" };
        let detail = format!("may not be more than {max} {unit}");
        Self::new(field, FieldErrorKind::TooLong { max }, detail)
    }

    /// `field: Too many: must have at most <max> items`.
    pub fn too_many(field: impl Into<String>, max: usize) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        let detail = format!("must have at most {max} {unit}");
        Self::new(field, FieldErrorKind::TooMany { max }, detail)
    }

    /// `field: Internal error: detail`.
    pub fn internal(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::Internal, detail)
    }

    /// The `StatusCause.reason` string, e.g. `"FieldValueRequired"`.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// The message without the field path, as carried in `StatusCause.message`:
    /// `Invalid value: -1: must be greater than or equal to 0`.
    pub fn body(&self) -> String {
        let mut body = self.kind.label().to_string();
        if let Some(value) = self.kind.value().filter(|v| !v.is_empty()) {
            body.push_str(": ");
            body.push_str(value);
        }
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }

    /// The `StatusCause` Kubernetes sends for this error.
    pub fn to_cause(&self) -> StatusCause {
        StatusCause {
            reason: self.reason().to_string(),
            message: self.body(),
            field: self.field.clone(),
        }
    }

    /// Parses a received `StatusCause`; the inverse of [`FieldError::to_cause`].
    ///
    /// An unknown cause reason becomes [`FieldErrorKind::Invalid`] with no value and the
    /// whole cause message as detail.
    pub fn from_cause(cause: &StatusCause) -> Self {
        let field = cause.field.clone();
        let body = cause.message.as_str();
        let unknown = || {
            Self::new(
                field.clone(),
                FieldErrorKind::Invalid {
                    value: String::new(),
                },
                body,
            )
        };
        let kind_from = |label: &str, make: fn(String) -> FieldErrorKind| -> Option<Self> {
            let rest = strip_label(body, label)?;
            let (value, detail) = split_value(rest);
            Some(Self::new(field.clone(), make(value), detail))
        };
        let detail_only = |label: &str, kind: FieldErrorKind| -> Option<Self> {
            Some(Self::new(field.clone(), kind, strip_label(body, label)?))
        };
        let parsed = match cause.reason.as_str() {
            "FieldValueNotFound" => {
                kind_from("Not found", |value| FieldErrorKind::NotFound { value })
            }
            "FieldValueRequired" => detail_only("Required value", FieldErrorKind::Required),
            "FieldValueDuplicate" => kind_from("Duplicate value", |value| {
                FieldErrorKind::Duplicate { value }
            }),
            "FieldValueInvalid" => {
                kind_from("Invalid value", |value| FieldErrorKind::Invalid { value })
            }
            "FieldValueTypeInvalid" => kind_from("Invalid value", |value| {
                FieldErrorKind::TypeInvalid { value }
            }),
            "FieldValueNotSupported" => strip_label(body, "Unsupported value").map(|rest| {
                let (value, detail) = split_value(rest);
                let supported = detail
                    .strip_prefix("supported values: ")
                    .and_then(parse_quoted_list)
                    .unwrap_or_default();
                Self::new(
                    field.clone(),
                    FieldErrorKind::NotSupported { value, supported },
                    detail,
                )
            }),
            "FieldValueForbidden" => detail_only("Forbidden", FieldErrorKind::Forbidden),
            "FieldValueTooLong" => strip_label(body, "Too long").map(|detail| {
                let max = first_number(detail);
                Self::new(field.clone(), FieldErrorKind::TooLong { max }, detail)
            }),
            "FieldValueTooMany" => strip_label(body, "Too many").map(|detail| {
                let max = first_number(detail);
                Self::new(field.clone(), FieldErrorKind::TooMany { max }, detail)
            }),
            "InternalError" => detail_only("Internal error", FieldErrorKind::Internal),
            _ => None,
        };
        parsed.unwrap_or_else(unknown)
    }

    fn render(&self) -> String {
        if self.field.is_empty() {
            self.body()
        } else {
            format!("{}: {}", self.field, self.body())
        }
    }
}

/// Quotes a string the way Kubernetes messages quote names and values (`"web"`).
pub(crate) fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Renders a field value as Kubernetes messages do: strings quoted, scalars bare.
fn render_value(value: &serde_json::Value) -> String {
    value.to_string()
}

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

fn details(name: &str, group: &str, kind: &str, causes: Vec<StatusCause>) -> StatusDetails {
    StatusDetails {
        name: name.to_string(),
        group: group.to_string(),
        kind: kind.to_string(),
        uid: String::new(),
        causes,
        retry_after_seconds: 0,
    }
}

/// `deployments.apps` → (`deployments`, `apps`); `pods` → (`pods`, ``).
fn split_qualified(qualified: &str) -> (&str, &str) {
    qualified.split_once('.').unwrap_or((qualified, ""))
}

/// (`deployments`, `apps`) → `deployments.apps`; (`pods`, ``) → `pods`.
fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => reason::BAD_REQUEST,
        401 => reason::UNAUTHORIZED,
        403 => reason::FORBIDDEN,
        404 => reason::NOT_FOUND,
        405 => reason::METHOD_NOT_ALLOWED,
        406 => reason::NOT_ACCEPTABLE,
        409 => reason::CONFLICT,
        410 => reason::GONE,
        413 => reason::REQUEST_ENTITY_TOO_LARGE,
        415 => reason::UNSUPPORTED_MEDIA_TYPE,
        422 => reason::INVALID,
        429 => reason::TOO_MANY_REQUESTS,
        503 => reason::SERVICE_UNAVAILABLE,
        504 => reason::TIMEOUT,
        _ => reason::INTERNAL_ERROR,
    }
}

/// Parses the `pods "web"` head of a Kubernetes message into (resource, name, rest).
fn parse_resource_and_name(message: &str) -> Option<(String, String, &str)> {
    let message = message
        .strip_prefix("Operation cannot be fulfilled on ")
        .unwrap_or(message);
    let (resource, rest) = message.split_once(' ')?;
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    let name = values.next()?.ok()?;
    Some((resource.to_string(), name, &rest[values.byte_offset()..]))
}

/// `Invalid value: -1: detail` with label `Invalid value` → `-1: detail`.
fn strip_label<'a>(body: &'a str, label: &str) -> Option<&'a str> {
    let rest = body.strip_prefix(label)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix(": ")
    }
}

/// Splits `<value>: <detail>`, reading the value as one JSON token when it is one.
fn split_value(rest: &str) -> (String, String) {
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    if let Some(Ok(_)) = values.next() {
        let end = values.byte_offset();
        let after = &rest[end..];
        if after.is_empty() {
            return (rest.to_string(), String::new());
        }
        if let Some(detail) = after.strip_prefix(": ") {
            return (rest[..end].to_string(), detail.to_string());
        }
    }
    match rest.split_once(": ") {
        Some((value, detail)) => (value.to_string(), detail.to_string()),
        None => (rest.to_string(), String::new()),
    }
}

/// Parses `"a", "b"` into `["a", "b"]`.
fn parse_quoted_list(list: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = list;
    loop {
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<String>();
        out.push(values.next()?.ok()?);
        rest = &rest[values.byte_offset()..];
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix(", ")?;
    }
}

fn first_number(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|part| !part.is_empty())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<Error> {
        vec![
            Error::NotFound {
                resource: "pods".into(),
                name: "web".into(),
            },
            Error::NotFound {
                resource: "deployments.apps".into(),
                name: "web".into(),
            },
            Error::AlreadyExists {
                resource: "leases.coordination.k8s.io".into(),
                name: "lock".into(),
            },
            Error::Conflict {
                resource: "pods".into(),
                name: "web".into(),
                message: Error::OBJECT_MODIFIED.into(),
            },
            Error::Invalid {
                kind: "Deployment.apps".into(),
                name: "web".into(),
                causes: vec![
                    FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0"),
                    FieldError::required("metadata.name", "name or generateName is required"),
                    FieldError::duplicate("spec.containers[1].name", "app"),
                    FieldError::not_supported(
                        "spec.restartPolicy",
                        "Sometimes",
                        ["Always", "Never"],
                    ),
                    FieldError::forbidden("spec.nodeName", "may not be set on create"),
                    FieldError::too_long("metadata.name", 63),
                    FieldError::too_many("spec.containers", 1),
                    FieldError::not_found("spec.volumes[0].secret", "missing"),
                    FieldError::internal("spec", "validator crashed"),
                    FieldError::type_invalid("spec.paused", "yes", "must be a boolean"),
                    FieldError::invalid("metadata.labels", "a: b", "tricky: value"),
                ],
            },
            Error::Invalid {
                kind: "Pod".into(),
                name: "empty".into(),
                causes: vec![],
            },
            Error::bad_request("the namespace of the object does not match the request"),
            Error::bad_field("metadata.name", "may not contain '/'"),
            Error::Gone {
                message: "too old resource version: 5 (42)".into(),
            },
            Error::Expired {
                message: "The provided continue parameter is too old".into(),
            },
            Error::RequestEntityTooLarge {
                message: "request is too large".into(),
            },
            Error::TooManyRequests {
                message: "slow down".into(),
                retry_after_seconds: Some(3),
            },
            Error::TooManyRequests {
                message: "slow down".into(),
                retry_after_seconds: None,
            },
            Error::Unauthorized {
                message: "Unauthorized".into(),
            },
            Error::Forbidden {
                message: "pods \"web\" is forbidden: no".into(),
            },
            Error::MethodNotAllowed {
                message: "the server does not allow this method".into(),
            },
            Error::UnsupportedMediaType {
                message: "apply patches are not supported".into(),
            },
            Error::Timeout {
                message: "the request timed out".into(),
            },
            Error::ServiceUnavailable {
                message: "storage is unavailable".into(),
            },
            Error::internal("etcd said no"),
        ]
    }

    #[test]
    fn every_variant_round_trips_through_status() {
        for error in every_variant() {
            let status = error.to_status();
            assert_eq!(status.code, error.code(), "{error:?}");
            assert_eq!(status.reason, error.reason(), "{error:?}");
            assert_eq!(status.message, error.to_string(), "{error:?}");
            assert!(status.is_failure());
            let back = Error::from_status(status);
            assert_eq!(back, error);
        }
    }

    #[test]
    fn every_variant_round_trips_through_status_json() {
        for error in every_variant() {
            let json = serde_json::to_string(&error.to_status()).unwrap();
            let status: Status = serde_json::from_str(&json).unwrap();
            assert_eq!(Error::from(status), error, "{json}");
        }
    }

    #[test]
    fn not_found_messages_read_like_kubernetes() {
        let pods = Error::NotFound {
            resource: "pods".into(),
            name: "web".into(),
        };
        assert_eq!(pods.to_string(), r#"pods "web" not found"#);
        let deployments = Error::NotFound {
            resource: "deployments.apps".into(),
            name: "web".into(),
        };
        assert_eq!(
            deployments.to_string(),
            r#"deployments.apps "web" not found"#
        );
        let details = deployments.to_status().details.unwrap();
        assert_eq!(
            (
                details.name.as_str(),
                details.group.as_str(),
                details.kind.as_str()
            ),
            ("web", "apps", "deployments")
        );
    }

    #[test]
    fn already_exists_and_conflict_messages_read_like_kubernetes() {
        let exists = Error::AlreadyExists {
            resource: "pods".into(),
            name: "web".into(),
        };
        assert_eq!(exists.to_string(), r#"pods "web" already exists"#);
        let conflict = Error::Conflict {
            resource: "pods".into(),
            name: "web".into(),
            message: Error::OBJECT_MODIFIED.into(),
        };
        assert_eq!(
            conflict.to_string(),
            "Operation cannot be fulfilled on pods \"web\": the object has been modified; \
             please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn invalid_message_with_one_cause_has_no_brackets() {
        let error = Error::Invalid {
            kind: "Deployment.apps".into(),
            name: "web".into(),
            causes: vec![FieldError::invalid(
                "spec.replicas",
                -1,
                "must be greater than or equal to 0",
            )],
        };
        assert_eq!(
            error.to_string(),
            r#"Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"#
        );
        let status = error.to_status();
        let details = status.details.unwrap();
        assert_eq!(
            (details.kind.as_str(), details.group.as_str()),
            ("Deployment", "apps")
        );
        assert_eq!(
            details.causes,
            vec![StatusCause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: -1: must be greater than or equal to 0".into(),
                field: "spec.replicas".into(),
            }]
        );
    }

    #[test]
    fn invalid_message_with_several_causes_joins_them_in_brackets() {
        let error = Error::Invalid {
            kind: "Pod".into(),
            name: "web".into(),
            causes: vec![
                FieldError::required("metadata.name", "name or generateName is required"),
                FieldError::invalid("metadata.labels", "a b", "must be a valid label value"),
            ],
        };
        assert_eq!(
            error.to_string(),
            r#"Pod "web" is invalid: [metadata.name: Required value: name or generateName is required, metadata.labels: Invalid value: "a b": must be a valid label value]"#
        );
    }

    #[test]
    fn field_error_display_matches_apimachinery() {
        assert_eq!(
            FieldError::required("metadata.name", "name or generateName is required").to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(
            FieldError::not_supported("spec.restartPolicy", "Sometimes", ["Always", "Never"])
                .to_string(),
            r#"spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "Never""#
        );
        assert_eq!(
            FieldError::too_long("metadata.name", 63).to_string(),
            "metadata.name: Too long: may not be more than 63 bytes"
        );
        assert_eq!(
            FieldError::too_many("spec.containers", 3).to_string(),
            "spec.containers: Too many: must have at most 3 items"
        );
        assert_eq!(
            FieldError::duplicate("spec.ports[1].port", 80).to_string(),
            "spec.ports[1].port: Duplicate value: 80"
        );
        assert_eq!(
            FieldError::forbidden("spec.nodeName", "may not be changed").to_string(),
            "spec.nodeName: Forbidden: may not be changed"
        );
    }

    #[test]
    fn field_error_reasons_match_apimachinery() {
        let reasons: Vec<&str> = [
            FieldError::required("f", ""),
            FieldError::invalid("f", 1, ""),
            FieldError::duplicate("f", 1),
            FieldError::not_supported("f", 1, ["2"]),
            FieldError::forbidden("f", ""),
            FieldError::too_long("f", 1),
            FieldError::too_many("f", 1),
        ]
        .iter()
        .map(FieldError::reason)
        .collect();
        assert_eq!(
            reasons,
            [
                "FieldValueRequired",
                "FieldValueInvalid",
                "FieldValueDuplicate",
                "FieldValueNotSupported",
                "FieldValueForbidden",
                "FieldValueTooLong",
                "FieldValueTooMany",
            ]
        );
    }

    #[test]
    fn bad_field_names_the_field_in_status_causes() {
        let status = Error::bad_field("metadata.namespace", "must be empty").to_status();
        assert_eq!(status.code, 400);
        assert_eq!(status.message, "metadata.namespace: must be empty");
        let cause = &status.details.unwrap().causes[0];
        assert_eq!(cause.field, "metadata.namespace");
    }

    #[test]
    fn only_transient_errors_are_retryable() {
        let retryable: Vec<&str> = every_variant()
            .iter()
            .filter(|e| e.is_retryable())
            .map(Error::reason)
            .collect();
        assert_eq!(
            retryable,
            [
                "TooManyRequests",
                "TooManyRequests",
                "Timeout",
                "ServiceUnavailable",
                "InternalError"
            ]
        );
    }

    #[test]
    fn retry_after_comes_from_too_many_requests_only() {
        let error = Error::TooManyRequests {
            message: "slow down".into(),
            retry_after_seconds: Some(7),
        };
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(error.to_status().details.unwrap().retry_after_seconds, 7);
        assert_eq!(Error::internal("x").retry_after(), None);
    }

    #[test]
    fn gone_and_expired_both_count_as_gone() {
        assert!(Error::Gone {
            message: "old".into()
        }
        .is_gone());
        assert!(Error::Expired {
            message: "old".into()
        }
        .is_gone());
        assert!(!Error::internal("x").is_gone());
    }

    #[test]
    fn status_from_a_real_apiserver_parses_into_invalid() {
        let status: Status = serde_json::from_str(
            r#"{
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Lease.coordination.k8s.io \"test_\" is invalid: metadata.name: Invalid value: \"test_\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters",
                "reason": "Invalid",
                "details": {
                    "name": "test_", "group": "coordination.k8s.io", "kind": "Lease",
                    "causes": [{
                        "reason": "FieldValueInvalid",
                        "message": "Invalid value: \"test_\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters",
                        "field": "metadata.name"
                    }]
                },
                "code": 422
            }"#,
        )
        .unwrap();
        let message = status.message.clone();
        let error = Error::from_status(status);
        assert_eq!(error.to_string(), message);
        let Error::Invalid { kind, causes, .. } = error else {
            panic!("expected Invalid");
        };
        assert_eq!(kind, "Lease.coordination.k8s.io");
        assert_eq!(
            causes[0].kind,
            FieldErrorKind::Invalid {
                value: "\"test_\"".into()
            }
        );
    }

    #[test]
    fn status_without_details_still_names_the_object() {
        let status = Status::failure(r#"pods "web" not found"#, "NotFound").with_code(404);
        assert_eq!(
            Error::from_status(status),
            Error::NotFound {
                resource: "pods".into(),
                name: "web".into()
            }
        );
    }

    #[test]
    fn status_with_unknown_reason_falls_back_to_its_code() {
        let status = Status::failure("no such thing", "").with_code(503);
        assert_eq!(
            Error::from_status(status),
            Error::ServiceUnavailable {
                message: "no such thing".into()
            }
        );
        let status = Status::failure("boom", "SomethingNew").with_code(418);
        assert_eq!(Error::from_status(status), Error::internal("boom"));
    }
}
