//! What the scheduler counts: outcomes of scheduling attempts and their latencies, served as
//! kube-scheduler's Prometheus series.
//!
//! [`SchedulerMetrics::register`] adds them to a `prometheus_client` registry; they are read
//! from these counters at scrape time:
//!
//! | series | labels |
//! |---|---|
//! | `scheduler_schedule_attempts_total` | `result` (`scheduled`, `unschedulable`, `error`), `profile` |
//! | `scheduler_scheduling_attempt_duration_seconds` (histogram) | `result`, `profile` |
//! | `scheduler_scheduling_algorithm_duration_seconds` (histogram) | |
//! | `scheduler_pending_pods` | `queue` (`active`, `backoff`, `unschedulable`, `gated`) |

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::queue::SchedulingQueue;

/// At most this many latency samples are kept per series; later ones replace earlier ones at
/// random (reservoir sampling), so percentiles stay representative in long runs.
pub const MAX_LATENCY_SAMPLES: usize = 1 << 20;

/// The upper bounds, in seconds, of the latency histograms: kube-scheduler's, 1 ms doubling
/// fifteen times (to about 16 s).
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384,
];

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

/// Count, sum and per-bucket counts of one latency histogram.
#[derive(Clone, Copy, Default)]
struct Histogram {
    count: u64,
    sum: f64,
    buckets: [u64; LATENCY_BUCKETS.len()],
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let seconds = d.as_secs_f64();
        self.count += 1;
        self.sum += seconds;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[i] += 1;
        }
    }

    fn encode(&self, encoder: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS.iter().copied().zip(self.buckets).collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &buckets, None)
    }
}

/// How an attempt ended, as kube-scheduler's `result` label says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Scheduled,
    Unschedulable,
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Scheduled => "scheduled",
            Outcome::Unschedulable => "unschedulable",
            Outcome::Error => "error",
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
    /// Attempts by profile and outcome, for the Prometheus series.
    attempts: BTreeMap<(String, Outcome), Attempts>,
    algorithm_histogram: Histogram,
}

/// One profile's attempts with one outcome: all of them, and the latencies of those whose
/// duration is known.
#[derive(Clone, Copy, Default)]
struct Attempts {
    total: u64,
    latency: Histogram,
}

impl Inner {
    fn attempt(&mut self, profile: &str, outcome: Outcome, took: Option<Duration>) {
        let attempts = self
            .attempts
            .entry((profile.to_string(), outcome))
            .or_default();
        attempts.total += 1;
        if let Some(took) = took {
            attempts.latency.observe(took);
        }
    }
}

/// Counters and latency distributions of one scheduler, shared with whoever reads them
/// ([`Scheduler::metrics`](crate::Scheduler::metrics)). Recording takes one uncontended
/// lock per pod. Share one across leadership terms with
/// [`Scheduler::with_metrics`](crate::Scheduler::with_metrics), so the series a component
/// serves never go backwards.
#[derive(Default)]
pub struct SchedulerMetrics {
    inner: Mutex<Inner>,
    /// The queue of the scheduler running now, for `scheduler_pending_pods`.
    queue: Mutex<Weak<SchedulingQueue>>,
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
    /// Records a pod bound by `profile` and how long its attempt took.
    pub(crate) fn scheduled(&self, profile: &str, attempt: Duration) {
        let mut inner = self.inner.lock();
        inner.scheduled += 1;
        inner.attempt.record(attempt);
        inner.attempt(profile, Outcome::Scheduled, Some(attempt));
    }

    /// Records the algorithm's latency for one attempt.
    pub(crate) fn algorithm(&self, took: Duration) {
        let mut inner = self.inner.lock();
        inner.algorithm.record(took);
        inner.algorithm_histogram.observe(took);
    }

    /// Records an attempt of `profile` that found no node, after `took`.
    pub(crate) fn unschedulable(&self, profile: &str, took: Duration) {
        let mut inner = self.inner.lock();
        inner.unschedulable += 1;
        inner.attempt(profile, Outcome::Unschedulable, Some(took));
    }

    /// Records an attempt of `profile` that failed, after `took` when known.
    pub(crate) fn error(&self, profile: &str, took: Option<Duration>) {
        let mut inner = self.inner.lock();
        inner.errors += 1;
        inner.attempt(profile, Outcome::Error, took);
    }

