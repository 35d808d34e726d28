//! Port forwarding (CRI's `PortForward`): a TCP connection to a port on the loopback address
//! of a pod's network namespace, made from a thread that joins the namespace just for that.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use super::ContainerdRuntime;
use crate::error::{Result, RuntimeError};
use crate::streaming::DuplexStream;
use crate::types::PodSandboxState;

/// How long connecting to a port may take (the loopback answers at once unless the pod's
/// network is wedged).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn port_forward(
    runtime: &ContainerdRuntime,
    sandbox_id: &str,
    port: u16,
) -> Result<DuplexStream> {
    let (object, record) = runtime
        .sandbox(sandbox_id)
        .await?
        .ok_or_else(|| RuntimeError::not_found("sandbox", sandbox_id))?;
    if ContainerdRuntime::sandbox_state(&object) != PodSandboxState::Ready {
        return Err(RuntimeError::FailedPrecondition(format!(
            "sandbox {sandbox_id} is not ready"
        )));
    }
    // An empty path: the pod uses the node's network.
    let netns =
        Some(PathBuf::from(&record.network_namespace_path)).filter(|p| !p.as_os_str().is_empty());
    let stream = connect_in(netns, port).await.map_err(|e| match e {
        Failure::Connect(e) => RuntimeError::Unavailable(format!(
            "failed to connect to localhost:{port} inside the network namespace of sandbox \
             {sandbox_id}: {e}"
        )),
        Failure::Namespace(e) => RuntimeError::Internal(format!(
            "entering the network namespace of sandbox {sandbox_id}: {e}"
        )),
    })?;
    stream
        .set_nonblocking(true)
        .map_err(|e| RuntimeError::Internal(format!("port-forward socket: {e}")))?;
    let stream = tokio::net::TcpStream::from_std(stream)
        .map_err(|e| RuntimeError::Internal(format!("port-forward socket: {e}")))?;
    Ok(Box::new(stream))
}

/// Why a connection could not be made.
enum Failure {
    /// The namespace could not be entered.
    Namespace(io::Error),
    /// Nothing answered on the port (refused, unreachable, timed out).
    Connect(io::Error),
}

/// Connects to `127.0.0.1:port` (or `[::1]:port`) from a thread of its own that first joins `netns` (when
/// given) and ends afterwards, so no other work ever runs in the pod's namespace. The socket
/// stays in the namespace it was created in.
async fn connect_in(netns: Option<PathBuf>, port: u16) -> std::result::Result<TcpStream, Failure> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("capstan-portfwd".into())
        .spawn(move || {
            let connected = (|| {
                if let Some(path) = netns {
                    let file = std::fs::File::open(&path).map_err(Failure::Namespace)?;
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Failure::Namespace(io::Error::from(e)))?;
                }
                // IPv4 first, then IPv6, as CRI runtimes do.
                let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
                TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT).or_else(|e4| {
                    TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|e6| {
                        Failure::Connect(io::Error::new(
                            e4.kind(),
                            format!("IPv4: {e4}; IPv6: {e6}"),
                        ))
                    })
                })
            })();
            let _ = tx.send(connected);
        })
        .map_err(Failure::Namespace)?;
    rx.await.unwrap_or_else(|_| {
        Err(Failure::Namespace(io::Error::other(
            "the port-forward thread panicked",
        )))
    })
}
