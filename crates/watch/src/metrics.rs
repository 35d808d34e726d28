//! client-go's work queue metrics, as Prometheus series read from the queues at scrape time,
//! and the informers' own series ([`InformerMetrics`]: objects skipped because they do not
//! decode).
//!
//! A [`WorkQueueMetrics`] collects the queues registered with it by name
//! ([`WorkQueue::register_metrics`](crate::WorkQueue::register_metrics); a controller
//! registers its own queue under its name when it runs with an [`InformerFactory`] that
//! carries one). Registered into a `prometheus_client` [`Registry`]
//! with [`WorkQueueMetrics::register`], it serves Kubernetes' series, labelled `name`:
//!
//! | series | type |
//! |---|---|
//! | `workqueue_depth` | gauge: keys waiting for a worker |
//! | `workqueue_adds_total` | counter |
//! | `workqueue_retries_total` | counter: rate-limited re-adds |
//! | `workqueue_queue_duration_seconds` | histogram: from add to a worker taking the key |
//! | `workqueue_work_duration_seconds` | histogram: from a worker taking the key to done |
//! | `workqueue_unfinished_work_seconds` | gauge: time the keys in flight have run so far |
//! | `workqueue_longest_running_processor_seconds` | gauge |
//!
//! Nothing is counted twice: the queue keeps its figures (the same ones
//! [`WorkQueue::metrics`](crate::WorkQueue::metrics) returns) and the collector reads them.
//! When a queue is dropped, its counters are kept under its name, so the counters of a queue
//! rebuilt at each leadership term never go backwards.
//!
//! [`InformerFactory`]: crate::InformerFactory

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::queue::{DurationStats, QueueMetrics, DURATION_BUCKETS};

/// What the metrics read from a live queue.
pub(crate) trait QueueProbe: Send + Sync {
    fn snapshot(&self) -> QueueMetrics;
}

#[derive(Default)]
struct Named {
    live: Vec<Weak<dyn QueueProbe>>,
    /// The final counts of this name's queues that were dropped.
    retired: Totals,
}

#[derive(Clone, Copy, Default)]
struct Totals {
    adds: u64,
    retries: u64,
    queue_latency: DurationStats,
    work_duration: DurationStats,
}

impl Totals {
    fn add(&mut self, metrics: &QueueMetrics) {
        self.adds += metrics.adds;
        self.retries += metrics.retries;
        self.queue_latency.merge(&metrics.queue_latency);
        self.work_duration.merge(&metrics.work_duration);
    }
}

/// One name's figures at a scrape: live queues summed, plus the dropped ones' counters.
#[derive(Default)]
struct Row {
    totals: Totals,
    depth: usize,
    unfinished: f64,
    longest: f64,
}

/// The work queues of one component, by name; see the [module docs](self). Cheap to clone:
/// clones share the queues.
#[derive(Clone, Default)]
pub struct WorkQueueMetrics {
    queues: Arc<Mutex<BTreeMap<String, Named>>>,
}

impl std::fmt::Debug for WorkQueueMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueueMetrics")
            .field("names", &self.queues.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl WorkQueueMetrics {
    /// No queues yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the `workqueue_*` series into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    /// The names with a queue registered now or before.
    pub fn names(&self) -> Vec<String> {
        self.queues.lock().keys().cloned().collect()
    }

    /// The figures of `name`: its live queues summed, with the counters (adds, retries,
    /// latencies) of its dropped queues included. `None` for a name never registered.
    pub fn get(&self, name: &str) -> Option<QueueMetrics> {
        let queues = self.queues.lock();
        let named = queues.get(name)?;
        let row = row(named);
        Some(QueueMetrics {
            depth: row.depth,
            adds: row.totals.adds,
            retries: row.totals.retries,
            queue_latency: row.totals.queue_latency,
            work_duration: row.totals.work_duration,
            ..QueueMetrics::default()
        })
    }

    pub(crate) fn track(&self, name: &str, probe: Weak<dyn QueueProbe>) {
        let mut queues = self.queues.lock();
        let named = queues.entry(name.to_string()).or_default();
        named.live.retain(|live| live.strong_count() > 0);
        named.live.push(probe);
    }

    pub(crate) fn retire(&self, name: &str, last: &QueueMetrics) {
        let mut queues = self.queues.lock();
        let named = queues.entry(name.to_string()).or_default();
        named.retired.add(last);
        named.live.retain(|live| live.strong_count() > 0);
    }

    fn rows(&self) -> Vec<(String, Row)> {
        let queues = self.queues.lock();
        queues
            .iter()
            .map(|(name, named)| (name.clone(), row(named)))
            .collect()
    }
}

fn row(named: &Named) -> Row {
    let mut row = Row {
        totals: named.retired,
        ..Row::default()
    };
    for probe in named.live.iter().filter_map(Weak::upgrade) {
        let live = probe.snapshot();
        row.totals.add(&live);
        row.depth += live.depth;
        row.unfinished += live.unfinished_work.as_secs_f64();
        row.longest = row
            .longest
            .max(live.longest_running_processor.as_secs_f64());
    }
    row
}

impl std::fmt::Debug for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Named")
            .field("live", &self.live.len())
            .finish()
    }
}

