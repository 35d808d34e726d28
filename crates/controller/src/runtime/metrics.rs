//! What a controller did, as counters and a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use capstan_watch::queue::{DurationStats, QueueMetrics};
use capstan_watch::{ObjectKey, WorkQueue};
use parking_lot::Mutex;

/// A controller's live metrics, shared with whoever holds the `Arc` from
/// [`Controller::metrics`](super::Controller::metrics). Read them with
/// [`snapshot`](Self::snapshot) (or the shortcuts), from any thread, while the controller
/// runs or after.
#[derive(Debug, Default)]
pub struct ControllerMetrics {
    reconciles: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    skipped: AtomicU64,
    durations: Mutex<DurationStats>,
    queue: Mutex<Option<WorkQueue<ObjectKey>>>,
}

/// The figures of a [`ControllerMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Reconciles that ran to an end: succeeded, failed or panicked.
    pub reconciles: u64,
    /// Reconciles that returned an error or panicked.
    pub errors: u64,
    /// Reconciles that panicked (also counted in `errors`).
    pub panics: u64,
    /// Keys taken from the queue whose object was no longer cached (deleted), so not
    /// reconciled.
    pub skipped: u64,
    /// How long reconciles took: count, sum and maximum.
    pub reconcile_duration: DurationStats,
    /// The work queue's figures: `depth` (keys waiting for a worker), `processing`, `waiting`
    /// (delayed keys), adds, retries, latencies.
    pub queue: QueueMetrics,
}

impl MetricsSnapshot {
    /// Keys waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.queue.depth
    }
}

impl ControllerMetrics {
    /// The figures now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            reconciles: self.reconciles.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            reconcile_duration: *self.durations.lock(),
            queue: self
                .queue
                .lock()
                .as_ref()
                .map(WorkQueue::metrics)
                .unwrap_or_default(),
        }
    }

    /// Reconciles that ran to an end; see [`MetricsSnapshot::reconciles`].
    pub fn reconciles(&self) -> u64 {
        self.reconciles.load(Ordering::Relaxed)
    }

    /// Failed reconciles; see [`MetricsSnapshot::errors`].
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Keys waiting for a worker now.
    pub fn queue_depth(&self) -> usize {
        self.queue.lock().as_ref().map_or(0, WorkQueue::len)
    }

    pub(crate) fn set_queue(&self, queue: WorkQueue<ObjectKey>) {
        *self.queue.lock() = Some(queue);
    }

    pub(crate) fn record(&self, outcome: Outcome, duration: Duration) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Success => {}
            Outcome::Error => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Panic => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.panics.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.durations.lock().record(duration);
    }

    pub(crate) fn record_skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }
}

/// How one reconcile ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Error,
    Panic,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_with_their_durations() {
        let metrics = ControllerMetrics::default();
        metrics.record(Outcome::Success, Duration::from_millis(10));
        metrics.record(Outcome::Error, Duration::from_millis(30));
        metrics.record(Outcome::Panic, Duration::from_millis(20));
        metrics.record_skipped();
        let snapshot = metrics.snapshot();
        assert_eq!(
            (
                snapshot.reconciles,
                snapshot.errors,
                snapshot.panics,
                snapshot.skipped
            ),
            (3, 2, 1, 1)
        );
        assert_eq!(snapshot.reconcile_duration.count, 3);
        assert_eq!(snapshot.reconcile_duration.sum, Duration::from_millis(60));
        assert_eq!(snapshot.reconcile_duration.max, Duration::from_millis(30));
        assert_eq!(
            snapshot.reconcile_duration.mean(),
            Some(Duration::from_millis(20))
        );
    }

    #[test]
    fn queue_figures_come_from_the_attached_queue() {
        let metrics = ControllerMetrics::default();
        assert_eq!(metrics.queue_depth(), 0);
        let queue = WorkQueue::new();
        metrics.set_queue(queue.clone());
        queue.add(ObjectKey::namespaced("default", "a"));
        queue.add(ObjectKey::namespaced("default", "b"));
        assert_eq!(metrics.queue_depth(), 2);
        assert_eq!(metrics.snapshot().queue_depth(), 2);
        assert_eq!(metrics.snapshot().queue.adds, 2);
    }
}
