//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: a container's log, from its node's kubelet.
//!
//! The options are `PodLogOptions`' query parameters: `container`, `follow`, `previous`,
//! `timestamps`, `sinceSeconds`, `sinceTime`, `tailLines`, `limitBytes` and
//! `insecureSkipTLSVerifyBackend`. They are checked as kube-apiserver checks them (an
//! unparsable number is 400, an out-of-range one 422 `PodLogOptions "p" is invalid`), the
//! container is chosen ([`choose_container`](super::choose_container)), and the kubelet's
//! `/containerLogs/{ns}/{pod}/{container}` is asked with the options kube-apiserver's
//! `LogLocation` passes on. Its body is relayed as it arrives (`text/plain`, chunked), so a
//! `follow` stream reaches the client line by line and a slow client slows the kubelet down
//! rather than filling memory. A Pod not bound to a node has no log yet: the answer is an
//! empty 200, as kube-apiserver's. A kubelet's refusal is relayed as kube-apiserver's response
//! checker does (its 400 text as 400 `BadRequest`, 500 as `InternalError`, ...).

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use capstan_api::{Error, FieldError};

use super::{
    choose_container, encode_query, kubelet_client, path_escape, query_bool, query_int, read_pod,
    StreamError, Streams,
};

/// How much of a kubelet's error body is read (kube-apiserver's `maxReadLength`).
const MAX_ERROR_BODY: usize = 50_000;

/// `PodLogOptions` from a request's query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// The container (`None`: the Pod's only one).
    pub container: Option<String>,
    /// Keep streaming new lines.
    pub follow: bool,
    /// The previous instance of the container.
    pub previous: bool,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only lines newer than this many seconds.
    pub since_seconds: Option<i64>,
    /// Only lines since this RFC 3339 time (normalized to whole seconds).
    pub since_time: Option<String>,
    /// Only the last lines.
    pub tail_lines: Option<i64>,
    /// At most this many bytes.
    pub limit_bytes: Option<i64>,
}

impl LogOptions {
    /// Reads the options from `raw_query`.
    ///
    /// Errors: 400 for a number or time that does not parse.
    pub fn from_query(raw_query: &str) -> Result<Self, Error> {
        let since_time = match crate::http::rest::query_values(raw_query, "sinceTime").first() {
            None => None,
            Some(text) => Some(normalize_rfc3339(text).ok_or_else(|| {
                Error::bad_request(format!(
                    "parsing time {text:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse {text:?} as \"2006\""
                ))
            })?),
        };
        Ok(LogOptions {
            container: crate::http::rest::query_values(raw_query, "container")
                .into_iter()
                .next()
                .filter(|c| !c.is_empty()),
            follow: query_bool(raw_query, "follow"),
            previous: query_bool(raw_query, "previous"),
            timestamps: query_bool(raw_query, "timestamps"),
            since_seconds: query_int(raw_query, "sinceSeconds")?,
            since_time,
            tail_lines: query_int(raw_query, "tailLines")?,
            limit_bytes: query_int(raw_query, "limitBytes")?,
        })
    }

