//! `exec_sync`: running a command in a running container's task as an extra process and
//! collecting its output.

use containerd_client::services::v1 as api;
use prost_types::Any;
use tokio::sync::watch;

use super::{internal, map_status, new_id, stdio, ContainerdRuntime, PROCESS_TYPE_URL, SIGKILL};
use crate::error::{Result, RuntimeError};
use crate::types::{ExecRequest, ExecResponse, OutputStream};

pub(super) async fn exec_sync(
    runtime: &ContainerdRuntime,
    request: ExecRequest,
) -> Result<ExecResponse> {
    if request.cmd.is_empty() {
        return Err(RuntimeError::InvalidArgument("empty exec command".into()));
    }
    let id = request.container_id.as_str();
    let process = super::streaming_exec::exec_process(runtime, id, &request.cmd, false).await?;
    let exec_id = format!("exec-{}", &new_id()?[..16]);
    let dir = runtime.container_dir(id).join(&exec_id);
    std::fs::create_dir_all(&dir).map_err(|e| internal(&dir.display().to_string(), e))?;
    let (done, done_rx) = watch::channel(false);
    let mut collectors = Vec::new();
    let mut paths = Vec::new();
    for stream in [OutputStream::Stdout, OutputStream::Stderr] {
        let path = dir.join(stream.as_str());
        let fifo = stdio::fifo(&path)?;
        let done_rx = done_rx.clone();
        collectors.push(tokio::spawn(async move {
            let mut out = Vec::new();
            stdio::drain(fifo, done_rx, |chunk| out.extend_from_slice(chunk)).await;
            out
        }));
        paths.push(path.to_string_lossy().into_owned());
    }
    let tasks = runtime.inner.client.tasks();
    let run = async {
        tasks
            .clone()
            .exec(
                runtime.request(api::ExecProcessRequest {
                    container_id: id.into(),
                    stdin: String::new(),
                    stdout: paths[0].clone(),
                    stderr: paths[1].clone(),
                    terminal: false,
                    spec: Some(Any {
                        type_url: PROCESS_TYPE_URL.into(),
                        value: serde_json::to_vec(&process)
                            .map_err(|e| internal("encoding a process", e))?,
                    }),
                    exec_id: exec_id.clone(),
                }),
            )
            .await
            .map_err(|s| map_status(s, "container", id))?;
        tasks
            .clone()
            .start(runtime.request(api::StartRequest {
                container_id: id.into(),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|s| map_status(s, "container", id))?;
        let waited = match request.timeout {
            Some(limit) => match tokio::time::timeout(limit, runtime.wait(id, &exec_id)).await {
                Ok(waited) => waited?,
                Err(_) => {
                    runtime.kill(id, &exec_id, SIGKILL).await?;
                    runtime.wait(id, &exec_id).await?;
                    return Err(RuntimeError::Timeout(limit));
                }
            },
            None => runtime.wait(id, &exec_id).await?,
        };
        waited
            .map(|(code, _)| code as i32)
            .ok_or_else(|| RuntimeError::Internal(format!("exec {exec_id} in {id} vanished")))
    }
    .await;
    // Deleting the process makes the shim flush and close its output.
    let _ = tasks
        .clone()
        .delete_process(runtime.request(api::DeleteProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.clone(),
        }))
        .await;
    let _ = done.send(true);
    let mut outputs = Vec::new();
    for collector in collectors {
        outputs.push(collector.await.unwrap_or_default());
    }
    let _ = std::fs::remove_dir_all(&dir);
    let exit_code = run?;
    let stderr = outputs.pop().unwrap_or_default();
    let stdout = outputs.pop().unwrap_or_default();
    Ok(ExecResponse::new(exit_code).stdout(stdout).stderr(stderr))
}
