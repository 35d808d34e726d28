//! Capstan's API server: the hub every component talks to.
//!
//! - [`codec`]: how objects sit in the store (JSON, resourceVersion from the mod revision).
//!
//! The registry (typed objects over any `Store`, with admission) and the watch cache are
//! being added; see `ARCHITECTURE.md`.

pub mod codec;
