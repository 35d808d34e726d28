//! Port forward over SPDY: the client opens a pair of streams per connection, `error` and
//! `data`, with the same `requestid` and the pod's `port`; once both are there the port is
//! connected and the data stream relayed both ways (each side's FIN half-closes). A failure is
//! written as text on the error stream. The pair ends with FIN on both streams.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{forward_error, parse_port};
use crate::streaming::spdy::{Session, SessionConfig, Stream};
use crate::streaming::ConnectPort;

const CHUNK: usize = 32 * 1024;

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

struct Pending {
    since: Instant,
    pair: Pair,
}

/// The pair a stream belongs to: its `requestid`, or for older clients one derived from the
/// stream id (the error stream is opened just before its data stream).
fn request_id(stream: &Stream) -> String {
    if let Some(id) = stream.header("requestid").filter(|id| !id.is_empty()) {
        return id.to_string();
    }
    match stream.header("streamtype") {
        Some("data") => stream.id.saturating_sub(2).to_string(),
        _ => stream.id.to_string(),
    }
}

/// Serves port forwarding on an upgraded connection (SPDY directly, or tunnelled in a
/// WebSocket) until the client closes it. `pod` names the pod in error messages.
pub(crate) async fn serve<S>(
    io: S,
    connect: ConnectPort,
    pod: String,
    config: SessionConfig,
    creation_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = Session::start(io, config);
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut pairs = JoinSet::new();
    let mut purge = tokio::time::interval(
        Duration::from_secs(1)
            .min(creation_timeout)
            .max(Duration::from_millis(10)),
    );
    loop {
        tokio::select! {
            stream = session.accept() => {
                let Some(mut stream) = stream else { break };
                let id = request_id(&stream);
                let entry = pending.entry(id.clone()).or_insert_with(|| Pending {
                    since: Instant::now(),
                    pair: Pair::default(),
                });
                let slot = match stream.header("streamtype") {
                    Some("error") => &mut entry.pair.error,
                    Some("data") => &mut entry.pair.data,
                    other => {
                        tracing::debug!(streamtype = ?other, "port forward: unexpected stream");
                        stream.writer.reset().await;
                        continue;
                    }
                };
                if slot.is_some() {
                    tracing::debug!(request = %id, "port forward: duplicate stream");
                    stream.writer.reset().await;
                    continue;
                }
                *slot = Some(stream);
                if entry.pair.error.is_some() && entry.pair.data.is_some() {
                    let Pending { pair, .. } = pending.remove(&id).expect("just seen");
                    pairs.spawn(forward(pair, connect.clone(), pod.clone()));
                }
            }
            _ = purge.tick() => {
                let expired: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.since.elapsed() >= creation_timeout)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    tracing::debug!(request = %id, "port forward: timed out waiting for streams");
                    let pending = pending.remove(&id).expect("listed");
                    for mut stream in [pending.pair.error, pending.pair.data].into_iter().flatten() {
                        stream.writer.reset().await;
                    }
                }
            }
            Some(_) = pairs.join_next(), if !pairs.is_empty() => {}
        }
    }
    pairs.abort_all();
    session.close().await;
}

