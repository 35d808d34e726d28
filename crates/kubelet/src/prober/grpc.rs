//! gRPC probes (`pkg/probe/grpc`): the standard `grpc.health.v1.Health/Check` over HTTP/2
//! without TLS, its two tiny protobuf messages encoded by hand.
//!
//! `HealthCheckRequest` is `string service = 1`; `HealthCheckResponse` is
//! `ServingStatus status = 1` (`UNKNOWN`, `SERVING`, `NOT_SERVING`, `SERVICE_UNKNOWN`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::header::{HeaderMap, CONTENT_TYPE, TE, USER_AGENT};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::{sleep, timeout_at, Instant};

use super::conn::{dial, ConnectionTask};
use super::http::hyper_error;
use super::{authority, go_duration, GrpcCheck, ProbeOutcome, PROBE_USER_AGENT};

/// The health checking method's path.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// The largest response message a probe accepts (gRPC's default receive limit).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// `SERVING` in `HealthCheckResponse.ServingStatus`.
const SERVING: i32 = 1;

/// A gRPC status that ended the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Status {
    code: u32,
    message: String,
}

impl Status {
    fn new(code: u32, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
        }
    }
}

const UNKNOWN: u32 = 2;
const DEADLINE_EXCEEDED: u32 = 4;
const RESOURCE_EXHAUSTED: u32 = 8;
const UNIMPLEMENTED: u32 = 12;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;

/// A status code's name, as grpc-go prints it.
fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("Code({code})"), |name| (*name).to_string())
}

/// A serving status' name, as the generated Go enum prints it.
fn serving_status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => other.to_string(),
    }
}

/// Runs one gRPC probe (see the module documentation of `prober`).
pub(super) async fn probe(target: &GrpcCheck, timeout: Duration) -> ProbeOutcome {
    let deadline = Instant::now() + timeout;
    let address = authority(&target.host, target.port);
    // As grpc-go's blocking dial: retry until connected or out of time.
    let connect = async {
        let mut backoff = Duration::from_millis(100);
        loop {
            match connect(target).await {
                Ok(connected) => return connected,
                Err(error) => {
                    tracing::debug!(%address, %error, "gRPC probe: connecting failed");
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    };
    let (mut sender, _connection) = match timeout_at(deadline, connect).await {
        Ok(connected) => connected,
        Err(_) => {
            return ProbeOutcome::Failure(format!(
            "timeout: failed to connect service {address:?} within {}: context deadline exceeded",
            go_duration(timeout)
        ))
        }
    };
    let call = check(&mut sender, &address, &target.service, deadline);
    match timeout_at(deadline, call).await {
        Err(_) => ProbeOutcome::Failure(deadline_message(timeout)),
        Ok(Ok(SERVING)) => ProbeOutcome::Success,
        Ok(Ok(status)) => ProbeOutcome::Failure(format!(
            "service unhealthy (responded with \"{}\")",
            serving_status_name(status)
        )),
        Ok(Err(status)) => ProbeOutcome::Failure(match status.code {
            UNIMPLEMENTED => format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                status.message
            ),
            DEADLINE_EXCEEDED => deadline_message(timeout),
            code => format!(
                "error: health rpc probe failed: rpc error: code = {} desc = {}",
                code_name(code),
                status.message
            ),
        }),
    }
}

fn deadline_message(timeout: Duration) -> String {
    format!(
        "timeout: health rpc did not complete within {}",
        go_duration(timeout)
    )
}

async fn connect(target: &GrpcCheck) -> Result<(SendRequest<Full<Bytes>>, ConnectionTask), String> {
    let stream = dial(&target.host, target.port).await?;
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| hyper_error(&e))?;
    let task = ConnectionTask::spawn(connection);
    sender.ready().await.map_err(|e| hyper_error(&e))?;
    Ok((sender, task))
}

/// Calls `Health/Check`; returns the serving status, or the status that ended the call.
async fn check(
    sender: &mut SendRequest<Full<Bytes>>,
    address: &str,
    service: &str,
    deadline: Instant,
) -> Result<i32, Status> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let request = Request::post(format!("http://{address}{CHECK_PATH}"))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .header(USER_AGENT, PROBE_USER_AGENT)
        .header(
            "grpc-timeout",
            format!("{}m", remaining.as_millis().clamp(1, 99_999_999)),
        )
        .body(Full::new(frame(&encode_request(service))))
        .map_err(|e| Status::new(INTERNAL, e.to_string()))?;
    let response = sender.send_request(request).await.map_err(|e| {
        Status::new(
            UNAVAILABLE,
            format!(
                "connection error: desc = \"transport: {}\"",
                hyper_error(&e)
            ),
        )
    })?;
    let (head, mut body) = response.into_parts();
    if head.status != hyper::StatusCode::OK {
        let code = match head.status.as_u16() {
            400 => INTERNAL,
            401 => 16,
            403 => 7,
            404 => UNIMPLEMENTED,
            429 | 502 | 503 | 504 => UNAVAILABLE,
            _ => UNKNOWN,
        };
        return Err(Status::new(
            code,
            format!(
                "unexpected HTTP status code received from server: {} ({})",
                head.status.as_u16(),
                head.status.canonical_reason().unwrap_or("")
            ),
        ));
    }
    // A trailers-only response carries the status in its headers.
    if let Some(status) = status_of(&head.headers) {
        return match status {
            Ok(()) => Err(no_message()),
            Err(status) => Err(status),
        };
    }
    let content_type = head
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/grpc") {
        return Err(Status::new(
            INTERNAL,
            format!("transport: received unexpected content-type {content_type:?}"),
        ));
    }
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::new(INTERNAL, hyper_error(&e)))?;
        match frame.into_data() {
            Ok(chunk) => {
                if data.len() + chunk.len() > MAX_MESSAGE + 5 {
                    return Err(Status::new(
                        RESOURCE_EXHAUSTED,
                        format!("grpc: received message larger than max ({MAX_MESSAGE})"),
                    ));
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => {
                if let Ok(map) = frame.into_trailers() {
                    trailers = Some(map);
                }
            }
        }
    }
    match trailers.as_ref().and_then(status_of) {
        None => Err(Status::new(
            INTERNAL,
            "server closed the stream without sending trailers",
        )),
        Some(Err(status)) => Err(status),
        Some(Ok(())) => {
            let message = unframe(&data)?.ok_or_else(no_message)?;
            decode_response(message).map_err(|e| {
                Status::new(
                    INTERNAL,
                    format!("grpc: failed to unmarshal the received message: {e}"),
                )
            })
        }
    }
}

