//! Container tasks: draining their output FIFOs into log files, watching for their exits,
//! recording those exits in the container's labels, deleting and stopping tasks, and picking
//! up the tasks of an earlier process.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use containerd_client::services::v1 as api;
use tokio::sync::{broadcast, watch};

use super::status::{exit_reason, nanos_label, OOM_KILLED};
use super::{
    internal, is_not_found, map_status, record_of, stdio, task_status, to_time, Attached,
    ContainerRecord, ContainerdRuntime, LABEL_EXIT_CODE, LABEL_FINISHED, LABEL_REASON, SIGKILL,
    SIGTERM,
};
use crate::error::{Result, RuntimeError};
use crate::types::OutputStream;

/// How many output chunks an attach session may fall behind before it starts losing them.
const ATTACH_BACKLOG: usize = 256;

/// The stdio of a task as containerd's `CreateTaskRequest` takes it (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct TaskIo {
    pub(super) stdin: String,
    pub(super) stdout: String,
    pub(super) stderr: String,
    pub(super) terminal: bool,
}

impl ContainerdRuntime {
    /// Starts draining a task's FIFOs into its log file and to attach sessions, and opens
    /// its stdin FIFO when the container has one; returns the paths for the task. With a
    /// terminal, output is one stream (stdout). `fresh`: create the FIFOs (a new task), else
    /// reopen them (a task of an earlier process).
    pub(super) fn attach(&self, id: &str, record: &ContainerRecord, fresh: bool) -> Result<TaskIo> {
        let dir = self.container_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| internal(&dir.display().to_string(), e))?;
        let writer = stdio::LogWriter::open(Path::new(&record.log_path))?;
        let tty = record.config.tty;
        let stdin = if record.config.stdin {
            let path = dir.join("stdin");
            // After a restart, a lost stdin FIFO costs attach its input, not the output.
            let pipe = if fresh {
                Some(stdio::stdin_fifo(&path)?)
            } else {
                stdio::reopen_stdin(&path).ok()
            };
            pipe.map(|pipe| (path.to_string_lossy().into_owned(), Arc::new(pipe)))
        } else {
            None
        };
        let (done, done_rx) = watch::channel(false);
        let (output, _) = broadcast::channel(ATTACH_BACKLOG);
        let alive = Arc::new(());
        self.inner
            .draining
            .lock()
            .insert(id.to_string(), Arc::downgrade(&alive));
        let streams: &[OutputStream] = if tty {
            &[OutputStream::Stdout]
        } else {
            &[OutputStream::Stdout, OutputStream::Stderr]
        };
        let mut paths = Vec::new();
        for &stream in streams {
            let path = dir.join(stream.as_str());
            let fifo = if fresh {
                stdio::fifo(&path)?
            } else {
                stdio::reopen(&path)?
            };
            let mut lines = writer.stream(stream);
            let done_rx = done_rx.clone();
            let alive = alive.clone();
            let output = output.clone();
            tokio::spawn(async move {
                stdio::drain(fifo, done_rx, |chunk| {
                    lines.push(chunk);
                    if output.receiver_count() > 0 {
                        let _ = output.send((stream, Bytes::copy_from_slice(chunk)));
                    }
                })
                .await;
                lines.finish();
                drop(alive);
            });
            paths.push(path.to_string_lossy().into_owned());
        }
        let (stdin_path, stdin_pipe) = stdin.unzip();
        self.inner.attached.lock().insert(
            id.to_string(),
            Attached {
                done,
                output,
                stdin: stdin_pipe,
            },
        );
        let mut paths = paths.into_iter();
        Ok(TaskIo {
            stdin: stdin_path.unwrap_or_default(),
            stdout: paths.next().unwrap_or_default(),
            stderr: paths.next().unwrap_or_default(),
            terminal: tty,
        })
    }

    /// Ends the draining of a task's output (after its task was deleted, so the shim has
    /// flushed it).
    pub(super) fn detach(&self, id: &str) {
        if let Some(attached) = self.inner.attached.lock().remove(id) {
            let _ = attached.done.send(true);
        }
    }

    /// Watches a started task: once it exits, records its exit and deletes it.
    pub(super) fn watch_exit(&self, id: &str) {
        let runtime = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Ok(Some(_)) = runtime.wait(&id, "").await {
                let _ = runtime.finish(&id).await;
            }
        });
    }

    /// Records a stopped task's exit in its container's labels and deletes the task.
    /// Idempotent; a task still running is left alone.
    pub(super) async fn finish(&self, id: &str) -> Result<()> {
        let lock = self.task_lock(id);
        let _serialised = lock.lock().await;
        let Some(task) = self.get_task(id).await? else {
            return Ok(());
        };
        if task.status != task_status::STOPPED {
            return Ok(());
        }
        let code = task.exit_status as i32;
        let finished = to_time(task.exited_at.as_ref()).unwrap_or_else(SystemTime::now);
        // The cgroup outlives the process until the task is deleted: a killed process
        // there was the OOM killer's doing, which CRI reports as `OOMKilled`.
        let mut reason = exit_reason(code);
        if code != 0 {
            if let Ok(Some(object)) = self.get_object(id, "container").await {
                if super::stats::cgroup_of(&object).is_some_and(|c| super::stats::oom_killed(&c)) {
                    reason = OOM_KILLED;
                }
            }
        }
        match self
            .set_labels(
                id,
                &[
                    (LABEL_EXIT_CODE, code.to_string()),
                    (LABEL_FINISHED, nanos_label(finished)),
                    (LABEL_REASON, reason.to_string()),
                ],
            )
            .await
        {
            Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        if self.delete_task_locked(id).await? {
            self.detach(id);
        }
        Ok(())
    }

    pub(super) fn task_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .task_locks
            .lock()
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Deletes a container's task (its shim flushes the output first); `false` if there was
    /// none. The caller holds the container's task lock.
    pub(super) async fn delete_task_locked(&self, id: &str) -> Result<bool> {
        match self
            .inner
            .client
            .tasks()
            .delete(self.request(api::DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(_) if self.get_task(id).await?.is_none() => Ok(false),
            Err(s) => Err(map_status(s, "container", id)),
        }
    }

    /// Drains and watches the running tasks of containers created by an earlier process, and
    /// finishes those that exited meanwhile.
    pub(super) async fn reattach(&self) -> Result<()> {
        let tasks = self.list_tasks().await?;
        for object in self.list_objects("container").await? {
            let Some(task) = tasks.get(&object.id) else {
                continue;
            };
            if task.status == task_status::STOPPED {
                self.finish(&object.id).await?;
                continue;
            }
            // Output goes on only if the FIFOs survived; the exit is watched either way.
            if let Ok(record) = record_of::<ContainerRecord>(&object) {
                let _ = self.attach(&object.id, &record, false);
            }
            self.watch_exit(&object.id);
        }
        Ok(())
    }

    /// Stops a container's task: `signal`, then SIGKILL once `grace` has passed.
    pub(super) async fn stop_task(&self, id: &str, grace: Duration) -> Result<()> {
        let Some(task) = self.get_task(id).await? else {
            return Ok(());
        };
        if task.status == task_status::RUNNING || task.status == task_status::PAUSED {
            let mut exited = false;
            if !grace.is_zero() {
                self.kill(id, "", SIGTERM).await?;
                exited = matches!(
                    tokio::time::timeout(grace, self.wait(id, "")).await,
                    Ok(Ok(_))
                );
            }
            if !exited {
                self.kill(id, "", SIGKILL).await?;
                self.wait(id, "").await?;
            }
        } else if task.status == task_status::CREATED {
            self.kill(id, "", SIGKILL).await?;
            self.wait(id, "").await?;
        }
        self.finish(id).await
    }
}