async fn forward(pair: Pair, connect: ConnectPort, pod: String) {
    let (Some(mut error), Some(data)) = (pair.error, pair.data) else {
        return;
    };
    let Stream {
        reader: mut data_reader,
        writer: mut data_writer,
        headers,
        ..
    } = data;
    let port_value = crate::streaming::spdy::frame::header(&headers, "port")
        .or_else(|| error.header("port"))
        .map(str::to_string);
    let port = match port_value.as_deref().map(parse_port) {
        Some(Ok(port)) => port,
        failed => {
            let message = match failed {
                Some(Err(message)) => message,
                _ => "\"port\" header is required".to_string(),
            };
            let _ = error.writer.write(message.as_bytes()).await;
            error.writer.finish().await;
            data_writer.finish().await;
            return;
        }
    };
    let conn = match connect(port).await {
        Ok(conn) => conn,
        Err(e) => {
            let message = forward_error(port, &pod, &e);
            tracing::debug!(%message, "port forward");
            let _ = error.writer.write(message.as_bytes()).await;
            error.writer.finish().await;
            data_writer.finish().await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tokio::io::split(conn);
    let reset = data_writer.closed();
    let inbound = async {
        while let Some(chunk) = data_reader.recv().await {
            if to_pod.write_all(&chunk).await.is_err() || to_pod.flush().await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let outbound = async {
        let copy = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match from_pod.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if data_writer.write(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = copy => {}
            _ = reset => {}
        }
        data_writer.finish().await;
    };
    futures::join!(inbound, outbound);
    error.writer.finish().await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::streaming::spdy::frame::{Frame, FLAG_FIN};
    use crate::streaming::spdy::testing::{Client, Received};
    use crate::streaming::StreamError;

    /// Port 7 echoes until the client half-closes; anything else refuses.
    fn connect() -> ConnectPort {
        Arc::new(|port| {
            async move {
                if port != 7 {
                    return Err(StreamError::internal("connection refused"));
                }
                let (conn, pod) = tokio::io::duplex(1024);
                tokio::spawn(async move {
                    let (mut reader, mut writer) = tokio::io::split(pod);
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    let _ = writer.shutdown().await;
                });
                Ok(Box::new(conn) as crate::streaming::DuplexStream)
            }
            .boxed()
        })
    }

    fn start(creation_timeout: Duration) -> (tokio::task::JoinHandle<()>, Client) {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(serve(
            server_io,
            connect(),
            "web".into(),
            SessionConfig {
                ping_interval: None,
                close_timeout: Duration::from_secs(1),
            },
            creation_timeout,
        ));
        (serving, Client::new(client_io))
    }

    fn finished(id: u32) -> impl Fn(&Received) -> bool {
        move |streams| streams.get(&id).is_some_and(|(_, fin)| *fin)
    }

    #[tokio::test]
    async fn a_stream_pair_relays_both_ways_and_half_closes() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (serving, mut client) = start(Duration::from_secs(5));
            let pair = |kind| [("streamtype", kind), ("port", "7"), ("requestid", "0")];
            client.open(1, &pair("error")).await;
            client.open(3, &pair("data")).await;
            client.data(3, 0, b"ping").await;
            client.data(3, FLAG_FIN, b"pong").await;
            let mut streams = Received::new();
            client.collect(&mut streams, finished(1)).await;
            assert_eq!(streams[&3], (b"pingpong".to_vec(), true));
            assert_eq!(streams[&1], (Vec::new(), true));
            client.io.shutdown().await.unwrap();
            serving.await.unwrap();
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_refused_port_is_reported_on_the_error_stream() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (serving, mut client) = start(Duration::from_secs(5));
            // No requestid (older clients): the data stream pairs with the error stream
            // opened just before it.
            client
                .open(1, &[("streamtype", "error"), ("port", "81")])
                .await;
            client
                .open(3, &[("streamtype", "data"), ("port", "81")])
                .await;
            let mut streams = Received::new();
            client.collect(&mut streams, finished(1)).await;
            assert_eq!(
                String::from_utf8_lossy(&streams[&1].0),
                "error forwarding port 81 to pod web, uid : connection refused"
            );
            client.collect(&mut streams, finished(3)).await;
            client.io.shutdown().await.unwrap();
            serving.await.unwrap();
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_stream_without_its_pair_is_reset_after_the_creation_timeout() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (serving, mut client) = start(Duration::from_millis(100));
            client
                .open(
                    1,
                    &[("streamtype", "error"), ("port", "7"), ("requestid", "9")],
                )
                .await;
            loop {
                match client.recv().await.unwrap() {
                    Frame::RstStream { stream_id: 1, .. } => break,
                    Frame::SynReply { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            client.io.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let _ = client.io.read_to_end(&mut rest).await;
            serving.await.unwrap();
        })
        .await
        .unwrap();
    }
}
