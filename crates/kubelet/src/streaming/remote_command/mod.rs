//! Remote command (`exec`, `attach`): what both transports share. Opens the process once the
//! client's streams are known, pumps stdin, stdout, stderr and terminal resizes, and ends with
//! the exit `Status` on the error stream.

pub(crate) mod spdy;
pub(crate) mod websocket;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use capstan_runtime::{ByteReader, ProcessIo, StdioOptions, TerminalSize};

use super::status::Status;
use super::{OpenProcess, StreamError};

/// How long output may still be read after the process exited (a background child may hold
/// the pipe open).
const OUTPUT_GRACE: Duration = Duration::from_secs(5);
/// The read size for stdout and stderr.
const CHUNK: usize = 32 * 1024;

/// The remote command protocol versions, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    /// `channel.k8s.io`: no resize; the error stream carries plain text.
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a JSON `Status`.
    V4,
    /// `v5.channel.k8s.io`: adds the close signal (WebSocket).
    V5,
}

impl Version {
    /// The version a protocol name stands for (the `base64.` variants included).
    pub(crate) fn of(protocol: &str) -> Version {
        let protocol = protocol.replace("base64.", "");
        match protocol.as_str() {
            "v5.channel.k8s.io" => Version::V5,
            "v4.channel.k8s.io" => Version::V4,
            "v3.channel.k8s.io" => Version::V3,
            "v2.channel.k8s.io" => Version::V2,
            _ => Version::V1,
        }
    }

    /// What the error stream carries at the end.
    fn encode_status(self, status: &Status) -> Vec<u8> {
        if self >= Version::V4 {
            status.to_json()
        } else {
            status.to_text()
        }
    }
}

/// A stream the process's output goes to.
pub(crate) trait Outlet: Send {
    /// Sends `data`; `false` once the client is gone.
    fn write<'a>(&'a mut self, data: &'a [u8]) -> BoxFuture<'a, bool>;
    /// Ends the stream (idempotent).
    fn close(&mut self) -> BoxFuture<'_, ()>;
}

/// The client's streams of one session; a stream is `None` when the client did not open it.
pub(crate) struct Streams {
    /// What the client types; the receiver ends when the client closes stdin.
    pub(crate) stdin: Option<mpsc::Receiver<Bytes>>,
    /// Where the process's stdout goes.
    pub(crate) stdout: Option<Box<dyn Outlet>>,
    /// Where its stderr goes.
    pub(crate) stderr: Option<Box<dyn Outlet>>,
    /// Consecutive JSON `TerminalSize` objects, possibly split across chunks.
    pub(crate) resize: Option<mpsc::Receiver<Bytes>>,
    /// Where the final status goes.
    pub(crate) error: Option<Box<dyn Outlet>>,
    /// Resolves when the connection is gone.
    pub(crate) gone: BoxFuture<'static, ()>,
}

/// `TerminalSize` as clients send it.
#[derive(Debug, Deserialize)]
struct WireSize {
    #[serde(rename = "Width", alias = "width")]
    width: u16,
    #[serde(rename = "Height", alias = "height")]
    height: u16,
}

/// Parses consecutive JSON objects from chunks of a byte stream.
#[derive(Debug, Default)]
pub(crate) struct SizeParser {
    buffer: Vec<u8>,
}

impl SizeParser {
    /// Adds a chunk; returns the sizes completed by it. Malformed input is dropped.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<TerminalSize> {
        self.buffer.extend_from_slice(chunk);
        let mut sizes = Vec::new();
        let mut consumed = 0;
        let mut stream = serde_json::Deserializer::from_slice(&self.buffer).into_iter::<WireSize>();
        loop {
            match stream.next() {
                Some(Ok(size)) => {
                    consumed = stream.byte_offset();
                    sizes.push(TerminalSize {
                        width: size.width,
                        height: size.height,
                    });
                }
                Some(Err(error)) if error.is_eof() => break,
                Some(Err(_)) => {
                    consumed = self.buffer.len();
                    break;
                }
                None => {
                    consumed = self.buffer.len();
                    break;
                }
            }
        }
        self.buffer.drain(..consumed);
        if self.buffer.len() > 4096 {
            self.buffer.clear();
        }
        sizes
    }
}

async fn pump_output(reader: Option<ByteReader>, outlet: &mut Option<Box<dyn Outlet>>) {
    let Some(mut reader) = reader else {
        return;
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(out) = outlet.as_mut() {
                    if !out.write(&buf[..n]).await {
                        // The client is gone: keep draining so the process is not blocked.
                        *outlet = None;
                    }
                }
            }
        }
    }
    if let Some(out) = outlet.as_mut() {
        out.close().await;
    }
}