fn no_message() -> Status {
    Status::new(
        INTERNAL,
        "cardinality violation: received no response message from non-streaming RPC",
    )
}

/// `grpc-status` and `grpc-message` of a header or trailer block: `Ok` for status 0.
fn status_of(headers: &HeaderMap) -> Option<Result<(), Status>> {
    let code = headers.get("grpc-status")?;
    let code = code.to_str().ok().and_then(|c| c.parse::<u32>().ok());
    let message = headers
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    Some(match code {
        Some(0) => Ok(()),
        Some(code) => Err(Status::new(code, message)),
        None => Err(Status::new(UNKNOWN, "transport: malformed grpc-status")),
    })
}

fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One length-prefixed, uncompressed gRPC message.
pub(super) fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

/// The first message of a response body (`None` when the body is empty).
pub(super) fn unframe(data: &[u8]) -> Result<Option<&[u8]>, Status> {
    if data.is_empty() {
        return Ok(None);
    }
    let truncated = || Status::new(INTERNAL, "grpc: truncated message in response body");
    let header = data.get(..5).ok_or_else(truncated)?;
    if header[0] != 0 {
        return Err(Status::new(
            INTERNAL,
            "grpc: compressed flag set with identity or empty encoding",
        ));
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    data.get(5..5 + length).map(Some).ok_or_else(truncated)
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(super) fn get_varint(data: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = data.split_first().ok_or("unexpected EOF")?;
        *data = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err("integer overflow".into())
}

/// `HealthCheckRequest { service }` (proto3: an empty service is left out).
pub(super) fn encode_request(service: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        out.push(0x0a); // field 1, length-delimited
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// `HealthCheckResponse.status` (0, `UNKNOWN`, when absent); unknown fields are skipped.
pub(super) fn decode_response(mut data: &[u8]) -> Result<i32, String> {
    let mut status = 0;
    while !data.is_empty() {
        let key = get_varint(&mut data)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut data)? as i32,
            (_, 0) => {
                get_varint(&mut data)?;
            }
            (_, 1) => data = data.get(8..).ok_or("unexpected EOF")?,
            (_, 5) => data = data.get(4..).ok_or("unexpected EOF")?,
            (_, 2) => {
                let length = usize::try_from(get_varint(&mut data)?).map_err(|e| e.to_string())?;
                data = data.get(length..).ok_or("unexpected EOF")?;
            }
            (_, wire) => return Err(format!("cannot parse wire type {wire}")),
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_the_service_as_field_one() {
        assert_eq!(encode_request(""), Vec::<u8>::new());
        assert_eq!(encode_request("db"), vec![0x0a, 2, b'd', b'b']);
        let long = "s".repeat(200);
        assert_eq!(&encode_request(&long)[..3], &[0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn responses_decode_the_status_and_skip_unknown_fields() {
        assert_eq!(decode_response(&[]), Ok(0));
        assert_eq!(decode_response(&[0x08, 0x01]), Ok(1));
        // field 2 (length-delimited "ab"), field 3 (fixed32), then status NOT_SERVING.
        let message = [0x12, 2, b'a', b'b', 0x1d, 0, 0, 0, 0, 0x08, 0x02];
        assert_eq!(decode_response(&message), Ok(2));
        assert!(decode_response(&[0x08]).is_err());
        assert!(decode_response(&[0x0b]).is_err());
    }

    #[test]
    fn messages_are_length_prefixed_and_uncompressed() {
        let framed = frame(&[0x08, 0x01]);
        assert_eq!(&framed[..], &[0, 0, 0, 0, 2, 0x08, 0x01]);
        assert_eq!(unframe(&framed).unwrap(), Some(&[0x08u8, 0x01][..]));
        assert_eq!(unframe(&[]).unwrap(), None);
        assert_eq!(unframe(&[1, 0, 0, 0, 0]).unwrap_err().code, INTERNAL);
        assert_eq!(unframe(&[0, 0, 0, 0, 9, 1]).unwrap_err().code, INTERNAL);
    }

    #[test]
    fn status_names_and_messages_read_as_grpc_go_prints_them() {
        assert_eq!(code_name(12), "Unimplemented");
        assert_eq!(code_name(99), "Code(99)");
        assert_eq!(serving_status_name(2), "NOT_SERVING");
        assert_eq!(serving_status_name(7), "7");
        assert_eq!(percent_decode(b"not%20here%"), "not here%");
    }
}
