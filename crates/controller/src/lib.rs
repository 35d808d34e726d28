//! Controllers for Capstan: they turn desired state into actual state.
//!
//! The machinery:
//!
//! - [`runtime`]: the [`Reconciler`](runtime::Reconciler) SPI and the controller runtime that
//!   drives it from watches (primary, owned and mapped kinds) through a work queue, with
//!   per-key backoff, bounded concurrency, metrics and graceful shutdown.
//! - [`leader`]: leader election on a `coordination.k8s.io/v1` Lease, with fencing.
//! - [`events`]: the event recorder, writing `core/v1` Events and aggregating repeats.
//! - [`manager`]: the controller manager: the built-in controllers and yours, run together
//!   against any `Client`, by one replica at a time under leader election.
//! - [`testing`]: fakes for your own tests: a scheduler, a kubelet (which also finishes
//!   graceful Pod deletions) and an object-history recorder.
//! - [`util`]: [`retry_on_conflict`](util::retry_on_conflict), client-go's
//!   `RetryOnConflict`: re-read and write again on 409, a bounded number of times.
//!
//! The built-in controllers, each faithful to kube-controller-manager's:
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
//!
//! Everything runs against the `Client` and `Watch` traits, so the same controller works in
//! process (over the registry) or in its own process (over the HTTP client).

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod garbage_collector;
pub mod job;
pub mod leader;
pub mod manager;
pub mod node_lifecycle;
pub mod replicaset;
pub mod runtime;
pub mod testing;
pub mod util;
