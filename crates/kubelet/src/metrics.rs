//! The kubelet's Prometheus series and health checks, read from what the running kubelet
//! keeps (see [`RunningKubelet::register_metrics`](crate::RunningKubelet::register_metrics)
//! and [`RunningKubelet::health`](crate::RunningKubelet::health)).
//!
//! | series | what |
//! |---|---|
//! | `kubelet_running_pods` | pods with a ready sandbox, from the last relist of the runtime |
//! | `kubelet_running_containers` | containers by `container_state` (`created`, `running`, `exited`, `unknown`) |
//! | `kubelet_pod_start_duration_seconds` | histogram: from the kubelet seeing a pod to it running |
//! | `kubelet_node_name` | 1, labelled `node` |
//!
//! The runtime is relisted every second, as the kubelet's PLEG does, so the gauges lag the
//! runtime by at most that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::health::HealthCheck;
use capstan_runtime as rt;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// kube's `kubelet_pod_start_duration_seconds` buckets, in seconds.
pub const POD_START_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// How often the runtime is relisted for the gauges.
pub(crate) const RELIST_PERIOD: Duration = Duration::from_secs(1);

#[derive(Default)]
struct PodStarts {
    count: u64,
    sum: f64,
    buckets: [u64; POD_START_BUCKETS.len()],
}

/// Containers by state at the last relist: created, running, exited, unknown.
#[derive(Clone, Copy, Default)]
struct Relisted {
    running_pods: u64,
    containers: [u64; 4],
}

/// What a running kubelet keeps for its metrics and health; shared by its tasks.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) node_name: String,
    relisted: Mutex<Relisted>,
    pod_starts: Mutex<PodStarts>,
    /// Set once the Node is registered and the Pod cache synced.
    pub(crate) ready: AtomicBool,
    /// Cleared when the kubelet's main loop ends.
    pub(crate) alive: AtomicBool,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

impl Stats {
    pub(crate) fn new(node_name: String) -> Self {
        Stats {
            node_name,
            alive: AtomicBool::new(true),
            ..Stats::default()
        }
    }

    /// Records a pod that started running `took` after its worker first saw it.
    pub(crate) fn pod_started(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let mut starts = self.pod_starts.lock();
        starts.count += 1;
        starts.sum += seconds;
        if let Some(i) = POD_START_BUCKETS.iter().position(|&bound| seconds <= bound) {
            starts.buckets[i] += 1;
        }
    }

    /// Counts the runtime's sandboxes and containers.
    pub(crate) async fn relist(&self, runtime: &dyn rt::ContainerRuntime) -> rt::Result<()> {
        let sandboxes = runtime
            .list_pod_sandboxes(rt::PodSandboxFilter::all())
            .await?;
        let containers = runtime.list_containers(rt::ContainerFilter::all()).await?;
        let mut relisted = Relisted {
            running_pods: sandboxes
                .iter()
                .filter(|s| s.state == rt::PodSandboxState::Ready)
                .count() as u64,
            containers: [0; 4],
        };
        for container in &containers {
            let state = match container.state {
                rt::ContainerState::Created => 0,
                rt::ContainerState::Running => 1,
                rt::ContainerState::Exited => 2,
                rt::ContainerState::Unknown => 3,
            };
            relisted.containers[state] += 1;
        }
        *self.relisted.lock() = relisted;
        Ok(())
    }

    /// Pods with a ready sandbox at the last relist.
    pub(crate) fn running_pods(&self) -> u64 {
        self.relisted.lock().running_pods
    }
}

/// The collector registered by `RunningKubelet::register_metrics`.
#[derive(Debug)]
pub(crate) struct KubeletCollector(pub(crate) Arc<Stats>);

impl Collector for KubeletCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let stats = &self.0;
        let relisted = *stats.relisted.lock();
        let mut metric = encoder.encode_descriptor(
            "kubelet_node_name",
            "This kubelet's Node, as a label; always 1",
            None,
            MetricType::Gauge,
        )?;
        metric
            .encode_family(&[("node", stats.node_name.as_str())])?
            .encode_gauge(&1i64)?;
        encoder
            .encode_descriptor(
                "kubelet_running_pods",
                "Pods whose sandbox is ready, at the runtime's last relist",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&relisted.running_pods)?;
        let mut metric = encoder.encode_descriptor(
            "kubelet_running_containers",
            "Containers by state, at the runtime's last relist",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in ["created", "running", "exited", "unknown"]
            .iter()
            .zip(relisted.containers)
        {
            metric
                .encode_family(&[("container_state", *state)])?
                .encode_gauge(&count)?;
        }
        let (sum, count, buckets) = {
            let starts = stats.pod_starts.lock();
            let buckets: Vec<(f64, u64)> = POD_START_BUCKETS
                .iter()
                .copied()
                .zip(starts.buckets)
                .collect();
            (starts.sum, starts.count, buckets)
        };
        encoder
            .encode_descriptor(
                "kubelet_pod_start_duration_seconds",
                "Seconds from the kubelet first seeing a pod to reporting it Running",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        Ok(())
    }
}

/// The kubelet's checks: `syncloop` (its main loop still runs) and `registered` (its Node is
/// registered and its Pod cache synced).
#[derive(Debug, Clone)]
pub(crate) struct KubeletCheck {
    pub(crate) name: &'static str,
    pub(crate) stats: Arc<Stats>,
}

#[async_trait]
impl HealthCheck for KubeletCheck {
    fn name(&self) -> &str {
        self.name
    }

    async fn check(&self) -> Result<(), String> {
        match self.name {
            "syncloop" if !self.stats.alive.load(Ordering::Relaxed) => {
                Err("the kubelet's main loop has ended".into())
            }
            "registered" if !self.stats.ready.load(Ordering::Relaxed) => Err(format!(
                "node {} not registered or its pods not listed yet",
                self.stats.node_name
            )),
            _ => Ok(()),
        }
    }
}
