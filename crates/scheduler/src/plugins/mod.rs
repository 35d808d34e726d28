//! The default plugins, with Kubernetes' names, semantics and Score weights.
//!
//! | plugin | extension points | weight |
//! |---|---|---|
//! | `PrioritySort` | QueueSort | |
//! | `NodeUnschedulable` | Filter | |
//! | `NodeName` | Filter | |
//! | `TaintToleration` | Filter, Score | 3 |
//! | `NodeAffinity` | Filter, PreScore, Score | 2 |
//! | `NodePorts` | Filter | |
//! | `NodeResourcesFit` | PreFilter, Filter, Score (LeastAllocated) | 1 |
//! | `NodeResourcesBalancedAllocation` | Score | 1 |
//! | `ImageLocality` | PreScore, Score | 1 |
//! | `PodTopologySpread` | PreFilter, Filter, PreScore, Score | 2 |
//! | `InterPodAffinity` | PreFilter, Filter, PreScore, Score | 2 |
//! | `DefaultPreemption` | PostFilter (needs a `Client`: [`DefaultPreemption::registry`]) | |
//!
//! Three take arguments, kube-scheduler's: `PodTopologySpreadArgs` (`defaultingType`,
//! `defaultConstraints`, read by [`PodTopologySpread::from_args`]), `InterPodAffinityArgs`
//! (`hardPodAffinityWeight`, `ignorePreferredTermsOfExistingPods`:
//! [`InterPodAffinity::from_args`]) and `DefaultPreemptionArgs`
//! (`minCandidateNodesPercentage`, `minCandidateNodesAbsolute`:
//! [`DefaultPreemption::registry`]). The others ignore theirs;
//! [`config`](crate::config) checks them.

use std::sync::Arc;

use crate::framework::{Plugin, PluginConfig, PluginRegistry, Profile, DEFAULT_SCHEDULER_NAME};

mod default_preemption;
pub(crate) mod helpers;
mod inter_pod_affinity;
mod node_affinity;
mod node_basic;
mod node_ports_images;
mod node_resources;
mod pod_topology_spread;
mod taint_toleration;

pub use default_preemption::{
    eligible as eligible_to_preempt, find_candidates, find_candidates_among, more_important,
    pick_candidate, priority, select_victims_on_node, Candidate, DefaultPreemption,
    MIN_CANDIDATE_NODES_ABSOLUTE, MIN_CANDIDATE_NODES_PERCENTAGE,
};
pub use inter_pod_affinity::{
    InterPodAffinity, ERR_REASON_AFFINITY, ERR_REASON_ANTI_AFFINITY,
    ERR_REASON_EXISTING_ANTI_AFFINITY, HARD_POD_AFFINITY_WEIGHT,
};
pub use node_affinity::{NodeAffinity, ERR_REASON_POD};
pub use node_basic::{
    NodeName, NodeUnschedulable, PrioritySort, ERR_REASON_NODE_NAME, ERR_REASON_UNSCHEDULABLE,
};
pub use node_ports_images::{
    normalized_image_name, ImageLocality, NodePorts, ERR_REASON_NODE_PORTS,
};
pub use node_resources::{
    fits_resources, insufficient_resources, BalancedAllocation, NodeResourcesFit,
};
pub use pod_topology_spread::{
    PodTopologySpread, ERR_REASON_CONSTRAINTS_NOT_MATCH, ERR_REASON_NODE_LABEL_NOT_MATCH,
};
pub use taint_toleration::TaintToleration;

/// `PrioritySort`.
pub const PRIORITY_SORT: &str = "PrioritySort";
/// `NodeUnschedulable`.
pub const NODE_UNSCHEDULABLE: &str = "NodeUnschedulable";
/// `NodeName`.
pub const NODE_NAME: &str = "NodeName";
/// `TaintToleration`.
pub const TAINT_TOLERATION: &str = "TaintToleration";
/// `NodeAffinity`.
pub const NODE_AFFINITY: &str = "NodeAffinity";
/// `NodeResourcesFit`.
pub const NODE_RESOURCES_FIT: &str = "NodeResourcesFit";
/// `NodePorts`.
pub const NODE_PORTS: &str = "NodePorts";
/// `ImageLocality`.
pub const IMAGE_LOCALITY: &str = "ImageLocality";
/// `NodeResourcesBalancedAllocation`.
pub const NODE_RESOURCES_BALANCED_ALLOCATION: &str = "NodeResourcesBalancedAllocation";
/// `PodTopologySpread`.
pub const POD_TOPOLOGY_SPREAD: &str = "PodTopologySpread";
/// `InterPodAffinity`.
pub const INTER_POD_AFFINITY: &str = "InterPodAffinity";
/// `DefaultPreemption`.
pub const DEFAULT_PREEMPTION: &str = "DefaultPreemption";

