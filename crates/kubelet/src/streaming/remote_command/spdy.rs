//! Remote command over SPDY/3.1: the client opens one stream per standard stream (header
//! `streamtype`: `error`, `stdin`, `stdout`, `stderr`, `resize`); once the expected ones are
//! there, the session runs; stdin ends with the client's FIN.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use capstan_runtime::StdioOptions;

use super::{run, Outlet, Streams, Version};
use crate::streaming::spdy::session::{StreamReader, StreamWriter};
use crate::streaming::spdy::{Session, SessionConfig, Stream};
use crate::streaming::OpenProcess;

/// The protocols served, in the server's order.
pub(crate) const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// How long the client has to open its streams (the kubelet's `streamCreationTimeout`).
pub(crate) const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
const INPUT_QUEUE: usize = 4;

struct StreamOutlet(StreamWriter);

impl Outlet for StreamOutlet {
    fn write<'a>(&'a mut self, data: &'a [u8]) -> BoxFuture<'a, bool> {
        async move { self.0.write(data).await.is_ok() }.boxed()
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        self.0.finish().boxed()
    }
}

/// Forwards a stream's data into a bounded channel (each chunk is credited back to the client
/// as the process takes it).
fn forward(mut reader: StreamReader) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    tokio::spawn(async move {
        while let Some(chunk) = reader.recv().await {
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    rx
}

#[derive(Default)]
struct Expected {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Expected {
    fn complete(&self, stdio: StdioOptions, version: Version) -> bool {
        self.error.is_some()
            && (!stdio.stdin || self.stdin.is_some())
            && (!stdio.stdout || self.stdout.is_some())
            && (!stdio.stderr || stdio.tty || self.stderr.is_some())
            && (!stdio.tty || version < Version::V3 || self.resize.is_some())
    }
}

/// Serves a remote command on an upgraded connection that negotiated `version`.
pub(crate) async fn serve<S>(
    io: S,
    version: Version,
    stdio: StdioOptions,
    open: OpenProcess,
    command: Vec<String>,
    config: SessionConfig,
    creation_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = Session::start(io, config);
    let mut expected = Expected::default();
    let deadline = tokio::time::sleep(creation_timeout);
    tokio::pin!(deadline);
    while !expected.complete(stdio, version) {
        let stream = tokio::select! {
            stream = session.accept() => stream,
            _ = &mut deadline => None,
        };
        let Some(mut stream) = stream else {
            tracing::debug!("remote command: the client did not open its streams");
            session.close().await;
            return;
        };
        let slot = match stream.header("streamtype") {
            Some("error") => &mut expected.error,
            Some("stdin") => &mut expected.stdin,
            Some("stdout") => &mut expected.stdout,
            Some("stderr") => &mut expected.stderr,
            Some("resize") => &mut expected.resize,
            other => {
                tracing::debug!(streamtype = ?other, "remote command: unexpected stream");
                stream.writer.reset().await;
                continue;
            }
        };
        *slot = Some(stream);
    }

    let outlet = |stream: Stream| -> Box<dyn Outlet> { Box::new(StreamOutlet(stream.writer)) };
    let streams = Streams {
        stdin: expected.stdin.map(|s| forward(s.reader)),
        stdout: expected.stdout.map(outlet),
        stderr: expected.stderr.map(outlet),
        resize: expected.resize.map(|s| forward(s.reader)),
        error: expected.error.map(outlet),
        gone: session.closed().boxed(),
    };
    run(streams, open, stdio, version, command).await;
    session.close().await;
}

#[cfg(test)]
mod tests {
    use capstan_runtime::{ProcessIo, TerminalSize};
    use futures::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::streaming::spdy::frame::FLAG_FIN;
    use crate::streaming::spdy::testing::Client;

    /// A terminal process: echoes stdin, prints each new size as `WxH`, exits at end of input.
    fn terminal() -> ProcessIo {
        let (stdin_writer, mut stdin) = tokio::io::duplex(1024);
        let (mut stdout, stdout_reader) = tokio::io::duplex(1024);
        let (resize, mut sizes) = tokio::sync::mpsc::channel::<TerminalSize>(4);
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    Some(size) = sizes.recv() => {
                        let line = format!("{}x{}\n", size.width, size.height);
                        stdout.write_all(line.as_bytes()).await.unwrap();
                    }
                    n = stdin.read(&mut buf) => match n.unwrap() {
                        0 => break,
                        n => stdout.write_all(&buf[..n]).await.unwrap(),
                    },
                }
            }
            drop(stdout);
            let _ = exit_tx.send(7);
        });
        ProcessIo {
            stdin: Some(Box::pin(stdin_writer)),
            stdout: Some(Box::pin(stdout_reader)),
            stderr: None,
            resize: Some(resize),
            exit: async move { Ok(exit_rx.await.unwrap()) }.boxed(),
        }
    }

    #[tokio::test]
    async fn a_terminal_session_over_spdy_resizes_echoes_and_reports_the_exit() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (server_io, client_io) = tokio::io::duplex(64 * 1024);
            let stdio = StdioOptions {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true,
            };
            let open: OpenProcess = Box::new(|_| async { Ok(terminal()) }.boxed());
            let serving = tokio::spawn(serve(
                server_io,
                Version::V4,
                stdio,
                open,
                vec!["sh".into()],
                SessionConfig {
                    ping_interval: None,
                    close_timeout: Duration::from_secs(2),
                },
                Duration::from_secs(5),
            ));
            let mut client = Client::new(client_io);
            client.open(1, &[("streamtype", "error")]).await;
            client.open(3, &[("streamtype", "stdin")]).await;
            client.open(5, &[("streamtype", "stdout")]).await;
            client.open(7, &[("streamtype", "resize")]).await;
            // Two sizes in one chunk, the second split across two.
            client
                .data(7, 0, br#"{"Width":80,"Height":24}{"Width":100,"#)
                .await;
            client.data(7, 0, br#""Height":30}"#).await;
            let mut streams = std::collections::BTreeMap::new();
            client
                .collect(&mut streams, |streams| {
                    streams
                        .get(&5)
                        .is_some_and(|(out, _)| out.ends_with(b"100x30\n"))
                })
                .await;
            client.data(3, FLAG_FIN, b"typed\n").await;
            client.collect(&mut streams, |_| false).await;
            let (stdout, stdout_fin) = &streams[&5];
            let stdout = String::from_utf8_lossy(stdout);
            assert!(stdout_fin);
            assert!(stdout.contains("80x24\n"), "{stdout}");
            assert!(stdout.contains("100x30\n"), "{stdout}");
            assert!(stdout.contains("typed\n"), "{stdout}");
            let (status, status_fin) = &streams[&1];
            assert!(status_fin);
            assert_eq!(
                String::from_utf8_lossy(status),
                r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh], exit code 7","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#
            );
            client.io.shutdown().await.unwrap();
            serving.await.unwrap();
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_client_that_never_opens_its_streams_is_dropped() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (server_io, mut client_io) = tokio::io::duplex(64 * 1024);
            let open: OpenProcess = Box::new(|_| async { panic!("not opened") }.boxed());
            let serving = tokio::spawn(serve(
                server_io,
                Version::V4,
                StdioOptions::output(),
                open,
                Vec::new(),
                SessionConfig {
                    ping_interval: None,
                    close_timeout: Duration::from_millis(200),
                },
                Duration::from_millis(200),
            ));
            serving.await.unwrap();
            let mut rest = Vec::new();
            client_io.read_to_end(&mut rest).await.unwrap();
        })
        .await
        .unwrap();
    }
}
