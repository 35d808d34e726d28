//! The kubelet's native WebSocket port forward: for the i-th requested port, channel `2i`
//! carries data both ways and channel `2i+1` errors; the first message on each channel is the
//! port number (2 bytes, little endian). A port is done when either direction ends; once all
//! are, the connection is closed.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::forward_error;
use crate::streaming::websocket::{self, ChannelSender, Encoding, CLOSE_TIMEOUT};
use crate::streaming::ConnectPort;

/// The subprotocols served, in the server's order.
pub(crate) const PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "portforward.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

const CHUNK: usize = 32 * 1024;
const INPUT_QUEUE: usize = 8;

/// Parses the `ports` (or `port`) query parameters: repeated and/or comma-separated.
pub(crate) fn ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (name, value) in crate::streaming::upgrade::form_pairs(query) {
        if name == "ports" || name == "port" {
            for value in value.split(',').filter(|v| !v.trim().is_empty()) {
                ports.push(super::parse_port(value)?);
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// Serves port forwarding of `ports` on an upgraded connection whose subprotocol is
/// `protocol` (empty: none was negotiated).
pub(crate) async fn serve<S>(
    io: S,
    protocol: String,
    ports: Vec<u16>,
    connect: ConnectPort,
    pod: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = websocket::server(io).await;
    let (sender, mut receiver, writer) = websocket::channels(ws, Encoding::of(&protocol));

    let mut inputs = Vec::with_capacity(ports.len());
    let mut forwards = Vec::with_capacity(ports.len());
    for (i, port) in ports.iter().copied().enumerate() {
        let data = (2 * i) as u8;
        let error = data + 1;
        sender.send(data, &port.to_le_bytes()).await;
        sender.send(error, &port.to_le_bytes()).await;
        let (tx, rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
        inputs.push(Some(tx));
        forwards.push(forward(
            port,
            data,
            rx,
            sender.clone(),
            connect.clone(),
            pod.clone(),
        ));
    }

    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    let reading = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = receiver.next() => next,
                _ = &mut done_rx => break,
            };
            let Some((channel, data)) = next else { break };
            // Only data channels carry client bytes.
            let index = usize::from(channel / 2);
            if channel % 2 != 0 {
                continue;
            }
            if let Some(slot) = inputs.get_mut(index) {
                if let Some(tx) = slot {
                    if tx.send(data).await.is_err() {
                        *slot = None;
                    }
                }
            }
        }
        drop(inputs);
        receiver
    });

    futures::future::join_all(forwards).await;
    sender.close().await;
    let _ = done_tx.send(());
    if let Ok(receiver) = reading.await {
        receiver.drain(CLOSE_TIMEOUT).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer).await;
}

async fn forward(
    port: u16,
    channel: u8,
    mut input: mpsc::Receiver<Bytes>,
    sender: ChannelSender,
    connect: ConnectPort,
    pod: String,
) {
    let conn = match connect(port).await {
        Ok(conn) => conn,
        Err(e) => {
            sender
                .send(channel + 1, forward_error(port, &pod, &e).as_bytes())
                .await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tokio::io::split(conn);
    let inbound = async {
        while let Some(chunk) = input.recv().await {
            if to_pod.write_all(&chunk).await.is_err() || to_pod.flush().await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !sender.send(channel, &buf[..n]).await {
                        break;
                    }
                }
            }
        }
    };
    // Either direction ending ends the port (the client cannot half-close a channel).
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_repeated_and_comma_separated_parameters() {
        assert_eq!(ports("ports=80%2C1234&x=1").unwrap(), vec![80, 1234]);
        assert_eq!(ports("port=80&port=81").unwrap(), vec![80, 81]);
        assert!(ports("x=1").unwrap_err().contains("required"));
        assert!(ports("ports=abc").is_err());
    }
}
