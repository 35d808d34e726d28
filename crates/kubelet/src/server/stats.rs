//! Resource usage: `/stats/summary` (the Summary API, `stats/v1alpha1`, CPU and memory
//! only) and `/metrics/resource` (the Prometheus series metrics-server scrapes).
//!
//! Usage is read from the runtime (`container_stats`) for the running containers of the
//! ready sandboxes, newest attempt per container. A Pod's usage is the sum of its
//! containers', and the node's usage is the sum of its Pods' (the kubelet's own processes
//! and the system are not measured). `usageNanoCores` is the runtime's rate when it gives
//! one, otherwise the difference between this sample and the previous one kept for the
//! container; it is absent until there are two samples.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::response::Response;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use capstan_runtime::{self as rt, ContainerStats};
use http::StatusCode;
use parking_lot::Mutex;
use serde::Serialize;

use super::{text, ServerState};
use crate::pod_worker::{CONTAINER_NAME_LABEL, POD_NAMESPACE_LABEL, POD_NAME_LABEL, POD_UID_LABEL};
use crate::time::time;

/// CPU usage (`CPUStats`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CpuStats {
    pub(crate) time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage_nano_cores: Option<u64>,
    pub(crate) usage_core_nano_seconds: u64,
}

/// Memory usage (`MemoryStats`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MemoryStats {
    pub(crate) time: Time,
    pub(crate) usage_bytes: u64,
    pub(crate) working_set_bytes: u64,
}

/// One container (`ContainerStats`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerSummary {
    pub(crate) name: String,
    pub(crate) start_time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) memory: Option<MemoryStats>,
}

/// A Pod's reference (`PodReference`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PodReference {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) uid: String,
}

/// One Pod (`PodStats`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSummary {
    pub(crate) pod_ref: PodReference,
    pub(crate) start_time: Time,
    pub(crate) containers: Vec<ContainerSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) memory: Option<MemoryStats>,
}

/// The node (`NodeStats`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeSummary {
    pub(crate) node_name: String,
    pub(crate) start_time: Time,
    pub(crate) cpu: CpuStats,
    pub(crate) memory: MemoryStats,
}

/// The Summary API's answer (`Summary`), with the count of containers whose usage could not
/// be read (not serialized: the resource metrics report it as `resource_scrape_error`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) node: NodeSummary,
    pub(crate) pods: Vec<PodSummary>,
    #[serde(skip)]
    pub(crate) errors: usize,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: SystemTime,
    cpu: u64,
    rate: Option<u64>,
}

/// The previous CPU sample of each container, for rates the runtime does not give.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    samples: Mutex<HashMap<String, Sample>>,
}

impl Sampler {
    /// The CPU rate of `stats` in billionths of a core: the runtime's, or from the previous
    /// sample (kept until a newer one arrives; a sample at the same time reuses the rate).
    pub(crate) fn rate(&self, stats: &ContainerStats) -> Option<u64> {
        let mut samples = self.samples.lock();
        let previous = samples.get(&stats.container_id).copied();
        let rate = stats.cpu_usage_nano_cores.or_else(|| match previous {
            Some(p) if stats.timestamp > p.at => {
                let elapsed = stats.timestamp.duration_since(p.at).ok()?.as_nanos();
                let used = u128::from(stats.cpu_usage_core_nanoseconds.saturating_sub(p.cpu));
                u64::try_from(used * 1_000_000_000 / elapsed.max(1)).ok()
            }
            Some(p) => p.rate,
            None => None,
        });
        if previous.is_none_or(|p| stats.timestamp > p.at) {
            samples.insert(
                stats.container_id.clone(),
                Sample {
                    at: stats.timestamp,
                    cpu: stats.cpu_usage_core_nanoseconds,
                    rate,
                },
            );
        }
        rate
    }

    /// Forgets the containers not in `live`.
    fn retain(&self, live: &std::collections::HashSet<String>) {
        self.samples.lock().retain(|id, _| live.contains(id));
    }
}

fn add_cpu(total: &mut Option<CpuStats>, cpu: &CpuStats) {
    match total {
        None => *total = Some(cpu.clone()),
        Some(t) => {
            t.usage_core_nano_seconds += cpu.usage_core_nano_seconds;
            t.usage_nano_cores = t
                .usage_nano_cores
                .zip(cpu.usage_nano_cores)
                .map(|(a, b)| a + b);
            if cpu.time.0 > t.time.0 {
                t.time = cpu.time.clone();
            }
        }
    }
}

fn add_memory(total: &mut Option<MemoryStats>, memory: &MemoryStats) {
    match total {
        None => *total = Some(memory.clone()),
        Some(t) => {
            t.usage_bytes += memory.usage_bytes;
            t.working_set_bytes += memory.working_set_bytes;
            if memory.time.0 > t.time.0 {
                t.time = memory.time.clone();
            }
        }
    }
}

