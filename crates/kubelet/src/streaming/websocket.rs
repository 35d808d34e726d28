//! Kubernetes' channel protocol over WebSocket (`channel.k8s.io` and its versions): every
//! message belongs to a channel named by its first byte (binary protocols) or its first
//! character, `'0' + channel`, followed by base64 (the `base64.` protocols). Also the byte-stream
//! view of a WebSocket that tunnels SPDY (`SPDY/3.1+portforward.k8s.io`).

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The largest message accepted from a client.
const MAX_MESSAGE: usize = 1 << 20;
/// Messages queued for the connection.
const OUTGOING_QUEUE: usize = 16;
/// How long closing waits for the client's answering Close.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a channel protocol encodes its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Binary messages: `[channel, data...]`.
    Binary,
    /// Text messages: `'0' + channel`, then the data in base64.
    Base64,
}

impl Encoding {
    /// The encoding of a negotiated subprotocol.
    pub(crate) fn of(protocol: &str) -> Encoding {
        if protocol.contains("base64.") {
            Encoding::Base64
        } else {
            Encoding::Binary
        }
    }

    /// One message on `channel`.
    pub(crate) fn encode(self, channel: u8, data: &[u8]) -> Message {
        match self {
            Encoding::Binary => {
                let mut bytes = Vec::with_capacity(data.len() + 1);
                bytes.push(channel);
                bytes.extend_from_slice(data);
                Message::Binary(bytes.into())
            }
            Encoding::Base64 => {
                let mut text = String::with_capacity(data.len() * 4 / 3 + 8);
                text.push(char::from(b'0'.wrapping_add(channel)));
                base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
                Message::text(text)
            }
        }
    }

    /// The channel and data of a client's message; `None` for empty messages (which some
    /// clients send as a handshake) and for control or malformed messages.
    pub(crate) fn decode(self, message: &Message) -> Option<(u8, Bytes)> {
        match (self, message) {
            (Encoding::Binary, Message::Binary(bytes)) if !bytes.is_empty() => {
                Some((bytes[0], bytes.slice(1..)))
            }
            (Encoding::Base64, Message::Text(text)) if !text.is_empty() => {
                let text = text.as_str();
                let channel = text.as_bytes()[0].wrapping_sub(b'0');
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&text[1..])
                    .ok()?;
                Some((channel, data.into()))
            }
            _ => None,
        }
    }
}

/// A server-role WebSocket over an upgraded connection (no handshake: the 101 was sent).
pub(crate) async fn server<S>(io: S) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}

enum Outgoing {
    Message(Message),
    Close(oneshot::Sender<()>),
}

/// Sends channel messages through one writer task (bounded: senders wait when the client
/// does not read). Cloneable.
#[derive(Clone)]
pub(crate) struct ChannelSender {
    encoding: Encoding,
    queue: mpsc::Sender<Outgoing>,
}

impl ChannelSender {
    /// Sends `data` on `channel`; `false` once the connection is gone.
    pub(crate) async fn send(&self, channel: u8, data: &[u8]) -> bool {
        self.queue
            .send(Outgoing::Message(self.encoding.encode(channel, data)))
            .await
            .is_ok()
    }

    /// Sends a Close (normal closure) after everything queued, and waits until it is written.
    pub(crate) async fn close(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Outgoing::Close(done)).await.is_ok() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, written).await;
        }
    }
}

