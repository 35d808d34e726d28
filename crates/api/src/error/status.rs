//! The wire form of errors: [`Error::to_status`] and [`Error::from_status`], which are
//! inverse for every error this crate produces, and the `From` conversions between [`Error`]
//! and [`Status`].

use kube_core::response::{reason, Status, StatusCause, StatusDetails, StatusSummary};

use super::{quote, Error, FieldError, FieldManagerConflict};

/// The `StatusCause` type of a server-side apply conflict.
const FIELD_MANAGER_CONFLICT: &str = "FieldManagerConflict";

impl Error {
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
            Error::ApplyConflict { conflicts, .. } => Some(details(
                "",
                "",
                "",
                conflicts
                    .iter()
                    .map(|conflict| StatusCause {
                        reason: FIELD_MANAGER_CONFLICT.to_string(),
                        message: conflict.message.clone(),
                        field: conflict.field.clone(),
                    })
                    .collect(),
            )),
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
            reason::CONFLICT
                if causes
                    .iter()
                    .any(|cause| cause.reason == FIELD_MANAGER_CONFLICT) =>
            {
                Error::ApplyConflict {
                    message,
                    conflicts: causes
                        .iter()
                        .map(|cause| FieldManagerConflict {
                            field: cause.field.clone(),
                            message: cause.message.clone(),
                        })
                        .collect(),
                }
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