/// Reads the usage of every running container now.
///
/// Errors: the runtime could not list its sandboxes or containers. A container whose usage
/// cannot be read is listed without usage and counted in [`Summary::errors`].
pub(crate) async fn summary(state: &ServerState) -> rt::Result<Summary> {
    let runtime = state.runtime.as_ref();
    let now = state.clock.now();
    let sandboxes = runtime
        .list_pod_sandboxes(rt::PodSandboxFilter::all().state(rt::PodSandboxState::Ready))
        .await?;
    let containers = runtime
        .list_containers(rt::ContainerFilter::all().state(rt::ContainerState::Running))
        .await?;
    let mut errors = 0;
    let mut live = std::collections::HashSet::new();
    let mut pods = Vec::new();
    for sandbox in sandboxes {
        let Some(uid) = sandbox.labels.get(POD_UID_LABEL) else {
            continue; // not the kubelet's
        };
        let label = |key: &str| sandbox.labels.get(key).cloned().unwrap_or_default();
        let (name, namespace) = (label(POD_NAME_LABEL), label(POD_NAMESPACE_LABEL));
        let start_time = state
            .pods
            .get(&namespace, &name)
            .and_then(|p| p.status.as_ref()?.start_time.clone())
            .unwrap_or_else(|| time(sandbox.created_at));
        // The newest running attempt of each container of this sandbox.
        let mut newest: HashMap<&str, &rt::Container> = HashMap::new();
        for c in containers.iter().filter(|c| c.pod_sandbox_id == sandbox.id) {
            let Some(name) = c.labels.get(CONTAINER_NAME_LABEL) else {
                continue;
            };
            let slot = newest.entry(name.as_str()).or_insert(c);
            if c.metadata.attempt > slot.metadata.attempt {
                *slot = c;
            }
        }
        let mut pod = PodSummary {
            pod_ref: PodReference {
                name,
                namespace,
                uid: uid.clone(),
            },
            start_time,
            containers: Vec::new(),
            cpu: None,
            memory: None,
        };
        let mut names: Vec<&str> = newest.keys().copied().collect();
        names.sort_unstable();
        for container_name in names {
            let container = newest[container_name];
            live.insert(container.id.clone());
            let mut summary = ContainerSummary {
                name: container_name.to_string(),
                start_time: time(container.created_at),
                cpu: None,
                memory: None,
            };
            match runtime.container_stats(&container.id).await {
                Ok(stats) => {
                    let at = time(stats.timestamp);
                    let cpu = CpuStats {
                        time: at.clone(),
                        usage_nano_cores: state.sampler.rate(&stats),
                        usage_core_nano_seconds: stats.cpu_usage_core_nanoseconds,
                    };
                    let memory = MemoryStats {
                        time: at,
                        usage_bytes: stats.memory_usage_bytes,
                        working_set_bytes: stats.memory_working_set_bytes,
                    };
                    add_cpu(&mut pod.cpu, &cpu);
                    add_memory(&mut pod.memory, &memory);
                    summary.cpu = Some(cpu);
                    summary.memory = Some(memory);
                }
                Err(error) => {
                    errors += 1;
                    tracing::debug!(%error, container = %container.id, "kubelet API: reading a container's usage failed");
                }
            }
            pod.containers.push(summary);
        }
        pods.push(pod);
    }
    state.sampler.retain(&live);
    pods.sort_by(|a, b| {
        (&a.pod_ref.namespace, &a.pod_ref.name).cmp(&(&b.pod_ref.namespace, &b.pod_ref.name))
    });
    let mut cpu = None;
    let mut memory = None;
    for pod in &pods {
        if let Some(c) = &pod.cpu {
            add_cpu(&mut cpu, c);
        }
        if let Some(m) = &pod.memory {
            add_memory(&mut memory, m);
        }
    }
    let node = NodeSummary {
        node_name: state.node_name.clone(),
        start_time: time(state.started),
        cpu: cpu.unwrap_or(CpuStats {
            time: time(now),
            usage_nano_cores: Some(0),
            usage_core_nano_seconds: 0,
        }),
        memory: memory.unwrap_or(MemoryStats {
            time: time(now),
            usage_bytes: 0,
            working_set_bytes: 0,
        }),
    };
    Ok(Summary { node, pods, errors })
}

/// `GET /stats/summary`.
pub(crate) async fn stats_summary(State(state): State<Arc<ServerState>>) -> Response {
    match summary(&state).await {
        Ok(summary) => Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&summary).unwrap_or_default().into())
            .expect("a valid response"),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Internal Error: failed to get node info: {error}"),
        ),
    }
}

