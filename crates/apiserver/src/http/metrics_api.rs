//! `metrics.k8s.io/v1beta1`: the resource metrics API that `kubectl top` reads.
//!
//! Where kube-apiserver aggregates metrics-server (an APIService backed by a Service),
//! Capstan serves the same API itself, from its kubelets: each request reads the Nodes (or
//! Pods) it is about from the registry, asks the kubelets concerned for their Summary API
//! (`/stats/summary`, concurrently, each within [`KubeletClientConfig::stats_timeout`]), and
//! answers `NodeMetrics`/`PodMetrics` (and their lists) as metrics-server does: CPU as
//! nanocores in their canonical quantity (`12345678n`, `250m`), memory as the working set in
//! bytes (`1234Ki`), the kubelet's sample time as `timestamp`, labels copied from the object.
//! A node that does not answer in time, or has no sample yet, is left out, as metrics-server
//! leaves out what it could not scrape; a missing object is 404
//! (`nodemetrics.metrics.k8s.io "n1" not found`, `podmetrics.metrics.k8s.io "default/web" not
//! found`), on which kubectl says `metrics not available yet`.
//!
//! Paths: `/apis/metrics.k8s.io/v1beta1/nodes[/{name}]`, `/apis/metrics.k8s.io/v1beta1/pods`,
//! `/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods[/{name}]`; lists take `labelSelector`
//! and `fieldSelector` (applied to the Nodes and Pods as their own lists apply them). The
//! group is in discovery through [`virtual_resources`](super::virtual_resources), and so has
//! the APIService `v1beta1.metrics.k8s.io`.
//!
//! [`KubeletClientConfig::stats_timeout`]: super::pod_streams::KubeletClientConfig::stats_timeout

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::kube_core::params::ListParams;
use capstan_api::{Api, Client, Error};
use serde_json::{json, Value};

use super::pod_streams::{kubelet_client, KubeletClient};
use super::status::ApiError;
use crate::registry::Registry;

/// The API version served.
pub const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// The sampling window reported: the kubelet's CPU rate (`usageNanoCores`) is computed over
/// its housekeeping interval, 10 s by default.
pub const WINDOW: &str = "10s";

/// The most of a Summary API answer that is read.
const MAX_SUMMARY_BYTES: usize = 16 << 20;

/// The routes of the metrics API over `registry`.
pub fn routes<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> Router<S> {
    let base = "/apis/metrics.k8s.io/v1beta1";
    Router::new()
        .route(&format!("{base}/nodes"), get(node_list))
        .route(&format!("{base}/nodes/{{name}}"), get(node_one))
        .route(&format!("{base}/pods"), get(pod_list_all))
        .route(
            &format!("{base}/namespaces/{{namespace}}/pods"),
            get(pod_list),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/pods/{{name}}"),
            get(pod_one),
        )
        .with_state(Metrics { registry })
}

#[derive(Clone)]
struct Metrics {
    registry: Arc<Registry>,
}

impl Metrics {
    fn client(&self) -> Arc<dyn Client> {
        self.registry.clone()
    }
}

/// The canonical quantity of `nanocores` (Kubernetes' `NewScaledQuantity(n, -9)` written
/// out): `0`, `12345678n`, `1500u`, `250m`, `2`.
pub fn format_nanocores(nanocores: u64) -> String {
    canonical_decimal(nanocores, -9)
}

/// The canonical quantity of `bytes` (Kubernetes' `NewQuantity(n, BinarySI)` written out):
/// `1234Ki` for a multiple of 1024, `123456789` otherwise, and below 1024 the decimal form
/// (`512`, `1k`).
pub fn format_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return canonical_decimal(bytes, 0);
    }
    let mut amount = bytes;
    let mut exponent = 0;
    while exponent < 6 && amount.is_multiple_of(1024) {
        amount /= 1024;
        exponent += 1;
    }
    let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exponent];
    format!("{amount}{suffix}")
}

/// `value × 10^exponent` in DecimalSI's canonical form: trailing zeros moved into the
/// exponent, which is then lowered to a multiple of 3 and written as its suffix.
fn canonical_decimal(value: u64, exponent: i32) -> String {
    if value == 0 {
        return "0".into();
    }
    let (mut amount, mut exponent) = (u128::from(value), exponent);
    while amount.is_multiple_of(10) {
        amount /= 10;
        exponent += 1;
    }
    match exponent.rem_euclid(3) {
        1 => {
            amount *= 10;
            exponent -= 1;
        }
        2 => {
            amount *= 100;
            exponent -= 2;
        }
        _ => {}
    }
    let suffix = match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        _ => "E",
    };
    format!("{amount}{suffix}")
}

