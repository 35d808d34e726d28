//! Container logs: reading a container's CRI log file and following it while the container
//! runs.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
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
    // The file is read a block at a time, so a long log never sits in memory whole; `tail`
    // keeps only its last lines while scanning to the end.
    let (pending, offset) = match options.tail {
        Some(tail) => tail_of(&path, options.since, tail).await?,
        None => (VecDeque::new(), 0),
    };
    let follower = Follower {
        runtime: runtime.clone(),
        id: id.to_string(),
        path,
        offset,
        since: options.since,
        pending,
        follow: options.follow,
        ended: false,
    };
    Ok(futures::stream::unfold(follower, |mut f| async move {
        f.next().await.map(|item| (item, f))
    })
    .boxed())
}

/// How much of a log file is read at once (more when one line needs it).
const BLOCK: usize = 1 << 20;

/// The whole records of the log file at `path` from `offset`, reading about [`BLOCK`] bytes
/// (more when a line is longer), and the bytes they take; a missing file has none.
async fn read_block(path: &Path, offset: u64) -> Result<(Vec<LogEntry>, u64)> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(internal(&path.display().to_string(), e)),
    };
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| internal("seeking a log", e))?;
    let mut data = Vec::new();
    let mut limit = BLOCK;
    loop {
        let want = limit - data.len();
        let read = (&mut file)
            .take(want as u64)
            .read_to_end(&mut data)
            .await
            .map_err(|e| internal("reading a log", e))?;
        let (entries, consumed) = stdio::parse_log(&data);
        // A block that ends inside one long line (its partial records): read on.
        if consumed == 0 && read == want && read > 0 {
            limit *= 2;
            continue;
        }
        return Ok((entries, consumed as u64));
    }
}

/// The last `tail` entries at or after `since`, and where the file's whole records end.
async fn tail_of(
    path: &Path,
    since: Option<SystemTime>,
    tail: usize,
) -> Result<(VecDeque<LogEntry>, u64)> {
    let mut last = VecDeque::with_capacity(tail.min(4096));
    let mut offset = 0;
    loop {
        let (entries, consumed) = read_block(path, offset).await?;
        if consumed == 0 {
            return Ok((last, offset));
        }
        offset += consumed;
        for entry in entries {
            if since.is_none_or(|s| entry.timestamp >= s) && tail > 0 {
                if last.len() == tail {
                    last.pop_front();
                }
                last.push_back(entry);
            }
        }
    }
}

/// Reads a container's log file from an offset, a block at a time; when following, until
/// the container stops running (or is removed), else until the end of the file.
struct Follower {
    runtime: ContainerdRuntime,
    id: String,
    path: PathBuf,
    offset: u64,
    since: Option<SystemTime>,
    pending: VecDeque<LogEntry>,
    follow: bool,
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
            let running = if self.follow {
                match self.runtime.running(&self.id).await {
                    Ok(r) => r == Some(true),
                    Err(e) => {
                        self.ended = true;
                        return Some(Err(e));
                    }
                }
            } else {
                false
            };
            let consumed = match self.read_more().await {
                Ok(consumed) => consumed,
                Err(e) => {
                    self.ended = true;
                    return Some(Err(e));
                }
            };
            if consumed == 0 {
                if running {
                    tokio::time::sleep(Self::POLL).await;
                } else {
                    self.ended = true;
                }
            }
        }
    }

    /// Reads the next block into `pending`; the bytes it took.
    async fn read_more(&mut self) -> Result<u64> {
        let (entries, consumed) = read_block(&self.path, self.offset).await?;
        self.offset += consumed;
        let since = self.since;
        self.pending.extend(
            entries
                .into_iter()
                .filter(|e| since.is_none_or(|s| e.timestamp >= s)),
        );
        Ok(consumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log file of CRI records in a fresh directory (removed with the returned guard).
    fn log_file(records: &[String]) -> (PathBuf, impl Drop) {
        struct Dir(PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("capstan-logs-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0.log");
        std::fs::write(&path, records.concat()).unwrap();
        (path, Dir(dir))
    }

    fn record(second: u32, full: bool, text: &str) -> String {
        let tag = if full { "F" } else { "P" };
        format!("2024-01-01T00:00:{second:02}.000000000Z stdout {tag} {text}\n")
    }

    #[tokio::test]
    async fn a_log_longer_than_a_block_is_read_in_blocks_and_tail_keeps_the_last_lines() {
        let line = "x".repeat(1000);
        let records: Vec<String> = (0..3000)
            .map(|i| record((i / 100) as u32, true, &format!("{i} {line}")))
            .collect();
        let (path, _dir) = log_file(&records);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > 2 * BLOCK as u64, "the file spans several blocks");

        let (first, consumed) = read_block(&path, 0).await.unwrap();
        assert!(consumed as usize <= BLOCK && !first.is_empty());
        assert!(first.len() < 3000, "one block holds part of the file");

        let (tail, end) = tail_of(&path, None, 2).await.unwrap();
        assert_eq!(end, size);
        let lines: Vec<String> = tail
            .iter()
            .map(|e| {
                String::from_utf8_lossy(&e.line)
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(lines, ["2998", "2999"]);

        let since = stdio::parse_rfc3339("2024-01-01T00:00:29Z");
        let (tail, _) = tail_of(&path, since, 1000).await.unwrap();
        assert_eq!(tail.len(), 100, "since applies before tail");
    }

    #[tokio::test]
    async fn a_line_longer_than_a_block_is_read_whole() {
        let chunk = "y".repeat(16 * 1024);
        let mut records: Vec<String> = (0..100).map(|_| record(1, false, &chunk)).collect();
        records.push(record(1, true, "end"));
        records.push(record(2, true, "next"));
        let (path, _dir) = log_file(&records);
        let (entries, consumed) = read_block(&path, 0).await.unwrap();
        assert_eq!(entries.len(), 2, "the long line and the next");
        assert_eq!(entries[0].line.len(), 100 * chunk.len() + 3);
        assert_eq!(consumed, std::fs::metadata(&path).unwrap().len());
        let (rest, nothing) = read_block(&path, consumed).await.unwrap();
        assert!(rest.is_empty() && nothing == 0);
    }
}
