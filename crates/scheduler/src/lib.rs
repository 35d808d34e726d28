//! Capstan's scheduler.
//!
//! **Not implemented yet.** This crate reserves its place in the workspace and exports nothing.
//! kube-scheduler's plugin framework (one trait per extension point), the scheduling queue, the
//! node snapshot with its assume cache, and the default plugins arrive with the scheduler
//! issue. `ARCHITECTURE.md` says what the crate will own and what it must not know.
