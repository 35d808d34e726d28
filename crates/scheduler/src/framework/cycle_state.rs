//! Per-cycle state shared between one pod's plugin calls.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::NodeInfo;

/// Data plugins keep for one pod's scheduling cycle, keyed by plugin name (or any key the
/// plugin chooses; by convention `"PreFilter<Plugin>"` and `"PreScore<Plugin>"`, as in
/// kube-scheduler).
///
/// A PreFilter or PreScore plugin writes its precomputed data with `&mut CycleState`; Filter
/// and Score, which run in parallel over nodes, only read it through `&CycleState`, so no lock
/// is taken per node.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<String, Box<dyn Any + Send + Sync>>,
    pub(crate) skip_filter: HashSet<String>,
    pub(crate) skip_score: HashSet<String>,
    nodes_with_affinity_pods: Option<Vec<Arc<NodeInfo>>>,
    nodes_with_required_anti_affinity_pods: Option<Vec<Arc<NodeInfo>>>,
}

impl std::fmt::Debug for CycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CycleState")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("skip_filter", &self.skip_filter)
            .field("skip_score", &self.skip_score)
            .finish()
    }
}

impl CycleState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn write<T: Any + Send + Sync>(&mut self, key: impl Into<String>, value: T) {
        self.data.insert(key.into(), Box::new(value));
    }

    /// The value under `key`, if there is one of type `T`.
    pub fn read<T: Any>(&self, key: &str) -> Option<&T> {
        self.data.get(key).and_then(|v| v.downcast_ref())
    }

    /// The value under `key`, mutably, if there is one of type `T`.
    pub fn read_mut<T: Any>(&mut self, key: &str) -> Option<&mut T> {
        self.data.get_mut(key).and_then(|v| v.downcast_mut())
    }

    /// Removes and returns the value under `key`, if there is one of type `T`.
    pub fn remove<T: Any>(&mut self, key: &str) -> Option<T> {
        match self.data.remove(key)?.downcast::<T>() {
            Ok(v) => Some(*v),
            Err(other) => {
                self.data.insert(key.to_owned(), other);
                None
            }
        }
    }

    /// Records the snapshot's nodes that have pods with affinity terms, and with required
    /// anti-affinity terms (the scheduler does this before PreFilter, so InterPodAffinity
    /// reads those nodes instead of all of them).
    pub fn set_affinity_nodes(
        &mut self,
        with_affinity: Vec<Arc<NodeInfo>>,
        with_required_anti_affinity: Vec<Arc<NodeInfo>>,
    ) {
        self.nodes_with_affinity_pods = Some(with_affinity);
        self.nodes_with_required_anti_affinity_pods = Some(with_required_anti_affinity);
    }

    /// The nodes with pods that have affinity terms, when the scheduler recorded them.
    pub fn nodes_with_affinity_pods(&self) -> Option<&[Arc<NodeInfo>]> {
        self.nodes_with_affinity_pods.as_deref()
    }

    /// The nodes with pods that have required anti-affinity terms, when recorded.
    pub fn nodes_with_required_anti_affinity_pods(&self) -> Option<&[Arc<NodeInfo>]> {
        self.nodes_with_required_anti_affinity_pods.as_deref()
    }

    /// Whether the Filter plugin `plugin` is skipped this cycle (its PreFilter said `Skip`).
    pub fn skips_filter(&self, plugin: &str) -> bool {
        self.skip_filter.contains(plugin)
    }

    /// Whether the Score plugin `plugin` is skipped this cycle (its PreScore said `Skip`).
    pub fn skips_score(&self, plugin: &str) -> bool {
        self.skip_score.contains(plugin)
    }
}
