//! Errors on the wire: a Kubernetes `Status` object with the error's HTTP code.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use capstan_api::Error;
use serde_json::Value;

/// An [`Error`] answered as Kubernetes does: the code, and a `Status` body naming the reason.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError(error)
    }
}

/// The `Status` object for `error`, with `kind` and `apiVersion`.
pub fn status_json(error: &Error) -> Value {
    let mut status = serde_json::to_value(error.to_status()).unwrap_or_default();
    if let Some(object) = status.as_object_mut() {
        object.insert("kind".into(), "Status".into());
        object.insert("apiVersion".into(), "v1".into());
        object.insert("metadata".into(), Value::Object(Default::default()));
    }
    status
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = crate::protobuf::struct_order::to_vec(&status_json(&self.0));
        let mut response =
            (code, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(retry_after) = self.0.retry_after() {
            if let Ok(value) = HeaderValue::from_str(&retry_after.as_secs().to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
