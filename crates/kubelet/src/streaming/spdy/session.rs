//! A SPDY/3.1 session in the server role: accepts the client's streams (answering each with
//! SYN_REPLY), delivers their data with backpressure, sends data within the peer's flow-control
//! windows, echoes the client's PINGs and pings it back, and shuts down with GOAWAY.
//!
//! Flow control: every stream starts with a 64 KiB window each way, and so does the session.
//! This side sends a WINDOW_UPDATE for every chunk its consumer takes. Go's `spdystream` (kubectl,
//! client-go, the kubelet itself) neither sends WINDOW_UPDATE nor honours it; a sender blocked on
//! an exhausted window therefore waits [`FLOW_CONTROL_GRACE`] for the peer's first WINDOW_UPDATE,
//! and if none has ever come, treats the peer as one without flow control (TCP's own backpressure
//! still applies: every queue here is bounded).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use super::frame::{
    self, read_frame, rst, Frame, FrameError, HeaderCompressor, HeaderDecompressor, Headers,
    FLAG_FIN, SETTINGS_INITIAL_WINDOW_SIZE,
};

/// The initial window of every stream and of the session (SPDY/3.1).
pub(crate) const INITIAL_WINDOW: i64 = 64 * 1024;
/// The largest DATA frame this side sends.
const MAX_DATA_FRAME: usize = 16 * 1024;
/// How long a sender blocked on a window waits for a peer's first WINDOW_UPDATE.
pub(crate) const FLOW_CONTROL_GRACE: Duration = Duration::from_millis(200);
/// Frames queued for the connection (each at most [`MAX_DATA_FRAME`] of data).
const OUTGOING_QUEUE: usize = 32;
/// Chunks buffered per stream before the reader waits for the stream's consumer.
const INBOUND_QUEUE: usize = 16;
/// Streams accepted but not yet taken by the session's owner.
const ACCEPT_QUEUE: usize = 16;

/// Why a stream could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SessionError {
    /// The peer reset the stream, or this side did.
    #[error("spdy: stream {0} was reset")]
    Reset(u32),
    /// The connection is gone.
    #[error("spdy: connection closed")]
    Closed,
}

/// Session options.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// How often this side pings the client (`None`: never).
    pub(crate) ping_interval: Option<Duration>,
    /// How long [`Session::close`] waits for the client to close its side.
    pub(crate) close_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ping_interval: Some(Duration::from_secs(30)),
            close_timeout: Duration::from_secs(5),
        }
    }
}

enum Outgoing {
    Frame(Frame),
    Shutdown(oneshot::Sender<()>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlowControl {
    /// The peer has not shown whether it does flow control: windows are honoured, with a
    /// grace period when exhausted.
    Unknown,
    /// The peer sent WINDOW_UPDATE or SETTINGS: windows are honoured.
    On,
    /// The peer let a window run out without ever updating it: it does no flow control.
    Off,
}

struct StreamState {
    send_window: i64,
    inbound: Option<mpsc::Sender<Bytes>>,
    local_fin: bool,
    remote_fin: bool,
}

struct State {
    streams: HashMap<u32, StreamState>,
    session_window: i64,
    initial_window: i64,
    flow: FlowControl,
    closed: bool,
    going_away: bool,
    last_stream_id: u32,
}

struct Shared {
    out: mpsc::Sender<Outgoing>,
    state: Mutex<State>,
    windows: Notify,
}

impl Shared {
    fn is_open(&self, id: u32) -> Result<(), SessionError> {
        let state = self.state.lock();
        if state.closed {
            return Err(SessionError::Closed);
        }
        match state.streams.get(&id) {
            Some(stream) if !stream.local_fin => Ok(()),
            _ => Err(SessionError::Reset(id)),
        }
    }

    async fn send(&self, frame: Frame) -> Result<(), SessionError> {
        self.out
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| SessionError::Closed)
    }

    /// Takes up to `want` bytes of window for stream `id`, waiting while it is exhausted.
    async fn reserve(&self, id: u32, want: usize) -> Result<usize, SessionError> {
        let mut waited_for_first_update = false;
        loop {
            let notified = self.windows.notified();
            {
                let mut state = self.state.lock();
                if state.closed {
                    return Err(SessionError::Closed);
                }
                let session_window = state.session_window;
                let flow = state.flow;
                let stream = match state.streams.get_mut(&id) {
                    Some(stream) if !stream.local_fin => stream,
                    _ => return Err(SessionError::Reset(id)),
                };
                let allowed = match flow {
                    FlowControl::Off => want as i64,
                    _ => stream.send_window.min(session_window),
                };
                if allowed > 0 {
                    let n = (allowed as usize).min(want);
                    stream.send_window -= n as i64;
                    state.session_window -= n as i64;
                    return Ok(n);
                }
                if flow == FlowControl::Unknown && waited_for_first_update {
                    tracing::debug!("spdy: the client does no flow control");
                    state.flow = FlowControl::Off;
                    continue;
                }
            }
            if self.state.lock().flow == FlowControl::Unknown {
                waited_for_first_update = true;
                let _ = tokio::time::timeout(FLOW_CONTROL_GRACE, notified).await;
            } else {
                notified.await;
            }
        }
    }

    /// Records this side's FIN; forgets the stream once both sides are done.
    fn local_fin(&self, id: u32) -> bool {
        let mut state = self.state.lock();
        let Some(stream) = state.streams.get_mut(&id) else {
            return false;
        };
        if stream.local_fin {
            return false;
        }
        stream.local_fin = true;
        if stream.remote_fin {
            state.streams.remove(&id);
        }
        true
    }

    fn remote_fin(&self, id: u32) {
        let mut state = self.state.lock();
        if let Some(stream) = state.streams.get_mut(&id) {
            stream.remote_fin = true;
            stream.inbound = None;
            if stream.local_fin {
                state.streams.remove(&id);
            }
        }
    }
}

/// A stream the client opened, already answered with SYN_REPLY.
pub(crate) struct Stream {
    /// Its id.
    pub(crate) id: u32,
    /// The headers of its SYN_STREAM.
    pub(crate) headers: Headers,
    /// What the client sends on it.
    pub(crate) reader: StreamReader,
    /// What this side sends on it.
    pub(crate) writer: StreamWriter,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// The first value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        frame::header(&self.headers, name)
    }
}

