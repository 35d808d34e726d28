//! kube-scheduler's plugin framework: the SPI ([`interface`]), [`Status`], [`CycleState`],
//! the [`PluginRegistry`] of plugin factories, the [`Profile`] config and the [`Framework`] a
//! profile builds.

mod cycle_state;
pub mod interface;
mod node_info;
mod registry;
pub mod resources;
mod run;
mod status;

use std::collections::HashSet;
use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;

pub use cycle_state::CycleState;
pub use interface::*;
pub(crate) use node_info::controller_of;
pub use node_info::{host_ports, pod_key, HostPort, NodeInfo, PodInfo};
pub use registry::{
    Framework, Plugin, PluginBuilder, PluginConfig, PluginFactory, PluginRegistry, Profile,
    DEFAULT_SCHEDULER_NAME,
};
pub use resources::Resources;
pub use status::{Code, Status};

/// A pod waiting in the scheduling queue.
#[derive(Clone, Debug)]
pub struct QueuedPodInfo {
    /// The pod.
    pub pod: Arc<Pod>,
    /// When it was last added to the queue.
    pub timestamp: Instant,
    /// How many scheduling attempts it has had.
    pub attempts: u32,
    /// When it was first added to the queue.
    pub initial_attempt_timestamp: Instant,
    /// The plugins that rejected it last time (which cluster events may help it).
    pub unschedulable_plugins: HashSet<String>,
}

impl QueuedPodInfo {
    /// A pod queued at `now`, not yet attempted.
    pub fn new(pod: Arc<Pod>, now: Instant) -> Self {
        QueuedPodInfo {
            pod,
            timestamp: now,
            attempts: 0,
            initial_attempt_timestamp: now,
            unschedulable_plugins: HashSet::new(),
        }
    }

    /// `spec.priority`, 0 when unset.
    pub fn priority(&self) -> i32 {
        self.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
    }
}
