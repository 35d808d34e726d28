//! Cluster DNS as a component: the Services' names answered over UDP and TCP (see
//! `capstan_net::dns`), through its own client and informers, with CoreDNS' metrics and an
//! `informer-sync` readiness on its own listener.

use std::net::SocketAddr;
use std::sync::Arc;

use capstan_api::health::HealthEndpoints;
use capstan_api::Client;
use capstan_net::dns::hickory::DnsServer;
use capstan_net::dns::metrics::DnsMetrics;
use capstan_net::dns::{ClusterDns, DnsError, DEFAULT_DOMAIN};
use capstan_watch::{InformerFactory, ReflectorOptions};

use crate::control_plane::Component;
use crate::observability::{bind_optional, ComponentEndpoint};

/// Why cluster DNS did not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterDnsError {
    /// The domain is invalid, or the DNS sockets could not be bound.
    #[error("cluster DNS: {0}")]
    Dns(#[from] DnsError),
    /// The metrics and health listener could not be bound.
    #[error("serving metrics on {address}: {source}")]
    Metrics {
        /// The address.
        address: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
}

/// What cluster DNS serves and where.
#[derive(Clone, Debug)]
pub struct ClusterDnsOptions {
    /// Where DNS is answered, UDP and TCP (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The cluster domain.
    pub domain: String,
    /// Where `/metrics` and the health endpoints are served; `None` serves nothing.
    pub metrics_listen: Option<SocketAddr>,
}

impl ClusterDnsOptions {
    /// `cluster.local` answered on `listen`, without a metrics listener.
    pub fn new(listen: SocketAddr) -> Self {
        ClusterDnsOptions {
            listen,
            domain: DEFAULT_DOMAIN.to_string(),
            metrics_listen: None,
        }
    }
}

/// Running cluster DNS.
#[derive(Debug)]
pub struct RunningClusterDns {
    component: Component,
    address: SocketAddr,
}

impl RunningClusterDns {
    /// Where DNS is answered (UDP and TCP).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its `/metrics` and health listener, when it has one.
    pub fn endpoint(&self) -> Option<&ComponentEndpoint> {
        self.component.endpoint()
    }

    /// Stops answering.
    pub async fn stop(self) {
        self.component.stop(std::time::Duration::from_secs(5)).await;
    }
}

/// Starts cluster DNS through `client`: names are answered from the Service and
/// EndpointSlice informers, as soon as they are cached (readiness waits for their first list).
///
/// Errors: an invalid domain, or an address that cannot be bound.
pub async fn start_cluster_dns(
    client: Arc<dyn Client>,
    options: &ClusterDnsOptions,
) -> Result<RunningClusterDns, ClusterDnsError> {
    let factory = InformerFactory::new(client, ReflectorOptions::default());
    let dns = ClusterDns::new(&factory, &options.domain)?;
    let metrics = DnsMetrics::new();
    let endpoint = bind_optional(
        "coredns",
        options.metrics_listen,
        &HealthEndpoints::new().readyz(dns.readiness()),
        |registry| metrics.register(registry),
        |address, source| ClusterDnsError::Metrics { address, source },
    )?;
    let server = DnsServer::bind_with_metrics(dns, options.listen, metrics).await?;
    let address = server.local_addr();
    let component = Component::spawn("coredns", move |stop| async move {
        // The informers live as long as the server.
        let _factory = factory;
        if let Err(error) = server.run_until(stop.wait()).await {
            tracing::error!(%error, "cluster DNS stopped");
        }
    })
    .with_endpoint(endpoint);
    Ok(RunningClusterDns { component, address })
}
