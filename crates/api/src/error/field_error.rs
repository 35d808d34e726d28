//! [`FieldError`]: one problem with one field, mirroring apimachinery's `field.Error`, with
//! its [`FieldErrorKind`], its Kubernetes rendering and its `StatusCause` form.

use kube_core::response::StatusCause;

use super::quote;

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

/// Renders a field value as Kubernetes messages do: strings quoted, scalars bare.
pub(super) fn render_value(value: &serde_json::Value) -> String {
    value.to_string()
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