/// `GET /metrics/resource`.
pub(crate) async fn metrics_resource(State(state): State<Arc<ServerState>>) -> Response {
    let body = match summary(&state).await {
        Ok(summary) => resource_metrics(&summary),
        Err(error) => {
            tracing::debug!(%error, "kubelet API: reading usage for the resource metrics failed");
            scrape_error(1)
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(body.into())
        .expect("a valid response")
}

/// A float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it (the Prometheus text
/// format's): shortest digits, exponent form from 1e+06 up and below 1e-04.
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let scientific = format!("{v:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("an exponent");
    let exponent: i32 = exponent.parse().expect("a number");
    if !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        format!("{v}")
    }
}

/// A label value escaped as the text format wants: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

fn millis(t: &Time) -> i64 {
    t.0.as_millisecond()
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// The `scrape_error` families alone.
fn scrape_error(errors: usize) -> String {
    let value = if errors > 0 { 1 } else { 0 };
    format!(
        "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n\
         # TYPE resource_scrape_error gauge\n\
         resource_scrape_error {value}\n\
         # HELP scrape_error [ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise\n\
         # TYPE scrape_error gauge\n\
         scrape_error {value}\n"
    )
}

/// The resource metrics of `summary` in the Prometheus text format, families sorted by
/// name and series by label values, as the kubelet's registry writes them.
pub(crate) fn resource_metrics(summary: &Summary) -> String {
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str, lines: Vec<String>| {
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    };
    // (container, namespace, pod) sorts the series as the labels sort.
    let mut containers: Vec<(&str, &str, &str, &ContainerSummary)> = summary
        .pods
        .iter()
        .flat_map(|p| {
            p.containers.iter().map(move |c| {
                (
                    c.name.as_str(),
                    p.pod_ref.namespace.as_str(),
                    p.pod_ref.name.as_str(),
                    c,
                )
            })
        })
        .collect();
    containers.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    let labels = |c: &str, ns: &str, pod: &str| {
        format!(
            r#"{{container="{}",namespace="{}",pod="{}"}}"#,
            escape(c),
            escape(ns),
            escape(pod)
        )
    };
    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        containers
            .iter()
            .filter_map(|(c, ns, pod, s)| {
                let cpu = s.cpu.as_ref()?;
                Some(format!(
                    "container_cpu_usage_seconds_total{} {} {}",
                    labels(c, ns, pod),
                    go_float(seconds(cpu.usage_core_nano_seconds)),
                    millis(&cpu.time)
                ))
            })
            .collect(),
    );
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        containers
            .iter()
            .filter_map(|(c, ns, pod, s)| {
                let memory = s.memory.as_ref()?;
                Some(format!(
                    "container_memory_working_set_bytes{} {} {}",
                    labels(c, ns, pod),
                    go_float(memory.working_set_bytes as f64),
                    millis(&memory.time)
                ))
            })
            .collect(),
    );
    family(
        &mut out,
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
        containers
            .iter()
            .filter(|(_, _, _, s)| s.start_time.0.as_second() > 0)
            .map(|(c, ns, pod, s)| {
                format!(
                    "container_start_time_seconds{} {}",
                    labels(c, ns, pod),
                    go_float(s.start_time.0.as_nanosecond() as f64 / 1e9)
                )
            })
            .collect(),
    );
    let node = &summary.node;
    family(
        &mut out,
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        vec![format!(
            "node_cpu_usage_seconds_total {} {}",
            go_float(seconds(node.cpu.usage_core_nano_seconds)),
            millis(&node.cpu.time)
        )],
    );
    family(
        &mut out,
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        vec![format!(
            "node_memory_working_set_bytes {} {}",
            go_float(node.memory.working_set_bytes as f64),
            millis(&node.memory.time)
        )],
    );
    // (namespace, pod), as the labels sort.
    let mut pods: Vec<&PodSummary> = summary.pods.iter().collect();
    pods.sort_by(|a, b| {
        (&a.pod_ref.namespace, &a.pod_ref.name).cmp(&(&b.pod_ref.namespace, &b.pod_ref.name))
    });
    let pod_labels = |p: &PodSummary| {
        format!(
            r#"{{namespace="{}",pod="{}"}}"#,
            escape(&p.pod_ref.namespace),
            escape(&p.pod_ref.name)
        )
    };
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        pods.iter()
            .filter_map(|p| {
                let cpu = p.cpu.as_ref()?;
                Some(format!(
                    "pod_cpu_usage_seconds_total{} {} {}",
                    pod_labels(p),
                    go_float(seconds(cpu.usage_core_nano_seconds)),
                    millis(&cpu.time)
                ))
            })
            .collect(),
    );
    family(
        &mut out,
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        pods.iter()
            .filter_map(|p| {
                let memory = p.memory.as_ref()?;
                Some(format!(
                    "pod_memory_working_set_bytes{} {} {}",
                    pod_labels(p),
                    go_float(memory.working_set_bytes as f64),
                    millis(&memory.time)
                ))
            })
            .collect(),
    );
    out.push_str(&scrape_error(summary.errors));
    out
}

#[cfg(test)]
mod tests;
