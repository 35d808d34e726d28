//! The network prober against local HTTP, HTTPS and gRPC servers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpListener;

use super::grpc::{decode_response, frame, get_varint, unframe};
use super::*;

/// Runs a test body within a bound, so that a hang fails the test.
async fn within<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(20), body)
        .await
        .expect("the test finished in time");
}

/// What a test server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    version: Version,
    body: Bytes,
}

type Body = BoxBody<Bytes, Infallible>;
type Handler = Arc<dyn Fn(&Seen, u16) -> Response<Body> + Send + Sync>;

/// A local server answering with `handler` (HTTP/1.1 or HTTP/2, TLS when `tls` is set).
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(handler: Handler, tls: Option<Arc<rustls_server::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (handler, recorded, tls) = (handler.clone(), recorded.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (handler, recorded) = (handler.clone(), recorded.clone());
                        async move {
                            let (head, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                path: head
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                headers: head.headers,
                                version: head.version,
                                body,
                            };
                            recorded.lock().push(seen.clone());
                            Ok::<_, Infallible>(handler(&seen, port))
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        #[cfg(feature = "https-probes")]
                        Some(config) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        #[cfg(not(feature = "https-probes"))]
                        Some(_) => {}
                    }
                });
            }
        });
        Server { port, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

#[cfg(feature = "https-probes")]
mod rustls_server {
    pub(super) use rustls::ServerConfig;
}
#[cfg(not(feature = "https-probes"))]
mod rustls_server {
    /// Stands in for rustls' configuration when HTTPS probes are compiled out.
    pub(super) struct ServerConfig;
}

fn full(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

fn redirect(status: u16, location: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("location", location)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

/// The HTTP test routes.
fn routes() -> Handler {
    Arc::new(
        |seen: &Seen, port: u16| match seen.path.split('?').next().unwrap_or_default() {
            "/ok" | "/headers" => full(200, "fine"),
            "/fail" => full(500, "broken"),
            "/to-ok" => redirect(302, "/ok", ""),
            "/to-ok-relative" => redirect(307, "ok", ""),
            "/to-other-host" => redirect(302, &format!("http://localhost:{port}/ok"), "moved"),
            "/to-other-host-big" => redirect(
                301,
                &format!("http://localhost:{port}/ok"),
                vec![b'x'; 20_000],
            ),
            "/to-fail" => redirect(303, &format!("http://127.0.0.1:{port}/fail"), ""),
            "/loop" => redirect(302, "/loop", ""),
            "/multiple" => full(300, "choose"),
            _ => full(404, "not found"),
        },
    )
}

fn target(port: u16, path: &str) -> HttpGet {
    HttpGet {
        scheme: "HTTP".into(),
        host: "127.0.0.1".into(),
        port,
        path: path.into(),
        headers: vec![],
    }
}

const SECOND: Duration = Duration::from_secs(1);
const FIVE_SECONDS: Duration = Duration::from_secs(5);

#[tokio::test]
async fn http_probes_pass_on_2xx_and_fail_on_5xx() {
    within(async {
        let server = Server::start(routes(), None).await;
        let outcome = NetworkProber
            .http_get(&target(server.port, "/ok"), FIVE_SECONDS)
            .await;
        assert_eq!(outcome, ProbeOutcome::Success);
        let outcome = NetworkProber
            .http_get(&target(server.port, "/fail"), FIVE_SECONDS)
            .await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        let outcome = NetworkProber
            .http_get(&target(server.port, "/multiple"), FIVE_SECONDS)
            .await;
        assert_eq!(
            outcome,
            ProbeOutcome::Warning("Probe terminated redirects, Response body: choose".into())
        );
        let seen = server.seen();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].version, Version::HTTP_11);
    })
    .await;
}

#[tokio::test]
async fn redirects_to_the_same_host_are_followed() {
    within(async {
        let server = Server::start(routes(), None).await;
        let outcome = NetworkProber
            .http_get(&target(server.port, "/to-ok"), FIVE_SECONDS)
            .await;
        assert_eq!(outcome, ProbeOutcome::Success);
        let outcome = NetworkProber
            .http_get(&target(server.port, "/to-ok-relative"), FIVE_SECONDS)
            .await;
        assert_eq!(outcome, ProbeOutcome::Success);
        let outcome = NetworkProber
            .http_get(&target(server.port, "/to-fail"), FIVE_SECONDS)
            .await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        let seen = server.seen();
        let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/to-ok",
                "/ok",
                "/to-ok-relative",
                "/ok",
                "/to-fail",
                "/fail"
            ]
        );
        let referer = format!("http://127.0.0.1:{}/to-ok", server.port);
        assert_eq!(seen[1].headers["referer"], referer.as_str());
        assert_eq!(seen[1].headers["user-agent"], PROBE_USER_AGENT);
    })
    .await;
}