/// The receiving half of a stream.
pub(crate) struct StreamReader {
    id: u32,
    inbound: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
}

impl StreamReader {
    /// The next chunk; `None` once the client sent FIN, reset the stream or went away. Taking
    /// a chunk gives the client that much window back.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        let data = self.inbound.recv().await?;
        let delta = data.len() as u32;
        if delta > 0 {
            let _ = self
                .shared
                .send(Frame::WindowUpdate {
                    stream_id: self.id,
                    delta,
                })
                .await;
            let _ = self
                .shared
                .send(Frame::WindowUpdate {
                    stream_id: 0,
                    delta,
                })
                .await;
        }
        Some(data)
    }
}

/// The sending half of a stream.
pub(crate) struct StreamWriter {
    id: u32,
    shared: Arc<Shared>,
}

impl StreamWriter {
    /// Sends `data` in DATA frames within the windows. Fails once the stream was reset or
    /// finished, or the connection is gone.
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), SessionError> {
        self.shared.is_open(self.id)?;
        let mut rest = data;
        while !rest.is_empty() {
            let n = self
                .shared
                .reserve(self.id, rest.len().min(MAX_DATA_FRAME))
                .await?;
            self.shared
                .send(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: Bytes::copy_from_slice(&rest[..n]),
                })
                .await?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Closes this side of the stream (an empty DATA frame with FIN). Idempotent.
    pub(crate) async fn finish(&mut self) {
        if self.shared.local_fin(self.id) {
            self.shared.windows.notify_waiters();
            let _ = self
                .shared
                .send(Frame::Data {
                    stream_id: self.id,
                    flags: FLAG_FIN,
                    data: Bytes::new(),
                })
                .await;
        }
    }

    /// Resolves once the stream can no longer be written: reset by either side, finished by
    /// this side, or the connection is gone.
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        let id = self.id;
        async move {
            loop {
                let notified = shared.windows.notified();
                if shared.is_open(id).is_err() {
                    return;
                }
                notified.await;
            }
        }
    }

    /// Aborts the stream (RST_STREAM with CANCEL).
    pub(crate) async fn reset(&mut self) {
        let known = {
            let mut state = self.shared.state.lock();
            state.streams.remove(&self.id).is_some()
        };
        if known {
            self.shared.windows.notify_waiters();
            let _ = self
                .shared
                .send(Frame::RstStream {
                    stream_id: self.id,
                    status: rst::CANCEL,
                })
                .await;
        }
    }
}

/// A SPDY/3.1 server session over one connection.
pub(crate) struct Session {
    shared: Arc<Shared>,
    incoming: mpsc::Receiver<Stream>,
    closed: watch::Receiver<bool>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
    close_timeout: Duration,
}