/// Writes one series per name: `value` picks the figure from a row.
fn family<V: Copy>(
    encoder: &mut DescriptorEncoder,
    rows: &[(String, Row)],
    name: &str,
    help: &str,
    metric_type: MetricType,
    value: impl Fn(&Row) -> V,
    write: impl Fn(&mut MetricEncoder, V) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (queue, row) in rows {
        let labels = [("name", queue.as_str())];
        let mut series = metric.encode_family(&labels)?;
        write(&mut series, value(row))?;
    }
    Ok(())
}

fn gauge(encoder: &mut MetricEncoder, value: f64) -> Result<(), std::fmt::Error> {
    encoder.encode_gauge(&value)
}

fn counter(encoder: &mut MetricEncoder, value: u64) -> Result<(), std::fmt::Error> {
    encoder.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// Writes a histogram of `stats` in seconds.
fn histogram(encoder: &mut MetricEncoder, stats: DurationStats) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
        .iter()
        .copied()
        .zip(stats.buckets)
        .collect();
    encoder.encode_histogram::<NoLabelSet>(stats.sum.as_secs_f64(), stats.count, &buckets, None)
}

impl Collector for WorkQueueMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.rows();
        family(
            &mut encoder,
            &rows,
            "workqueue_depth",
            "Keys waiting in the queue for a worker",
            MetricType::Gauge,
            |row| row.depth as f64,
            gauge,
        )?;
        family(
            &mut encoder,
            &rows,
            "workqueue_adds",
            "Keys added to the queue",
            MetricType::Counter,
            |row| row.totals.adds,
            counter,
        )?;
        family(
            &mut encoder,
            &rows,
            "workqueue_retries",
            "Keys re-added to the queue after a failure (rate limited)",
            MetricType::Counter,
            |row| row.totals.retries,
            counter,
        )?;
        family(
            &mut encoder,
            &rows,
            "workqueue_queue_duration_seconds",
            "Seconds a key waited in the queue before a worker took it",
            MetricType::Histogram,
            |row| row.totals.queue_latency,
            histogram,
        )?;
        family(
            &mut encoder,
            &rows,
            "workqueue_work_duration_seconds",
            "Seconds a worker spent on a key",
            MetricType::Histogram,
            |row| row.totals.work_duration,
            histogram,
        )?;
        family(
            &mut encoder,
            &rows,
            "workqueue_unfinished_work_seconds",
            "Seconds the keys being processed now have taken so far, summed",
            MetricType::Gauge,
            |row| row.unfinished,
            gauge,
        )?;
        family(
            &mut encoder,
            &rows,
            "workqueue_longest_running_processor_seconds",
            "Seconds the longest-running key in progress has taken so far",
            MetricType::Gauge,
            |row| row.longest,
            gauge,
        )?;
        Ok(())
    }
}

/// Objects the reflectors of this process could not decode, by resource (`deployments.apps`).
/// Process-wide, as client-go's reflector metrics are: every reflector counts here, whoever
/// built it.
static DECODE_ERRORS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// The informers' own series, read at scrape time from the process-wide counts:
///
/// | series | type |
/// |---|---|
/// | `capstan_informer_decode_errors_total` | counter, labelled `resource`: listed or watched objects skipped because they do not decode as their kind |
///
/// Register it once per registry with [`register`](Self::register); clones read the same
/// counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct InformerMetrics;

