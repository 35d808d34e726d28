//! Attaching to a fake container's main process. The main process's output is its log, so an
//! attached stdout (and stderr) yields the log lines written from the moment of the attach
//! on (scripted lines as the clock reaches them, and lines written since), through the same
//! follower as `container_logs` with `follow`, without any task. What is written to an
//! attached stdin reaches the process if the container was created with `stdin` open: each
//! line goes to the image's [`StdinHandler`] (by default echoed, like `cat`), and what it
//! answers is written to the container's log, which every attached session and
//! `kubectl logs` then see. A container running its own command line (see
//! [`FakeRuntimeBuilder::run_commands`](super::FakeRuntimeBuilder::run_commands)) gets what
//! is written to an attached stdin on its process's stdin instead.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::Either;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{broadcast, mpsc};

use super::logs::Follower;
use super::main_process::OutputChunk;
use super::pipe::PipeWriter;
use super::process::{until_not_running, Gone};
use super::FakeRuntime;
use crate::error::RuntimeError;
use crate::streaming::{ProcessIo, StdioOptions};
use crate::types::OutputStream;

/// Answers one line written to the stdin of a fake container's main process (without its
/// line ending): returns what the process writes to stdout in reply (split into log lines;
/// empty for nothing). Scripted with [`ImageBehaviour::on_stdin`](super::ImageBehaviour::on_stdin).
pub type StdinHandler = Arc<dyn Fn(&[u8]) -> Bytes + Send + Sync>;

/// An `AsyncRead` over a stream of chunks.
struct ChunkReader {
    chunks: BoxStream<'static, Bytes>,
    pending: Bytes,
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match self.chunks.poll_next_unpin(cx) {
                Poll::Ready(Some(chunk)) => self.pending = chunk,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = out.remaining().min(self.pending.len());
        let chunk = self.pending.split_to(n);
        out.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// The main process's stdin: lines go to the handler, answers to the log.
struct StdinWriter {
    runtime: FakeRuntime,
    id: String,
    handler: Option<StdinHandler>,
    tty: bool,
    partial: Vec<u8>,
    last_was_cr: bool,
}

impl StdinWriter {
    fn line(&self, line: &[u8]) -> io::Result<()> {
        let answer = match &self.handler {
            Some(handler) => handler(line),
            None => Bytes::copy_from_slice(line),
        };
        if answer.is_empty() && self.handler.is_some() {
            return Ok(());
        }
        self.runtime
            .write_log(&self.id, OutputStream::Stdout, answer)
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
    }
}

impl AsyncWrite for StdinWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        for &b in data {
            let after_cr = std::mem::replace(&mut self.last_was_cr, false);
            let end = b == b'\n' || (self.tty && b == b'\r');
            if b == b'\n' && after_cr && self.tty {
                continue;
            }
            if end {
                self.last_was_cr = b == b'\r';
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Err(e) = self.line(&line) {
                    return Poll::Ready(Err(e));
                }
            } else {
                self.partial.push(b);
            }
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            let _ = self.line(&line);
        }
        Poll::Ready(Ok(()))
    }
}

/// What an attach needs to know of its container.
pub(super) struct AttachTarget {
    pub(super) id: String,
    /// Lines of the log written before the attach (not shown).
    pub(super) written: usize,
    pub(super) stdin_open: bool,
    pub(super) tty: bool,
    pub(super) handler: Option<StdinHandler>,
    /// The stdin of the container's running command line, if it runs one with stdin open:
    /// what is written goes there instead of to the handler.
    pub(super) main_stdin: Option<PipeWriter>,
    /// The output of the container's running command line, if it runs one, subscribed at the
    /// attach: attached output comes from there as written instead of from the log.
    pub(super) main_output: Option<broadcast::Receiver<OutputChunk>>,
}

/// The output of a container's running command line, as written; with a terminal, `\n` is
/// shown as `\r\n`.
fn raw_output(
    receiver: broadcast::Receiver<OutputChunk>,
    tty: bool,
    only: Option<OutputStream>,
) -> BoxStream<'static, Bytes> {
    futures::stream::unfold(receiver, move |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok((stream, data)) if only.is_none_or(|s| s == stream) => {
                    let data = if tty {
                        let mut out = Vec::with_capacity(data.len() + 8);
                        for &b in data.iter() {
                            if b == b'\n' {
                                out.push(b'\r');
                            }
                            out.push(b);
                        }
                        Bytes::from(out)
                    } else {
                        data
                    };
                    return Some((data, receiver));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}

fn output(
    runtime: &FakeRuntime,
    target: &AttachTarget,
    only: Option<OutputStream>,
) -> BoxStream<'static, Bytes> {
    let follower = Follower {
        runtime: runtime.clone(),
        id: target.id.clone(),
        since: None,
        emitted: target.written,
        pending: Default::default(),
    };
    let newline: &'static [u8] = if target.tty { b"\r\n" } else { b"\n" };
    futures::stream::unfold(follower, |mut f| async move {
        f.next().await.map(|entry| (entry, f))
    })
    .filter_map(move |entry| {
        let chunk = entry
            .ok()
            .filter(|e| only.is_none_or(|s| s == e.stream))
            .map(|e| {
                let mut line = e.line.to_vec();
                line.extend_from_slice(newline);
                Bytes::from(line)
            });
        futures::future::ready(chunk)
    })
    .boxed()
}

/// Starts an attach session to `target`.
pub(super) fn start_attach(
    runtime: FakeRuntime,
    target: AttachTarget,
    stdio: StdioOptions,
) -> ProcessIo {
    let reader = |only| -> crate::streaming::ByteReader {
        let chunks = match &target.main_output {
            Some(receiver) => raw_output(receiver.resubscribe(), target.tty, only),
            None => output(&runtime, &target, only),
        };
        Box::pin(ChunkReader {
            chunks,
            pending: Bytes::new(),
        })
    };
    let stdout = stdio.stdout.then(|| {
        reader(if target.tty {
            None
        } else {
            Some(OutputStream::Stdout)
        })
    });
    let stderr = (stdio.stderr && !target.tty).then(|| reader(Some(OutputStream::Stderr)));
    let stdin: Option<crate::streaming::ByteWriter> =
        stdio.stdin.then(|| -> crate::streaming::ByteWriter {
            if let Some(main) = target.main_stdin.clone() {
                Box::pin(main)
            } else if target.stdin_open {
                Box::pin(StdinWriter {
                    runtime: runtime.clone(),
                    id: target.id.clone(),
                    handler: target.handler.clone(),
                    tty: target.tty,
                    partial: Vec::new(),
                    last_was_cr: false,
                })
            } else {
                Box::pin(tokio::io::sink())
            }
        });
    let (resize, mut sizes) = if target.tty || stdio.tty {
        let (tx, rx) = mpsc::channel(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let id = target.id;
    let exit = Box::pin(async move {
        // Sizes are accepted and dropped: the fake's main process draws nothing.
        let drain = std::pin::pin!(async move {
            if let Some(rx) = &mut sizes {
                while rx.recv().await.is_some() {}
            }
            futures::future::pending::<()>().await
        });
        let gone = std::pin::pin!(until_not_running(&runtime, &id));
        match futures::future::select(gone, drain).await {
            Either::Left((Gone::Exited(code), _)) => Ok(code),
            Either::Left((Gone::Removed, _)) | Either::Right(_) => {
                Err(RuntimeError::not_found("container", id.clone()))
            }
        }
    });
    ProcessIo {
        stdin,
        stdout,
        stderr,
        resize,
        exit,
    }
}