#[tokio::test]
async fn a_redirect_to_another_host_passes_with_a_warning_and_at_most_10_kib_of_body() {
    within(async {
        let server = Server::start(routes(), None).await;
        let outcome = NetworkProber
            .http_get(&target(server.port, "/to-other-host"), FIVE_SECONDS)
            .await;
        assert_eq!(
            outcome,
            ProbeOutcome::Warning("Probe terminated redirects, Response body: moved".into())
        );
        let outcome = NetworkProber
            .http_get(&target(server.port, "/to-other-host-big"), FIVE_SECONDS)
            .await;
        let ProbeOutcome::Warning(message) = outcome else {
            panic!("expected a warning, got {outcome:?}");
        };
        let body = message
            .strip_prefix("Probe terminated redirects, Response body: ")
            .unwrap();
        assert_eq!(body, "x".repeat(10 * 1024));
        // Nothing asked `localhost`: the redirects were not followed.
        assert_eq!(server.seen().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn redirect_loops_stop_after_ten_requests() {
    within(async {
        let server = Server::start(routes(), None).await;
        let outcome = NetworkProber
            .http_get(&target(server.port, "/loop"), FIVE_SECONDS)
            .await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure(format!(
                "Get \"http://127.0.0.1:{}/loop\": stopped after 10 redirects",
                server.port
            ))
        );
        assert_eq!(server.seen().len(), 10);
    })
    .await;
}

#[tokio::test]
async fn probes_send_the_kubelets_default_headers_and_their_own() {
    within(async {
        let server = Server::start(routes(), None).await;
        let mut probe = target(server.port, "headers?full=1");
        probe.headers = vec![
            ("X-Custom".into(), "one".into()),
            ("X-Custom".into(), "two".into()),
        ];
        assert_eq!(
            NetworkProber.http_get(&probe, FIVE_SECONDS).await,
            ProbeOutcome::Success
        );
        probe.headers = vec![
            ("User-Agent".into(), "mine/1".into()),
            ("Accept".into(), "".into()),
            ("Host".into(), "health.example".into()),
        ];
        assert_eq!(
            NetworkProber.http_get(&probe, FIVE_SECONDS).await,
            ProbeOutcome::Success
        );
        let seen = server.seen();
        assert_eq!(seen[0].path, "/headers?full=1");
        let first = &seen[0].headers;
        assert_eq!(first["user-agent"], PROBE_USER_AGENT);
        assert_eq!(first["accept"], "*/*");
        assert_eq!(first["host"], format!("127.0.0.1:{}", server.port).as_str());
        assert_eq!(first["connection"], "close");
        let custom: Vec<_> = first.get_all("x-custom").iter().collect();
        assert_eq!(
            custom,
            [
                HeaderValue::from_static("one"),
                HeaderValue::from_static("two")
            ]
        );
        assert!(first.get("accept-encoding").is_none());
        let second = &seen[1].headers;
        assert_eq!(second["user-agent"], "mine/1");
        assert!(second.get("accept").is_none());
        assert_eq!(second["host"], "health.example");
        assert_eq!(second.get_all("host").iter().count(), 1);
    })
    .await;
}

#[tokio::test]
async fn probes_time_out_with_the_probe_timeout() {
    within(async {
        // Accepts connections and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                sockets.push(socket);
            }
        });
        let started = tokio::time::Instant::now();
        let outcome = NetworkProber
            .http_get(&target(port, "/healthz"), Duration::from_millis(300))
            .await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(
            outcome,
            ProbeOutcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/healthz\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        );
        let outcome = NetworkProber
            .grpc(
                &GrpcCheck { host: "127.0.0.1".into(), port, service: String::new() },
                Duration::from_millis(300),
            )
            .await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure("timeout: health rpc did not complete within 300ms".into())
        );
        held.abort();
    })
    .await;
}