    /// Kubernetes' `ValidatePodLogOptions`.
    ///
    /// Errors: 422 `PodLogOptions "<pod>" is invalid: ...`, one cause per problem.
    pub fn validate(&self, pod: &str) -> Result<(), Error> {
        let mut causes = Vec::new();
        if let Some(lines) = self.tail_lines.filter(|l| *l < 0) {
            causes.push(FieldError::invalid(
                "tailLines",
                lines,
                "must be greater than or equal to 0",
            ));
        }
        if let Some(bytes) = self.limit_bytes.filter(|b| *b < 1) {
            causes.push(FieldError::invalid(
                "limitBytes",
                bytes,
                "must be greater than 0",
            ));
        }
        match (self.since_seconds, &self.since_time) {
            (Some(_), Some(_)) => causes.push(FieldError::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            )),
            (Some(seconds), None) if seconds < 1 => causes.push(FieldError::invalid(
                "sinceSeconds",
                seconds,
                "must be greater than 0",
            )),
            _ => {}
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid {
                kind: "PodLogOptions".into(),
                name: pod.to_string(),
                causes,
            })
        }
    }

    /// The kubelet's query for these options, as kube-apiserver's `LogLocation` builds it.
    pub fn kubelet_query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if self.follow {
            pairs.push(("follow", "true".into()));
        }
        if self.previous {
            pairs.push(("previous", "true".into()));
        }
        if self.timestamps {
            pairs.push(("timestamps", "true".into()));
        }
        if let Some(seconds) = self.since_seconds {
            pairs.push(("sinceSeconds", seconds.to_string()));
        }
        if let Some(time) = &self.since_time {
            pairs.push(("sinceTime", time.clone()));
        }
        if let Some(lines) = self.tail_lines {
            pairs.push(("tailLines", lines.to_string()));
        }
        if let Some(bytes) = self.limit_bytes {
            pairs.push(("limitBytes", bytes.to_string()));
        }
        encode_query(&pairs)
    }
}

/// `text` as RFC 3339 without fractional seconds (Go's `time.RFC3339` format of the parsed
/// time), or `None` if it is not RFC 3339.
pub(crate) fn normalize_rfc3339(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    let shape = bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && matches!(bytes[10], b'T' | b't')
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19);
    if !shape {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return None;
        }
        rest = &fraction[end..];
    }
    let zone = match rest {
        "Z" | "z" => "Z".to_string(),
        offset
            if offset.len() == 6
                && matches!(offset.as_bytes()[0], b'+' | b'-')
                && offset.as_bytes()[3] == b':'
                && offset[1..3].bytes().all(|b| b.is_ascii_digit())
                && offset[4..6].bytes().all(|b| b.is_ascii_digit()) =>
        {
            if &offset[1..] == "00:00" {
                "Z".to_string()
            } else {
                offset.to_string()
            }
        }
        _ => return None,
    };
    Some(format!("{}T{}{zone}", &text[..10], &text[11..19]))
}

