//! Streaming exec (CRI's `Exec`): a command run as an extra process of a running container's
//! task, its stdin, stdout and stderr on FIFOs streamed both ways, an optional terminal, and
//! a supervisor that waits for its exit, deletes it, and kills it if the caller goes away.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use containerd_client::services::v1 as api;
use containerd_client::tonic::Code;
use futures::FutureExt;
use prost_types::Any;
use tokio::sync::{oneshot, watch};

use super::session::{self, Guarded, SessionGuard, STREAM_BUFFER};
use super::status::observe;
use super::{internal, map_status, new_id, stdio, ContainerdRuntime, PROCESS_TYPE_URL, SIGKILL};
use crate::error::{Result, RuntimeError};
use crate::streaming::{ByteReader, ProcessIo, StreamingExecRequest};
use crate::types::ContainerState;

/// The exit code of a command that was found but could not be run (as a shell reports it).
const CANNOT_EXECUTE: i32 = 126;
/// The exit code of a command that was not found.
const NOT_FOUND: i32 = 127;

/// The process spec of an exec: the container's process with `cmd` as arguments, on a
/// terminal when `tty` (with `TERM=xterm` unless the container sets `TERM`, as CRI does).
pub(super) async fn exec_process(
    runtime: &ContainerdRuntime,
    id: &str,
    cmd: &[String],
    tty: bool,
) -> Result<serde_json::Value> {
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
    let spec: serde_json::Value = serde_json::from_slice(
        &object
            .spec
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default(),
    )
    .map_err(|e| internal("decoding a container spec", e))?;
    let mut process = spec.get("process").cloned().unwrap_or_default();
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::json!(tty);
    if tty {
        let env = process["env"].as_array().cloned().unwrap_or_default();
        if !env
            .iter()
            .any(|v| v.as_str().is_some_and(|v| v.starts_with("TERM=")))
        {
            let mut env = env;
            env.push(serde_json::json!("TERM=xterm"));
            process["env"] = serde_json::Value::Array(env);
        }
    }
    Ok(process)
}

/// The exit code a shell would give for a command the runtime failed to start with
/// `message`: 127 when it does not exist, 126 otherwise.
pub(super) fn start_failure_code(message: &str) -> i32 {
    if message.contains("not found") || message.contains("no such file or directory") {
        NOT_FOUND
    } else {
        CANNOT_EXECUTE
    }
}

