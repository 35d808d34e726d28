//! Kubernetes' streaming protocols, server side: `exec`/`attach` ("remote command") and
//! `portForward`, over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`, ...) and
//! SPDY/3.1, as the kubelet serves them to kubectl, kube-rs and the API server's proxy.
//!
//! - Remote command over WebSocket: subprotocols `v5.channel.k8s.io` (with the close signal
//!   `[255, channel]`), `v4.channel.k8s.io` (the error channel ends with a JSON `Status`),
//!   `v3`/`v2`/`channel.k8s.io` (plain-text errors) and the `base64.` variants; channels 0
//!   stdin, 1 stdout, 2 stderr, 3 error, 4 resize.
//! - Remote command over SPDY/3.1 (`X-Stream-Protocol-Version`): one stream per standard
//!   stream, named by the `streamtype` header.
//! - Port forward over SPDY/3.1 (`portforward.k8s.io`): an `error` and a `data` stream per
//!   connection; the same SPDY session tunnelled in a WebSocket (`SPDY/3.1+portforward.k8s.io`,
//!   kubectl 1.31+); and the native WebSocket form (`v4.channel.k8s.io` with `?ports=`,
//!   kube-rs' `Api::portforward`).
//!
//! Every buffer is bounded: a client that stops reading stalls the process's output rather
//! than growing memory. A session ends when the process exits (its output is drained first)
//! or when the client goes away (the process is then dropped, which kills an exec).

mod port_forward;
mod remote_command;
mod spdy;
mod status;
mod upgrade;
mod websocket;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};

use capstan_runtime::{DuplexStream, ProcessIo, StdioOptions};

use remote_command::Version;
use spdy::SessionConfig;

/// Why a process or a connection could not be opened: sent to the client as a Kubernetes
/// `Status` (on the error stream once upgraded, or as the HTTP answer before).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StreamError {
    /// HTTP-style code: 400, 404, 500, ...
    pub code: u16,
    /// Kubernetes' `reason` (`BadRequest`, `NotFound`, `InternalError`).
    pub reason: String,
    /// The message.
    pub message: String,
}

impl StreamError {
    /// A 500 `InternalError` with `message` (what a runtime failure becomes).
    pub fn internal(message: impl Into<String>) -> Self {
        StreamError {
            code: 500,
            reason: "InternalError".into(),
            message: message.into(),
        }
    }
}

/// Opens the process once the client's streams are known (exec: starts the command; attach:
/// connects to the container).
pub type OpenProcess =
    Box<dyn FnOnce(StdioOptions) -> BoxFuture<'static, Result<ProcessIo, StreamError>> + Send>;

/// Opens a connection to a port of the pod.
pub type ConnectPort =
    Arc<dyn Fn(u16) -> BoxFuture<'static, Result<DuplexStream, StreamError>> + Send + Sync>;

/// Timeouts and keep-alives of the streaming sessions.
#[derive(Debug, Clone)]
pub struct StreamingOptions {
    /// How long a SPDY client has to open the streams of an exec/attach, or the second stream
    /// of a port-forward pair (the kubelet's `streamCreationTimeout`, 30 s by default).
    pub stream_creation_timeout: Duration,
    /// How often the server pings a SPDY client (`None`: never; 30 s by default). Client pings
    /// are always answered.
    pub ping_interval: Option<Duration>,
}

impl Default for StreamingOptions {
    fn default() -> Self {
        StreamingOptions {
            stream_creation_timeout: remote_command::spdy::STREAM_CREATION_TIMEOUT,
            ping_interval: SessionConfig::default().ping_interval,
        }
    }
}

impl StreamingOptions {
    fn session(&self) -> SessionConfig {
        SessionConfig {
            ping_interval: self.ping_interval,
            ..SessionConfig::default()
        }
    }
}

