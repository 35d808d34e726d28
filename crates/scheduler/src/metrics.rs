//! What the scheduler counts: outcomes of scheduling attempts and their latencies.

use std::time::Duration;

use parking_lot::Mutex;

/// At most this many latency samples are kept per series; later ones replace earlier ones at
/// random (reservoir sampling), so percentiles stay representative in long runs.
pub const MAX_LATENCY_SAMPLES: usize = 1 << 20;

#[derive(Default)]
struct Series {
    seen: u64,
    samples: Vec<Duration>,
}

impl Series {
    fn record(&mut self, d: Duration) {
        self.seen += 1;
        if self.samples.len() < MAX_LATENCY_SAMPLES {
            self.samples.push(d);
        } else {
            let i = fastrand::u64(0..self.seen) as usize;
            if i < MAX_LATENCY_SAMPLES {
                self.samples[i] = d;
            }
        }
    }

    fn summary(&self) -> LatencySummary {
        let mut s = self.samples.clone();
        s.sort_unstable();
        let at = |q: f64| {
            if s.is_empty() {
                Duration::ZERO
            } else {
                s[((s.len() - 1) as f64 * q).round() as usize]
            }
        };
        LatencySummary {
            count: self.seen,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: s.last().copied().unwrap_or_default(),
        }
    }
}

#[derive(Default)]
struct Inner {
    scheduled: u64,
    unschedulable: u64,
    errors: u64,
    attempt: Series,
    algorithm: Series,
}

/// Counters and latency distributions of one scheduler, shared with whoever reads them
/// ([`Scheduler::metrics`](crate::Scheduler::metrics)). Recording takes one uncontended
/// lock per pod.
#[derive(Default)]
pub struct SchedulerMetrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SchedulerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// Percentiles of one latency series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// How many were recorded.
    pub count: u64,
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The largest.
    pub max: Duration,
}

/// The metrics at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Pods bound.
    pub scheduled: u64,
    /// Attempts that found no node.
    pub unschedulable: u64,
    /// Attempts that failed with an error (a plugin error, a failed bind, a rejection at
    /// Reserve or Permit).
    pub errors: u64,
    /// From taking the pod off the queue to its bind being written, for bound pods
    /// (kube-scheduler's `scheduling_attempt_duration_seconds` plus binding).
    pub attempt: LatencySummary,
    /// Of the scheduling algorithm alone (PreFilter to host selection), for every attempt
    /// (`scheduling_algorithm_duration_seconds`).
    pub algorithm: LatencySummary,
}

impl SchedulerMetrics {
    /// Records a bound pod and how long its attempt took.
    pub(crate) fn scheduled(&self, attempt: Duration) {
        let mut inner = self.inner.lock();
        inner.scheduled += 1;
        inner.attempt.record(attempt);
    }

    /// Records the algorithm's latency for one attempt.
    pub(crate) fn algorithm(&self, took: Duration) {
        self.inner.lock().algorithm.record(took);
    }

    /// Records an attempt that found no node.
    pub(crate) fn unschedulable(&self) {
        self.inner.lock().unschedulable += 1;
    }

    /// Records an attempt that failed.
    pub(crate) fn error(&self) {
        self.inner.lock().errors += 1;
    }

    /// The counters and percentiles now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let inner = self.inner.lock();
        MetricsSnapshot {
            scheduled: inner.scheduled,
            unschedulable: inner.unschedulable,
            errors: inner.errors,
            attempt: inner.attempt.summary(),
            algorithm: inner.algorithm.summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let m = SchedulerMetrics::default();
        for ms in 1..=100 {
            m.scheduled(Duration::from_millis(ms));
        }
        m.unschedulable();
        m.error();
        let s = m.snapshot();
        assert_eq!((s.scheduled, s.unschedulable, s.errors), (100, 1, 1));
        assert_eq!(s.attempt.count, 100);
        assert_eq!(s.attempt.p50, Duration::from_millis(51));
        assert_eq!(s.attempt.p99, Duration::from_millis(99));
        assert_eq!(s.attempt.max, Duration::from_millis(100));
        assert_eq!(s.algorithm, LatencySummary::default());
    }
}