async fn pump_stdin(
    inlet: Option<mpsc::Receiver<Bytes>>,
    writer: Option<capstan_runtime::ByteWriter>,
) {
    match (inlet, writer) {
        (Some(mut inlet), Some(mut writer)) => {
            while let Some(chunk) = inlet.recv().await {
                if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
            // Whatever else comes is dropped (the process no longer reads).
            while inlet.recv().await.is_some() {}
        }
        (Some(mut inlet), None) => while inlet.recv().await.is_some() {},
        (None, Some(mut writer)) => {
            let _ = writer.shutdown().await;
        }
        (None, None) => {}
    }
}

async fn pump_resize(
    inlet: Option<mpsc::Receiver<Bytes>>,
    sizes: Option<mpsc::Sender<TerminalSize>>,
) {
    let Some(mut inlet) = inlet else {
        return;
    };
    let mut parser = SizeParser::default();
    while let Some(chunk) = inlet.recv().await {
        for size in parser.push(&chunk) {
            if let Some(sizes) = &sizes {
                let _ = sizes.send(size).await;
            }
        }
    }
}

/// Runs one session: opens the process with `stdio`, pumps until it exits (or the client
/// goes away: the process is then dropped, which kills an exec), then writes the status and
/// ends the output streams. `command` names the exec in a non-zero exit's message; empty, the
/// session is an attach, which ends with success whatever the exit code (as the kubelet's).
pub(crate) async fn run(
    mut streams: Streams,
    open: OpenProcess,
    stdio: StdioOptions,
    version: Version,
    command: Vec<String>,
) {
    let opened = tokio::select! {
        opened = open(stdio) => opened,
        _ = &mut streams.gone => return,
    };
    // The kubelet's words for a failure that is not the process's exit code.
    let attach = command.is_empty();
    let failed = |error: StreamError| {
        if error.code < 500 && !error.reason.is_empty() && error.reason != "InternalError" {
            return Status::error(&error);
        }
        let context = if attach {
            "error attaching to container"
        } else {
            "error executing command in container"
        };
        Status::error(&StreamError::internal(format!(
            "{context}: {}",
            error.message
        )))
    };
    let status = match opened {
        Err(error) => failed(error),
        Ok(process) => match pump(process, &mut streams).await {
            Some(Ok(0)) => Status::success(),
            // An attach ends successfully whatever the container's exit (as the kubelet's).
            Some(Ok(_)) if attach => Status::success(),
            Some(Ok(code)) => Status::exit_code(code, &command),
            Some(Err(error)) => failed(StreamError::internal(error)),
            None => return,
        },
    };
    for outlet in [&mut streams.stdout, &mut streams.stderr]
        .into_iter()
        .flatten()
    {
        outlet.close().await;
    }
    if let Some(error) = streams.error.as_mut() {
        let bytes = version.encode_status(&status);
        if !bytes.is_empty() {
            error.write(&bytes).await;
        }
        error.close().await;
    }
}

/// Pumps until the process exited and its output was read (`None`: the client went away).
async fn pump(process: ProcessIo, streams: &mut Streams) -> Option<Result<i32, String>> {
    let ProcessIo {
        stdin,
        stdout,
        stderr,
        resize,
        exit,
    } = process;
    let mut stdout_outlet = streams.stdout.take();
    let mut stderr_outlet = streams.stderr.take();
    let inputs = {
        let stdin_pump = pump_stdin(streams.stdin.take(), stdin);
        let resize_pump = pump_resize(streams.resize.take(), resize);
        async move {
            futures::join!(stdin_pump, resize_pump);
            std::future::pending::<()>().await
        }
    };
    let work = async {
        let outputs = async {
            futures::join!(
                pump_output(stdout, &mut stdout_outlet),
                pump_output(stderr, &mut stderr_outlet)
            );
        };
        tokio::pin!(outputs);
        let exit = async { exit.await.map_err(|e| e.to_string()) };
        tokio::pin!(exit);
        tokio::select! {
            result = &mut exit => {
                let _ = tokio::time::timeout(OUTPUT_GRACE, &mut outputs).await;
                result
            }
            _ = &mut outputs => exit.await,
        }
    };
    let result = race(work, inputs, &mut streams.gone).await;
    streams.stdout = stdout_outlet;
    streams.stderr = stderr_outlet;
    result
}

async fn race<T>(
    work: impl Future<Output = T>,
    background: impl Future<Output = ()>,
    gone: &mut BoxFuture<'static, ()>,
) -> Option<T> {
    tokio::select! {
        result = work => Some(result),
        _ = background => None,
        _ = gone => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_parsed_across_chunk_boundaries() {
        let mut parser = SizeParser::default();
        assert_eq!(parser.push(br#"{"Width":80,"Hei"#), vec![]);
        assert_eq!(
            parser.push(br#"ght":24}{"Width":100,"Height":30}"#),
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 30
                }
            ]
        );
        assert_eq!(parser.push(b"garbage"), vec![]);
        assert_eq!(
            parser.push(br#"{"width":1,"height":2}"#),
            vec![TerminalSize {
                width: 1,
                height: 2
            }]
        );
    }

    #[test]
    fn versions_order_and_parse() {
        assert_eq!(Version::of("v5.channel.k8s.io"), Version::V5);
        assert_eq!(Version::of("v4.base64.channel.k8s.io"), Version::V4);
        assert_eq!(Version::of("base64.channel.k8s.io"), Version::V1);
        assert!(Version::V4 > Version::V3);
        assert_eq!(
            Version::V3.encode_status(&Status::exit_code(2, &[])),
            b"command terminated with non-zero exit code: exit code 2"
        );
    }
}