/// Serves an exec or attach request whose streams are `stdio`: negotiates the protocol,
/// answers `101 Switching Protocols`, then pumps the streams until the process exits and
/// reports its exit (a `Status`) on the error stream.
///
/// Called by the kubelet's HTTP handlers (and anything serving `/exec`, `/attach`) with the
/// request as hyper delivered it, so that the connection can be upgraded; `open` runs once,
/// after the upgrade. The exec's command, for the non-zero exit message, is read from the
/// `command` query parameters. Answers 400 (not an upgrade, no stream asked for) or 403 (no
/// common SPDY protocol) without calling `open`.
pub fn serve_remote_command(
    request: Request<Body>,
    stdio: StdioOptions,
    open: OpenProcess,
) -> Response<Body> {
    serve_remote_command_with(request, stdio, open, StreamingOptions::default())
}

/// [`serve_remote_command`] with explicit [`StreamingOptions`].
pub fn serve_remote_command_with(
    mut request: Request<Body>,
    stdio: StdioOptions,
    open: OpenProcess,
    options: StreamingOptions,
) -> Response<Body> {
    if !stdio.stdin && !stdio.stdout && !stdio.stderr {
        return upgrade::error(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    let command: Vec<String> = upgrade::form_pairs(request.uri().query().unwrap_or(""))
        .into_iter()
        .filter(|(name, _)| name == "command")
        .map(|(_, value)| value)
        .collect();
    let headers = request.headers().clone();
    if upgrade::is_websocket(&headers) {
        let offered = upgrade::websocket_protocols(&headers);
        let protocol = if offered.is_empty() {
            ""
        } else {
            match upgrade::negotiate(&offered, remote_command::websocket::PROTOCOLS) {
                Some(protocol) => protocol,
                None => {
                    return upgrade::websocket_unsupported(
                        &offered,
                        remote_command::websocket::PROTOCOLS,
                    )
                }
            }
        };
        let response = match upgrade::websocket_switching(
            &headers,
            (!protocol.is_empty()).then_some(protocol),
        ) {
            Ok(response) => response,
            Err(response) => return *response,
        };
        upgrade::on_upgrade(&mut request, move |io| {
            remote_command::websocket::serve(io, protocol.to_string(), stdio, open, command)
        });
        return response;
    }
    if upgrade::is_spdy(&headers) {
        let offered = upgrade::spdy_protocols(&headers);
        let protocol = if offered.is_empty() {
            None
        } else {
            match upgrade::negotiate(&offered, remote_command::spdy::PROTOCOLS) {
                Some(protocol) => Some(protocol),
                None => {
                    return upgrade::spdy_unsupported(&offered, remote_command::spdy::PROTOCOLS)
                }
            }
        };
        let version = protocol.map(Version::of).unwrap_or(Version::V1);
        upgrade::on_upgrade(&mut request, move |io| {
            remote_command::spdy::serve(
                io,
                version,
                stdio,
                open,
                command,
                options.session(),
                options.stream_creation_timeout,
            )
        });
        return upgrade::spdy_switching(protocol);
    }
    missing_upgrade()
}

/// Serves a port-forward request: negotiates the protocol, answers `101`, then opens one
/// connection per stream pair (SPDY) or per `ports` entry (WebSocket) through `connect`.
///
/// Called by the kubelet's HTTP handlers with the request as hyper delivered it. A failed
/// `connect` is reported to the client on that port's error stream, as the kubelet words it
/// (`error forwarding port <port> to pod <pod>, uid : <message>`, the pod named from the
/// request path). Answers 400 (not an upgrade; a WebSocket without `ports`) or 403 (no common
/// SPDY protocol).
pub fn serve_port_forward(request: Request<Body>, connect: ConnectPort) -> Response<Body> {
    serve_port_forward_with(request, connect, StreamingOptions::default())
}

/// [`serve_port_forward`] with explicit [`StreamingOptions`].
pub fn serve_port_forward_with(
    mut request: Request<Body>,
    connect: ConnectPort,
    options: StreamingOptions,
) -> Response<Body> {
    let pod = pod_of(request.uri().path());
    let headers = request.headers().clone();
    if upgrade::is_websocket(&headers) {
        let offered = upgrade::websocket_protocols(&headers);
        let mut supported = vec![port_forward::TUNNEL_PROTOCOL];
        supported.extend_from_slice(port_forward::websocket::PROTOCOLS);
        let protocol = if offered.is_empty() {
            ""
        } else {
            match upgrade::negotiate(&offered, &supported) {
                Some(protocol) => protocol,
                None => return upgrade::websocket_unsupported(&offered, &supported),
            }
        };
        if protocol == port_forward::TUNNEL_PROTOCOL {
            let response = match upgrade::websocket_switching(&headers, Some(protocol)) {
                Ok(response) => response,
                Err(response) => return *response,
            };
            upgrade::on_upgrade(&mut request, move |io| async move {
                let ws = websocket::server(io).await;
                port_forward::spdy::serve(
                    websocket::ByteStream::new(ws),
                    connect,
                    pod,
                    options.session(),
                    options.stream_creation_timeout,
                )
                .await
            });
            return response;
        }
        let ports = match port_forward::websocket::ports(request.uri().query().unwrap_or("")) {
            Ok(ports) => ports,
            Err(message) => return upgrade::error(StatusCode::BAD_REQUEST, message),
        };
        let response = match upgrade::websocket_switching(
            &headers,
            (!protocol.is_empty()).then_some(protocol),
        ) {
            Ok(response) => response,
            Err(response) => return *response,
        };
        upgrade::on_upgrade(&mut request, move |io| {
            port_forward::websocket::serve(io, protocol.to_string(), ports, connect, pod)
        });
        return response;
    }
    if upgrade::is_spdy(&headers) {
        let offered = upgrade::spdy_protocols(&headers);
        let protocol = if offered.is_empty() {
            None
        } else {
            match upgrade::negotiate(&offered, &[port_forward::SPDY_PROTOCOL]) {
                Some(protocol) => Some(protocol),
                None => return upgrade::spdy_unsupported(&offered, &[port_forward::SPDY_PROTOCOL]),
            }
        };
        upgrade::on_upgrade(&mut request, move |io| {
            port_forward::spdy::serve(
                io,
                connect,
                pod,
                options.session(),
                options.stream_creation_timeout,
            )
        });
        return upgrade::spdy_switching(protocol);
    }
    missing_upgrade()
}

fn missing_upgrade() -> Response<Body> {
    upgrade::error(
        StatusCode::BAD_REQUEST,
        "unable to upgrade: missing upgrade headers in request",
    )
}

/// The pod a port-forward path names: `.../pods/<name>/portforward` (the API server's) or
/// `/portForward/<namespace>/<pod>[/<uid>]` (the kubelet's).
fn pod_of(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(i) = segments.iter().position(|s| *s == "pods") {
        if let Some(name) = segments.get(i + 1) {
            return (*name).to_string();
        }
    }
    if let Some(i) = segments
        .iter()
        .position(|s| s.eq_ignore_ascii_case("portforward"))
    {
        if let Some(pod) = segments.get(i + 2) {
            return (*pod).to_string();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_is_named_from_either_path_form() {
        assert_eq!(
            pod_of("/api/v1/namespaces/default/pods/web/portforward"),
            "web"
        );
        assert_eq!(pod_of("/portForward/default/web/uid-1"), "web");
        assert_eq!(pod_of("/other"), "");
    }

    #[test]
    fn a_request_without_an_upgrade_is_refused() {
        let request = Request::builder()
            .uri("/exec/default/p/c?command=ls&stdout=true")
            .body(Body::empty())
            .unwrap();
        let open: OpenProcess =
            Box::new(|_| Box::pin(async { Err(StreamError::internal("unused")) }));
        let response = serve_remote_command(request, StdioOptions::output(), open);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_remote_command_without_streams_is_refused() {
        let request = Request::builder()
            .uri("/exec/default/p/c?command=ls")
            .body(Body::empty())
            .unwrap();
        let open: OpenProcess =
            Box::new(|_| Box::pin(async { Err(StreamError::internal("unused")) }));
        let response = serve_remote_command(request, StdioOptions::default(), open);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
