//! The HTTP side of the streaming protocols: recognising a WebSocket or SPDY upgrade,
//! negotiating the subprotocol in the client's order of preference, answering `101 Switching
//! Protocols`, and handing the upgraded connection to a task.

use std::future::Future;

use axum::body::Body;
use http::header::{CONNECTION, CONTENT_TYPE, UPGRADE};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The upgraded connection handed to a protocol task.
pub(crate) type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// `X-Stream-Protocol-Version`: the SPDY subprotocol, offered (possibly several times) by the
/// client and chosen by the server.
pub(crate) const STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";
/// `X-Accepted-Stream-Protocol-Versions`: what the server supports, when negotiation fails.
const ACCEPTED_STREAM_PROTOCOL_VERSIONS: &str = "x-accepted-stream-protocol-versions";
const SEC_WEBSOCKET_PROTOCOL: &str = "sec-websocket-protocol";
const SEC_WEBSOCKET_KEY: &str = "sec-websocket-key";
const SEC_WEBSOCKET_ACCEPT: &str = "sec-websocket-accept";
const SEC_WEBSOCKET_VERSION: &str = "sec-websocket-version";

/// Whether header `name` has the comma-separated token `token` (case-insensitively).
fn has_token(
    headers: &HeaderMap,
    name: impl http::header::AsHeaderName + Copy,
    token: &str,
) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// Whether the request asks for a WebSocket.
pub(crate) fn is_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, &CONNECTION, "upgrade") && has_token(headers, &UPGRADE, "websocket")
}

/// Whether the request asks for SPDY/3.1.
pub(crate) fn is_spdy(headers: &HeaderMap) -> bool {
    has_token(headers, &CONNECTION, "upgrade") && has_token(headers, &UPGRADE, "spdy/3.1")
}

/// The values of a list header, in order, across repeated headers and commas.
fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The WebSocket subprotocols the client offers, most preferred first.
pub(crate) fn websocket_protocols(headers: &HeaderMap) -> Vec<String> {
    list(headers, SEC_WEBSOCKET_PROTOCOL)
}

/// The SPDY stream protocols the client offers, most preferred first.
pub(crate) fn spdy_protocols(headers: &HeaderMap) -> Vec<String> {
    list(headers, STREAM_PROTOCOL_VERSION)
}

/// The first of the client's protocols the server supports.
pub(crate) fn negotiate<'a>(client: &[String], server: &[&'a str]) -> Option<&'a str> {
    client
        .iter()
        .find_map(|c| server.iter().find(|s| **s == c.as_str()).copied())
}

/// A plain-text error answer (the kubelet answers failed upgrades with `http.Error`).
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    message.push('\n');
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(Body::from(message))
        .expect("a valid response")
}

/// The answer to a SPDY request none of whose protocols the server supports.
pub(crate) fn spdy_unsupported(client: &[String], server: &[&str]) -> Response<Body> {
    let mut response = error(
        StatusCode::FORBIDDEN,
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports [{}], server supports [{}]",
            client.join(" "),
            server.join(" ")
        ),
    );
    for protocol in server {
        response.headers_mut().append(
            ACCEPTED_STREAM_PROTOCOL_VERSIONS,
            protocol.parse().expect("a valid header value"),
        );
    }
    response
}

/// The answer to a WebSocket request none of whose subprotocols the server supports.
pub(crate) fn websocket_unsupported(client: &[String], server: &[&str]) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        format!(
            "unable to upgrade: requested protocol(s) are not supported: [{}]; supports [{}]",
            client.join(" "),
            server.join(" ")
        ),
    )
}

/// `101 Switching Protocols` to SPDY/3.1 with the chosen `protocol` (if the client offered
/// any).
pub(crate) fn spdy_switching(protocol: Option<&str>) -> Response<Body> {
    let mut builder = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "SPDY/3.1");
    if let Some(protocol) = protocol {
        builder = builder.header(STREAM_PROTOCOL_VERSION, protocol);
    }
    builder.body(Body::empty()).expect("a valid response")
}

/// `101 Switching Protocols` to a WebSocket with `protocol` (if any); a 400 answer if the
/// request is not a valid WebSocket handshake.
pub(crate) fn websocket_switching(
    headers: &HeaderMap,
    protocol: Option<&str>,
) -> Result<Response<Body>, Box<Response<Body>>> {
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing Sec-WebSocket-Key",
        )));
    };
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() != b"13")
    {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: unsupported Sec-WebSocket-Version",
        )));
    }
    let mut builder = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()));
    if let Some(protocol) = protocol {
        builder = builder.header(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    Ok(builder.body(Body::empty()).expect("a valid response"))
}

/// Runs `serve` on the connection once hyper has upgraded it (after the 101 is sent). Must be
/// called within a Tokio runtime, on a request served by hyper (otherwise nothing happens:
/// the upgrade never completes).
pub(crate) fn on_upgrade<F, Fut>(request: &mut Request<Body>, serve: F)
where
    F: FnOnce(Upgraded) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
            Err(error) => tracing::debug!(%error, "streaming: upgrade failed"),
        }
    });
}

/// `application/x-www-form-urlencoded` pairs of a query (`+` and `%XX` decoded), in order.
pub(crate) fn form_pairs(query: &str) -> Vec<(String, String)> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high * 16 + low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((n, v)) => (decode(n), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_pairs_decode_escapes() {
        assert_eq!(
            form_pairs("command=sh&command=-c&command=exit+3%25&x"),
            vec![
                ("command".to_string(), "sh".to_string()),
                ("command".to_string(), "-c".to_string()),
                ("command".to_string(), "exit 3%".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
    }

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn negotiation_follows_the_clients_order_across_repeated_headers() {
        let offered = headers(&[
            (STREAM_PROTOCOL_VERSION, "v5.channel.k8s.io"),
            (STREAM_PROTOCOL_VERSION, "v4.channel.k8s.io, channel.k8s.io"),
        ]);
        let client = spdy_protocols(&offered);
        assert_eq!(client.len(), 3);
        assert_eq!(
            negotiate(&client, &["channel.k8s.io", "v4.channel.k8s.io"]),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(negotiate(&client, &["portforward.k8s.io"]), None);
    }

    #[test]
    fn upgrades_are_recognised_case_insensitively() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert!(is_websocket(&ws));
        assert!(!is_spdy(&ws));
        let spdy = headers(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")]);
        assert!(is_spdy(&spdy));
        assert!(!is_websocket(&headers(&[("upgrade", "websocket")])));
    }

    #[test]
    fn the_websocket_answer_carries_the_accept_key_and_protocol() {
        let request = headers(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]);
        let response = websocket_switching(&request, Some("v5.channel.k8s.io")).unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            response.headers()[SEC_WEBSOCKET_PROTOCOL],
            "v5.channel.k8s.io"
        );
        assert!(websocket_switching(&HeaderMap::new(), None).is_err());
    }

    #[test]
    fn a_failed_spdy_negotiation_lists_what_the_server_accepts() {
        let response = spdy_unsupported(&["v9".to_string()], &["v4.channel.k8s.io"]);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[ACCEPTED_STREAM_PROTOCOL_VERSIONS],
            "v4.channel.k8s.io"
        );
    }
}
