//! A container's own command line as its main process, on a runtime built with
//! [`FakeRuntimeBuilder::run_commands`](super::FakeRuntimeBuilder::run_commands).
//!
//! `start_container` spawns one task per such container. The task waits on the clock until
//! the container is running (after the image's start delay), then runs the command line
//! through the same machinery as `exec` ([`super::process::run`]). Its stdout and stderr are
//! [`LogWriter`]s, which append each complete line to the container's log at the clock's
//! time (a partial line waits for its newline, or for the stream to close). When the command
//! returns, the container exits with its code at that instant; when the container stops
//! first (stop, kill, sandbox stop, removal), the process's future is dropped, which kills
//! it and closes everything it held (its ports included). Attached sessions read what the
//! process writes as it writes it (prompts without a newline included) from a broadcast
//! of its output, which ends when the process does.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::Either;
use tokio::io::AsyncWrite;
use tokio::sync::broadcast;

use super::builtins::has_command;
use super::pipe::{pipe, PipeWriter};
use super::process::{run, until_not_running, Terminal};
use super::state::{ContainerRecord, Stop};
use super::FakeRuntime;
use crate::error::RuntimeError;
use crate::streaming::{ByteReader, ByteWriter};
use crate::types::{ContainerState, LogEntry, OutputStream};

/// Exit code of a container whose command could not be started (runc's).
const START_ERROR_EXIT_CODE: i32 = 128;

/// Exit code of a main process stopped with a grace period (128 + SIGTERM).
pub(super) const SIGTERM_EXIT_CODE: i32 = 143;

/// What a container record keeps of its running command line.
#[derive(Debug)]
pub(super) struct MainProcess {
    /// The writing end of its stdin, when the container has `stdin` open: attached sessions
    /// write through clones of it. Kept here so the process never reads end-of-file.
    pub(super) stdin: Option<PipeWriter>,
    /// What the process writes, as written (partial lines included), for attached sessions;
    /// dropped when the process ends, which ends their output.
    pub(super) output: Option<broadcast::Sender<OutputChunk>>,
}

/// Bytes a main process wrote to one of its streams.
pub(super) type OutputChunk = (OutputStream, Bytes);

/// How many chunks an attached session may fall behind before it misses some.
const OUTPUT_BACKLOG: usize = 128;

/// The message of a container whose command is not found (containerd's, over runc's).
fn start_error_message(command: &str) -> String {
    format!(
        "failed to create containerd task: failed to create shim task: OCI runtime create \
         failed: runc create failed: unable to start container process: exec: {command:?}: \
         executable file not found in $PATH: unknown"
    )
}

/// The record's part of a main process and the process's stdin (a pipe if `stdin_open`).
fn prepare(stdin_open: bool) -> (MainProcess, ByteReader) {
    let (stdin, reader): (_, ByteReader) = if stdin_open {
        let (w, r) = pipe();
        (Some(w), Box::pin(r))
    } else {
        (None, Box::pin(tokio::io::empty()))
    };
    let (output, _) = broadcast::channel(OUTPUT_BACKLOG);
    let main = MainProcess {
        stdin,
        output: Some(output),
    };
    (main, reader)
}

/// What `start_container` does for a container's command line: nothing (`Ok(None)`) unless
/// `run_commands` is on and the container has one; the command line and its stdin to
/// [`spawn`] if it can run; a `StartError` exit recorded (and the error to return) if its
/// command is not found.
pub(super) fn on_start(
    record: &mut ContainerRecord,
    now: SystemTime,
    run_commands: bool,
) -> Result<Option<(Vec<String>, ByteReader)>, RuntimeError> {
    if !run_commands {
        return Ok(None);
    }
    let config = &record.config;
    let Some(argv) = record.behaviour.main_command(&config.command, &config.args) else {
        return Ok(None);
    };
    if !has_command(&record.behaviour, &argv[0]) {
        let message = start_error_message(&argv[0]);
        record.stopped = Some(Stop {
            at: now,
            exit_code: START_ERROR_EXIT_CODE,
            reason: "StartError".into(),
            message: message.clone(),
        });
        return Err(RuntimeError::Internal(message));
    }
    let (main, stdin) = prepare(config.stdin);
    record.main = Some(Box::new(main));
    Ok(Some((argv, stdin)))
}

/// Spawns the task of container `id`'s main process.
pub(super) fn spawn(runtime: FakeRuntime, id: String, argv: Vec<String>, stdin: ByteReader) {
    tokio::spawn(async move { main(runtime, id, argv, stdin).await });
}

