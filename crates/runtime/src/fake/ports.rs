//! Ports that fake containers listen on, for port forwarding: a [`PortHandler`] serves one
//! connection, and two ready-made servers, [`echo_server`] and [`http_server`]. Besides the
//! image's scripted ports, processes listen at run time (`httpd -p PORT`): a sandbox's
//! [`Listeners`] are its network namespace's ports, each held by a [`Listening`] guard that
//! frees the port, and closes its open connections, when the process drops it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

/// Serves one connection to a port of a fake container: gets the server's side of the
/// connection and returns when done with it (dropping it closes the connection). Scripted
/// with [`ImageBehaviour::port`](super::ImageBehaviour::port).
pub type PortHandler = Arc<dyn Fn(DuplexStream) -> BoxFuture<'static, ()> + Send + Sync>;

/// The ports processes of one sandbox listen on (its network namespace). Cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Listeners(Arc<Mutex<HashMap<u16, Listener>>>);

struct Listener {
    id: u64,
    handler: PortHandler,
    open: watch::Receiver<()>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports: Vec<u16> = self.0.lock().keys().copied().collect();
        f.debug_tuple("Listeners").field(&ports).finish()
    }
}

/// A port held by a process: dropping it stops listening and closes its connections.
pub(super) struct Listening {
    listeners: Listeners,
    port: u16,
    id: u64,
    _open: watch::Sender<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let mut ports = self.listeners.0.lock();
        if ports.get(&self.port).is_some_and(|l| l.id == self.id) {
            ports.remove(&self.port);
        }
    }
}

impl Listeners {
    /// Listens on `port` with `handler`; `None` if something listens there already
    /// (`Address already in use`).
    pub(super) fn listen(&self, port: u16, handler: PortHandler) -> Option<Listening> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mut ports = self.0.lock();
        if ports.contains_key(&port) {
            return None;
        }
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let (open, receiver) = watch::channel(());
        ports.insert(
            port,
            Listener {
                id,
                handler,
                open: receiver,
            },
        );
        Some(Listening {
            listeners: self.clone(),
            port,
            id,
            _open: open,
        })
    }

    /// The handler of `port`, and a future that resolves when its listener goes away.
    pub(super) fn get(&self, port: u16) -> Option<(PortHandler, BoxFuture<'static, ()>)> {
        let ports = self.0.lock();
        let listener = ports.get(&port)?;
        let mut open = listener.open.clone();
        let closed = Box::pin(async move { while open.changed().await.is_ok() {} });
        Some((listener.handler.clone(), closed))
    }
}

/// A [`PortHandler`] from an async function.
pub fn port_handler<F, Fut>(handler: F) -> PortHandler
where
    F: Fn(DuplexStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |conn| Box::pin(handler(conn)))
}

/// A server that writes back what it reads until the client shuts its side down, then
/// closes.
pub fn echo_server() -> PortHandler {
    port_handler(|mut conn: DuplexStream| async move {
        let mut buf = vec![0u8; 8192];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = conn.shutdown().await;
    })
}

/// The reason phrase of an HTTP status code.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A minimal HTTP/1.1 server that answers every request with `status` and `body`
/// (`text/plain`). It reads each request's head and skips a `Content-Length` body, keeps the
/// connection open for the next request unless the client asked to close it (HTTP/1.0
/// without `keep-alive`, or `Connection: close`), answers `HEAD` without the body, and closes
/// on a malformed request after a `400`.
pub fn http_server(status: u16, body: impl Into<Bytes>) -> PortHandler {
    let body: Bytes = body.into();
    port_handler(move |conn: DuplexStream| {
        let body = body.clone();
        serve_http(conn, move |_, _| HttpResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.clone(),
        })
    })
}

/// What a server built on [`serve_http`] answers one request with.
pub(super) struct HttpResponse {
    pub(super) status: u16,
    pub(super) content_type: &'static str,
    pub(super) body: Bytes,
}

fn plain(status: u16, body: &'static str) -> HttpResponse {
    HttpResponse {
        status,
        content_type: "text/plain; charset=utf-8",
        body: Bytes::from_static(body.as_bytes()),
    }
}

/// Serves HTTP/1.1 requests on `conn`, answering each with `answer(method, target)`, with
/// the connection handling described at [`http_server`].
pub(super) async fn serve_http(
    mut conn: DuplexStream,
    answer: impl Fn(&str, &str) -> HttpResponse,
) {
    let mut buffered: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        // Read a request head.
        let head_end = loop {
            if let Some(i) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buffered.len() > 64 * 1024 {
                let too_large = plain(431, "request header too large\n");
                let _ = respond(&mut conn, &too_large, false, true).await;
                return;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffered.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
        buffered.drain(..head_end);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(' ');
        let (method, target, version) = (parts.next(), parts.next(), parts.next());
        let (Some(method), Some(target), Some(version)) = (method, target, version) else {
            let _ = respond(&mut conn, &plain(400, "bad request\n"), false, true).await;
            return;
        };
        let mut content_length = 0usize;
        let mut connection = String::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => content_length = value.parse().unwrap_or(0),
                    "connection" => connection = value.to_ascii_lowercase(),
                    _ => {}
                }
            }
        }
        // Skip the request body.
        while buffered.len() < content_length {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffered.extend_from_slice(&chunk[..n]),
            }
        }
        buffered.drain(..content_length);
        let close = connection.contains("close")
            || (version == "HTTP/1.0" && !connection.contains("keep-alive"));
        let response = answer(method, target);
        if respond(&mut conn, &response, method == "HEAD", close)
            .await
            .is_err()
            || close
        {
            let _ = conn.shutdown().await;
            return;
        }
    }
}

async fn respond(
    conn: &mut DuplexStream,
    response: &HttpResponse,
    head_only: bool,
    close: bool,
) -> std::io::Result<()> {
    let HttpResponse {
        status,
        content_type,
        body,
    } = response;
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        reason(*status),
        body.len()
    );
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    conn.write_all(&bytes).await?;
    conn.flush().await
}
