//! The service proxy's Prometheus series and readiness, kube-proxy's.
//!
//! | series | what |
//! |---|---|
//! | `kubeproxy_sync_proxy_rules_duration_seconds` | histogram: every successful sync |
//! | `kubeproxy_sync_full_proxy_rules_duration_seconds` | histogram: full syncs |
//! | `kubeproxy_sync_partial_proxy_rules_duration_seconds` | histogram: partial syncs |
//! | `kubeproxy_sync_proxy_rules_last_timestamp_seconds` | gauge: Unix time of the last successful sync |
//! | `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds` | gauge: Unix time of the last change queued |
//! | `kubeproxy_sync_proxy_rules_failures_total` | counter: failed syncs (retried as full ones) |
//!
//! [`ProxyRulesSynced`] is the proxy's readiness (a [`HealthCheck`] named
//! `proxy-rules-synced`): it passes once a sync has succeeded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use capstan_api::health::HealthCheck;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What a [`Proxier`](super::Proxier) reports; share one with
/// [`Proxier::with_metrics`](super::Proxier::with_metrics) to keep it across restarts of the
/// loop.
#[derive(Debug)]
pub struct ProxierMetrics {
    sync: Histogram,
    full: Histogram,
    partial: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    last_queued: Gauge<f64, AtomicU64>,
    failures: Counter,
    synced: AtomicBool,
    syncs: AtomicU64,
}

impl Default for ProxierMetrics {
    fn default() -> Self {
        // kube-proxy's buckets: 1 ms doubling fifteen times.
        let buckets = || Histogram::new(exponential_buckets(0.001, 2.0, 15));
        ProxierMetrics {
            sync: buckets(),
            full: buckets(),
            partial: buckets(),
            last_sync: Gauge::default(),
            last_queued: Gauge::default(),
            failures: Counter::default(),
            synced: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl ProxierMetrics {
    /// Registers the `kubeproxy_*` series (see the [module docs](self)) into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "Seconds a successful sync of the proxy rules took",
            self.sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "Seconds a successful full sync of the proxy rules took",
            self.full.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "Seconds a successful partial sync of the proxy rules took",
            self.partial.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "Unix time of the last successful sync of the proxy rules",
            self.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "Unix time of the last change that called for a sync",
            self.last_queued.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_failures",
            "Syncs of the proxy rules that failed (retried as full syncs)",
            self.failures.clone(),
        );
    }

    /// Whether a sync has succeeded.
    pub fn has_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    pub(crate) fn queued(&self) {
        self.last_queued.set(unix_now());
    }

    pub(crate) fn synced(&self, full: bool, took: Duration) {
        let seconds = took.as_secs_f64();
        self.sync.observe(seconds);
        if full {
            self.full.observe(seconds);
        } else {
            self.partial.observe(seconds);
        }
        self.last_sync.set(unix_now());
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.synced.store(true, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failures.inc();
    }
}

/// The proxy's readiness check, `proxy-rules-synced`: it passes once a sync has succeeded.
#[derive(Clone, Debug)]
pub struct ProxyRulesSynced(pub Arc<ProxierMetrics>);

#[async_trait]
impl HealthCheck for ProxyRulesSynced {
    fn name(&self) -> &str {
        "proxy-rules-synced"
    }

    async fn check(&self) -> Result<(), String> {
        if self.0.has_synced() {
            Ok(())
        } else {
            Err("the proxy rules have not been synced yet".into())
        }
    }
}