    /// Reports `queue`'s pods as `scheduler_pending_pods` from now on (the scheduler of the
    /// current term).
    pub(crate) fn watch_queue(&self, queue: &Arc<SchedulingQueue>) {
        *self.queue.lock() = Arc::downgrade(queue);
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

    /// Registers kube-scheduler's series (see the [module docs](self)) into `registry`.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }
}

impl Collector for SchedulerMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let (attempts, algorithm) = {
            let inner = self.inner.lock();
            (inner.attempts.clone(), inner.algorithm_histogram)
        };
        let pending = self
            .queue
            .lock()
            .upgrade()
            .map(|queue| queue.counts())
            .unwrap_or_default();

        let mut metric = encoder.encode_descriptor(
            "scheduler_schedule_attempts",
            "Attempts to schedule a pod, by profile and result: scheduled (bound), unschedulable (no node fits) or error",
            None,
            MetricType::Counter,
        )?;
        for ((profile, outcome), attempts) in &attempts {
            let labels = [("result", outcome.label()), ("profile", profile.as_str())];
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&attempts.total, None)?;
        }

        let mut metric = encoder.encode_descriptor(
            "scheduler_scheduling_attempt_duration_seconds",
            "Seconds an attempt took, by profile and result (up to the bind being written for scheduled pods)",
            None,
            MetricType::Histogram,
        )?;
        for ((profile, outcome), attempts) in &attempts {
            let labels = [("result", outcome.label()), ("profile", profile.as_str())];
            attempts
                .latency
                .encode(&mut metric.encode_family(&labels)?)?;
        }

        let mut metric = encoder.encode_descriptor(
            "scheduler_scheduling_algorithm_duration_seconds",
            "Seconds the scheduling algorithm took per attempt, filtering and scoring",
            None,
            MetricType::Histogram,
        )?;
        algorithm.encode(&mut metric)?;

        let mut metric = encoder.encode_descriptor(
            "scheduler_pending_pods",
            "Pods waiting to be scheduled, by where they wait: active, backoff, unschedulable, or gated (never here)",
            None,
            MetricType::Gauge,
        )?;
        let (active, backoff, unschedulable, _in_flight) = pending;
        for (queue, count) in [
            ("active", active),
            ("backoff", backoff),
            ("unschedulable", unschedulable),
            ("gated", 0),
        ] {
            metric
                .encode_family(&[("queue", queue)])?
                .encode_gauge(&(count as i64))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let m = SchedulerMetrics::default();
        for ms in 1..=100 {
            m.scheduled("default-scheduler", Duration::from_millis(ms));
        }
        m.unschedulable("default-scheduler", Duration::from_millis(3));
        m.error("default-scheduler", None);
        let s = m.snapshot();
        assert_eq!((s.scheduled, s.unschedulable, s.errors), (100, 1, 1));
        assert_eq!(s.attempt.count, 100);
        assert_eq!(s.attempt.p50, Duration::from_millis(51));
        assert_eq!(s.attempt.p99, Duration::from_millis(99));
        assert_eq!(s.attempt.max, Duration::from_millis(100));
        assert_eq!(s.algorithm, LatencySummary::default());
    }

    #[test]
    fn the_prometheus_series_are_kube_schedulers() {
        let m = Arc::new(SchedulerMetrics::default());
        m.scheduled("default-scheduler", Duration::from_millis(3));
        m.scheduled("default-scheduler", Duration::from_millis(30));
        m.unschedulable("default-scheduler", Duration::from_millis(1));
        m.error("other", None);
        m.error("other", Some(Duration::from_millis(2)));
        m.algorithm(Duration::from_micros(500));
        let queue = Arc::new(SchedulingQueue::new(None));
        m.watch_queue(&queue);
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for line in [
            "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} 2",
            "scheduler_schedule_attempts_total{result=\"unschedulable\",profile=\"default-scheduler\"} 1",
            "scheduler_schedule_attempts_total{result=\"error\",profile=\"other\"} 2",
            "scheduler_scheduling_attempt_duration_seconds_bucket{result=\"scheduled\",profile=\"default-scheduler\",le=\"0.004\"} 1",
            "scheduler_scheduling_attempt_duration_seconds_bucket{result=\"scheduled\",profile=\"default-scheduler\",le=\"0.032\"} 2",
            "scheduler_scheduling_attempt_duration_seconds_count{result=\"error\",profile=\"other\"} 1",
            "scheduler_scheduling_algorithm_duration_seconds_count 1",
            "scheduler_pending_pods{queue=\"active\"} 0",
            "scheduler_pending_pods{queue=\"unschedulable\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }
}
