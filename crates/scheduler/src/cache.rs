//! The scheduler's cache of nodes and pods, with assumed pods, and the per-cycle snapshot.

use capstan_api::kube_core::ResourceExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::framework::{pod_key, NodeInfo};

/// The nodes of one scheduling cycle: shared, immutable `NodeInfo`s.
///
/// Updating a snapshot from the [`Cache`] replaces only the nodes that changed since (one
/// `Arc` each); the `NodeInfo`s of unchanged nodes are shared, not copied.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    nodes: Vec<Arc<NodeInfo>>,
    index: HashMap<String, usize>,
    // Positions of the nodes with pods that have (anti-)affinity terms, and required
    // anti-affinity terms: InterPodAffinity reads only those.
    with_affinity: Vec<usize>,
    with_required_anti_affinity: Vec<usize>,
}

impl Snapshot {
    /// A snapshot of `nodes` (for tests and benchmarks), in the order given.
    pub fn from_nodes(nodes: impl IntoIterator<Item = NodeInfo>) -> Self {
        Snapshot::from_arcs(nodes.into_iter().map(Arc::new).collect())
    }

    /// The nodes with a pod that has pod affinity or anti-affinity terms.
    pub fn nodes_with_affinity_pods(&self) -> Vec<Arc<NodeInfo>> {
        self.with_affinity
            .iter()
            .map(|&i| self.nodes[i].clone())
            .collect()
    }

    /// The nodes with a pod that has required pod anti-affinity terms.
    pub fn nodes_with_required_anti_affinity_pods(&self) -> Vec<Arc<NodeInfo>> {
        self.with_required_anti_affinity
            .iter()
            .map(|&i| self.nodes[i].clone())
            .collect()
    }

    fn index_affinity(&mut self) {
        self.with_affinity.clear();
        self.with_required_anti_affinity.clear();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.pods_with_affinity() > 0 {
                self.with_affinity.push(i);
            }
            if n.pods_with_required_anti_affinity() > 0 {
                self.with_required_anti_affinity.push(i);
            }
        }
    }

    /// Every node, in a stable order (by name).
    pub fn nodes(&self) -> &[Arc<NodeInfo>] {
        &self.nodes
    }

    /// The node named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[derive(Clone, Debug)]
struct PodState {
    node: String,
    assumed: bool,
    binding_finished: bool,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<String, Arc<NodeInfo>>,
    pods: HashMap<String, PodState>,
    dirty: HashSet<String>,
    structure_changed: bool,
}

impl Inner {
    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        self.dirty.insert(name.to_owned());
        let entry = self.nodes.entry(name.to_owned()).or_insert_with(|| {
            // A pod may name a node not seen yet; it shows in snapshots once the Node does.
            Arc::new(NodeInfo::default())
        });
        Arc::make_mut(entry)
    }

    fn drop_if_empty(&mut self, name: &str) {
        if let Some(n) = self.nodes.get(name) {
            if n.node().is_none() && n.pods().is_empty() {
                self.nodes.remove(name);
            }
        }
    }
}

