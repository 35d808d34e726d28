//! How HTTP GET and TCP probes reach a Pod: the [`Prober`] seam.
//!
//! Exec probes go through the runtime's `exec_sync`; HTTP and TCP probes go through a
//! [`Prober`], so that tests with a fake network (where Pod addresses lead nowhere) script
//! their results. [`NetworkProber`] is the real one: plain TCP connects and HTTP/1.1 GETs
//! with tokio, each bounded by the probe's timeout.

use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The probe passed.
    Success,
    /// The probe failed; the message goes into the `Unhealthy` Event.
    Failure(String),
}

/// An HTTP GET probe's target, resolved against the Pod (host defaults to the Pod IP,
/// named ports are resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGet {
    /// `HTTP` or `HTTPS`.
    pub scheme: String,
    /// The host or address to connect to.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The path, starting with `/`.
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
}

impl HttpGet {
    /// The URL, as Kubernetes prints it in probe messages.
    pub fn url(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme.to_ascii_lowercase(),
            self.host,
            self.port,
            self.path
        )
    }
}

/// Runs HTTP GET and TCP probes. Called by pod workers, concurrently for different Pods;
/// each call must return within `timeout` (a timeout is a failure, not an error).
#[async_trait]
pub trait Prober: Send + Sync + 'static {
    /// GETs `target`: any status from 200 to 399 passes.
    async fn http_get(&self, target: &HttpGet, timeout: Duration) -> ProbeOutcome;

    /// Opens a TCP connection to `host:port`: connecting passes.
    async fn tcp(&self, host: &str, port: u16, timeout: Duration) -> ProbeOutcome;
}

/// Probes over the host's network with tokio. HTTPS targets are refused as failures (no TLS
/// client is built in).
#[derive(Debug, Clone, Copy, Default)]
pub struct NetworkProber;

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn get(target: &HttpGet) -> Result<u16, String> {
    let mut stream = TcpStream::connect(authority(&target.host, target.port))
        .await
        .map_err(|e| e.to_string())?;
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: capstan-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n",
        target.path,
        authority(&target.host, target.port)
    );
    for (name, value) in &target.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 1024 {
        if stream.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("malformed HTTP response {:?}", line.trim_end())),
    }
}

#[async_trait]
impl Prober for NetworkProber {
    async fn http_get(&self, target: &HttpGet, timeout: Duration) -> ProbeOutcome {
        if !target.scheme.eq_ignore_ascii_case("http") {
            return ProbeOutcome::Failure(format!(
                "Get \"{}\": scheme {} is not supported",
                target.url(),
                target.scheme
            ));
        }
        match tokio::time::timeout(timeout, get(target)).await {
            Ok(Ok(code)) if (200..400).contains(&code) => ProbeOutcome::Success,
            Ok(Ok(code)) => ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(error)) => ProbeOutcome::Failure(format!("Get \"{}\": {error}", target.url())),
            Err(_) => ProbeOutcome::Failure(format!(
                "Get \"{}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                target.url()
            )),
        }
    }

    async fn tcp(&self, host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
        let address = authority(host, port);
        match tokio::time::timeout(timeout, TcpStream::connect(&address)).await {
            Ok(Ok(_)) => ProbeOutcome::Success,
            Ok(Err(error)) => ProbeOutcome::Failure(format!("dial tcp {address}: {error}")),
            Err(_) => ProbeOutcome::Failure(format!("dial tcp {address}: i/o timeout")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(listener: TcpListener, answer: &'static str) {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = socket.read(&mut buf).await.unwrap();
        socket.write_all(answer.as_bytes()).await.unwrap();
    }

    fn target(port: u16) -> HttpGet {
        HttpGet {
            scheme: "HTTP".into(),
            host: "127.0.0.1".into(),
            port,
            path: "/healthz".into(),
            headers: vec![],
        }
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_and_fail_on_5xx() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(serve_once(listener, "HTTP/1.1 204 No Content\r\n\r\n"));
            let outcome = NetworkProber
                .http_get(&target(port), Duration::from_secs(2))
                .await;
            assert_eq!(outcome, ProbeOutcome::Success);
            server.await.unwrap();

            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(serve_once(listener, "HTTP/1.1 503 Unavailable\r\n\r\n"));
            let outcome = NetworkProber
                .http_get(&target(port), Duration::from_secs(2))
                .await;
            assert_eq!(
                outcome,
                ProbeOutcome::Failure("HTTP probe failed with statuscode: 503".into())
            );
            server.await.unwrap();
        })
        .await
        .expect("in time");
    }

    #[tokio::test]
    async fn tcp_probes_pass_when_something_listens_and_fail_otherwise() {
        tokio::time::timeout(Duration::from_secs(10), async {
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
        .await
        .expect("in time");
    }
}
