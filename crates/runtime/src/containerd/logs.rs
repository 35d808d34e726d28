//! Container logs: reading a container's CRI log file and following it while the container
//! runs.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use super::status::observe;
use super::{internal, record_of, stdio, ContainerRecord, ContainerdRuntime};
use crate::error::{Result, RuntimeError};
use crate::types::{ContainerState, LogEntry, LogOptions};
use crate::LogStream;

impl ContainerdRuntime {
    /// Whether the container is running, for log followers: `None` once it is removed.
    async fn running(&self, id: &str) -> Result<Option<bool>> {
        let Some(object) = self.get_object(id, "container").await? else {
            return Ok(None);
        };
        let task = self.get_task(id).await?;
        let draining = self
            .inner
            .draining
            .lock()
            .get(id)
            .is_some_and(|alive| alive.strong_count() > 0);
        Ok(Some(
            observe(&object.labels, task.as_ref()).state == ContainerState::Running || draining,
        ))
    }
}

pub(super) async fn container_logs(
    runtime: &ContainerdRuntime,
    id: &str,
    options: LogOptions,
) -> Result<LogStream> {
    let object = runtime
        .get_object(id, "container")
        .await?
        .ok_or_else(|| RuntimeError::not_found("container", id))?;
    let record: ContainerRecord = record_of(&object)?;
    let path = PathBuf::from(&record.log_path);
    let data = match tokio::fs::read(&path).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(internal(&record.log_path, e)),
    };
    let (mut entries, consumed) = stdio::parse_log(&data);
    if let Some(since) = options.since {
        entries.retain(|e| e.timestamp >= since);
    }
    if let Some(tail) = options.tail {
        let skip = entries.len().saturating_sub(tail);
        entries.drain(..skip);
    }
    let first = futures::stream::iter(entries.into_iter().map(Ok));
    if !options.follow {
        return Ok(first.boxed());
    }
    let follower = Follower {
        runtime: runtime.clone(),
        id: id.to_string(),
        path,
        offset: consumed as u64,
        since: options.since,
        pending: std::collections::VecDeque::new(),
        ended: false,
    };
    let rest = futures::stream::unfold(follower, |mut f| async move {
        f.next().await.map(|item| (item, f))
    });
    Ok(first.chain(rest).boxed())
}

/// Follows a container's log file until the container stops running (or is removed).
struct Follower {
    runtime: ContainerdRuntime,
    id: String,
    path: PathBuf,
    offset: u64,
    since: Option<SystemTime>,
    pending: std::collections::VecDeque<LogEntry>,
    ended: bool,
}

impl Follower {
    const POLL: Duration = Duration::from_millis(100);

    async fn next(&mut self) -> Option<Result<LogEntry>> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                return Some(Ok(entry));
            }
            if self.ended {
                return None;
            }
            // Read the state first: lines written before it stopped are then all in the file.
            let running = match self.runtime.running(&self.id).await {
                Ok(r) => r,
                Err(e) => {
                    self.ended = true;
                    return Some(Err(e));
                }
            };
            if let Err(e) = self.read_more().await {
                self.ended = true;
                return Some(Err(e));
            }
            match running {
                Some(true) => {
                    if self.pending.is_empty() {
                        tokio::time::sleep(Self::POLL).await;
                    }
                }
                _ => self.ended = true,
            }
        }
    }

    async fn read_more(&mut self) -> Result<()> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = match tokio::fs::File::open(&self.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(internal(&self.path.display().to_string(), e)),
        };
        file.seek(std::io::SeekFrom::Start(self.offset))
            .await
            .map_err(|e| internal("seeking a log", e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .await
            .map_err(|e| internal("reading a log", e))?;
        let (entries, consumed) = stdio::parse_log(&data);
        self.offset += consumed as u64;
        let since = self.since;
        self.pending.extend(
            entries
                .into_iter()
                .filter(|e| since.is_none_or(|s| e.timestamp >= s)),
        );
        Ok(())
    }
}