impl InformerMetrics {
    /// The series' handle (stateless: the counts are process-wide).
    pub fn new() -> Self {
        InformerMetrics
    }

    /// Registers the `capstan_informer_*` series into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(*self));
    }

    /// Objects of `resource` (its qualified name, `deployments.apps`) skipped so far by every
    /// reflector of the process because they did not decode.
    pub fn decode_errors(resource: &str) -> u64 {
        DECODE_ERRORS.lock().get(resource).copied().unwrap_or(0)
    }

    /// Counts one object of `resource` that did not decode; called by the reflector.
    pub(crate) fn count_decode_error(resource: &str) {
        *DECODE_ERRORS
            .lock()
            .entry(resource.to_string())
            .or_default() += 1;
    }
}

impl Collector for InformerMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = DECODE_ERRORS.lock().clone();
        // The `_total` suffix is added by the encoder for counters.
        let mut metric = encoder.encode_descriptor(
            "capstan_informer_decode_errors",
            "Listed or watched objects an informer skipped because they do not decode as their kind",
            None,
            MetricType::Counter,
        )?;
        for (resource, count) in &counts {
            let labels = [("resource", resource.as_str())];
            counter(&mut metric.encode_family(&labels)?, *count)?;
        }
        Ok(())
    }
}

/// Encodes `registry` in Prometheus' text format (version 0.0.4), as Kubernetes components
/// serve `/metrics`.
pub fn encode_text(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::WorkQueue;

    fn scrape(metrics: &WorkQueueMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        encode_text(&registry)
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn decode_errors_are_served_by_resource() {
        InformerMetrics::count_decode_error("widgets.example.test");
        InformerMetrics::count_decode_error("widgets.example.test");
        assert_eq!(InformerMetrics::decode_errors("widgets.example.test"), 2);
        let mut registry = Registry::default();
        InformerMetrics::new().register(&mut registry);
        let text = encode_text(&registry);
        assert_eq!(
            value(
                &text,
                r#"capstan_informer_decode_errors_total{resource="widgets.example.test"}"#
            ),
            Some(2.0),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn queues_are_reported_by_name_with_kubernetes_series() {
        let metrics = WorkQueueMetrics::new();
        let queue = WorkQueue::<&str>::new();
        queue.register_metrics("deployment", &metrics);
        queue.add("a");
        queue.add("b");
        queue.add("a");
        tokio::time::advance(Duration::from_millis(20)).await;
        let key = queue.get().await.unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
        drop(key);
        queue.add_rate_limited("c");
        let text = scrape(&metrics);
        assert_eq!(
            value(&text, "workqueue_depth{name=\"deployment\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "workqueue_adds_total{name=\"deployment\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "workqueue_retries_total{name=\"deployment\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "workqueue_queue_duration_seconds_bucket{name=\"deployment\",le=\"0.01\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &text,
                "workqueue_queue_duration_seconds_bucket{name=\"deployment\",le=\"0.1\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "workqueue_work_duration_seconds_count{name=\"deployment\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "workqueue_work_duration_seconds_sum{name=\"deployment\"}"
            ),
            Some(0.5)
        );
        assert!(text.contains("# TYPE workqueue_work_duration_seconds histogram"));
        assert!(text.contains("workqueue_unfinished_work_seconds{name=\"deployment\"}"));
        assert!(text.contains("workqueue_longest_running_processor_seconds{name=\"deployment\"}"));
    }

    #[tokio::test]
    async fn a_dropped_queue_keeps_its_counts_under_its_name() {
        let metrics = WorkQueueMetrics::new();
        let first = WorkQueue::<u32>::new();
        first.register_metrics("job", &metrics);
        first.add(1);
        first.add(2);
        drop(first);
        assert_eq!(metrics.get("job").map(|m| (m.adds, m.depth)), Some((2, 0)));
        let second = WorkQueue::<u32>::new();
        second.register_metrics("job", &metrics);
        second.register_metrics("ignored", &metrics);
        second.add(3);
        let text = scrape(&metrics);
        assert_eq!(
            value(&text, "workqueue_adds_total{name=\"job\"}"),
            Some(3.0)
        );
        assert_eq!(value(&text, "workqueue_depth{name=\"job\"}"), Some(1.0));
        assert_eq!(metrics.names(), ["job"]);
        assert!(metrics.get("ignored").is_none());
    }
}
