//! Warnings admission steps return with a request, as kube-apiserver's `warning.AddWarning`:
//! an admitted request may carry messages for the client, which the HTTP server sends as
//! `Warning: 299 - "<text>"` headers (kubectl prints each as `Warning: <text>`).
//!
//! The HTTP server runs each request's handling inside [`record`]; a step calls [`add`]. In
//! process (the registry's `Client`), nothing records and [`add`] does nothing. The same text
//! is kept once per request, since the registry may run validating steps again when it retries
//! a write.

use std::future::Future;
use std::sync::{Arc, Mutex};

tokio::task_local! {
    /// The warnings of the request being served.
    static WARNINGS: Recorder;
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn push(&self, text: String) {
        let mut warnings = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !warnings.contains(&text) {
            warnings.push(text);
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Adds `text` to the warnings of the request being handled. Returns whether a request is
/// recording warnings (`false` in process, where the text is dropped). Adding the same text
/// twice keeps it once.
pub fn add(text: impl Into<String>) -> bool {
    let text = text.into();
    WARNINGS.try_with(|recorder| recorder.push(text)).is_ok()
}

/// Runs `future` (one request's handling), collecting the warnings [`add`]ed while it runs, in
/// the order they were added.
pub async fn record<F: Future>(future: F) -> (F::Output, Vec<String>) {
    let recorder = Recorder::default();
    let output = WARNINGS.scope(recorder.clone(), future).await;
    (output, recorder.take())
}

/// The `Warning` header value of `text`: `299 - "<text>"`, the text quoted with `"` and `\`
/// escaped.
pub fn header_value(text: &str) -> String {
    format!("299 - {}", serde_json::Value::String(text.to_string()))
}

/// Runs a request's handling, adding a `Warning` header per warning recorded.
#[cfg(feature = "server")]
pub(crate) async fn with_warning_headers<F>(handling: F) -> axum::response::Response
where
    F: Future<Output = axum::response::Response>,
{
    let (mut response, warnings) = record(handling).await;
    for text in warnings {
        if let Ok(value) = axum::http::HeaderValue::from_bytes(header_value(&text).as_bytes()) {
            response
                .headers_mut()
                .append(axum::http::header::WARNING, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::{within, LIMIT};

    #[tokio::test]
    async fn warnings_added_while_recording_are_returned_once_each_in_order() {
        let (output, warnings) = within(
            LIMIT,
            record(async {
                assert!(add("first"));
                tokio::task::yield_now().await;
                assert!(add("second"));
                assert!(add("first"));
                7
            }),
        )
        .await;
        assert_eq!(output, 7);
        assert_eq!(warnings, ["first", "second"]);
    }

    #[test]
    fn outside_a_request_warnings_are_dropped() {
        assert!(!add("nobody listens"));
    }

    #[test]
    fn header_values_quote_the_text() {
        assert_eq!(
            header_value(r#"would violate PodSecurity "baseline:latest": x"#),
            r#"299 - "would violate PodSecurity \"baseline:latest\": x""#
        );
    }
}
