//! Sockets in another network namespace: a listener bound, or a connection opened, from a
//! short-lived thread that first joins the namespace. A socket stays in the namespace it was
//! created in, so the process's other threads keep their own namespace and still serve the
//! socket (tokio's reactor does not care where it lives).
//!
//! For components that run in the host's namespace but serve or reach a node's or a LAN's
//! addresses: the multi-process cluster's kubelets listen inside their node's namespace, and
//! its API server serves Pods and dials kubelets inside the cluster's LAN namespace.
//!
//! A namespace is named as `ip netns` names it (`/run/netns/<name>`), or by an absolute path
//! (`/proc/<pid>/ns/net`). Joining one needs `CAP_SYS_ADMIN`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

/// The file of the namespace `netns`: `/run/netns/<name>`, or `netns` itself when it is an
/// absolute path.
pub fn netns_path(netns: &str) -> PathBuf {
    if netns.starts_with('/') {
        PathBuf::from(netns)
    } else {
        PathBuf::from("/run/netns").join(netns)
    }
}

/// Runs `work` on a new thread that has joined `netns`, and returns what it returned.
///
/// Errors: the namespace cannot be opened or joined (missing, or not root), or `work`'s.
async fn in_netns<T: Send + 'static>(
    netns: &str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let path = netns_path(netns);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("capstan-netns".into())
        .spawn(move || {
            let done = (|| {
                let file = std::fs::File::open(&path).map_err(|e| {
                    io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
                })?;
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!("joining {}: {e}", path.display()),
                    )
                })?;
                work()
            })();
            let _ = tx.send(done);
        })?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("the network namespace thread panicked")))
}

/// Binds a TCP listener on `address` inside `netns` (non-blocking, ready for
/// `tokio::net::TcpListener::from_std`).
///
/// Errors: the namespace cannot be joined, or the address not bound there.
pub async fn bind_tcp(netns: &str, address: SocketAddr) -> io::Result<std::net::TcpListener> {
    in_netns(netns, move || {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .await
}

/// Connects to `address` from inside `netns`, waiting at most `timeout` for the connection.
///
/// Errors: the namespace cannot be joined, or the connection fails or times out (the
/// error's kind says which: `ConnectionRefused`, `TimedOut`, ...).
pub async fn connect_tcp(
    netns: &str,
    address: SocketAddr,
    timeout: Duration,
) -> io::Result<tokio::net::TcpStream> {
    let stream = in_netns(netns, move || {
        std::net::TcpStream::connect_timeout(&address, timeout)
    })
    .await?;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_an_ip_netns_name_and_a_path_is_kept() {
        assert_eq!(netns_path("lan"), PathBuf::from("/run/netns/lan"));
        assert_eq!(
            netns_path("/proc/1/ns/net"),
            PathBuf::from("/proc/1/ns/net")
        );
    }

    #[tokio::test]
    async fn a_missing_namespace_is_an_error_naming_its_file() {
        let error = tokio::time::timeout(
            Duration::from_secs(10),
            bind_tcp("capstan-no-such-netns", "127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(
            error
                .to_string()
                .contains("/run/netns/capstan-no-such-netns"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_own_namespace_by_path_binds_and_connects() {
        // The process's own namespace, named by path: joining it is a no-op but takes root
        // (CAP_SYS_ADMIN); without root the error says so.
        let own = format!("/proc/{}/ns/net", std::process::id());
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            let listener = bind_tcp(&own, "127.0.0.1:0".parse().unwrap()).await?;
            let address = listener.local_addr()?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (connected, accepted) = tokio::join!(
                connect_tcp(&own, address, Duration::from_secs(5)),
                listener.accept()
            );
            connected?;
            accepted?;
            io::Result::Ok(())
        })
        .await
        .unwrap();
        match result {
            Ok(()) => {}
            Err(error) => assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}"),
        }
    }
}
