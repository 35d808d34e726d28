//! The cluster DNS server's Prometheus series, named as CoreDNS names them so its dashboards
//! work, and its readiness.
//!
//! | series | labels |
//! |---|---|
//! | `coredns_dns_requests_total` | `server`, `zone`, `view`, `proto`, `family`, `type` |
//! | `coredns_dns_responses_total` | `server`, `zone`, `view`, `rcode`, `plugin` |
//! | `coredns_dns_request_duration_seconds` (histogram) | `server`, `zone`, `view`, `type` |
//!
//! `server` is `dns://<address>`; `zone` is the cluster domain with its final dot for names
//! in it, `.` for the others (refused); `plugin` is `kubernetes` for answers from the
//! Services, empty for refusals and errors; `view` is always empty.

use std::time::Duration;

use async_trait::async_trait;
use capstan_api::health::HealthCheck;
use capstan_api::k8s_openapi::api::core::v1::Service;
use capstan_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use capstan_watch::Cache;
use hickory_proto::op::ResponseCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    server: String,
    zone: String,
    view: String,
    proto: String,
    family: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    server: String,
    zone: String,
    view: String,
    rcode: String,
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    server: String,
    zone: String,
    view: String,
    r#type: String,
}

/// One request as the metrics see it.
#[derive(Debug)]
pub(crate) struct Served<'a> {
    pub(crate) server: &'a str,
    pub(crate) zone: &'a str,
    pub(crate) tcp: bool,
    pub(crate) ipv6: bool,
    pub(crate) qtype: &'a str,
    pub(crate) rcode: ResponseCode,
    pub(crate) plugin: &'a str,
    pub(crate) took: Duration,
}

/// The DNS server's counters; cheap to clone (clones share them). Give one to
/// [`DnsServer::bind_with_metrics`](super::hickory::DnsServer::bind_with_metrics) and
/// [`register`](Self::register) it.
#[derive(Clone, Debug)]
pub struct DnsMetrics {
    requests: Family<RequestLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    durations: Family<DurationLabels, Histogram>,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        DnsMetrics {
            requests: Family::default(),
            responses: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
        }
    }
}

/// CoreDNS' buckets: 0.25 ms doubling sixteen times.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

/// CoreDNS' spelling of a response code.
fn rcode(code: ResponseCode) -> String {
    match u16::from(code) {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => other.to_string(),
    }
}

impl DnsMetrics {
    /// No requests counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the `coredns_dns_*` series (see the [module docs](self)) into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "coredns_dns_requests",
            "DNS requests, by server, zone, protocol, address family and query type",
            self.requests.clone(),
        );
        registry.register(
            "coredns_dns_responses",
            "DNS responses, by server, zone, response code and the plugin that answered",
            self.responses.clone(),
        );
        registry.register(
            "coredns_dns_request_duration_seconds",
            "Seconds to answer a DNS request, by server, zone and query type",
            self.durations.clone(),
        );
    }

    pub(crate) fn record(&self, served: &Served<'_>) {
        self.requests
            .get_or_create(&RequestLabels {
                server: served.server.to_string(),
                zone: served.zone.to_string(),
                view: String::new(),
                proto: if served.tcp { "tcp" } else { "udp" }.into(),
                family: if served.ipv6 { "2" } else { "1" }.into(),
                r#type: served.qtype.to_string(),
            })
            .inc();
        self.responses
            .get_or_create(&ResponseLabels {
                server: served.server.to_string(),
                zone: served.zone.to_string(),
                view: String::new(),
                rcode: rcode(served.rcode),
                plugin: served.plugin.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&DurationLabels {
                server: served.server.to_string(),
                zone: served.zone.to_string(),
                view: String::new(),
                r#type: served.qtype.to_string(),
            })
            .observe(served.took.as_secs_f64());
    }
}

/// The DNS server's readiness, `informer-sync`: it passes once the Service and EndpointSlice
/// caches have listed (CoreDNS' `kubernetes` plugin is ready then too).
#[derive(Clone)]
pub struct DnsReadiness {
    pub(crate) services: Cache<Service>,
    pub(crate) slices: Cache<EndpointSlice>,
}

impl std::fmt::Debug for DnsReadiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsReadiness").finish_non_exhaustive()
    }
}

#[async_trait]
impl HealthCheck for DnsReadiness {
    fn name(&self) -> &str {
        "informer-sync"
    }

    async fn check(&self) -> Result<(), String> {
        let unsynced: Vec<&str> = [
            ("Service", self.services.is_synced()),
            ("discovery.k8s.io/EndpointSlice", self.slices.is_synced()),
        ]
        .iter()
        .filter(|(_, synced)| !synced)
        .map(|(kind, _)| *kind)
        .collect();
        if unsynced.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} informers not synced yet: {}",
                unsynced.len(),
                unsynced.join(", ")
            ))
        }
    }
}