#[tokio::test]
async fn probes_of_a_closed_port_fail_with_the_dial_error() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let outcome = NetworkProber.http_get(&target(port, "/healthz"), SECOND).await;
        let expected = format!("Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused");
        assert_eq!(outcome, ProbeOutcome::Failure(expected));
        let check = GrpcCheck { host: "127.0.0.1".into(), port, service: String::new() };
        let outcome = NetworkProber.grpc(&check, Duration::from_millis(400)).await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure(format!(
                "timeout: failed to connect service \"127.0.0.1:{port}\" within 400ms: context deadline exceeded"
            ))
        );
    })
    .await;
}

#[tokio::test]
async fn tcp_probes_pass_when_something_listens_and_fail_otherwise() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            NetworkProber
                .tcp("127.0.0.1", port, Duration::from_secs(2))
                .await,
            ProbeOutcome::Success
        );
        drop(listener);
        assert!(matches!(
            NetworkProber
                .tcp("127.0.0.1", port, Duration::from_secs(2))
                .await,
            ProbeOutcome::Failure(_)
        ));
    })
    .await;
}

#[cfg(feature = "https-probes")]
fn self_signed(alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

#[cfg(feature = "https-probes")]
#[tokio::test]
async fn https_probes_accept_a_self_signed_certificate_over_http2_and_http1() {
    within(async {
        for (alpn, version) in [
            (&[b"h2".as_slice(), b"http/1.1"][..], Version::HTTP_2),
            (&[b"http/1.1".as_slice()][..], Version::HTTP_11),
        ] {
            let server = Server::start(routes(), Some(self_signed(alpn))).await;
            let mut probe = target(server.port, "/to-ok");
            probe.scheme = "HTTPS".into();
            probe.headers = vec![("X-Custom".into(), "tls".into())];
            assert_eq!(
                NetworkProber.http_get(&probe, FIVE_SECONDS).await,
                ProbeOutcome::Success
            );
            probe.path = "/fail".into();
            assert_eq!(
                NetworkProber.http_get(&probe, FIVE_SECONDS).await,
                ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
            );
            let seen = server.seen();
            let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
            assert_eq!(paths, ["/to-ok", "/ok", "/fail"]);
            assert!(seen.iter().all(|s| s.version == version), "{seen:?}");
            assert_eq!(seen[0].headers["x-custom"], "tls");
            assert_eq!(seen[0].headers["user-agent"], PROBE_USER_AGENT);
        }
    })
    .await;
}

#[cfg(feature = "https-probes")]
#[tokio::test]
async fn https_probes_of_a_plain_http_server_fail() {
    within(async {
        let server = Server::start(routes(), None).await;
        let mut probe = target(server.port, "/ok");
        probe.scheme = "HTTPS".into();
        let outcome = NetworkProber.http_get(&probe, FIVE_SECONDS).await;
        let ProbeOutcome::Failure(message) = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        let prefix = format!("Get \"https://127.0.0.1:{}/ok\": tls: ", server.port);
        assert!(message.starts_with(&prefix), "{message}");
    })
    .await;
}

/// A `grpc.health.v1.Health` server: `status` per service name, `None` for Unimplemented.
fn health(statuses: &'static [(&'static str, i32)]) -> Handler {
    Arc::new(move |seen: &Seen, _port: u16| {
        let grpc = |code: &str, message: &str| {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", code.parse().unwrap());
            if !message.is_empty() {
                trailers.insert("grpc-message", message.parse().unwrap());
            }
            trailers
        };
        if seen.path != "/grpc.health.v1.Health/Check"
            || seen.headers["content-type"] != "application/grpc"
        {
            // Trailers-only: the status in the headers.
            let mut response = Response::new(Full::new(Bytes::new()).boxed());
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            response
                .headers_mut()
                .extend(grpc("12", "unknown%20service"));
            return response;
        }
        let request = unframe(&seen.body).unwrap().unwrap_or_default();
        let mut fields = request;
        let service = if fields.is_empty() {
            String::new()
        } else {
            assert_eq!(get_varint(&mut fields).unwrap(), 0x0a);
            let length = get_varint(&mut fields).unwrap() as usize;
            String::from_utf8(fields[..length].to_vec()).unwrap()
        };
        let (data, trailers) = match statuses.iter().find(|(name, _)| *name == service) {
            Some((_, status)) => (Some(frame(&[0x08, *status as u8])), grpc("0", "")),
            None => (None, grpc("5", "unknown service")),
        };
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = Vec::new();
        frames.extend(data.map(|d| Ok(Frame::data(d))));
        frames.push(Ok(Frame::trailers(trailers)));
        let mut response = Response::new(StreamBody::new(futures::stream::iter(frames)).boxed());
        *response.status_mut() = StatusCode::OK;
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        response
    })
}