pub(super) async fn exec(
    runtime: &ContainerdRuntime,
    request: StreamingExecRequest,
) -> Result<ProcessIo> {
    let stdio = request.stdio;
    if request.cmd.is_empty() {
        return Err(RuntimeError::InvalidArgument("empty exec command".into()));
    }
    if stdio.tty && stdio.stderr {
        return Err(RuntimeError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    let id = request.container_id.as_str();
    let process = exec_process(runtime, id, &request.cmd, stdio.tty).await?;
    let exec_id = format!("exec-{}", &new_id()?[..16]);
    let dir = runtime.container_dir(id).join(&exec_id);
    std::fs::create_dir_all(&dir).map_err(|e| internal(&dir.display().to_string(), e))?;
    match start(runtime, id, &exec_id, &dir, process, &request).await {
        Ok(io) => Ok(io),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// The FIFOs of one exec process: paths for containerd and our ends.
struct Fifos {
    stdin: Option<(String, tokio::net::unix::pipe::Sender)>,
    outputs: Vec<(String, tokio::net::unix::pipe::Receiver)>,
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

async fn start(
    runtime: &ContainerdRuntime,
    id: &str,
    exec_id: &str,
    dir: &Path,
    process: serde_json::Value,
    request: &StreamingExecRequest,
) -> Result<ProcessIo> {
    let stdio = request.stdio;
    let mut fifos = Fifos {
        stdin: None,
        outputs: Vec::new(),
    };
    if stdio.stdin {
        let path = dir.join("stdin");
        fifos.stdin = Some((path_string(&path), stdio::stdin_fifo(&path)?));
    }
    // The terminal is one stream, on stdout.
    for (wanted, name) in [(stdio.stdout, "stdout"), (stdio.stderr, "stderr")] {
        if wanted {
            let path = dir.join(name);
            fifos
                .outputs
                .push((path_string(&path), stdio::fifo(&path)?));
        }
    }
    let path_of = |name: &str, wanted: bool| {
        if wanted {
            path_string(&dir.join(name))
        } else {
            String::new()
        }
    };
    let tasks = runtime.inner.client.tasks();
    tasks
        .clone()
        .exec(runtime.request(api::ExecProcessRequest {
            container_id: id.into(),
            stdin: path_of("stdin", stdio.stdin),
            stdout: path_of("stdout", stdio.stdout),
            stderr: path_of("stderr", stdio.stderr),
            terminal: stdio.tty,
            spec: Some(Any {
                type_url: PROCESS_TYPE_URL.into(),
                value:
                    serde_json::to_vec(&process).map_err(|e| internal("encoding a process", e))?,
            }),
            exec_id: exec_id.into(),
        }))
        .await
        .map_err(|s| map_status(s, "container", id))?;

    let (guard, abandoned) = session::session_guard();
    let (done, done_rx) = watch::channel(false);
    let mut pumps = Vec::new();
    let mut readers: Vec<ByteReader> = Vec::new();
    let output_paths: Vec<String> = fifos.outputs.iter().map(|(p, _)| p.clone()).collect();
    for (_, fifo) in fifos.outputs {
        let (ours, theirs) = tokio::io::duplex(STREAM_BUFFER);
        pumps.push(tokio::spawn(session::pump(fifo, done_rx.clone(), ours)));
        readers.push(Box::pin(Guarded::new(theirs, guard.clone())));
    }
    let stderr = if stdio.stderr { readers.pop() } else { None };
    let stdout = if stdio.stdout { readers.pop() } else { None };
    let stdin = fifos.stdin.map(|(_, pipe)| {
        let (closed, on_close) = oneshot::channel();
        close_stdin_when(runtime, id, exec_id, on_close);
        Box::pin(session::StdinWriter::new(
            Arc::new(pipe),
            Some(closed),
            done_rx.clone(),
            Some(guard.clone()),
        )) as crate::ByteWriter
    });

    let started = tasks
        .clone()
        .start(runtime.request(api::StartRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        }))
        .await;
    let (exit_tx, exit_rx) = oneshot::channel();
    let supervisor = Supervisor {
        runtime: runtime.clone(),
        id: id.to_string(),
        exec_id: exec_id.to_string(),
        dir: dir.to_path_buf(),
        done,
        pumps,
    };
    match started {
        Ok(_) => {
            tokio::spawn(supervisor.run(abandoned, exit_tx));
        }
        Err(s) if s.code() == Code::NotFound => {
            tokio::spawn(supervisor.finish());
            return Err(map_status(s, "container", id));
        }
        Err(s) => {
            // The runtime could not run the command (most often: it does not exist). As a
            // shell would, the session reports it on its error output and exits 126 or 127.
            // runc's shim already says "OCI runtime exec failed: ...".
            let message = if s.message().starts_with("OCI runtime") {
                s.message().to_string()
            } else {
                format!("OCI runtime exec failed: {}", s.message())
            };
            if let Some(path) = output_paths.last() {
                write_message(path, &message);
            }
            let _ = exit_tx.send(Ok(start_failure_code(&message)));
            tokio::spawn(supervisor.finish());
        }
    }
    let resize = stdio
        .tty
        .then(|| session::forward_resizes(runtime, id, exec_id, done_rx.clone()));
    let exit = exit_future(exit_rx, guard);
    Ok(ProcessIo {
        stdin,
        stdout,
        stderr,
        resize,
        exit,
    })
}

fn exit_future(
    exit_rx: oneshot::Receiver<Result<i32>>,
    guard: SessionGuard,
) -> futures::future::BoxFuture<'static, Result<i32>> {
    async move {
        let result = exit_rx.await;
        drop(guard);
        result.unwrap_or_else(|_| {
            Err(RuntimeError::Internal(
                "the exec process was lost before it exited".into(),
            ))
        })
    }
    .boxed()
}

/// Writes `message` and a newline into an output FIFO whose read end we hold (so opening it
/// for writing does not wait).
fn write_message(path: &str, message: &str) {
    if let Ok(mut fifo) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = fifo.write_all(format!("{message}\n").as_bytes());
    }
}

/// Once `on_close` fires (stdin shut down or dropped), closes the shim's end of the exec
/// process's stdin, so the process reads end-of-file.
fn close_stdin_when(
    runtime: &ContainerdRuntime,
    id: &str,
    exec_id: &str,
    on_close: oneshot::Receiver<()>,
) {
    let runtime = runtime.clone();
    let (id, exec_id) = (id.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        let _ = on_close.await;
        let _ = runtime
            .inner
            .client
            .tasks()
            .close_io(runtime.request(api::CloseIoRequest {
                container_id: id,
                exec_id,
                stdin: true,
            }))
            .await;
    });
}

/// Waits for one exec process, then deletes it and cleans its FIFOs up.
struct Supervisor {
    runtime: ContainerdRuntime,
    id: String,
    exec_id: String,
    dir: std::path::PathBuf,
    done: watch::Sender<bool>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

impl Supervisor {
    /// Waits for the exit (killing the process if every part of the session is dropped
    /// first), reports it on `exit_tx`, then finishes.
    async fn run(
        self,
        mut abandoned: oneshot::Receiver<()>,
        exit_tx: oneshot::Sender<Result<i32>>,
    ) {
        let (runtime, id, exec_id) = (&self.runtime, &self.id, &self.exec_id);
        let waited = tokio::select! {
            waited = runtime.wait(id, exec_id) => waited,
            _ = &mut abandoned => {
                let _ = runtime.kill(id, exec_id, SIGKILL).await;
                runtime.wait(id, exec_id).await
            }
        };
        let result = match waited {
            Ok(Some((code, _))) => Ok(code as i32),
            Ok(None) => Err(RuntimeError::not_found("exec process", exec_id)),
            Err(e) => Err(e),
        };
        self.finish_with(Some((exit_tx, result))).await;
    }

    /// Deletes the process (the shim then flushes and closes its output), ends the output
    /// streams and removes the FIFOs.
    async fn finish(self) {
        self.finish_with(None).await;
    }

    async fn finish_with(self, exit: Option<(oneshot::Sender<Result<i32>>, Result<i32>)>) {
        let _ = self
            .runtime
            .inner
            .client
            .tasks()
            .delete_process(self.runtime.request(api::DeleteProcessRequest {
                container_id: self.id.clone(),
                exec_id: self.exec_id.clone(),
            }))
            .await;
        let _ = self.done.send(true);
        if let Some((tx, result)) = exit {
            let _ = tx.send(result);
        }
        for pump in self.pumps {
            let _ = pump.await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_does_not_exist_exits_127_and_other_start_failures_126() {
        let missing = "OCI runtime exec failed: exec failed: unable to start container process: \
                       exec: \"nope\": executable file not found in $PATH: unknown";
        assert_eq!(start_failure_code(missing), 127);
        let denied = "OCI runtime exec failed: exec failed: unable to start container process: \
                      exec: \"/etc/passwd\": permission denied: unknown";
        assert_eq!(start_failure_code(denied), 126);
    }
}
