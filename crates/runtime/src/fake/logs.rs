//! Following a fake container's log: lines are yielded as the clock passes their times, until
//! the container exits.

use std::collections::VecDeque;
use std::time::SystemTime;

use super::FakeRuntime;
use crate::error::Result;
use crate::types::{ContainerState, LogEntry};

/// A follower of one container's log.
pub(super) struct Follower {
    pub(super) runtime: FakeRuntime,
    pub(super) id: String,
    pub(super) since: Option<SystemTime>,
    /// How many of the container's lines (after `since`) were yielded.
    pub(super) emitted: usize,
    pub(super) pending: VecDeque<LogEntry>,
}

impl Follower {
    pub(super) async fn next(&mut self) -> Option<Result<LogEntry>> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                return Some(Ok(entry));
            }
            // Subscribe before reading, so no change between the read and the wait is lost.
            let tick = self.runtime.inner.clock.tick();
            let mut changed = self.runtime.inner.changed.subscribe();
            let now = self.runtime.inner.clock.now();
            let (lines, state) = {
                let state = self.runtime.inner.state.lock();
                let record = state.containers.get(&self.id)?;
                (record.log(now), record.observe(now).state)
            };
            let lines: Vec<LogEntry> = lines
                .into_iter()
                .filter(|l| self.since.is_none_or(|s| l.timestamp >= s))
                .collect();
            if lines.len() > self.emitted {
                self.pending.extend(lines.into_iter().skip(self.emitted));
                self.emitted += self.pending.len();
                continue;
            }
            if state == ContainerState::Exited {
                return None;
            }
            let changed = std::pin::pin!(changed.changed());
            futures::future::select(tick, changed).await;
        }
    }
}
