//! Field-path validation errors, printed as Kubernetes' `field.Error` prints them:
//! `profiles[0].schedulerName: Required value`,
//! `percentageOfNodesToScore: Invalid value: 101: not in valid range [0-100]`.

use std::fmt;

/// What kind of problem a [`FieldError`] reports (Kubernetes' `field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldErrorType {
    /// A required field is missing or empty: `Required value`.
    Required,
    /// The value is not valid: `Invalid value`.
    Invalid,
    /// The value repeats another one: `Duplicate value`.
    Duplicate,
    /// The value is not one of the supported ones: `Unsupported value`.
    NotSupported,
    /// The field may not be set (here): `Forbidden`.
    Forbidden,
}

impl FieldErrorType {
    /// The text Kubernetes prints for the type.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldErrorType::Required => "Required value",
            FieldErrorType::Invalid => "Invalid value",
            FieldErrorType::Duplicate => "Duplicate value",
            FieldErrorType::NotSupported => "Unsupported value",
            FieldErrorType::Forbidden => "Forbidden",
        }
    }
}

/// The offending value of a [`FieldError`], printed as Go's `field.Error` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadValue {
    /// No value is printed.
    Omitted,
    /// A number or boolean, printed as is (`101`).
    Plain(String),
    /// A string, printed quoted (`"MostAllocated"`).
    Quoted(String),
}

impl From<i64> for BadValue {
    fn from(v: i64) -> Self {
        BadValue::Plain(v.to_string())
    }
}

impl From<i32> for BadValue {
    fn from(v: i32) -> Self {
        BadValue::Plain(v.to_string())
    }
}

impl From<usize> for BadValue {
    fn from(v: usize) -> Self {
        BadValue::Plain(v.to_string())
    }
}

impl From<&str> for BadValue {
    fn from(v: &str) -> Self {
        BadValue::Quoted(v.to_owned())
    }
}

impl From<String> for BadValue {
    fn from(v: String) -> Self {
        BadValue::Quoted(v)
    }
}

/// One problem with one field of a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, e.g. `profiles[0].plugins.score.enabled[1]`.
    pub field: String,
    /// The kind of problem.
    pub error_type: FieldErrorType,
    /// The offending value.
    pub bad_value: BadValue,
    /// What is wrong, in Kubernetes' words (may be empty).
    pub detail: String,
}

impl FieldError {
    /// `<field>: Required value[: <detail>]`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorType::Required, BadValue::Omitted, detail)
    }

    /// `<field>: Invalid value: <value>: <detail>`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<BadValue>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(field, FieldErrorType::Invalid, value.into(), detail)
    }

    /// `<field>: Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<BadValue>) -> Self {
        Self::new(field, FieldErrorType::Duplicate, value.into(), "")
    }

    /// `<field>: Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<BadValue>,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self::new(
            field,
            FieldErrorType::NotSupported,
            value.into(),
            format!("supported values: {}", list.join(", ")),
        )
    }

    /// `<field>: Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorType::Forbidden, BadValue::Omitted, detail)
    }

    fn new(
        field: impl Into<String>,
        error_type: FieldErrorType,
        bad_value: BadValue,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            error_type,
            bad_value,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error_type.as_str())?;
        // Kubernetes prints no value for Required and Forbidden errors.
        let shows_value = !matches!(
            self.error_type,
            FieldErrorType::Required | FieldErrorType::Forbidden
        );
        match &self.bad_value {
            BadValue::Plain(v) if shows_value => write!(f, ": {v}")?,
            BadValue::Quoted(v) if shows_value => write!(f, ": {v:?}")?,
            _ => {}
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Every problem found in one configuration, in the order found. Printed as Kubernetes
/// prints an aggregate: the one message, or `[first, second, ...]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors.
    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.0.iter()
    }

    /// Each error's message, as printed.
    pub fn messages(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    pub(crate) fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => one.fmt(f),
            all => {
                f.write_str("[")?;
                for (i, e) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    e.fmt(f)?;
                }
                f.write_str("]")
            }
        }
    }
}

impl<'a> IntoIterator for &'a FieldErrors {
    type Item = &'a FieldError;
    type IntoIter = std::slice::Iter<'a, FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
