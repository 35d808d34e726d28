//! The built-in controllers of Capstan, each faithful to kube-controller-manager's, the
//! helpers they share, and the controller manager that runs them by name.
//!
//! - [`replicaset`]: slow-start batches, expectations, deletion ranking, adoption and
//!   release, status, events.
//! - [`deployment`]: ReplicaSets per template hash, Recreate and RollingUpdate, rollback,
//!   pause, proportional scaling, revision history, conditions.
//! - [`garbage_collector`]: cascading deletion by ownerReferences (background, foreground,
//!   orphan).
//! - [`node_lifecycle`]: node health from Leases, NotReady/Unknown taints and taint-based
//!   eviction.
//! - [`endpoints`]: Endpoints and EndpointSlices from the ready Pods a Service selects.
//! - [`daemonset`]: one Pod per eligible Node (selectors, affinity, taints), rolling update.
//! - [`job`]: parallelism, completions, tracking finalizers, backoff, deadline.
//! - [`disruption`]: PodDisruptionBudget status (healthy, desired and expected Pods,
//!   disruptions allowed) for the API server's eviction subresource.
//! - [`util`]: what Kubernetes keeps in `controller_utils.go`: expectations, the Pod
//!   deletion ranking, controller references and the Pod built from a template, slow-start
//!   batches.
//! - [`context`]: the [`ControllerContext`](context::ControllerContext) every controller is
//!   built from and the [`BuiltinController`](context::BuiltinController) trait (a
//!   controller's Kubernetes `NAME`, its aliases, its constructor from a context).
//! - [`manager`]: the controller manager: the built-in controllers and yours, registered by
//!   name, selected with kube-controller-manager's `--controllers` list, run together against
//!   any `Client`, by one replica at a time under leader election.
//!
//! Each Reconciler-based controller is a type alias of capstan-controller's generic
//! [`ManagedController`](capstan_controller::runtime::ManagedController) (e.g.
//! [`ReplicaSetController`](replicaset::ReplicaSetController)), built by its module's
//! `controller(client, factory, recorder)` function or, in the manager,
//! [`BuiltinController::from_context`](context::BuiltinController::from_context).
//!
//! They are written on `capstan-controller` (the `Reconciler` runtime, the event recorder,
//! leader election), and run against the `Client` and `Watch` traits, so the same controller
//! works in process (over the registry) or in its own process (over the HTTP client).

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod context;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod garbage_collector;
pub mod job;
pub mod manager;
pub mod namespace;
pub mod node_lifecycle;
pub mod replicaset;
pub mod serviceaccount;
pub mod util;
