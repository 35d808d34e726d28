//! Connections of HTTP and gRPC probes: dialing with Go-like error texts, and the task that
//! drives a hyper client connection for as long as its probe needs it.

use std::future::Future;
use std::io;

use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::authority;

/// Dials `host:port` over TCP with Nagle off. The error reads as Go's dialer prints it
/// (`dial tcp 10.0.0.1:80: connect: connection refused`).
pub(super) async fn dial(host: &str, port: u16) -> Result<TcpStream, String> {
    let address = authority(host, port);
    match TcpStream::connect(&address).await {
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Err(error) => Err(dial_error(&address, host, &error)),
    }
}

fn dial_error(address: &str, host: &str, error: &io::Error) -> String {
    let text = os_text(error);
    if error.raw_os_error().is_none() && error.kind() != io::ErrorKind::TimedOut {
        // Name resolution failed: there was nothing to connect to yet.
        let name = host.trim_start_matches('[').trim_end_matches(']');
        return format!("dial tcp: lookup {name}: {text}");
    }
    if error.kind() == io::ErrorKind::TimedOut {
        return format!("dial tcp {address}: i/o timeout");
    }
    format!("dial tcp {address}: connect: {text}")
}

/// An I/O error's text without Rust's ` (os error N)` suffix, lower-cased as Go's.
pub(super) fn os_text(error: &io::Error) -> String {
    let text = error.to_string();
    let text = match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Drives a hyper client connection in its own task, aborted when dropped (a probe that
/// times out or ends leaves no connection behind).
pub(super) struct ConnectionTask(JoinHandle<()>);

impl ConnectionTask {
    /// Spawns `connection` (hyper's `Connection` future) on the current runtime.
    pub(super) fn spawn<F, E>(connection: F) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Send + 'static,
    {
        ConnectionTask(tokio::spawn(async move {
            let _ = connection.await;
        }))
    }
}

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_errors_read_as_go_prints_them() {
        #[cfg(target_os = "linux")]
        assert_eq!(
            dial_error(
                "10.0.0.1:80",
                "10.0.0.1",
                &io::Error::from_raw_os_error(111)
            ),
            "dial tcp 10.0.0.1:80: connect: connection refused"
        );
        let lookup = io::Error::other("failed to lookup address information");
        assert_eq!(
            dial_error("nowhere:80", "nowhere", &lookup),
            "dial tcp: lookup nowhere: failed to lookup address information"
        );
    }
}