/// Waits until container `id` runs; `false` if it exited or went away first.
async fn until_running(runtime: &FakeRuntime, id: &str) -> bool {
    loop {
        let tick = runtime.inner.clock.tick();
        let mut changed = runtime.inner.changed.subscribe();
        let now = runtime.inner.clock.now();
        {
            let state = runtime.inner.state.lock();
            let Some(record) = state.containers.get(id) else {
                return false;
            };
            match record.observe(now).state {
                ContainerState::Running => return true,
                ContainerState::Exited | ContainerState::Unknown => return false,
                ContainerState::Created => {}
            }
        }
        let changed = std::pin::pin!(changed.changed());
        futures::future::select(tick, changed).await;
    }
}

async fn main(runtime: FakeRuntime, id: String, argv: Vec<String>, stdin: ByteReader) {
    let code = run_main(&runtime, &id, argv, stdin).await;
    let now = runtime.inner.clock.now();
    let mut state = runtime.inner.state.lock();
    let Some(record) = state.containers.get_mut(&id) else {
        return;
    };
    // Attached sessions see the end of the output.
    if let Some(main) = &mut record.main {
        main.output = None;
    }
    if let Some(code) = code {
        if record.observe(now).state == ContainerState::Running {
            record.stopped = Some(Stop {
                at: now,
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: String::new(),
            });
        }
    }
    drop(state);
    runtime.notify();
}

/// Runs the command line once the container runs: its exit code, or `None` if the
/// container stopped (or went away) first.
async fn run_main(
    runtime: &FakeRuntime,
    id: &str,
    argv: Vec<String>,
    stdin: ByteReader,
) -> Option<i32> {
    if !until_running(runtime, id).await {
        return None;
    }
    let (base, tty, output) = {
        let mut state = runtime.inner.state.lock();
        let base = runtime.process_base(&mut state, id).ok()?;
        let record = &state.containers[id];
        let output = record.main.as_ref().and_then(|m| m.output.clone());
        (base, record.config.tty, output)
    };
    let writer = |stream| -> ByteWriter {
        Box::pin(LogWriter {
            runtime: runtime.clone(),
            id: id.to_string(),
            stream: if tty { OutputStream::Stdout } else { stream },
            partial: Vec::new(),
            output: output.clone(),
        })
    };
    let terminal = if tty {
        Terminal::tty()
    } else {
        Terminal::none()
    };
    let behaviour = base.behaviour.clone();
    let process = base.process(
        argv,
        stdin,
        writer(OutputStream::Stdout),
        writer(OutputStream::Stderr),
        terminal,
        runtime.inner.clock.clone(),
    );
    let running = std::pin::pin!(run(behaviour, process));
    let gone = std::pin::pin!(until_not_running(runtime, id));
    match futures::future::select(running, gone).await {
        Either::Left((code, _)) => Some(code),
        // Stopped or removed: the process is dropped (killed) with the future.
        Either::Right(_) => None,
    }
}

/// Appends `lines` of `stream` to container `id`'s log at the clock's time, whatever its
/// state (a line written as the process exits still counts). Nothing for a missing
/// container.
fn append_log(runtime: &FakeRuntime, id: &str, stream: OutputStream, lines: Vec<Bytes>) {
    if lines.is_empty() {
        return;
    }
    let now = runtime.inner.clock.now();
    {
        let mut state = runtime.inner.state.lock();
        let Some(record) = state.containers.get_mut(id) else {
            return;
        };
        record
            .written_log
            .extend(lines.into_iter().map(|line| LogEntry {
                timestamp: now,
                stream,
                line,
            }));
    }
    runtime.notify();
}

/// A main process's stdout or stderr: complete lines go to the container's log as they are
/// written; a partial line waits for its newline or for the writer to close.
struct LogWriter {
    runtime: FakeRuntime,
    id: String,
    stream: OutputStream,
    partial: Vec<u8>,
    /// Attached sessions' copy of the output.
    output: Option<broadcast::Sender<OutputChunk>>,
}

impl LogWriter {
    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = Bytes::from(std::mem::take(&mut self.partial));
            append_log(&self.runtime, &self.id, self.stream, vec![line]);
        }
    }
}

impl AsyncWrite for LogWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(output) = &self.output {
            // No attached session is no error.
            let _ = output.send((self.stream, Bytes::copy_from_slice(data)));
        }
        let mut lines = Vec::new();
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..i]);
            lines.push(Bytes::from(line));
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        append_log(&self.runtime, &self.id, self.stream, lines);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush_partial();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.flush_partial();
    }
}
