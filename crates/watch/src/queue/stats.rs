//! A queue's figures: [`DurationStats`] of latencies and work durations, and the
//! [`QueueMetrics`] snapshot.

use std::time::Duration;

/// The upper bounds, in seconds, of [`DurationStats::buckets`]: client-go's workqueue
/// histogram buckets, 10 ns to 10 s by factors of ten.
pub const DURATION_BUCKETS: [f64; 10] = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// Count, sum, maximum and histogram of a series of durations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurationStats {
    /// How many durations were recorded.
    pub count: u64,
    /// Their sum.
    pub sum: Duration,
    /// The longest one.
    pub max: Duration,
    /// How many fell in each bucket of [`DURATION_BUCKETS`]: `buckets[i]` counts the
    /// durations above bound `i - 1` and at most bound `i` (not cumulative); longer ones are
    /// only in `count`.
    pub buckets: [u64; DURATION_BUCKETS.len()],
}

impl DurationStats {
    /// The average duration, or `None` before the first one.
    pub fn mean(&self) -> Option<Duration> {
        let count = u32::try_from(self.count).ok().filter(|&count| count > 0);
        count.map(|count| self.sum / count)
    }

    /// Records one duration.
    pub fn record(&mut self, duration: Duration) {
        self.count += 1;
        self.sum = self.sum.saturating_add(duration);
        self.max = self.max.max(duration);
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[bucket] += 1;
        }
    }

    /// Adds `other`'s durations to these.
    pub fn merge(&mut self, other: &DurationStats) {
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
    }
}

/// A snapshot of a queue's state and history, from
/// [`WorkQueue::metrics`](super::WorkQueue::metrics).
///
/// The figures of client-go's workqueue metrics provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueMetrics {
    /// Keys queued and waiting for a worker.
    pub depth: usize,
    /// Keys handed to workers and not done yet.
    pub processing: usize,
    /// Keys waiting for a delayed add to fire.
    pub waiting: usize,
    /// Adds that marked a key dirty; adds of a key already queued (deduplicated) and adds
    /// after shutdown do not count. Delayed adds count when they fire.
    pub adds: u64,
    /// Calls to [`WorkQueue::add_rate_limited`](super::WorkQueue::add_rate_limited) before
    /// shutdown.
    pub retries: u64,
    /// From the add of a key to a worker getting it.
    pub queue_latency: DurationStats,
    /// From a worker getting a key to its being done.
    pub work_duration: DurationStats,
    /// How long the keys in flight have been processed so far, summed; client-go's
    /// `unfinished_work_seconds`. A stuck worker makes it grow.
    pub unfinished_work: Duration,
    /// How long the oldest key in flight has been processed so far.
    pub longest_running_processor: Duration,
}