/// Nodes and pods as the scheduler knows them: what informers report, plus the pods it has
/// *assumed* onto a node and is still binding (kube-scheduler's cache).
///
/// An assumed pod counts on its node at once, so the next cycle sees its requests before
/// the bind is written. When the informer reports the pod bound, it is confirmed; when
/// binding fails, [`forget_pod`](Cache::forget_pod) takes it off again.
#[derive(Default)]
pub struct Cache {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("Cache")
            .field("nodes", &inner.nodes.len())
            .field("pods", &inner.pods.len())
            .finish()
    }
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a Node.
    pub fn add_node(&self, node: Arc<Node>) {
        let name = node.name_any();
        let mut inner = self.inner.lock();
        let is_new = inner.nodes.get(&name).is_none_or(|n| n.node().is_none());
        inner.node_mut(&name).set_node(node);
        if is_new {
            inner.structure_changed = true;
        }
    }

    /// Removes a Node; its pods stay counted until they are removed.
    pub fn remove_node(&self, name: &str) {
        let mut inner = self.inner.lock();
        if inner.nodes.contains_key(name) {
            inner.node_mut(name).remove_node();
            inner.drop_if_empty(name);
            inner.structure_changed = true;
        }
    }

    /// Adds or updates a pod the informer reports. A pod without a node is ignored; a pod
    /// that was assumed is confirmed (moved to the node it is really bound to).
    pub fn add_pod(&self, pod: Arc<Pod>) {
        let Some(node) = pod.node_name().map(str::to_owned) else {
            return;
        };
        let key = pod_key(&pod);
        let mut inner = self.inner.lock();
        if let Some(old) = inner.pods.get(&key).cloned() {
            inner.node_mut(&old.node).remove_pod(&key);
            inner.drop_if_empty(&old.node);
        }
        inner.node_mut(&node).add_pod(pod);
        inner.pods.insert(
            key,
            PodState {
                node,
                assumed: false,
                binding_finished: false,
            },
        );
    }

    /// Removes a pod (deleted, or no longer bound).
    pub fn remove_pod(&self, key: &str) {
        let mut inner = self.inner.lock();
        if let Some(old) = inner.pods.remove(key) {
            inner.node_mut(&old.node).remove_pod(key);
            inner.drop_if_empty(&old.node);
        }
    }

    /// Counts `pod` (whose `spec.nodeName` the scheduler has set) on its node before the
    /// bind is written. A pod the cache already has, or one without a node, is an error.
    pub fn assume_pod(&self, pod: Arc<Pod>) -> Result<()> {
        let node = pod
            .node_name()
            .ok_or_else(|| Error::Cache("an assumed pod needs spec.nodeName".into()))?
            .to_owned();
        let key = pod_key(&pod);
        let mut inner = self.inner.lock();
        if inner.pods.contains_key(&key) {
            return Err(Error::Cache(format!("pod {key} is already in the cache")));
        }
        inner.node_mut(&node).add_pod(pod);
        inner.pods.insert(
            key,
            PodState {
                node,
                assumed: true,
                binding_finished: false,
            },
        );
        Ok(())
    }

    /// Records that the bind of an assumed pod was written.
    pub fn finish_binding(&self, key: &str) {
        if let Some(s) = self.inner.lock().pods.get_mut(key) {
            s.binding_finished = true;
        }
    }

    /// Takes an assumed pod off its node (its bind failed). Confirmed pods are kept.
    pub fn forget_pod(&self, key: &str) {
        let mut inner = self.inner.lock();
        if inner.pods.get(key).is_some_and(|s| s.assumed) {
            let old = inner.pods.remove(key).expect("present");
            inner.node_mut(&old.node).remove_pod(key);
            inner.drop_if_empty(&old.node);
        }
    }

    /// Whether `key` is assumed and not yet confirmed by the informer.
    pub fn is_assumed(&self, key: &str) -> bool {
        self.inner.lock().pods.get(key).is_some_and(|s| s.assumed)
    }

    /// The node the cache counts `key` on.
    pub fn pod_node(&self, key: &str) -> Option<String> {
        self.inner.lock().pods.get(key).map(|s| s.node.clone())
    }

    /// How many Nodes the cache knows.
    pub fn node_count(&self) -> usize {
        self.inner
            .lock()
            .nodes
            .values()
            .filter(|n| n.node().is_some())
            .count()
    }

    /// Brings `snapshot` up to date, replacing only the nodes changed since the last update
    /// (a node added or removed rebuilds the order once).
    pub fn update_snapshot(&self, snapshot: &mut Snapshot) {
        let mut inner = self.inner.lock();
        if inner.structure_changed || snapshot.nodes.is_empty() && !inner.nodes.is_empty() {
            let mut nodes: Vec<Arc<NodeInfo>> = inner
                .nodes
                .values()
                .filter(|n| n.node().is_some())
                .cloned()
                .collect();
            nodes.sort_by(|a, b| a.name().cmp(b.name()));
            *snapshot = Snapshot::from_arcs(nodes);
        } else {
            let dirty: Vec<String> = inner.dirty.iter().cloned().collect();
            let mut affinity_moved = false;
            for name in dirty {
                if let (Some(&i), Some(n)) = (snapshot.index.get(&name), inner.nodes.get(&name)) {
                    let old = &snapshot.nodes[i];
                    affinity_moved |= (old.pods_with_affinity() > 0)
                        != (n.pods_with_affinity() > 0)
                        || (old.pods_with_required_anti_affinity() > 0)
                            != (n.pods_with_required_anti_affinity() > 0);
                    snapshot.nodes[i] = n.clone();
                }
            }
            if affinity_moved {
                snapshot.index_affinity();
            }
        }
        inner.dirty.clear();
        inner.structure_changed = false;
    }
}

impl Snapshot {
    fn from_arcs(nodes: Vec<Arc<NodeInfo>>) -> Self {
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name().to_owned(), i))
            .collect();
        let mut snapshot = Snapshot {
            nodes,
            index,
            with_affinity: Vec::new(),
            with_required_anti_affinity: Vec::new(),
        };
        snapshot.index_affinity();
        snapshot
    }
}
