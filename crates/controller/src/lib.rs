//! Controllers for Capstan.
//!
//! **Not implemented yet.** This crate reserves its place in the workspace and exports nothing.
//! The `Reconciler` SPI, the controller runtime with leader election on a Lease, the event
//! recorder and the built-in controllers (ReplicaSet, Deployment, garbage collector, node
//! lifecycle, endpoints, DaemonSet, Job) arrive with the controllers issue. `ARCHITECTURE.md`
//! says what the crate will own and what it must not know.
