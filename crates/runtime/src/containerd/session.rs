//! The plumbing shared by streaming exec and attach: FIFO output pumped into a byte stream
//! with backpressure, stdin writers over FIFOs, terminal resizes forwarded to containerd, and
//! the guard that tells a session's supervisor that its caller went away.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use containerd_client::services::v1 as api;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot, watch};

use super::ContainerdRuntime;
use crate::streaming::TerminalSize;

/// How many bytes a session's output stream buffers before the process has to wait for its
/// reader (exec) or the reader starts missing output (attach).
pub(super) const STREAM_BUFFER: usize = 64 * 1024;

/// Alive while any part of a session (its output readers, stdin writer or exit future) is:
/// once the last part is dropped, the receiver handed to the supervisor resolves.
pub(super) type SessionGuard = Arc<oneshot::Sender<()>>;

/// A new guard and the receiver that resolves (with an error) once every clone is dropped.
pub(super) fn session_guard() -> (SessionGuard, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    (Arc::new(tx), rx)
}

/// Reads `fifo` into `out` until `done` turns true, then takes what is left in the pipe and
/// shuts `out` down. Writing waits for `out`'s reader, so a slow reader slows the process
/// down; once the reader is gone, output is read and discarded so the process never blocks.
pub(super) async fn pump(
    fifo: pipe::Receiver,
    mut done: watch::Receiver<bool>,
    mut out: DuplexStream,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut open = true;
    loop {
        let finished = tokio::select! {
            ready = fifo.readable() => ready.is_err(),
            changed = done.wait_for(|d| *d) => {
                drop(changed);
                true
            }
        };
        // Once done, the shim has flushed and closed its end: take what is left and stop.
        loop {
            match fifo.try_read(&mut buf) {
                Ok(0) => return finish(out).await,
                Ok(n) => {
                    if open && out.write_all(&buf[..n]).await.is_err() {
                        open = false;
                    }
                    if !finished {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return finish(out).await,
            }
        }
        if finished {
            break;
        }
    }
    finish(out).await
}

async fn finish(mut out: DuplexStream) {
    let _ = out.shutdown().await;
}

/// A session's stream with the session's guard attached.
pub(super) struct Guarded<T> {
    inner: T,
    _guard: SessionGuard,
}

impl<T> Guarded<T> {
    pub(super) fn new(inner: T, guard: SessionGuard) -> Self {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// A process's stdin: writes go to its FIFO. Shutting it down or dropping it stops writing
/// and fires `closed` (for an exec: the supervisor then asks containerd to close the shim's
/// end, and our end closes with the last handle). Once `ended` resolves (the process has
/// exited), writes fail instead of filling a FIFO nobody reads.
pub(super) struct StdinWriter {
    pipe: Option<Arc<pipe::Sender>>,
    closed: Option<oneshot::Sender<()>>,
    ended: BoxFuture<'static, ()>,
    _guard: Option<SessionGuard>,
}

impl StdinWriter {
    /// A writer that owns (`Arc` held nowhere else, exec) or shares (attach) `pipe`.
    pub(super) fn new(
        pipe: Arc<pipe::Sender>,
        closed: Option<oneshot::Sender<()>>,
        mut ended: watch::Receiver<bool>,
        guard: Option<SessionGuard>,
    ) -> Self {
        StdinWriter {
            pipe: Some(pipe),
            closed,
            ended: async move {
                let _ = ended.wait_for(|e| *e).await;
            }
            .boxed(),
            _guard: guard,
        }
    }

    fn close(&mut self) {
        self.pipe = None;
        if let Some(closed) = self.closed.take() {
            let _ = closed.send(());
        }
    }
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "stdin is closed")
}

impl AsyncWrite for StdinWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pipe.is_some() && self.ended.poll_unpin(cx).is_ready() {
            self.close();
        }
        let Some(pipe) = self.pipe.as_ref() else {
            return Poll::Ready(Err(closed_error()));
        };
        loop {
            ready!(pipe.poll_write_ready(cx))?;
            match pipe.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close();
        Poll::Ready(Ok(()))
    }
}

/// Forwards terminal sizes to containerd's `ResizePty` for a task (`exec_id` empty) or an
/// exec process until the sender is dropped or `done` turns true. Failures (the process has
/// just exited) are ignored. Returns the sender for the session.
pub(super) fn forward_resizes(
    runtime: &ContainerdRuntime,
    id: &str,
    exec_id: &str,
    mut done: watch::Receiver<bool>,
) -> mpsc::Sender<TerminalSize> {
    let (tx, mut rx) = mpsc::channel::<TerminalSize>(16);
    let runtime = runtime.clone();
    let (id, exec_id) = (id.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        loop {
            let size = tokio::select! {
                size = rx.recv() => match size {
                    Some(size) => size,
                    None => return,
                },
                _ = done.wait_for(|d| *d) => return,
            };
            let _ = runtime
                .inner
                .client
                .tasks()
                .resize_pty(runtime.request(api::ResizePtyRequest {
                    container_id: id.clone(),
                    exec_id: exec_id.clone(),
                    width: u32::from(size.width),
                    height: u32::from(size.height),
                }))
                .await;
        }
    });
    tx
}