/// A registry with every default plugin but the binder and preemption (which need a
/// `Client`).
pub fn default_registry() -> PluginRegistry {
    let mut r = PluginRegistry::new();
    type Build = fn() -> Plugin;
    let entries: [(&str, Build); 9] = [
        (PRIORITY_SORT, || {
            Plugin::builder(Arc::new(PrioritySort)).queue_sort().build()
        }),
        (NODE_UNSCHEDULABLE, || {
            Plugin::builder(Arc::new(NodeUnschedulable))
                .filter()
                .build()
        }),
        (NODE_NAME, || {
            Plugin::builder(Arc::new(NodeName)).filter().build()
        }),
        (TAINT_TOLERATION, || {
            Plugin::builder(Arc::new(TaintToleration))
                .filter()
                .score()
                .build()
        }),
        (NODE_AFFINITY, || {
            Plugin::builder(Arc::new(NodeAffinity))
                .filter()
                .pre_score()
                .score()
                .build()
        }),
        (NODE_RESOURCES_FIT, || {
            Plugin::builder(Arc::new(NodeResourcesFit))
                .pre_filter()
                .filter()
                .score()
                .build()
        }),
        (NODE_RESOURCES_BALANCED_ALLOCATION, || {
            Plugin::builder(Arc::new(BalancedAllocation))
                .score()
                .build()
        }),
        (NODE_PORTS, || {
            Plugin::builder(Arc::new(NodePorts)).filter().build()
        }),
        (IMAGE_LOCALITY, || {
            Plugin::builder(Arc::new(ImageLocality))
                .pre_score()
                .score()
                .build()
        }),
    ];
    for (name, build) in entries {
        r.register(name, move |_| Ok(build()))
            .expect("default plugin names are unique");
    }
    r.register(INTER_POD_AFFINITY, |args| {
        Ok(filter_and_score(InterPodAffinity::from_args(args)?))
    })
    .expect("default plugin names are unique");
    r.register(POD_TOPOLOGY_SPREAD, |args| {
        Ok(filter_and_score(PodTopologySpread::from_args(args)?))
    })
    .expect("default plugin names are unique");
    r
}

/// A plugin at PreFilter, Filter, PreScore and Score (InterPodAffinity, PodTopologySpread).
fn filter_and_score<P>(plugin: P) -> Plugin
where
    P: crate::framework::PreFilterPlugin
        + crate::framework::FilterPlugin
        + crate::framework::PreScorePlugin
        + crate::framework::ScorePlugin,
{
    Plugin::builder(Arc::new(plugin))
        .pre_filter()
        .filter()
        .pre_score()
        .score()
        .build()
}

/// The default profile (`default-scheduler`): the default plugins in kube-scheduler's order
/// with its Score weights.
pub fn default_profile() -> Profile {
    [
        (PRIORITY_SORT, 0),
        (NODE_UNSCHEDULABLE, 0),
        (NODE_NAME, 0),
        (TAINT_TOLERATION, 3),
        (NODE_AFFINITY, 2),
        (NODE_PORTS, 0),
        (NODE_RESOURCES_FIT, 1),
        (POD_TOPOLOGY_SPREAD, 2),
        (INTER_POD_AFFINITY, 2),
        (NODE_RESOURCES_BALANCED_ALLOCATION, 1),
        (IMAGE_LOCALITY, 1),
    ]
    .into_iter()
    .fold(Profile::new(DEFAULT_SCHEDULER_NAME), |p, (name, w)| {
        p.with_plugin(PluginConfig::new(name).weight(w))
    })
}
