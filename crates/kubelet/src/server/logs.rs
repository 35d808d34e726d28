//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log as plain text, with
//! the kubelet's options (`follow`, `previous`, `timestamps`, `tailLines`, `limitBytes`,
//! `sinceSeconds`, `sinceTime`) and its answers for what cannot be read.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_runtime::{self as rt, LogEntry, LogStream};
use futures::{FutureExt, StreamExt};
use http::StatusCode;

use super::query::{LogQuery, QueryError};
use super::resolve::{attempts, has_container, log_container_id, runtime_id};
use super::{text, ServerState};

/// What is written of each log line: lines before `since` are skipped, each line is
/// prefixed with its time when `timestamps` is set, and output stops after `limit` bytes
/// (cutting a line if need be), as the kubelet's log writer does.
#[derive(Debug, Clone)]
pub(crate) struct LogFilter {
    since: Option<SystemTime>,
    timestamps: bool,
    remaining: Option<u64>,
}

impl LogFilter {
    pub(crate) fn new(since: Option<SystemTime>, timestamps: bool, limit: Option<u64>) -> Self {
        LogFilter {
            since,
            timestamps,
            remaining: limit,
        }
    }

    /// Whether the byte limit has been reached (nothing more is written).
    pub(crate) fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// The bytes to write for `entry` (empty when it is skipped).
    pub(crate) fn render(&mut self, entry: &LogEntry) -> Bytes {
        if self.exhausted() || self.since.is_some_and(|since| entry.timestamp < since) {
            return Bytes::new();
        }
        let mut out = BytesMut::with_capacity(entry.line.len() + 40);
        if self.timestamps {
            out.put_slice(rfc3339_nano(entry.timestamp).as_bytes());
            out.put_u8(b' ');
        }
        out.put_slice(&entry.line);
        out.put_u8(b'\n');
        let mut out = out.freeze();
        if let Some(remaining) = self.remaining.as_mut() {
            let keep = (*remaining).min(out.len() as u64);
            out.truncate(keep as usize);
            *remaining -= keep;
        }
        out
    }
}

/// `t` as Go's `time.RFC3339Nano` prints it in UTC: nanoseconds without trailing zeros
/// (`2024-01-01T00:00:00.5Z`, `2024-01-01T00:00:00Z`).
pub(crate) fn rfc3339_nano(t: SystemTime) -> String {
    let full = rt::rfc3339_nanos(t); // ...T00:00:00.500000000Z
    let Some((head, fraction)) = full.trim_end_matches('Z').split_once('.') else {
        return full;
    };
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{head}Z")
    } else {
        format!("{head}.{fraction}Z")
    }
}

/// The most bytes of lines one body chunk gathers.
const CHUNK_BYTES: usize = 64 * 1024;

/// The log body: the runtime's lines through the filter, ending when the runtime's stream
/// does (for `follow`: once the container has stopped) or the limit is reached. A client
/// that goes away drops the body, and with it the runtime's stream.
///
/// Each chunk holds every line already available, up to [`CHUNK_BYTES`]: a line is never held
/// back waiting for more (`follow` stays live), and a burst of output does not become one
/// chunk, one write and one wake-up per line.
fn body(stream: LogStream, filter: LogFilter) -> Body {
    let chunks = futures::stream::unfold(
        (stream.fuse(), filter, false),
        |(mut stream, mut filter, mut done)| async move {
            let mut out = BytesMut::new();
            while !done && !filter.exhausted() && out.len() < CHUNK_BYTES {
                let next = if out.is_empty() {
                    stream.next().await
                } else {
                    match stream.next().now_or_never() {
                        Some(next) => next,
                        None => break,
                    }
                };
                match next {
                    Some(Ok(entry)) => out.extend_from_slice(&filter.render(&entry)),
                    Some(Err(error)) => {
                        tracing::debug!(%error, "kubelet API: reading a container log failed");
                        done = true;
                    }
                    None => done = true,
                }
            }
            (!out.is_empty()).then(|| {
                (
                    Ok::<_, std::io::Error>(out.freeze()),
                    (stream, filter, done),
                )
            })
        },
    );
    Body::from_stream(chunks)
}