/// The handler of `pods/log`.
pub(crate) async fn pod_log(
    State(streams): State<Streams>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    match serve_log(&streams, &namespace, &name, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn serve_log(
    streams: &Streams,
    namespace: &str,
    name: &str,
    request: Request,
) -> Result<Response, StreamError> {
    let raw_query = request.uri().query().unwrap_or_default().to_string();
    let options = LogOptions::from_query(&raw_query)?;
    options.validate(name)?;
    let pod = read_pod(streams, namespace, name).await?;
    let container = choose_container(&pod, options.container.as_deref())?;
    let Some(node) = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
    else {
        return Ok(log_response(Body::empty()));
    };
    let kubelet = kubelet_client(request.extensions());
    let location = kubelet
        .node_location(streams.client(), &node)
        .await
        .map_err(location_error)?;
    let query = options.kubelet_query();
    let mut path = format!(
        "/containerLogs/{}/{}/{}",
        path_escape(namespace),
        path_escape(name),
        path_escape(&container)
    );
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    let url = location.url(&path);
    let outgoing = axum::http::Request::builder()
        .method(Method::GET)
        .uri(&path)
        .body(Body::empty())
        .map_err(|e| StreamError::unknown(500, e.to_string()))?;
    let response = kubelet
        .send(&location, outgoing)
        .await
        .map_err(|e| StreamError::unknown(500, e.for_request("GET", &url)))?;
    let code = response.status().as_u16();
    if !(200..=206).contains(&code) {
        let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        return Err(kubelet_refusal(
            code,
            String::from_utf8_lossy(&body).trim_end().to_string(),
        ));
    }
    Ok(log_response(Body::new(response.into_body())))
}

/// A Node that cannot be read or has no usable address: its API error, or a reasonless 500.
pub(crate) fn location_error(error: super::KubeletError) -> StreamError {
    match error {
        super::KubeletError::Api(error) => StreamError::Api(error),
        other => StreamError::unknown(500, other.to_string()),
    }
}

fn log_response(body: Body) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// A kubelet's non-2xx answer to a log request, as kube-apiserver's generic response checker
/// turns it into an error.
pub(crate) fn kubelet_refusal(code: u16, body: String) -> StreamError {
    let (reason, message) = match code {
        400 => return StreamError::Api(Error::bad_request(body)),
        500 => return StreamError::Api(Error::internal(body)),
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials".to_string(),
        ),
        403 => ("Forbidden", body),
        404 => (
            "NotFound",
            "the server could not find the requested resource".to_string(),
        ),
        409 => ("Conflict", "the server reported a conflict".to_string()),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later"
                .to_string(),
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request".to_string(),
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request".to_string(),
        ),
        _ => {
            return StreamError::unknown(
                code,
                format!(
                    "the server responded with the status code {code} but did not return more information"
                ),
            )
        }
    };
    StreamError::Status {
        code,
        reason: Some(reason),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_reaches_the_kubelet_in_kubernetes_order() {
        let options = LogOptions::from_query(
            "container=app&follow=true&previous=1&timestamps=true&sinceSeconds=30&tailLines=5&limitBytes=100",
        )
        .unwrap();
        assert_eq!(options.container.as_deref(), Some("app"));
        assert_eq!(
            options.kubelet_query(),
            "follow=true&limitBytes=100&previous=true&sinceSeconds=30&tailLines=5&timestamps=true"
        );
        assert_eq!(LogOptions::default().kubelet_query(), "");
    }

    #[test]
    fn since_time_is_normalized_to_whole_seconds() {
        let options = LogOptions::from_query("sinceTime=2026-12-07T10:11:12.345Z").unwrap();
        assert_eq!(options.since_time.as_deref(), Some("2026-12-07T10:11:12Z"));
        assert_eq!(
            normalize_rfc3339("2026-12-07T10:11:12+02:00").as_deref(),
            Some("2026-12-07T10:11:12+02:00")
        );
        assert!(LogOptions::from_query("sinceTime=yesterday").is_err());
        assert!(normalize_rfc3339("2026-12-07 10:11:12Z").is_none());
    }

    #[test]
    fn invalid_options_are_refused_with_kubernetes_messages() {
        let negative = LogOptions {
            tail_lines: Some(-1),
            ..Default::default()
        };
        let error = negative.validate("web").unwrap_err();
        assert_eq!(error.code(), 422);
        assert_eq!(
            error.to_string(),
            "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        let both = LogOptions {
            since_seconds: Some(10),
            since_time: Some("2026-12-07T10:11:12Z".into()),
            ..Default::default()
        };
        assert!(both
            .validate("web")
            .unwrap_err()
            .to_string()
            .contains("at most one of `sinceTime` or `sinceSeconds` may be specified"));
        let zero = LogOptions {
            limit_bytes: Some(0),
            since_seconds: Some(0),
            ..Default::default()
        };
        let message = zero.validate("web").unwrap_err().to_string();
        assert!(
            message.contains("limitBytes: Invalid value: 0: must be greater than 0"),
            "{message}"
        );
        assert!(
            message.contains("sinceSeconds: Invalid value: 0"),
            "{message}"
        );
        assert!(LogOptions::default().validate("web").is_ok());
    }

    #[test]
    fn kubelet_refusals_keep_their_code_and_text_where_kubernetes_does() {
        match kubelet_refusal(400, "container \"app\" is waiting to start".into()) {
            StreamError::Api(error) => {
                assert_eq!(error.code(), 400);
                assert_eq!(error.to_string(), "container \"app\" is waiting to start");
            }
            other => panic!("{other:?}"),
        }
        match kubelet_refusal(404, "gone".into()) {
            StreamError::Status { code, reason, .. } => {
                assert_eq!((code, reason), (404, Some("NotFound")))
            }
            other => panic!("{other:?}"),
        }
        match kubelet_refusal(418, String::new()) {
            StreamError::Status { code, reason, .. } => assert_eq!((code, reason), (418, None)),
            other => panic!("{other:?}"),
        }
    }
}