impl Session {
    /// Starts the session on `io` (the upgraded connection); spawns its reader and writer.
    pub(crate) fn start<IO>(io: IO, config: SessionConfig) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(OUTGOING_QUEUE);
        let (accepted, incoming) = mpsc::channel(ACCEPT_QUEUE);
        let (closed_tx, closed) = watch::channel(false);
        let shared = Arc::new(Shared {
            out,
            state: Mutex::new(State {
                streams: HashMap::new(),
                session_window: INITIAL_WINDOW,
                initial_window: INITIAL_WINDOW,
                flow: FlowControl::Unknown,
                closed: false,
                going_away: false,
                last_stream_id: 0,
            }),
            windows: Notify::new(),
        });
        let writer = tokio::spawn(write_loop(write, out_rx, config.ping_interval));
        let reader = tokio::spawn(read_loop(read, shared.clone(), accepted, closed_tx));
        Session {
            shared,
            incoming,
            closed,
            reader,
            writer: Some(writer),
            close_timeout: config.close_timeout,
        }
    }

    /// The next stream the client opens; `None` once the connection is gone.
    pub(crate) async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Resolves once the connection is gone (the client closed it or it failed).
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.clone();
        async move {
            let _ = closed.wait_for(|closed| *closed).await;
        }
    }

    /// Ends the session: GOAWAY after everything queued, then waits (at most the configured
    /// timeout) for the client to close the connection, as Go's `spdystream` does, so that no
    /// unread data is cut off; then shuts this side down.
    pub(crate) async fn close(mut self) {
        let last_good_stream_id = {
            let mut state = self.shared.state.lock();
            state.going_away = true;
            state.last_stream_id
        };
        let _ = self
            .shared
            .send(Frame::GoAway {
                last_good_stream_id,
                status: 0,
            })
            .await;
        let _ = tokio::time::timeout(self.close_timeout, &mut self.reader).await;
        let (done_tx, done) = oneshot::channel();
        if self
            .shared
            .out
            .send(Outgoing::Shutdown(done_tx))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(self.close_timeout, done).await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite>(
    write: W,
    mut queue: mpsc::Receiver<Outgoing>,
    ping_interval: Option<Duration>,
) {
    tokio::pin!(write);
    let mut compressor = HeaderCompressor::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut ping_id: u32 = 0;
    let period = ping_interval.unwrap_or(Duration::from_secs(3600 * 24 * 365));
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let item = tokio::select! {
            item = queue.recv() => item,
            _ = pings.tick(), if ping_interval.is_some() => {
                ping_id = ping_id.wrapping_add(2) & 0x7FFF_FFFE;
                Some(Outgoing::Frame(Frame::Ping { id: ping_id.max(2) }))
            }
        };
        let mut shutdown = None;
        match item {
            None => {
                let _ = write.shutdown().await;
                return;
            }
            Some(Outgoing::Shutdown(done)) => shutdown = Some(done),
            Some(Outgoing::Frame(frame)) => {
                if let Err(error) = frame::encode(&frame, &mut compressor, &mut buf) {
                    tracing::debug!(%error, "spdy: frame not sent");
                }
                // Batch whatever else is queued into one write.
                while buf.len() < 64 * 1024 {
                    match queue.try_recv() {
                        Ok(Outgoing::Frame(frame)) => {
                            if let Err(error) = frame::encode(&frame, &mut compressor, &mut buf) {
                                tracing::debug!(%error, "spdy: frame not sent");
                            }
                        }
                        Ok(Outgoing::Shutdown(done)) => {
                            shutdown = Some(done);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        if !buf.is_empty() {
            let failed = write.write_all(&buf).await.is_err() || write.flush().await.is_err();
            buf.clear();
            if failed {
                // The connection is gone: drain the queue so that senders are not stuck.
                queue.close();
                while queue.recv().await.is_some() {}
                return;
            }
        }
        if let Some(done) = shutdown {
            let _ = write.shutdown().await;
            let _ = done.send(());
            queue.close();
            while queue.recv().await.is_some() {}
            return;
        }
    }
}

async fn read_loop<R: AsyncRead>(
    read: R,
    shared: Arc<Shared>,
    accepted: mpsc::Sender<Stream>,
    closed: watch::Sender<bool>,
) {
    tokio::pin!(read);
    let mut decompressor = HeaderDecompressor::new();
    loop {
        match read_frame(&mut read, &mut decompressor).await {
            Ok(Some(frame)) => {
                if let Err(error) = handle_frame(frame, &shared, &accepted).await {
                    tracing::debug!(%error, "spdy: session ends");
                    let last_good_stream_id = shared.state.lock().last_stream_id;
                    let _ = shared
                        .send(Frame::GoAway {
                            last_good_stream_id,
                            status: 1,
                        })
                        .await;
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(%error, "spdy: connection ends");
                break;
            }
        }
    }
    {
        let mut state = shared.state.lock();
        state.closed = true;
        state.streams.clear();
    }
    shared.windows.notify_waiters();
    let _ = closed.send(true);
}

async fn handle_frame(
    frame: Frame,
    shared: &Arc<Shared>,
    accepted: &mpsc::Sender<Stream>,
) -> Result<(), FrameError> {
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            let (refused, inbound) = {
                let mut state = shared.state.lock();
                if stream_id % 2 == 0 || stream_id <= state.last_stream_id {
                    return Err(FrameError::Protocol(format!(
                        "unexpected stream id {stream_id}"
                    )));
                }
                state.last_stream_id = stream_id;
                if state.going_away {
                    (true, None)
                } else {
                    let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
                    let fin = flags & FLAG_FIN != 0;
                    let initial = state.initial_window;
                    state.streams.insert(
                        stream_id,
                        StreamState {
                            send_window: initial,
                            inbound: (!fin).then_some(tx),
                            local_fin: false,
                            remote_fin: fin,
                        },
                    );
                    (false, Some(rx))
                }
            };
            if refused {
                let _ = shared
                    .send(Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    })
                    .await;
                return Ok(());
            }
            let _ = shared
                .send(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Vec::new(),
                })
                .await;
            let stream = Stream {
                id: stream_id,
                headers,
                reader: StreamReader {
                    id: stream_id,
                    inbound: inbound.expect("an accepted stream has a queue"),
                    shared: shared.clone(),
                },
                writer: StreamWriter {
                    id: stream_id,
                    shared: shared.clone(),
                },
            };
            if accepted.send(stream).await.is_err() {
                shared.state.lock().streams.remove(&stream_id);
                let _ = shared
                    .send(Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    })
                    .await;
            }
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let inbound = shared
                .state
                .lock()
                .streams
                .get(&stream_id)
                .and_then(|s| s.inbound.clone());
            if !data.is_empty() {
                let delivered = match inbound {
                    Some(inbound) => inbound.send(data.clone()).await.is_ok(),
                    None => false,
                };
                if !delivered {
                    // Nobody reads it: give the window back so the peer is not stalled.
                    let delta = data.len() as u32;
                    for id in [stream_id, 0] {
                        let _ = shared
                            .send(Frame::WindowUpdate {
                                stream_id: id,
                                delta,
                            })
                            .await;
                    }
                }
            }
            if flags & FLAG_FIN != 0 {
                shared.remote_fin(stream_id);
            }
        }
        Frame::Headers {
            stream_id, flags, ..
        } => {
            if flags & FLAG_FIN != 0 {
                shared.remote_fin(stream_id);
            }
        }
        Frame::RstStream { stream_id, .. } => {
            shared.state.lock().streams.remove(&stream_id);
            shared.windows.notify_waiters();
        }
        Frame::Settings { entries, .. } => {
            let mut state = shared.state.lock();
            for setting in entries {
                if setting.id == SETTINGS_INITIAL_WINDOW_SIZE {
                    let delta = i64::from(setting.value) - state.initial_window;
                    state.initial_window = i64::from(setting.value);
                    for stream in state.streams.values_mut() {
                        stream.send_window += delta;
                    }
                    state.flow = FlowControl::On;
                }
            }
            drop(state);
            shared.windows.notify_waiters();
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut state = shared.state.lock();
            state.flow = FlowControl::On;
            if stream_id == 0 {
                state.session_window += i64::from(delta);
            } else if let Some(stream) = state.streams.get_mut(&stream_id) {
                stream.send_window += i64::from(delta);
            }
            drop(state);
            shared.windows.notify_waiters();
        }
        Frame::Ping { id } => {
            // Odd ids are the client's: echo them. Even ones answer this side's pings.
            if id % 2 == 1 {
                let _ = shared.send(Frame::Ping { id }).await;
            }
        }
        Frame::GoAway { .. } => {
            shared.state.lock().going_away = true;
        }
        Frame::SynReply { .. } | Frame::Unknown { .. } => {}
    }
    Ok(())
}
