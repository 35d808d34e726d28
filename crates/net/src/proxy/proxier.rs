//! The proxy loop: Services and endpoints in, backend syncs out.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Endpoints, Service};
use capstan_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use capstan_watch::{InformerFactory, SharedInformer};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::metrics::ProxierMetrics;
use super::model::{proxy_state, EndpointMap};
use super::{Changes, ProxyBackend, ProxyError, ProxyState, Result};

/// Which objects say where a Service's endpoints are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EndpointsSource {
    /// `discovery.k8s.io/v1` EndpointSlices (what kube-proxy reads).
    #[default]
    EndpointSlices,
    /// `v1` Endpoints, for clusters that run only the Endpoints controller.
    Endpoints,
}

/// How often the [`Proxier`] syncs.
#[derive(Clone, Debug)]
pub struct ProxierOptions {
    /// The least time between two syncs: changes arriving meanwhile are applied together
    /// by the next one. kube-proxy's `--iptables-min-sync-period` (1 s by default).
    pub min_sync_period: Duration,
    /// The most time between two full syncs, which repair whatever else changed the
    /// dataplane. kube-proxy's `--iptables-sync-period` (30 s by default).
    pub sync_period: Duration,
    /// How long to wait before retrying a failed sync (as a full one).
    pub retry_period: Duration,
    /// Where endpoints come from.
    pub endpoints: EndpointsSource,
}

impl Default for ProxierOptions {
    fn default() -> Self {
        ProxierOptions {
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            retry_period: Duration::from_secs(1),
            endpoints: EndpointsSource::EndpointSlices,
        }
    }
}

enum EndpointsInformer {
    Slices(Arc<SharedInformer<EndpointSlice>>),
    Endpoints(Arc<SharedInformer<Endpoints>>),
}

/// Keeps one node's dataplane in sync with the cluster's Services: watches Services and
/// EndpointSlices (or Endpoints) through shared informers, computes the [`ProxyState`], and
/// hands it to a [`ProxyBackend`]: a full sync first, then partial syncs naming the Service
/// ports that changed, at most one per `min_sync_period`, and a full sync at least every
/// `sync_period` and after every failed sync.
pub struct Proxier {
    factory: Arc<InformerFactory>,
    backend: Arc<dyn ProxyBackend>,
    options: ProxierOptions,
    metrics: Arc<ProxierMetrics>,
}

impl std::fmt::Debug for Proxier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxier")
            .field("backend", &self.backend.name())
            .field("options", &self.options)
            .finish()
    }
}

impl Proxier {
    /// A proxier reading through `factory`'s informers and programming `backend`.
    pub fn new(
        factory: Arc<InformerFactory>,
        backend: Arc<dyn ProxyBackend>,
        options: ProxierOptions,
    ) -> Self {
        Proxier {
            factory,
            backend,
            options,
            metrics: Arc::default(),
        }
    }

    /// Reports into `metrics` (kube-proxy's `kubeproxy_sync_proxy_rules_*` series and the
    /// `proxy-rules-synced` readiness) instead of metrics of its own.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<ProxierMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Its sync metrics.
    pub fn metrics(&self) -> &Arc<ProxierMetrics> {
        &self.metrics
    }

    /// Runs until `shutdown` completes, then returns `Ok` and leaves the dataplane as it is
    /// (traffic keeps flowing while the proxy restarts; call [`ProxyBackend::cleanup`] to
    /// remove it). Sync failures are logged and retried, never returned; the loop ends with
    /// [`ProxyError::Stopped`] only if an informer goes away.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let services = self.factory.informer::<Service>();
        let endpoints = match self.options.endpoints {
            EndpointsSource::EndpointSlices => {
                EndpointsInformer::Slices(self.factory.informer::<EndpointSlice>())
            }
            EndpointsSource::Endpoints => {
                EndpointsInformer::Endpoints(self.factory.informer::<Endpoints>())
            }
        };
        let mut service_changes = services.subscribe();
        let mut endpoint_changes: EndpointChanges = match &endpoints {
            EndpointsInformer::Slices(informer) => EndpointChanges::Slices(informer.subscribe()),
            EndpointsInformer::Endpoints(informer) => {
                EndpointChanges::Endpoints(informer.subscribe())
            }
        };
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = async {
                services.wait_for_sync().await;
                match &endpoints {
                    EndpointsInformer::Slices(informer) => informer.wait_for_sync().await,
                    EndpointsInformer::Endpoints(informer) => informer.wait_for_sync().await,
                }
            } => {}
        }

        let options = &self.options;
        let mut applied = ProxyState::new();
        let mut need_full = true;
        let mut dirty = true;
        let mut last_sync: Option<Instant> = None;
        let mut last_full = Instant::now();
        let mut failed = false;
        loop {
            let now = Instant::now();
            let earliest = match last_sync {
                None => now,
                Some(at) if failed => at + options.retry_period,
                Some(at) => at + options.min_sync_period,
            };
            let periodic = last_full + options.sync_period;
            let wake = if dirty || need_full {
                earliest
            } else {
                periodic
            };
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                change = service_changes.recv() => {
                    change.ok_or_else(|| ProxyError::Stopped("the Service informer ended".into()))?;
                    dirty = true;
                    self.metrics.queued();
                    continue;
                }
                alive = endpoint_changes.recv() => {
                    if !alive {
                        return Err(ProxyError::Stopped("the endpoints informer ended".into()));
                    }
                    dirty = true;
                    self.metrics.queued();
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if now >= last_full + options.sync_period {
                need_full = true;
            }
            if !(dirty || need_full) || now < earliest {
                continue;
            }
            let endpoint_map = match &endpoints {
                EndpointsInformer::Slices(informer) => EndpointMap::from_slices(
                    informer.cache().list().iter().map(|slice| slice.as_ref()),
                ),
                EndpointsInformer::Endpoints(informer) => EndpointMap::from_endpoints(
                    informer.cache().list().iter().map(|object| object.as_ref()),
                ),
            };
            let listed = services.cache().list();
            let state = proxy_state(listed.iter().map(|service| service.as_ref()), &endpoint_map);
            dirty = false;
            let changes = if need_full {
                Changes::Full
            } else {
                let changed = state.diff(&applied);
                if changed.is_empty() {
                    continue;
                }
                Changes::Partial(changed)
            };
            last_sync = Some(now);
            let started = std::time::Instant::now();
            match self.backend.sync(&state, &changes).await {
                Ok(()) => {
                    self.metrics.synced(changes.is_full(), started.elapsed());
                    tracing::debug!(
                        backend = self.backend.name(),
                        full = changes.is_full(),
                        service_ports = state.len(),
                        elapsed = ?started.elapsed(),
                        "proxy rules synced"
                    );
                    if changes.is_full() {
                        last_full = now;
                    }
                    applied = state;
                    need_full = false;
                    failed = false;
                }
                Err(error) => {
                    self.metrics.failed();
                    tracing::warn!(
                        backend = self.backend.name(),
                        %error,
                        "proxy sync failed; retrying with a full sync"
                    );
                    need_full = true;
                    failed = true;
                }
            }
        }
    }
}

enum EndpointChanges {
    Slices(UnboundedReceiver<capstan_watch::Delta<EndpointSlice>>),
    Endpoints(UnboundedReceiver<capstan_watch::Delta<Endpoints>>),
}

impl EndpointChanges {
    /// Waits for the next change; `false` when the informer has gone.
    async fn recv(&mut self) -> bool {
        match self {
            EndpointChanges::Slices(changes) => changes.recv().await.is_some(),
            EndpointChanges::Endpoints(changes) => changes.recv().await.is_some(),
        }
    }
}
