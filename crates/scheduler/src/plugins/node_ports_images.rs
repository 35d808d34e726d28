//! NodePorts and ImageLocality.

use std::collections::HashMap;
use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    host_ports, CycleState, FilterPlugin, HostPort, NodeInfo, PreScorePlugin, SchedulerPlugin,
    ScorePlugin, Status, MAX_NODE_SCORE,
};

/// NodePorts' rejection reason.
pub const ERR_REASON_NODE_PORTS: &str =
    "node(s) didn't have free ports for the requested pod ports";

/// Rejects nodes where a host port the pod asks for is taken (same protocol and port, and the
/// same host IP or either one `0.0.0.0`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NodePorts;

fn conflicts(a: &HostPort, b: &HostPort) -> bool {
    a.1 == b.1 && a.2 == b.2 && (a.0 == b.0 || a.0 == "0.0.0.0" || b.0 == "0.0.0.0")
}

impl SchedulerPlugin for NodePorts {
    fn name(&self) -> &str {
        super::NODE_PORTS
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let used = node.used_ports();
        if used.is_empty() {
            return Status::success();
        }
        for want in host_ports(pod) {
            if used.iter().any(|u| conflicts(u, &want)) {
                return Status::unschedulable(ERR_REASON_NODE_PORTS);
            }
        }
        Status::success()
    }
}

/// Below this many bytes of images present, ImageLocality scores 0 (23 MB).
const MIN_THRESHOLD: i64 = 23 * 1024 * 1024;
/// Per container, the image bytes at which ImageLocality scores 100 (1000 MB).
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * 1024 * 1024;
const STATE_KEY: &str = "PreScoreImageLocality";

/// Prefers nodes that already have the pod's images, weighted by image size and by how
/// widely the image is spread over the candidate nodes (to avoid piling pods on the one node
/// that has it). Kubernetes counts the spread over all nodes; this counts it over the nodes
/// PreScore is given.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImageLocality;

/// `nginx` → `nginx:latest`; names with a tag or digest are kept.
pub fn normalized_image_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

fn images(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| c.image.as_deref())
        .map(normalized_image_name)
        .collect()
}

impl SchedulerPlugin for ImageLocality {
    fn name(&self) -> &str {
        super::IMAGE_LOCALITY
    }
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(&self, state: &mut CycleState, pod: &Pod, nodes: &[Arc<NodeInfo>]) -> Status {
        let images = images(pod);
        if images.is_empty() || nodes.is_empty() {
            return Status::skip();
        }
        let mut spread: HashMap<String, usize> = HashMap::new();
        for image in &images {
            let n = nodes
                .iter()
                .filter(|n| n.image_sizes().contains_key(image))
                .count();
            spread.insert(image.clone(), n);
        }
        state.write(STATE_KEY, (spread, nodes.len(), images));
        Status::success()
    }
}

type ImageState = (HashMap<String, usize>, usize, Vec<String>);

impl ScorePlugin for ImageLocality {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some((spread, total, images)) = state.read::<ImageState>(STATE_KEY) else {
            return Ok(0);
        };
        let mut sum: i64 = 0;
        for image in images {
            if let Some(size) = node.image_sizes().get(image) {
                let n = spread.get(image).copied().unwrap_or(0) as i64;
                sum += size * n / (*total).max(1) as i64;
            }
        }
        let containers = pod.spec.as_ref().map_or(1, |s| s.containers.len().max(1)) as i64;
        let max = MAX_CONTAINER_THRESHOLD * containers;
        let sum = sum.clamp(MIN_THRESHOLD, max);
        Ok(MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD))
    }
}
