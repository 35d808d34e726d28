//! An in-memory byte pipe: bounded, with any number of writers and one reader. A fake
//! process's stdin, stdout and stderr are pipes; with a terminal, stdout and stderr are two
//! writers of the same pipe.
//!
//! The reader sees end-of-file once every writer is dropped or shut down; a writer gets
//! `BrokenPipe` once the reader is dropped (the fake's `SIGPIPE`).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How many bytes a pipe buffers before writers wait (Linux's pipe size).
pub(super) const PIPE_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Shared {
    buf: VecDeque<u8>,
    writers: usize,
    reader_open: bool,
    read_waker: Option<Waker>,
    write_wakers: Vec<Waker>,
}

impl Shared {
    fn wake_writers(&mut self) {
        for waker in self.write_wakers.drain(..) {
            waker.wake();
        }
    }

    fn wake_reader(&mut self) {
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
    }
}

/// A new pipe: its writing end (clone it for more writers) and its reading end.
pub(super) fn pipe() -> (PipeWriter, PipeReader) {
    let shared = Arc::new(Mutex::new(Shared {
        writers: 1,
        reader_open: true,
        ..Default::default()
    }));
    (
        PipeWriter {
            shared: shared.clone(),
            open: true,
            onlcr: false,
        },
        PipeReader { shared },
    )
}

/// The writing end of a [`pipe`].
#[derive(Debug)]
pub(super) struct PipeWriter {
    shared: Arc<Mutex<Shared>>,
    open: bool,
    /// Writes `\r\n` for `\n`, as a terminal does on output (`ONLCR`).
    onlcr: bool,
}

impl PipeWriter {
    /// This writer, translating newlines as a terminal does.
    pub(super) fn onlcr(mut self) -> Self {
        self.onlcr = true;
        self
    }

    fn close(&mut self) {
        if std::mem::replace(&mut self.open, false) {
            let mut shared = self.shared.lock();
            shared.writers -= 1;
            if shared.writers == 0 {
                shared.wake_reader();
            }
        }
    }
}

impl Clone for PipeWriter {
    fn clone(&self) -> Self {
        let mut shared = self.shared.lock();
        shared.writers += 1;
        PipeWriter {
            shared: self.shared.clone(),
            open: true,
            onlcr: self.onlcr,
        }
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.close();
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.open {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        let this = &mut *self;
        let mut shared = this.shared.lock();
        if !shared.reader_open {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut room = PIPE_CAPACITY.saturating_sub(shared.buf.len());
        let mut n = 0;
        for &b in data {
            let needed = if this.onlcr && b == b'\n' { 2 } else { 1 };
            if room < needed {
                break;
            }
            if needed == 2 {
                shared.buf.push_back(b'\r');
            }
            shared.buf.push_back(b);
            room -= needed;
            n += 1;
        }
        if n == 0 {
            shared.write_wakers.push(cx.waker().clone());
            return Poll::Pending;
        }
        shared.wake_reader();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close();
        Poll::Ready(Ok(()))
    }
}

/// The reading end of a [`pipe`].
#[derive(Debug)]
pub(super) struct PipeReader {
    shared: Arc<Mutex<Shared>>,
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        let mut shared = self.shared.lock();
        shared.reader_open = false;
        shared.buf.clear();
        shared.wake_writers();
    }
}

impl AsyncRead for PipeReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut shared = self.shared.lock();
        if shared.buf.is_empty() {
            if shared.writers == 0 {
                return Poll::Ready(Ok(()));
            }
            shared.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = out.remaining().min(shared.buf.len());
        let (front, back) = shared.buf.as_slices();
        let first = n.min(front.len());
        out.put_slice(&front[..first]);
        out.put_slice(&back[..n - first]);
        shared.buf.drain(..n);
        shared.wake_writers();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_reader_sees_every_writer_then_end_of_file() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (mut a, mut r) = pipe();
            let mut b = a.clone();
            a.write_all(b"one ").await.unwrap();
            b.write_all(b"two").await.unwrap();
            drop(a);
            b.shutdown().await.unwrap();
            let mut out = String::new();
            r.read_to_string(&mut out).await.unwrap();
            assert_eq!(out, "one two");
        })
        .await
        .expect("in time");
    }

    #[tokio::test]
    async fn a_terminal_writer_turns_newlines_into_carriage_return_newlines() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (w, mut r) = pipe();
            let mut w = w.onlcr();
            w.write_all(b"a\nb\n").await.unwrap();
            drop(w);
            let mut out = Vec::new();
            r.read_to_end(&mut out).await.unwrap();
            assert_eq!(out, b"a\r\nb\r\n");
        })
        .await
        .expect("in time");
    }

    #[tokio::test]
    async fn a_full_pipe_waits_for_the_reader_and_a_closed_reader_breaks_it() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (mut w, mut r) = pipe();
            let big = vec![7u8; PIPE_CAPACITY * 3];
            let writer = async move {
                w.write_all(&big).await.unwrap();
                w
            };
            let reader = async move {
                let mut got = vec![0u8; PIPE_CAPACITY * 3];
                r.read_exact(&mut got).await.unwrap();
                assert!(got.iter().all(|&b| b == 7));
                r
            };
            let (mut w, r) = tokio::join!(writer, reader);
            drop(r);
            let err = w.write_all(b"x").await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        })
        .await
        .expect("in time");
    }
}
