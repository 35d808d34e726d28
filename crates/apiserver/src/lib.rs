//! Capstan's API server: the hub every component talks to.
//!
//! - [`codec`]: how objects sit in the store (JSON, resourceVersion from the mod revision).
//! - [`watch_cache`]: one store watch per resource, fanned out to any number of filtered
//!   watchers, with resume, bookmarks and slow-watcher cut-off.
//!
//! The registry (typed objects over any `Store`, with admission) and the watch cache are
//! being added; see `ARCHITECTURE.md`.

pub mod codec;
pub mod watch_cache;
