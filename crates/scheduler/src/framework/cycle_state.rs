//! Per-cycle state shared between one pod's plugin calls.

use std::any::Any;
use std::collections::HashSet;
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
    // A handful of entries, read once per node per plugin: a linear scan beats hashing.
    data: Vec<(String, Box<dyn Any + Send + Sync>)>,
    pub(crate) skip_filter: HashSet<String>,
    pub(crate) skip_score: HashSet<String>,
    /// Per Filter plugin of the framework, in order: whether it runs this cycle (set by
    /// `run_pre_filter`, so Filter does not look names up per node).
    pub(crate) filter_enabled: Vec<bool>,
    nodes_with_affinity_pods: Option<Vec<Arc<NodeInfo>>>,
    nodes_with_required_anti_affinity_pods: Option<Vec<Arc<NodeInfo>>>,
}

impl std::fmt::Debug for CycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CycleState")
            .field(
                "keys",
                &self.data.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
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
        let key = key.into();
        let value: Box<dyn Any + Send + Sync> = Box::new(value);
        match self.data.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.data.push((key, value)),
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.data.iter().position(|(k, _)| k == key)
    }

    /// The value under `key`, if there is one of type `T`.
    pub fn read<T: Any>(&self, key: &str) -> Option<&T> {
        self.data
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.downcast_ref())
    }

    /// The value under `key`, mutably, if there is one of type `T`.
    pub fn read_mut<T: Any>(&mut self, key: &str) -> Option<&mut T> {
        self.data
            .iter_mut()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.downcast_mut())
    }

    /// Removes and returns the value under `key`, if there is one of type `T`.
    pub fn remove<T: Any>(&mut self, key: &str) -> Option<T> {
        let i = self.position(key)?;
        if !self.data[i].1.is::<T>() {
            return None;
        }
        let (_, v) = self.data.swap_remove(i);
        v.downcast::<T>().ok().map(|v| *v)
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