/// One usage sample: nanocores, working-set bytes and when it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// CPU in nanocores.
    pub nanocores: u64,
    /// Memory working set in bytes.
    pub working_set_bytes: u64,
    /// The sample's time (RFC 3339, whole seconds).
    pub timestamp: String,
}

impl Usage {
    /// `{cpu, memory}` as metrics-server writes them.
    fn to_json(&self) -> Value {
        json!({
            "cpu": format_nanocores(self.nanocores),
            "memory": format_bytes(self.working_set_bytes),
        })
    }

    /// A sample from a Summary API `cpu` and `memory` pair; `None` when either misses its
    /// figure.
    fn from_stats(stats: &Value) -> Option<Usage> {
        let nanocores = stats["cpu"]["usageNanoCores"].as_u64()?;
        let working_set_bytes = stats["memory"]["workingSetBytes"].as_u64()?;
        let time = stats["cpu"]["time"]
            .as_str()
            .or_else(|| stats["memory"]["time"].as_str())?;
        Some(Usage {
            nanocores,
            working_set_bytes,
            timestamp: super::pod_streams::log::normalize_rfc3339(time)?,
        })
    }
}

/// What one kubelet's Summary API says, keyed as the metrics API needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSummary {
    /// The node's own usage.
    pub node: Option<Usage>,
    /// Each Pod's containers' usage, by `(namespace, name)`; a Pod with a container missing
    /// its figures is absent, as metrics-server drops it.
    pub pods: HashMap<(String, String), Vec<(String, Usage)>>,
}

