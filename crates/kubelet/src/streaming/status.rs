//! The `metav1.Status` a remote command ends with (on the error stream, protocol v4 and later),
//! serialised as the kubelet does: no `kind`/`apiVersion`, an empty `metadata`.

use serde::Serialize;

use super::StreamError;

/// `metav1.Status`, fields in Go's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Status {
    metadata: Empty,
    /// `Success` or `Failure`.
    pub(crate) status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "is_zero")]
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Empty {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Details {
    causes: Vec<Cause>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Cause {
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
}

fn is_zero(code: &u16) -> bool {
    *code == 0
}

impl Status {
    /// The process exited with 0.
    pub(crate) fn success() -> Status {
        Status {
            metadata: Empty {},
            status: "Success",
            message: String::new(),
            reason: String::new(),
            details: None,
            code: 0,
        }
    }

    /// The process exited with `code` (not 0); `command` is the exec's command line, if any.
    pub(crate) fn exit_code(code: i32, command: &[String]) -> Status {
        let what = if command.is_empty() {
            format!("exit code {code}")
        } else {
            format!(
                "error executing command [{}], exit code {code}",
                command.join(" ")
            )
        };
        Status {
            metadata: Empty {},
            status: "Failure",
            message: format!("command terminated with non-zero exit code: {what}"),
            reason: "NonZeroExitCode".into(),
            details: Some(Details {
                causes: vec![Cause {
                    reason: "ExitCode".into(),
                    message: code.to_string(),
                }],
            }),
            code: 0,
        }
    }

    /// The process could not be opened, or was lost: `apierrors.NewInternalError` for a 500,
    /// the error's own reason and code otherwise.
    pub(crate) fn error(error: &StreamError) -> Status {
        if error.code >= 500 || error.reason.is_empty() || error.reason == "InternalError" {
            return Status {
                metadata: Empty {},
                status: "Failure",
                message: format!("Internal error occurred: {}", error.message),
                reason: "InternalError".into(),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: String::new(),
                        message: error.message.clone(),
                    }],
                }),
                code: 500,
            };
        }
        Status {
            metadata: Empty {},
            status: "Failure",
            message: error.message.clone(),
            reason: error.reason.clone(),
            details: None,
            code: error.code,
        }
    }

    /// Whether this is a success.
    pub(crate) fn is_success(&self) -> bool {
        self.status == "Success"
    }

    /// The JSON the v4+ protocols write on the error stream.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Status serialises")
    }

    /// What the pre-v4 protocols write on the error stream: nothing on success, the message
    /// otherwise.
    pub(crate) fn to_text(&self) -> Vec<u8> {
        if self.is_success() {
            Vec::new()
        } else {
            self.message.clone().into_bytes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_an_empty_status() {
        assert_eq!(
            String::from_utf8(Status::success().to_json()).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert!(Status::success().to_text().is_empty());
    }

    #[test]
    fn a_non_zero_exit_names_the_command_and_the_code() {
        let command = ["sh", "-c", "exit 3"].map(String::from);
        assert_eq!(
            String::from_utf8(Status::exit_code(3, &command).to_json()).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
    }

    #[test]
    fn an_internal_error_is_wrapped_like_apierrors_does() {
        let error = StreamError {
            code: 500,
            reason: "InternalError".into(),
            message: "container not running".into(),
        };
        assert_eq!(
            String::from_utf8(Status::error(&error).to_json()).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: container not running","reason":"InternalError","details":{"causes":[{"message":"container not running"}]},"code":500}"#
        );
        let missing = StreamError {
            code: 404,
            reason: "NotFound".into(),
            message: "container \"c\" not found".into(),
        };
        let status = Status::error(&missing);
        assert_eq!(status.reason, "NotFound");
        assert_eq!(status.to_text(), b"container \"c\" not found");
    }
}
