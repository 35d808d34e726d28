use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::dictionary::HEADER_DICTIONARY;
use super::frame::{
    encode, read_frame, Frame, HeaderCompressor, HeaderDecompressor, Headers, Setting, FLAG_FIN,
};
use super::session::{Session, SessionConfig};
use super::testing::Client;

/// A header block compressed by an independent zlib (level 9, the SPDY/3 dictionary, sync
/// flush): `streamtype: error`, `port: 8080`, `requestid: 0`; then, in the same context,
/// `streamtype: data`, `port: 8080`, `requestid: 0`.
const VECTOR_1: &str = "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff";
const VECTOR_2: &str = "c2aa19540e2512d60b000000ffff";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

async fn round_trip(frames: Vec<Frame>) -> Vec<Frame> {
    let mut compressor = HeaderCompressor::new();
    let mut buf = BytesMut::new();
    for frame in &frames {
        encode(frame, &mut compressor, &mut buf).unwrap();
    }
    let mut decompressor = HeaderDecompressor::new();
    let mut reader: &[u8] = &buf;
    let mut out = Vec::new();
    while let Some(frame) = read_frame(&mut reader, &mut decompressor).await.unwrap() {
        out.push(frame);
    }
    out
}

#[test]
fn the_dictionary_is_the_spdy3_one() {
    assert_eq!(HEADER_DICTIONARY.len(), 1423);
    // The dictionary id every SPDY/3 header stream announces (adler32 of the dictionary).
    let mut compress = flate2::Compress::new(flate2::Compression::best(), true);
    assert_eq!(
        compress.set_dictionary(HEADER_DICTIONARY).unwrap(),
        0xe3c6_a7c2
    );
}

#[test]
fn header_blocks_from_another_zlib_decompress_in_one_context() {
    let mut decompressor = HeaderDecompressor::new();
    assert_eq!(
        decompressor.decompress(&hex(VECTOR_1)).unwrap(),
        headers(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0")
        ])
    );
    assert_eq!(
        decompressor.decompress(&hex(VECTOR_2)).unwrap(),
        headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
    );
}

#[test]
fn compressed_header_blocks_start_with_the_dictionary_id_and_decompress_back() {
    let mut compressor = HeaderCompressor::new();
    let mut decompressor = HeaderDecompressor::new();
    let first = headers(&[("streamtype", "stdout"), ("Mixed", "a\0b")]);
    let block = compressor.compress(&first).unwrap();
    assert_eq!(&block[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
    assert_eq!(
        decompressor.decompress(&block).unwrap(),
        headers(&[("streamtype", "stdout"), ("mixed", "a\0b")])
    );
    let second = headers(&[("streamtype", "stderr")]);
    let block = compressor.compress(&second).unwrap();
    assert_eq!(decompressor.decompress(&block).unwrap(), second);
}

#[tokio::test]
async fn every_frame_type_round_trips() {
    let frames = vec![
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 3,
            slot: 0,
            flags: FLAG_FIN,
            headers: headers(&[("streamtype", "error")]),
        },
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: Vec::new(),
        },
        Frame::Headers {
            stream_id: 3,
            flags: FLAG_FIN,
            headers: headers(&[("x", "y")]),
        },
        Frame::RstStream {
            stream_id: 5,
            status: 5,
        },
        Frame::Settings {
            flags: 1,
            entries: vec![Setting {
                flags: 1,
                id: 7,
                value: 1 << 20,
            }],
        },
        Frame::Ping { id: 7 },
        Frame::GoAway {
            last_good_stream_id: 9,
            status: 0,
        },
        Frame::WindowUpdate {
            stream_id: 0,
            delta: 4096,
        },
        Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hello"),
        },
    ];
    let got = tokio::time::timeout(Duration::from_secs(5), round_trip(frames.clone()))
        .await
        .unwrap();
    assert_eq!(got, frames);
}

#[test]
fn control_frames_have_the_spdy3_layout() {
    let mut buf = BytesMut::new();
    encode(
        &Frame::Ping { id: 1 },
        &mut HeaderCompressor::new(),
        &mut buf,
    )
    .unwrap();
    assert_eq!(&buf[..], &[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]);
    buf.clear();
    encode(
        &Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"ab"),
        },
        &mut HeaderCompressor::new(),
        &mut buf,
    )
    .unwrap();
    assert_eq!(&buf[..], &[0, 0, 0, 3, 1, 0, 0, 2, b'a', b'b']);
}

/// The next frame that is not a WINDOW_UPDATE.
async fn recv_skipping_updates(client: &mut Client) -> Option<Frame> {
    loop {
        match client.recv().await {
            Some(Frame::WindowUpdate { .. }) => continue,
            other => return other,
        }
    }
}

fn session_pair() -> (Session, Client) {
    let (server, client) = tokio::io::duplex(256 * 1024);
    let session = Session::start(
        server,
        SessionConfig {
            ping_interval: None,
            close_timeout: Duration::from_secs(2),
        },
    );
    (session, Client::new(client))
}

