//! How HTTP GET, TCP and gRPC probes reach a Pod: the [`Prober`] seam.
//!
//! Exec probes go through the runtime's `exec_sync`; HTTP, TCP and gRPC probes go through a
//! [`Prober`], so that tests with a fake network (where Pod addresses lead nowhere) script
//! their results. [`NetworkProber`] is the real one, with the kubelet's semantics:
//!
//! - **HTTP GET** (`pkg/probe/http`): one hyper request per probe, over HTTP/1.1 or, for
//!   `scheme: HTTPS`, TLS without certificate verification (as the kubelet: a probe checks
//!   liveness, not identity) that offers HTTP/2 and HTTP/1.1 by ALPN. Status 200..=299
//!   passes, 300..=399 passes with a warning (`Probe terminated redirects`), anything else
//!   fails. Redirects are followed (at most 10) while they stay on the same host name; one
//!   that leads elsewhere ends the probe with its own 3xx, hence a warning. `httpHeaders` are
//!   sent as given, with `User-Agent: kube-probe/<major>.<minor>` and `Accept: */*` unless
//!   set (an empty `Accept` removes it); a `Host` header replaces the request's host. The
//!   body is read up to 10 KiB.
//! - **TCP** connects: connecting passes.
//! - **gRPC** (`pkg/probe/grpc`): `grpc.health.v1.Health/Check` over HTTP/2 without TLS;
//!   `SERVING` passes, anything else fails with Kubernetes' message texts.
//!
//! Every probe, redirects and body included, is bounded by the probe's `timeoutSeconds`. The
//! HTTPS client needs the `https-probes` feature (on by default).

use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpStream;

mod conn;
mod grpc;
mod http;
#[cfg(feature = "https-probes")]
mod tls;

#[cfg(test)]
mod tests;

/// The `User-Agent` of HTTP and gRPC probes: `kube-probe/<major>.<minor>` of the Kubernetes
/// version the kubelet reports.
pub const PROBE_USER_AGENT: &str = "kube-probe/1.33";

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The probe passed.
    Success,
    /// The probe passed with a warning (an HTTP probe that ended on a redirect); the message
    /// goes into a `ProbeWarning` Event.
    Warning(String),
    /// The probe failed; the message goes into the `Unhealthy` Event.
    Failure(String),
}

impl ProbeOutcome {
    /// Whether the probe passed (a warning passes).
    pub fn passed(&self) -> bool {
        !matches!(self, ProbeOutcome::Failure(_))
    }
}

/// An HTTP GET probe's target, resolved against the Pod (host defaults to the Pod IP,
/// named ports are resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGet {
    /// `HTTP` or `HTTPS` (any case).
    pub scheme: String,
    /// The host or address to connect to.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The path, with an optional query; a missing leading `/` is added, an empty path is `/`.
    pub path: String,
    /// Extra request headers, in order; a `Host` header replaces the request's host.
    pub headers: Vec<(String, String)>,
}

impl HttpGet {
    /// The URL, as Kubernetes prints it in probe messages (IPv6 addresses in brackets).
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.to_ascii_lowercase(),
            authority(&self.host, self.port),
            http::normalize_path(&self.path)
        )
    }
}

/// A gRPC probe's target: the Pod IP, the port and the `service` asked about (empty for the
/// server as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCheck {
    /// The host or address to connect to (the Pod IP).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The service name sent in the `HealthCheckRequest` (`grpc.service`, empty by default).
    pub service: String,
}

/// Runs HTTP GET, TCP and gRPC probes. Called by pod workers, concurrently for different Pods;
/// each call must return within `timeout` (a timeout is a failure, not an error).
#[async_trait]
pub trait Prober: Send + Sync + 'static {
    /// GETs `target`: any status from 200 to 399 passes (3xx with a warning).
    async fn http_get(&self, target: &HttpGet, timeout: Duration) -> ProbeOutcome;

    /// Opens a TCP connection to `host:port`: connecting passes.
    async fn tcp(&self, host: &str, port: u16, timeout: Duration) -> ProbeOutcome;

    /// Calls `grpc.health.v1.Health/Check` on `target`: `SERVING` passes. The default fails,
    /// for probers that script only HTTP and TCP.
    async fn grpc(&self, target: &GrpcCheck, timeout: Duration) -> ProbeOutcome {
        let _ = timeout;
        ProbeOutcome::Failure(format!(
            "error: failed to connect service at {:?}: gRPC probes are not supported by this prober",
            authority(&target.host, target.port)
        ))
    }
}

/// Probes over the host's network with tokio and hyper (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct NetworkProber;

/// `host:port`, with IPv6 addresses in brackets (Go's `net.JoinHostPort`).
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[async_trait]
impl Prober for NetworkProber {
    async fn http_get(&self, target: &HttpGet, timeout: Duration) -> ProbeOutcome {
        http::probe(target, timeout).await
    }

    async fn tcp(&self, host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
        let address = authority(host, port);
        match tokio::time::timeout(timeout, TcpStream::connect(&address)).await {
            Ok(Ok(_)) => ProbeOutcome::Success,
            Ok(Err(error)) => ProbeOutcome::Failure(format!("dial tcp {address}: {error}")),
            Err(_) => ProbeOutcome::Failure(format!("dial tcp {address}: i/o timeout")),
        }
    }

    async fn grpc(&self, target: &GrpcCheck, timeout: Duration) -> ProbeOutcome {
        grpc::probe(target, timeout).await
    }
}

/// A duration the way Go's `time.Duration` prints it (`1s`, `1m30s`, `500ms`), for
/// Kubernetes' message texts.
pub(crate) fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    fn fraction(whole: u128, rest: u128, digits: u32) -> String {
        if rest == 0 {
            return whole.to_string();
        }
        let rest = format!("{rest:0width$}", width = digits as usize);
        format!("{whole}.{}", rest.trim_end_matches('0'))
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos / 1_000, nanos % 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos / 1_000_000, nanos % 1_000_000, 6));
    }
    let seconds = nanos / 1_000_000_000;
    let (hours, minutes, secs) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let secs = fraction(secs, nanos % 1_000_000_000, 9);
    match (hours, minutes) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}