/// Receives the client's channel messages.
pub(crate) struct ChannelReceiver<S> {
    encoding: Encoding,
    stream: SplitStream<WebSocketStream<S>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ChannelReceiver<S> {
    /// The next non-empty channel message; `None` once the client closed or the connection
    /// failed. Pings are answered while reading.
    pub(crate) async fn next(&mut self) -> Option<(u8, Bytes)> {
        loop {
            match self.stream.next().await? {
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(message) => {
                    if let Some(decoded) = self.encoding.decode(&message) {
                        return Some(decoded);
                    }
                }
            }
        }
    }

    /// Reads (and drops) until the client closes, at most `timeout`.
    pub(crate) async fn drain(mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }
}

/// Splits a WebSocket into a channel sender (backed by a writer task) and a receiver.
pub(crate) fn channels<S>(
    ws: WebSocketStream<S>,
    encoding: Encoding,
) -> (ChannelSender, ChannelReceiver<S>, JoinHandle<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (queue, rx) = mpsc::channel(OUTGOING_QUEUE);
    let writer = tokio::spawn(write_loop(sink, rx));
    (
        ChannelSender { encoding, queue },
        ChannelReceiver { encoding, stream },
        writer,
    )
}

fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(item) = rx.recv().await {
        match item {
            Outgoing::Message(message) => {
                // Batch what is queued, flush once.
                let mut failed = sink.feed(message).await.is_err();
                let mut close = None;
                while !failed {
                    match rx.try_recv() {
                        Ok(Outgoing::Message(message)) => {
                            failed = sink.feed(message).await.is_err()
                        }
                        Ok(Outgoing::Close(done)) => {
                            close = Some(done);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                failed = failed || sink.flush().await.is_err();
                if let Some(done) = close {
                    let _ = sink.send(normal_close()).await;
                    let _ = done.send(());
                    break;
                }
                if failed {
                    break;
                }
            }
            Outgoing::Close(done) => {
                let _ = sink.send(normal_close()).await;
                let _ = done.send(());
                break;
            }
        }
    }
    rx.close();
    while rx.recv().await.is_some() {}
}

/// A WebSocket as a byte stream: reads are the payloads of binary messages, in order; each
/// write is one binary message; shutdown sends a normal Close. What the SPDY tunnel of
/// `kubectl port-forward` runs over.
pub(crate) struct ByteStream<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
    close_sent: bool,
}

impl<S> ByteStream<S> {
    /// Wraps an open WebSocket.
    pub(crate) fn new(ws: WebSocketStream<S>) -> Self {
        ByteStream {
            ws,
            pending: Bytes::new(),
            close_sent: false,
        }
    }
}

fn io_error(error: WsError) -> std::io::Error {
    std::io::Error::other(error)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ByteStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(bytes))) => self.pending = bytes,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "invalid message type received",
                    )))
                }
                Some(Ok(_)) => {}
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ByteStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(io_error)?;
        ws.start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.close_sent {
            let mut ws = Pin::new(&mut self.ws);
            ready!(ws.as_mut().poll_ready(cx)).map_err(io_error)?;
            ws.start_send(normal_close()).map_err(io_error)?;
            self.close_sent = true;
        }
        match ready!(Pin::new(&mut self.ws).poll_flush(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(io_error(error))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_messages_carry_the_channel_first() {
        let message = Encoding::Binary.encode(1, b"out");
        assert_eq!(message, Message::Binary(Bytes::from_static(b"\x01out")));
        assert_eq!(
            Encoding::Binary.decode(&message),
            Some((1, Bytes::from_static(b"out")))
        );
        assert_eq!(
            Encoding::Binary.decode(&Message::Binary(Bytes::new())),
            None
        );
    }

    #[test]
    fn base64_messages_carry_the_channel_as_a_digit() {
        let message = Encoding::Base64.encode(2, b"err");
        assert_eq!(message, Message::text("2ZXJy"));
        assert_eq!(
            Encoding::Base64.decode(&message),
            Some((2, Bytes::from_static(b"err")))
        );
        assert_eq!(Encoding::of("v4.base64.channel.k8s.io"), Encoding::Base64);
        assert_eq!(Encoding::of("v5.channel.k8s.io"), Encoding::Binary);
    }

    #[tokio::test]
    async fn a_byte_stream_reads_message_payloads_and_writes_messages() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::time::timeout(Duration::from_secs(5), async {
            let (a, b) = tokio::io::duplex(4096);
            let server_ws = server(a).await;
            let client_ws = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
            let mut bytes = ByteStream::new(server_ws);
            let (mut client_sink, mut client_stream) = client_ws.split();
            client_sink
                .send(Message::Binary(Bytes::from_static(b"hel")))
                .await
                .unwrap();
            client_sink
                .send(Message::Binary(Bytes::from_static(b"lo")))
                .await
                .unwrap();
            let mut got = [0u8; 5];
            bytes.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hello");
            bytes.write_all(b"back").await.unwrap();
            bytes.flush().await.unwrap();
            assert_eq!(
                client_stream.next().await.unwrap().unwrap(),
                Message::Binary(Bytes::from_static(b"back"))
            );
            bytes.shutdown().await.unwrap();
            assert!(matches!(
                client_stream.next().await.unwrap().unwrap(),
                Message::Close(Some(_))
            ));
        })
        .await
        .unwrap();
    }
}