impl NodeSummary {
    /// Reads a Summary API document (`k8s.io/kubelet/pkg/apis/stats/v1alpha1`).
    pub fn from_summary(summary: &Value) -> NodeSummary {
        let node = Usage::from_stats(&summary["node"]);
        let mut pods = HashMap::new();
        for pod in summary["pods"].as_array().into_iter().flatten() {
            let reference = &pod["podRef"];
            let (Some(namespace), Some(name)) =
                (reference["namespace"].as_str(), reference["name"].as_str())
            else {
                continue;
            };
            let containers: Option<Vec<(String, Usage)>> = pod["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| Some((c["name"].as_str()?.to_string(), Usage::from_stats(c)?)))
                .collect();
            if let Some(containers) = containers.filter(|c| !c.is_empty()) {
                pods.insert((namespace.to_string(), name.to_string()), containers);
            }
        }
        NodeSummary { node, pods }
    }
}

/// Fetches node `name`'s Summary API; `None` when the node has no usable address, its
/// kubelet does not answer within the stats timeout, or answers something else than a
/// Summary.
async fn fetch_summary(kubelet: &KubeletClient, node: &Node) -> Option<NodeSummary> {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let location = kubelet.location(node).ok()?;
    let fetch = async {
        let request = axum::http::Request::builder()
            .method(Method::GET)
            .uri("/stats/summary")
            .body(Body::empty())
            .ok()?;
        let response = kubelet.send(&location, request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_SUMMARY_BYTES)
            .await
            .ok()?;
        serde_json::from_slice::<Value>(&body).ok()
    };
    match tokio::time::timeout(kubelet.config().stats_timeout, fetch).await {
        Ok(Some(summary)) => Some(NodeSummary::from_summary(&summary)),
        _ => {
            tracing::debug!(node = name, "no resource metrics from the node's kubelet");
            None
        }
    }
}

/// The Summary of each of `nodes`, fetched concurrently, by node name.
async fn fetch_summaries(kubelet: &KubeletClient, nodes: &[Node]) -> HashMap<String, NodeSummary> {
    let fetches = nodes.iter().map(|node| async {
        let summary = fetch_summary(kubelet, node).await?;
        Some((node.metadata.name.clone()?, summary))
    });
    futures::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// `labelSelector` and `fieldSelector` of the request's query as list parameters.
fn list_params(raw_query: &str) -> ListParams {
    let mut params = ListParams::default();
    if let Some(labels) = crate::http::rest::query_values(raw_query, "labelSelector")
        .into_iter()
        .next()
        .filter(|s| !s.is_empty())
    {
        params = params.labels(&labels);
    }
    if let Some(fields) = crate::http::rest::query_values(raw_query, "fieldSelector")
        .into_iter()
        .next()
        .filter(|s| !s.is_empty())
    {
        params = params.fields(&fields);
    }
    params
}

fn now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    crate::protobuf::format::rfc3339(seconds, 0, 0)
}

/// The `NodeMetrics` of `node` with `usage`.
pub fn node_metrics(node: &Node, usage: &Usage) -> Value {
    let mut metadata = json!({
        "name": node.metadata.name,
        "creationTimestamp": now(),
    });
    if let Some(labels) = &node.metadata.labels {
        metadata["labels"] = json!(labels);
    }
    json!({
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata,
        "timestamp": usage.timestamp,
        "window": WINDOW,
        "usage": usage.to_json(),
    })
}

/// The `PodMetrics` of `pod` with its `containers`' usage.
pub fn pod_metrics(pod: &Pod, containers: &[(String, Usage)]) -> Value {
    let mut metadata = json!({
        "name": pod.metadata.name,
        "namespace": pod.metadata.namespace,
        "creationTimestamp": now(),
    });
    if let Some(labels) = &pod.metadata.labels {
        metadata["labels"] = json!(labels);
    }
    let timestamp = containers
        .iter()
        .map(|(_, usage)| usage.timestamp.as_str())
        .max()
        .unwrap_or_default();
    json!({
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata,
        "timestamp": timestamp,
        "window": WINDOW,
        "containers": containers
            .iter()
            .map(|(name, usage)| json!({"name": name, "usage": usage.to_json()}))
            .collect::<Vec<_>>(),
    })
}

fn list(kind: &str, items: Vec<Value>) -> Response {
    Json(json!({
        "kind": kind,
        "apiVersion": API_VERSION,
        "metadata": {},
        "items": items,
    }))
    .into_response()
}

fn not_found(resource: &str, name: String) -> Response {
    ApiError(Error::NotFound {
        resource: format!("{resource}.metrics.k8s.io"),
        name,
    })
    .into_response()
}

async fn node_list(State(metrics): State<Metrics>, request: Request) -> Response {
    let raw_query = request.uri().query().unwrap_or_default().to_string();
    let client = metrics.client();
    let nodes = match Api::<Node>::cluster(client.clone())
        .list(&list_params(&raw_query))
        .await
    {
        Ok(list) => list.items,
        Err(error) => return ApiError(error).into_response(),
    };
    let kubelet = kubelet_client(request.extensions());
    let summaries = fetch_summaries(&kubelet, &nodes).await;
    let items = nodes
        .iter()
        .filter_map(|node| {
            let summary = summaries.get(node.metadata.name.as_deref()?)?;
            Some(node_metrics(node, summary.node.as_ref()?))
        })
        .collect();
    list("NodeMetricsList", items)
}

async fn node_one(
    State(metrics): State<Metrics>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let client = metrics.client();
    let node = match Api::<Node>::cluster(client.clone()).get(&name).await {
        Ok(node) => node,
        Err(error) if error.is_not_found() => return not_found("nodemetrics", name),
        Err(error) => return ApiError(error).into_response(),
    };
    let kubelet = kubelet_client(request.extensions());
    match fetch_summary(&kubelet, &node).await.and_then(|s| s.node) {
        Some(usage) => Json(node_metrics(&node, &usage)).into_response(),
        None => not_found("nodemetrics", name),
    }
}

/// The metrics of `pods` that their nodes' kubelets report.
async fn metrics_of_pods(metrics: &Metrics, kubelet: &KubeletClient, pods: &[Pod]) -> Vec<Value> {
    let client = metrics.client();
    let mut node_names: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.as_deref())
        .filter(|n| !n.is_empty())
        .collect();
    node_names.sort_unstable();
    node_names.dedup();
    let node_api = Api::<Node>::cluster(client);
    let nodes =
        futures::future::join_all(node_names.iter().map(|name| node_api.get_opt(name))).await;
    let nodes: Vec<Node> = nodes.into_iter().filter_map(|n| n.ok().flatten()).collect();
    let summaries = fetch_summaries(kubelet, &nodes).await;
    pods.iter()
        .filter_map(|pod| {
            let node = pod.spec.as_ref()?.node_name.as_deref()?;
            let key = (pod.metadata.namespace.clone()?, pod.metadata.name.clone()?);
            let containers = summaries.get(node)?.pods.get(&key)?;
            Some(pod_metrics(pod, containers))
        })
        .collect()
}

async fn pods_response(metrics: Metrics, namespace: Option<String>, request: Request) -> Response {
    let raw_query = request.uri().query().unwrap_or_default().to_string();
    let client = metrics.client();
    let api = match &namespace {
        Some(namespace) => Api::<Pod>::namespaced(client, namespace),
        None => Api::<Pod>::all(client),
    };
    let pods = match api.list(&list_params(&raw_query)).await {
        Ok(list) => list.items,
        Err(error) => return ApiError(error).into_response(),
    };
    let kubelet = kubelet_client(request.extensions());
    list(
        "PodMetricsList",
        metrics_of_pods(&metrics, &kubelet, &pods).await,
    )
}

