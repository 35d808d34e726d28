//! Capstan's scheduler: kube-scheduler's plugin framework in Rust.
//!
//! - [`framework`]: the plugin SPI, one small trait per extension point (PreEnqueue,
//!   QueueSort, PreFilter, Filter, PostFilter, PreScore, Score with NormalizeScore,
//!   Reserve/Unreserve, Permit, PreBind, Bind, PostBind), the [`Status`](framework::Status)
//!   outcome kept apart from `Err`, the per-cycle [`CycleState`](framework::CycleState), the
//!   [`PluginRegistry`](framework::PluginRegistry) of plugin factories that users extend with their own
//!   plugins, and the [`Profile`](framework::Profile) config that enables plugins with
//!   weights and arguments.
//!
//! Filter and Score are synchronous `fn`s over a borrowed [`NodeInfo`](framework::NodeInfo):
//! they run per node per pod, in parallel. The binding cycle (PreBind, Bind, PostBind,
//! PostFilter) is async.
//!
//! - [`cache`]: nodes and pods with assumed pods, and copy-on-write per-cycle snapshots.
//! - [`schedule`]: one pod's algorithm (PreFilter, parallel Filter over Kubernetes' adaptive
//!   share of nodes, weighted Score, random tie-break) and Kubernetes' FailedScheduling
//!   message.
//! - [`queue`]: activeQ, backoffQ (1 s to 10 s) and the unschedulable set.
//! - [`plugins`]: the default plugins (PodTopologySpread, InterPodAffinity and
//!   DefaultPreemption among them), [`default_registry`](plugins::default_registry) and
//!   [`default_profile`](plugins::default_profile).
//!
//! - [`Scheduler`]: Pod and Node informers feed the cache and the queue (unbound pods whose
//!   `spec.schedulerName` is the profile's, `default-scheduler` by default); one loop
//!   schedules a pod at a time, assumes it onto its node and binds it on its own task through
//!   [`DefaultBinder`] (a merge patch of `spec.nodeName` conditional on the pod's
//!   `resourceVersion`, as the API has no `pods/binding` subresource), recording `Scheduled`
//!   or `FailedScheduling` Events with capstan-controller's recorder.
//!
//! - [`config`]: kube-scheduler's configuration file (`KubeSchedulerConfiguration` v1):
//!   strict decoding, kube-scheduler's defaults and validation messages, and one framework
//!   per profile built through a [`PluginRegistry`](framework::PluginRegistry), so
//!   [`Scheduler::from_config`] serves several profiles with the user's own plugins too.
//! - [`waiting`]: pods held at Permit, allowed or rejected later by their plugins.
//! - [`metrics`]: attempt and algorithm latency percentiles.
//!
//! When no node fits, the PostFilter plugin `DefaultPreemption` evicts lower-priority pods
//! from one node and nominates it; failures set the pod's `PodScheduled=False` condition.
//! [`Scheduler::run_leading`] runs a fresh scheduler per leadership term.
//! `ARCHITECTURE.md` says what this crate owns and what it must not know.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cache;
pub mod config;
pub mod error;
pub mod framework;
pub mod metrics;
pub mod plugins;
pub mod queue;
pub mod schedule;
mod scheduler;
pub mod waiting;

pub use scheduler::{
    default_framework, in_tree_registry, DefaultBinder, Scheduler, DEFAULT_BINDER,
};

pub use capstan_api::k8s_openapi;
pub use error::{Error, Result};
