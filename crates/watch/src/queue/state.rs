//! The bookkeeping of one queue: keys queued, dirty, processing and waiting for a delay, the
//! timers of delayed adds, and the counts behind its metrics.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

use super::{DurationStats, QueueMetrics};

pub(super) struct State<K> {
    /// Keys waiting for a worker, in order; each is also in `dirty` and not in `processing`.
    pub(super) queue: VecDeque<K>,
    /// Keys added and not yet handed out, with the time of that add: the queued ones, and
    /// the ones added again while processing.
    pub(super) dirty: HashMap<K, Instant>,
    /// Keys handed to workers, with the time they were handed out.
    pub(super) processing: HashMap<K, Instant>,
    /// Keys waiting for a delayed add: the deadline and sequence number of their live timer.
    pub(super) waiting: HashMap<K, (Instant, u64)>,
    /// Every timer set, earliest first. A timer whose sequence number is no longer the one in
    /// `waiting` was superseded by an earlier deadline and is skipped when it fires.
    pub(super) timers: BinaryHeap<Timer<K>>,
    pub(super) next_timer_seq: u64,
    pub(super) timer_started: bool,
    pub(super) shutting_down: bool,
    pub(super) adds: u64,
    pub(super) retries: u64,
    pub(super) queue_latency: DurationStats,
    pub(super) work_duration: DurationStats,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            dirty: HashMap::new(),
            processing: HashMap::new(),
            waiting: HashMap::new(),
            timers: BinaryHeap::new(),
            next_timer_seq: 0,
            timer_started: false,
            shutting_down: false,
            adds: 0,
            retries: 0,
            queue_latency: DurationStats::default(),
            work_duration: DurationStats::default(),
        }
    }
}

impl<K> State<K> {
    pub(super) fn snapshot(&self, now: Instant) -> QueueMetrics {
        let (unfinished_work, longest_running_processor) = self.processing.values().fold(
            (Duration::ZERO, Duration::ZERO),
            |(sum, longest), &started| {
                let running = now.saturating_duration_since(started);
                (sum.saturating_add(running), longest.max(running))
            },
        );
        QueueMetrics {
            depth: self.queue.len(),
            processing: self.processing.len(),
            waiting: self.waiting.len(),
            adds: self.adds,
            retries: self.retries,
            queue_latency: self.queue_latency,
            work_duration: self.work_duration,
            unfinished_work,
            longest_running_processor,
        }
    }
}

impl<K: Clone + Eq + Hash> State<K> {
    /// Marks `key` dirty; returns whether it entered the queue (so a getter should wake).
    pub(super) fn mark_dirty(&mut self, key: K, now: Instant) -> bool {
        if self.dirty.contains_key(&key) {
            return false;
        }
        self.adds += 1;
        if self.processing.contains_key(&key) {
            self.dirty.insert(key, now);
            return false;
        }
        self.dirty.insert(key.clone(), now);
        self.queue.push_back(key);
        true
    }

    /// Pops the next queued key and marks it processing.
    pub(super) fn take_next(&mut self, now: Instant) -> Option<K> {
        let key = self.queue.pop_front()?;
        if let Some(added) = self.dirty.remove(&key) {
            self.queue_latency
                .record(now.saturating_duration_since(added));
        }
        self.processing.insert(key.clone(), now);
        Some(key)
    }
}

/// A delayed add; ordered so that the [`BinaryHeap`] pops the earliest deadline first, and
/// timers with equal deadlines in the order they were set.
pub(super) struct Timer<K> {
    pub(super) due: Instant,
    pub(super) seq: u64,
    pub(super) key: K,
}

impl<K> PartialEq for Timer<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K> Eq for Timer<K> {}

impl<K> PartialOrd for Timer<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Timer<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}