fn syn(stream_id: u32, kind: &str) -> Frame {
    Frame::SynStream {
        stream_id,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        headers: headers(&[("streamtype", kind)]),
    }
}

#[tokio::test]
async fn a_session_replies_to_streams_delivers_data_and_credits_the_window() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (mut session, mut client) = session_pair();
        client.send(syn(1, "stdin")).await;
        let mut stream = session.accept().await.unwrap();
        assert_eq!(stream.header("streamtype"), Some("stdin"));
        assert_eq!(
            client.recv().await.unwrap(),
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Vec::new()
            }
        );
        client
            .send(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"abc"),
            })
            .await;
        assert_eq!(stream.reader.recv().await.unwrap(), "abc");
        assert_eq!(stream.reader.recv().await, None);
        assert_eq!(
            client.recv().await.unwrap(),
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 3
            }
        );
        assert_eq!(
            client.recv().await.unwrap(),
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 3
            }
        );
        stream.writer.write(b"out").await.unwrap();
        stream.writer.finish().await;
        assert_eq!(
            client.recv().await.unwrap(),
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"out")
            }
        );
        assert_eq!(
            client.recv().await.unwrap(),
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::new()
            }
        );
        assert!(stream.writer.write(b"late").await.is_err());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_session_echoes_client_pings_and_ends_with_goaway() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (session, mut client) = session_pair();
        client.send(Frame::Ping { id: 1 }).await;
        assert_eq!(client.recv().await.unwrap(), Frame::Ping { id: 1 });
        let closing = tokio::spawn(session.close());
        assert_eq!(
            client.recv().await.unwrap(),
            Frame::GoAway {
                last_good_stream_id: 0,
                status: 0
            }
        );
        // The server waits for the client to close before closing its side.
        client.io.shutdown().await.unwrap();
        assert_eq!(client.recv().await, None);
        closing.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_sender_waits_for_the_window_of_a_peer_that_does_flow_control() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (mut session, mut client) = session_pair();
        // Announcing a window shows the peer does flow control: 10 bytes per stream.
        client
            .send(Frame::Settings {
                flags: 0,
                entries: vec![Setting {
                    flags: 0,
                    id: 7,
                    value: 10,
                }],
            })
            .await;
        client.send(syn(1, "stdout")).await;
        let mut stream = session.accept().await.unwrap();
        let writing = tokio::spawn(async move {
            stream.writer.write(&[7u8; 25]).await.unwrap();
            stream
        });
        let _reply = client.recv().await.unwrap();
        let mut received = 0;
        while received < 10 {
            match recv_skipping_updates(&mut client).await.unwrap() {
                Frame::Data { data, .. } => received += data.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Nothing more until the window grows.
        let more = tokio::time::timeout(Duration::from_millis(400), client.recv()).await;
        assert!(more.is_err(), "sent beyond the window: {more:?}");
        client
            .send(Frame::WindowUpdate {
                stream_id: 1,
                delta: 100,
            })
            .await;
        while received < 25 {
            match recv_skipping_updates(&mut client).await.unwrap() {
                Frame::Data { data, .. } => received += data.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        writing.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_peer_without_flow_control_is_not_stalled_past_the_initial_window() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (mut session, mut client) = session_pair();
        client.send(syn(1, "stdout")).await;
        let mut stream = session.accept().await.unwrap();
        let total = 200 * 1024;
        let writing = tokio::spawn(async move {
            stream.writer.write(&vec![1u8; total]).await.unwrap();
            stream.writer.finish().await;
        });
        let mut received = 0;
        loop {
            match client.recv().await.unwrap() {
                Frame::Data { data, flags, .. } => {
                    received += data.len();
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                Frame::SynReply { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(received, total);
        writing.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_reset_stream_ends_its_reader_and_fails_its_writer() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (mut session, mut client) = session_pair();
        client.send(syn(1, "data")).await;
        let mut stream = session.accept().await.unwrap();
        client
            .send(Frame::RstStream {
                stream_id: 1,
                status: 5,
            })
            .await;
        assert_eq!(stream.reader.recv().await, None);
        // The reset is processed in order: by now the writer sees it.
        assert!(stream.writer.write(b"x").await.is_err());
        let mut rest = Vec::new();
        drop(session);
        let _ = client.io.read_to_end(&mut rest).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_session_pings_the_client_with_even_ids() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (server, client_io) = tokio::io::duplex(4096);
        let _session = Session::start(
            server,
            SessionConfig {
                ping_interval: Some(Duration::from_millis(50)),
                close_timeout: Duration::from_secs(1),
            },
        );
        let mut client = Client::new(client_io);
        assert_eq!(client.recv().await.unwrap(), Frame::Ping { id: 2 });
        assert_eq!(client.recv().await.unwrap(), Frame::Ping { id: 4 });
    })
    .await
    .unwrap();
}