fn check(port: u16, service: &str) -> GrpcCheck {
    GrpcCheck {
        host: "127.0.0.1".into(),
        port,
        service: service.into(),
    }
}

#[tokio::test]
async fn grpc_probes_pass_when_the_service_is_serving() {
    within(async {
        let server = Server::start(health(&[("", 1), ("db", 1)]), None).await;
        assert_eq!(
            NetworkProber
                .grpc(&check(server.port, ""), FIVE_SECONDS)
                .await,
            ProbeOutcome::Success
        );
        assert_eq!(
            NetworkProber
                .grpc(&check(server.port, "db"), FIVE_SECONDS)
                .await,
            ProbeOutcome::Success
        );
        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|s| s.version == Version::HTTP_2));
        assert_eq!(seen[0].headers["te"], "trailers");
        assert_eq!(seen[0].headers["user-agent"], PROBE_USER_AGENT);
        assert!(seen[0].headers.contains_key("grpc-timeout"));
        assert_eq!(&seen[1].body[..], &frame(&[0x0a, 2, b'd', b'b'])[..]);
    })
    .await;
}

#[tokio::test]
async fn grpc_probes_fail_with_kubernetes_messages_otherwise() {
    within(async {
        let server = Server::start(health(&[("", 2), ("cache", 3), ("odd", 7)]), None).await;
        let outcome = NetworkProber
            .grpc(&check(server.port, ""), FIVE_SECONDS)
            .await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let outcome = NetworkProber
            .grpc(&check(server.port, "cache"), FIVE_SECONDS)
            .await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure("service unhealthy (responded with \"SERVICE_UNKNOWN\")".into())
        );
        let outcome = NetworkProber
            .grpc(&check(server.port, "odd"), FIVE_SECONDS)
            .await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure("service unhealthy (responded with \"7\")".into())
        );
        let outcome = NetworkProber
            .grpc(&check(server.port, "missing"), FIVE_SECONDS)
            .await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure(
                "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
                    .into()
            )
        );
    })
    .await;
}

#[tokio::test]
async fn grpc_probes_of_a_server_without_the_health_service_say_so() {
    within(async {
        // A plain HTTP server: every path answers 404 over HTTP/2.
        let server = Server::start(routes(), None).await;
        let outcome = NetworkProber.grpc(&check(server.port, ""), FIVE_SECONDS).await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unexpected HTTP status code received from server: 404 (Not Found)"
                    .into()
            )
        );
        // A gRPC server answering Unimplemented in a trailers-only response.
        let unimplemented: Handler = Arc::new(|_: &Seen, _| {
            let mut response = Response::new(Full::new(Bytes::new()).boxed());
            let headers = response.headers_mut();
            headers.insert("content-type", HeaderValue::from_static("application/grpc"));
            headers.insert("grpc-status", HeaderValue::from_static("12"));
            headers.insert("grpc-message", HeaderValue::from_static("unknown%20service"));
            response
        });
        let server = Server::start(unimplemented, None).await;
        let outcome = NetworkProber.grpc(&check(server.port, ""), FIVE_SECONDS).await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service"
                    .into()
            )
        );
        assert_eq!(decode_response(&[0x08, 0x01]), Ok(1));
    })
    .await;
}

#[test]
fn durations_print_as_go_prints_them() {
    assert_eq!(go_duration(Duration::from_secs(1)), "1s");
    assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(go_duration(Duration::from_millis(300)), "300ms");
    assert_eq!(go_duration(Duration::ZERO), "0s");
}

#[test]
fn urls_bracket_ipv6_addresses_and_normalize_the_path() {
    let probe = HttpGet {
        scheme: "HTTPS".into(),
        host: "fd00::1".into(),
        port: 8443,
        path: "healthz".into(),
        headers: vec![],
    };
    assert_eq!(probe.url(), "https://[fd00::1]:8443/healthz");
    assert!(ProbeOutcome::Warning("w".into()).passed());
    assert!(!ProbeOutcome::Failure("f".into()).passed());
}
