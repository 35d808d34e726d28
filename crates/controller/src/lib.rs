//! The controller runtime of Capstan: what any component needs to reconcile.
//!
//! This crate is light on purpose (the scheduler, the kubelet and the network components
//! depend on it); the built-in controllers and the controller manager live in
//! `capstan-controllers`.
//!
//! - [`runtime`]: the [`Reconciler`](runtime::Reconciler) SPI and the controller runtime that
//!   drives it from watches (primary, owned and mapped kinds) through a work queue, with
//!   per-key backoff, bounded concurrency, metrics and graceful shutdown; and
//!   [`ManagedController`](runtime::ManagedController), a controller bundled with the
//!   reconciler it runs, which concrete controllers alias instead of wrapping.
//! - [`leader`]: leader election on a `coordination.k8s.io/v1` Lease, with fencing.
//! - [`events`]: the event recorder, writing `core/v1` Events and aggregating repeats.
//! - [`retry`]: [`retry_on_conflict`](retry::retry_on_conflict), client-go's
//!   `RetryOnConflict`: re-read and write again on 409, a bounded number of times.
//! - [`testing`]: fakes for your own tests: a scheduler, a kubelet (which also finishes
//!   graceful Pod deletions), an object-history recorder and an event log.
//!
//! Everything runs against the `Client` and `Watch` traits, so the same controller works in
//! process (over the registry) or in its own process (over the HTTP client).

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod events;
pub mod leader;
pub mod retry;
pub mod runtime;
pub mod testing;
