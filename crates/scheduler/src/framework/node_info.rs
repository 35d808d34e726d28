//! One node as plugins see it during a cycle.

use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};

/// A node and the pods on it (bound or assumed), as read by Filter and Score.
///
/// Snapshots share `NodeInfo`s through `Arc`: a change copies only the node it touches, and
/// bumps its `generation`.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    node: Option<Arc<Node>>,
    pods: Vec<Arc<Pod>>,
    generation: u64,
}

impl NodeInfo {
    /// A `NodeInfo` for `node`, without pods.
    pub fn new(node: Arc<Node>) -> Self {
        NodeInfo {
            node: Some(node),
            pods: Vec::new(),
            generation: 0,
        }
    }

    /// The Node object; `None` while only pods naming it are known.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_deref()
    }

    /// The node's name (empty when the Node is not known).
    pub fn name(&self) -> &str {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.name.as_deref())
            .unwrap_or("")
    }

    /// The pods on the node, bound or assumed.
    pub fn pods(&self) -> &[Arc<Pod>] {
        &self.pods
    }

    /// Moves on at every change of this node or its pods.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Replaces the Node object.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.node = Some(node);
        self.generation += 1;
    }

    /// Adds a pod.
    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        self.pods.push(pod);
        self.generation += 1;
    }
}