async fn pod_list_all(State(metrics): State<Metrics>, request: Request) -> Response {
    pods_response(metrics, None, request).await
}

async fn pod_list(
    State(metrics): State<Metrics>,
    Path(namespace): Path<String>,
    request: Request,
) -> Response {
    pods_response(metrics, Some(namespace), request).await
}

async fn pod_one(
    State(metrics): State<Metrics>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    let missing = || not_found("podmetrics", format!("{namespace}/{name}"));
    let pod = match Api::<Pod>::namespaced(metrics.client(), &namespace)
        .get(&name)
        .await
    {
        Ok(pod) => pod,
        Err(error) if error.is_not_found() => return missing(),
        Err(error) => return ApiError(error).into_response(),
    };
    let kubelet = kubelet_client(request.extensions());
    match metrics_of_pods(&metrics, &kubelet, std::slice::from_ref(&pod))
        .await
        .pop()
    {
        Some(item) => Json(item).into_response(),
        None => missing(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_written_in_its_canonical_decimal_form() {
        assert_eq!(format_nanocores(0), "0");
        assert_eq!(format_nanocores(12_345_678), "12345678n");
        assert_eq!(format_nanocores(250_000_000), "250m");
        assert_eq!(format_nanocores(1_500_000), "1500u");
        assert_eq!(format_nanocores(2_000_000_000), "2");
        assert_eq!(format_nanocores(10_000_000), "10m");
        assert_eq!(format_nanocores(100_000_000_000), "100");
        assert_eq!(format_nanocores(1_000_000_000_000), "1k");
    }

    #[test]
    fn memory_is_written_in_its_canonical_binary_form() {
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_bytes(512), "512");
        assert_eq!(format_bytes(1000), "1k");
        assert_eq!(format_bytes(1024), "1Ki");
        assert_eq!(format_bytes(1_264_000 * 1024), "1264000Ki");
        assert_eq!(format_bytes(64 << 20), "64Mi");
        assert_eq!(format_bytes(123_456_789), "123456789");
    }

    #[test]
    fn a_summary_gives_node_usage_and_complete_pods_only() {
        let summary = json!({
            "node": {
                "nodeName": "n1",
                "cpu": {"time": "2026-12-07T10:00:05.123Z", "usageNanoCores": 250000000u64},
                "memory": {"time": "2026-12-07T10:00:05Z", "workingSetBytes": 1048576u64},
            },
            "pods": [
                {
                    "podRef": {"name": "web", "namespace": "default", "uid": "1"},
                    "containers": [{
                        "name": "app",
                        "cpu": {"time": "2026-12-07T10:00:04Z", "usageNanoCores": 1000000u64},
                        "memory": {"time": "2026-12-07T10:00:04Z", "workingSetBytes": 2048u64},
                    }],
                },
                {
                    "podRef": {"name": "new", "namespace": "default"},
                    "containers": [{"name": "app", "cpu": {"time": "2026-12-07T10:00:04Z"}}],
                },
            ],
        });
        let summary = NodeSummary::from_summary(&summary);
        let node = summary.node.unwrap();
        assert_eq!(node.timestamp, "2026-12-07T10:00:05Z");
        assert_eq!(node.to_json(), json!({"cpu": "250m", "memory": "1Mi"}));
        let web = &summary.pods[&("default".to_string(), "web".to_string())];
        assert_eq!(web[0].0, "app");
        assert_eq!(web[0].1.to_json(), json!({"cpu": "1m", "memory": "2Ki"}));
        assert!(!summary
            .pods
            .contains_key(&("default".to_string(), "new".to_string())));
        assert_eq!(
            NodeSummary::from_summary(&json!({})),
            NodeSummary::default()
        );
    }

    #[test]
    fn metrics_objects_carry_the_object_s_name_labels_and_the_sample() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        let usage = Usage {
            nanocores: 5_000_000,
            working_set_bytes: 4096,
            timestamp: "2026-12-07T10:00:00Z".into(),
        };
        let metrics = pod_metrics(&pod, &[("app".into(), usage.clone())]);
        assert_eq!(metrics["kind"], "PodMetrics");
        assert_eq!(metrics["metadata"]["namespace"], "default");
        assert_eq!(metrics["metadata"]["labels"]["app"], "web");
        assert_eq!(metrics["timestamp"], "2026-12-07T10:00:00Z");
        assert_eq!(metrics["window"], WINDOW);
        assert_eq!(
            metrics["containers"],
            json!([{"name": "app", "usage": {"cpu": "5m", "memory": "4Ki"}}])
        );
        let mut node = Node::default();
        node.metadata.name = Some("n1".into());
        assert_eq!(node_metrics(&node, &usage)["usage"]["memory"], "4Ki");
    }
}
