//! A SPDY client for tests: its own compression contexts over one end of an in-memory pipe.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWriteExt, DuplexStream};

use super::frame::{encode, read_frame, Frame, HeaderCompressor, HeaderDecompressor, FLAG_FIN};

/// Each stream's data so far, and whether the server finished it.
pub(crate) type Received = BTreeMap<u32, (Vec<u8>, bool)>;

/// The client's end of a session under test.
pub(crate) struct Client {
    pub(crate) io: DuplexStream,
    compressor: HeaderCompressor,
    decompressor: HeaderDecompressor,
}

impl Client {
    /// A client on `io`.
    pub(crate) fn new(io: DuplexStream) -> Client {
        Client {
            io,
            compressor: HeaderCompressor::new(),
            decompressor: HeaderDecompressor::new(),
        }
    }

    /// Sends one frame.
    pub(crate) async fn send(&mut self, frame: Frame) {
        let mut buf = BytesMut::new();
        encode(&frame, &mut self.compressor, &mut buf).unwrap();
        self.io.write_all(&buf).await.unwrap();
    }

    /// The next frame; `None` once the server closed.
    pub(crate) async fn recv(&mut self) -> Option<Frame> {
        read_frame(&mut self.io, &mut self.decompressor)
            .await
            .unwrap()
    }

    /// Opens stream `stream_id` with `headers`.
    pub(crate) async fn open(&mut self, stream_id: u32, headers: &[(&str, &str)]) {
        self.send(Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })
        .await;
    }

    /// Sends `data` on a stream (`flags`: [`FLAG_FIN`] to finish it).
    pub(crate) async fn data(&mut self, stream_id: u32, flags: u8, data: &'static [u8]) {
        self.send(Frame::Data {
            stream_id,
            flags,
            data: Bytes::from_static(data),
        })
        .await;
    }

    /// Reads frames into `streams` until GOAWAY, the end of the connection, or `done` holds.
    pub(crate) async fn collect(
        &mut self,
        streams: &mut Received,
        done: impl Fn(&Received) -> bool,
    ) {
        loop {
            if done(streams) {
                return;
            }
            match self.recv().await {
                Some(Frame::Data {
                    stream_id,
                    flags,
                    data,
                }) => {
                    let entry = streams
                        .entry(stream_id)
                        .or_insert_with(|| (Vec::new(), false));
                    entry.0.extend_from_slice(&data);
                    entry.1 |= flags & FLAG_FIN != 0;
                }
                Some(Frame::GoAway { .. }) | None => return,
                Some(_) => {}
            }
        }
    }
}