/// The handler.
pub(crate) async fn container_logs(
    State(state): State<Arc<ServerState>>,
    Path((namespace, pod_name, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = match LogQuery::parse(query.as_deref().unwrap_or("")) {
        Ok(query) => query,
        Err(error @ QueryError::Undecodable) => {
            return text(StatusCode::BAD_REQUEST, error.to_string())
        }
        Err(error @ QueryError::Invalid) => {
            return text(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
        }
    };
    let Some(pod) = state.pods.get(&namespace, &pod_name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {pod_name:?} does not exist"),
        );
    };
    if !has_container(&pod, &container) {
        return text(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod_name:?}"),
        );
    }
    let id = match resolve(&state, &pod, &pod_name, &container, query.previous).await {
        Ok(id) => id,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let mut options = rt::LogOptions::all();
    if query.follow {
        options = options.follow();
    }
    if let Some(tail) = query.tail_lines {
        options = options.tail(tail as usize);
    }
    let since = query.since(state.clock.now());
    if let Some(since) = since {
        options = options.since(since);
    }
    let stream = match state.runtime.container_logs(&id, options).await {
        Ok(stream) => stream,
        Err(error) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("failed to get container status {id:?}: {error}"),
            )
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body(
            stream,
            LogFilter::new(since, query.timestamps, query.limit_bytes),
        ))
        .expect("a valid response")
}

/// The runtime id of the container whose log is wanted: from the Pod's status when it lists
/// the container, else the newest attempt in the runtime (the one before for `previous`).
async fn resolve(
    state: &ServerState,
    pod: &Pod,
    pod_name: &str,
    container: &str,
    previous: bool,
) -> Result<String, String> {
    if let Some(id) = log_container_id(pod_name, pod.status.as_ref(), container, previous)? {
        return Ok(runtime_id(&id).to_string());
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let found = attempts(state.runtime.as_ref(), &uid, container)
        .await
        .map_err(|e| format!("failed to list containers of pod {pod_name:?}: {e}"))?;
    let newest = found.first();
    let picked = if previous {
        // The attempt before the newest one.
        found.get(1)
    } else {
        newest
    };
    match picked {
        Some(c) => Ok(c.id.clone()),
        None if previous => Err(format!(
            "previous terminated container {container:?} in pod {pod_name:?} not found"
        )),
        None => Err(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start - no logs yet"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(second: u64, nanos: u32, line: &str) -> LogEntry {
        LogEntry {
            timestamp: SystemTime::UNIX_EPOCH + Duration::new(1_704_067_200 + second, nanos),
            stream: rt::OutputStream::Stdout,
            line: Bytes::copy_from_slice(line.as_bytes()),
        }
    }

    #[test]
    fn times_print_as_go_prints_rfc3339_nano() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_704_067_200, 500_000_000);
        assert_eq!(rfc3339_nano(t), "2024-01-01T00:00:00.5Z");
        let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200);
        assert_eq!(rfc3339_nano(whole), "2024-01-01T00:00:00Z");
        let fine = SystemTime::UNIX_EPOCH + Duration::new(1_704_067_200, 123_456_789);
        assert_eq!(rfc3339_nano(fine), "2024-01-01T00:00:00.123456789Z");
    }

    #[test]
    fn lines_are_written_as_logged_with_optional_timestamps() {
        let mut plain = LogFilter::new(None, false, None);
        assert_eq!(plain.render(&entry(1, 0, "hello")), Bytes::from("hello\n"));
        let mut stamped = LogFilter::new(None, true, None);
        assert_eq!(
            stamped.render(&entry(2, 250_000_000, "world")),
            Bytes::from("2024-01-01T00:00:02.25Z world\n")
        );
    }

    #[test]
    fn lines_before_since_are_skipped() {
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_205);
        let mut filter = LogFilter::new(Some(since), false, None);
        assert!(filter.render(&entry(4, 999_999_999, "early")).is_empty());
        assert_eq!(
            filter.render(&entry(5, 0, "on time")),
            Bytes::from("on time\n")
        );
    }

    #[test]
    fn the_byte_limit_cuts_the_output_mid_line_and_then_stops() {
        let mut filter = LogFilter::new(None, false, Some(8));
        assert_eq!(filter.render(&entry(1, 0, "abc")), Bytes::from("abc\n"));
        assert!(!filter.exhausted());
        assert_eq!(filter.render(&entry(2, 0, "defgh")), Bytes::from("defg"));
        assert!(filter.exhausted());
        assert!(filter.render(&entry(3, 0, "more")).is_empty());
    }
}
