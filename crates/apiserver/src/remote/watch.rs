//! A watch response body, read incrementally and split into newline-delimited
//! `WatchEvent`s.

use bytes::{Buf, Bytes, BytesMut};
use capstan_api::kube_core::{DynamicObject, WatchEvent};
use capstan_api::{Error, ResourceInfo, Result, WatchStream};
use futures::StreamExt;
use http_body_util::BodyExt;

use super::fill_types;

struct Lines<B> {
    body: B,
    buffer: BytesMut,
    resource: ResourceInfo,
    /// The body has ended (or failed); only what is buffered remains.
    drained: bool,
    /// An error was yielded: the stream is over.
    stopped: bool,
}

impl<B> Lines<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    /// The next complete line, without its newline; at the end of the body, the unterminated
    /// remainder.
    fn take_line(&mut self) -> Option<BytesMut> {
        loop {
            match self.buffer.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let mut line = self.buffer.split_to(end + 1);
                    line.truncate(end);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(line);
                }
                None if self.drained && !self.buffer.is_empty() => {
                    let line = self.buffer.split();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    return Some(line);
                }
                None => return None,
            }
        }
    }

    fn decode(&mut self, line: &[u8]) -> Result<WatchEvent<DynamicObject>> {
        let event: WatchEvent<DynamicObject> = serde_json::from_slice(line).map_err(|e| {
            Error::internal(format!(
                "malformed watch event for {}: {e}: {}",
                self.resource.qualified_resource(),
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ))
        })?;
        Ok(match event {
            WatchEvent::Added(mut o) => {
                fill_types(&self.resource, &mut o);
                WatchEvent::Added(o)
            }
            WatchEvent::Modified(mut o) => {
                fill_types(&self.resource, &mut o);
                WatchEvent::Modified(o)
            }
            WatchEvent::Deleted(mut o) => {
                fill_types(&self.resource, &mut o);
                WatchEvent::Deleted(o)
            }
            WatchEvent::Bookmark(bookmark) => WatchEvent::Bookmark(bookmark),
            WatchEvent::Error(status) => return Err(Error::from_status(*status)),
        })
    }

    async fn next(mut self) -> Option<(Result<WatchEvent<DynamicObject>>, Self)> {
        if self.stopped {
            return None;
        }
        loop {
            if let Some(line) = self.take_line() {
                let event = self.decode(&line);
                // An ERROR event (or garbage) ends the stream, as in Kubernetes.
                self.stopped = event.is_err();
                return Some((event, self));
            }
            if self.drained {
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buffer.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Some(Err(e)) => {
                    // The connection broke mid-stream: report it (retryable), then end.
                    self.drained = true;
                    self.stopped = true;
                    return Some((
                        Err(Error::ServiceUnavailable {
                            message: format!(
                                "the watch on {} was cut off: {}",
                                self.resource.qualified_resource(),
                                super::chain(&e)
                            ),
                        }),
                        self,
                    ));
                }
                None => self.drained = true,
            }
        }
    }
}

/// The events of a watch whose response (status 2xx) has body `body`, read as they arrive:
/// any HTTP body (hyper's, or kube-rs' for `KubeClient`).
pub(crate) fn events<B>(body: B, resource: ResourceInfo) -> WatchStream
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + 'static,
{
    let lines = Lines {
        body,
        buffer: BytesMut::new(),
        resource,
        drained: false,
        stopped: false,
    };
    futures::stream::unfold(lines, Lines::next).boxed()
}
