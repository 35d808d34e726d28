//! Remote command over WebSocket: channel 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; in
//! v5, a message `[255, channel]` closes that channel (the client closes stdin this way).

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use capstan_runtime::StdioOptions;

use super::{run, Outlet, Streams, Version};
use crate::streaming::websocket::{self, ChannelSender, Encoding, CLOSE_TIMEOUT};
use crate::streaming::OpenProcess;

/// The subprotocols served, in the server's order.
pub(crate) const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE_SIGNAL: u8 = 255;
/// Client messages buffered per input channel.
const INPUT_QUEUE: usize = 8;

struct ChannelOutlet {
    channel: u8,
    sender: ChannelSender,
}

impl Outlet for ChannelOutlet {
    fn write<'a>(&'a mut self, data: &'a [u8]) -> BoxFuture<'a, bool> {
        self.sender.send(self.channel, data).boxed()
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        // The server signals the end of its output by closing the connection.
        async {}.boxed()
    }
}

/// Serves a remote command on an upgraded connection whose subprotocol is `protocol` (empty:
/// none was negotiated).
pub(crate) async fn serve<S>(
    io: S,
    protocol: String,
    stdio: StdioOptions,
    open: OpenProcess,
    command: Vec<String>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let version = Version::of(&protocol);
    let ws = websocket::server(io).await;
    let (sender, mut receiver, writer) = websocket::channels(ws, Encoding::of(&protocol));
    // An empty message on the lowest channel this side writes tells the client the session
    // is established (as the kubelet does).
    let first = if stdio.stdout {
        STDOUT
    } else if stdio.stderr {
        STDERR
    } else {
        ERROR
    };
    sender.send(first, &[]).await;

    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
    let (resize_tx, resize_rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
    let (gone_tx, gone_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    // Reads the client's messages until it closes, or until the session is over.
    let reading = tokio::spawn(async move {
        let mut stdin = stdio.stdin.then_some(stdin_tx);
        let mut resize = stdio.tty.then_some(resize_tx);
        let mut done = done_rx;
        loop {
            let next = tokio::select! {
                next = receiver.next() => next,
                _ = &mut done => break,
            };
            let Some((channel, data)) = next else {
                let _ = gone_tx.send(());
                return receiver;
            };
            match channel {
                STDIN => {
                    if let Some(tx) = &stdin {
                        if tx.send(data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                RESIZE => {
                    if let Some(tx) = &resize {
                        if tx.send(data).await.is_err() {
                            resize = None;
                        }
                    }
                }
                CLOSE_SIGNAL if version >= Version::V5 => match data.first() {
                    Some(&STDIN) => stdin = None,
                    Some(&RESIZE) => resize = None,
                    _ => {}
                },
                _ => {}
            }
        }
        drop(gone_tx);
        receiver
    });

    let outlet = |channel| -> Box<dyn Outlet> {
        Box::new(ChannelOutlet {
            channel,
            sender: sender.clone(),
        })
    };
    let streams = Streams {
        stdin: stdio.stdin.then_some(stdin_rx),
        stdout: stdio.stdout.then(|| outlet(STDOUT)),
        stderr: (stdio.stderr && !stdio.tty).then(|| outlet(STDERR)),
        resize: stdio.tty.then_some(resize_rx),
        error: Some(outlet(ERROR)),
        gone: async move {
            // Only a client that went away resolves this; a finished session drops it.
            if gone_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        .boxed(),
    };
    run(streams, open, stdio, version, command).await;

    // Everything is queued: close, then let the client answer.
    sender.close().await;
    let _ = done_tx.send(());
    if let Ok(receiver) = reading.await {
        receiver.drain(CLOSE_TIMEOUT).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer).await;
}
