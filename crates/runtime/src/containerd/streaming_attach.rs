//! Attach (CRI's `Attach`): a session on a running container's main process, fed from the
//! broadcast of its output that the log drain keeps, writing into its stdin FIFO when the
//! container was created with stdin, with terminal resizes for a container on a terminal.

use bytes::Bytes;
use futures::FutureExt;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::broadcast::{self, error::RecvError};

use super::session::{self, StdinWriter, STREAM_BUFFER};
use super::status::observe;
use super::{record_of, ContainerRecord, ContainerdRuntime};
use crate::error::{Result, RuntimeError};
use crate::streaming::{AttachRequest, ByteReader, ByteWriter, ProcessIo};
use crate::types::{ContainerState, OutputStream};
use crate::ContainerRuntime;

pub(super) async fn attach(
    runtime: &ContainerdRuntime,
    request: AttachRequest,
) -> Result<ProcessIo> {
    let id = request.container_id.as_str();
    let object = runtime
        .get_object(id, "container")
        .await?
        .ok_or_else(|| RuntimeError::not_found("container", id))?;
    let task = runtime.get_task(id).await?;
    if observe(&object.labels, task.as_ref()).state != ContainerState::Running {
        return Err(RuntimeError::FailedPrecondition(format!(
            "container {id} is not running"
        )));
    }
    let record: ContainerRecord = record_of(&object)?;
    let (output, stdin_pipe, done) = {
        let attached = runtime.inner.attached.lock();
        let task_io = attached.get(id).ok_or_else(|| {
            RuntimeError::Unavailable(format!("the output of container {id} is not collected"))
        })?;
        (
            task_io.output.subscribe(),
            task_io.stdin.clone(),
            task_io.done.subscribe(),
        )
    };
    let stdio = request.stdio;
    // A terminal is one stream, on stdout.
    let tty = record.config.tty;
    let (stdout_in, stdout) = stream_if(stdio.stdout);
    let (stderr_in, stderr) = stream_if(stdio.stderr && !tty);
    tokio::spawn(forward(output, stdout_in, stderr_in));
    let stdin: Option<ByteWriter> = stdio.stdin.then(|| match stdin_pipe {
        Some(pipe) => Box::pin(StdinWriter::new(pipe, None, done.clone(), None)) as ByteWriter,
        // The container has no stdin: input goes nowhere, as with CRI.
        None => Box::pin(tokio::io::sink()) as ByteWriter,
    });
    let resize = (tty && stdio.tty).then(|| session::forward_resizes(runtime, id, "", done));
    let exit = {
        let runtime = runtime.clone();
        let id = id.to_string();
        async move {
            if let Ok(Some((code, _))) = runtime.wait(&id, "").await {
                return Ok(code as i32);
            }
            // The task is gone (its exit was recorded and it was deleted).
            runtime
                .container_status(&id)
                .await?
                .exit_code
                .ok_or_else(|| {
                    RuntimeError::Internal(format!("container {id} stopped without an exit code"))
                })
        }
        .boxed()
    };
    Ok(ProcessIo {
        stdin,
        stdout,
        stderr,
        resize,
        exit,
    })
}

fn stream_if(wanted: bool) -> (Option<DuplexStream>, Option<ByteReader>) {
    if !wanted {
        return (None, None);
    }
    let (ours, theirs) = tokio::io::duplex(STREAM_BUFFER);
    (Some(ours), Some(Box::pin(theirs) as ByteReader))
}

/// Copies the task's output to the session until the task's drains end (the broadcast
/// closes) or the session's readers are gone. Falling behind loses chunks, never blocks the
/// log.
async fn forward(
    mut output: broadcast::Receiver<(OutputStream, Bytes)>,
    mut stdout: Option<DuplexStream>,
    mut stderr: Option<DuplexStream>,
) {
    while stdout.is_some() || stderr.is_some() {
        let (stream, chunk) = match output.recv().await {
            Ok(next) => next,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => break,
        };
        let out = match stream {
            OutputStream::Stdout => &mut stdout,
            OutputStream::Stderr => &mut stderr,
        };
        if let Some(writer) = out {
            if writer.write_all(&chunk).await.is_err() {
                *out = None;
            }
        }
    }
    for writer in [stdout, stderr].into_iter().flatten() {
        let mut writer = writer;
        let _ = writer.shutdown().await;
    }
}
