//! The watch cache: one store watch per resource, fanned out to any number of watchers.
//!
//! A [`WatchCache`] lists its resource's key prefix once, then follows the store's watch. It
//! keeps the current objects and a window of recent events. Each store event is decoded and
//! re-encoded (with its resourceVersion) **once**, into shared [`Bytes`](bytes::Bytes); watchers receive
//! clones of the same bytes, never copies. A watcher:
//!
//! - filters by namespace, label selector and field selector, and sees Kubernetes'
//!   transitions: an object that starts matching arrives as `Added`, one that stops matching
//!   as `Deleted` (with its previous content at the event's resourceVersion);
//! - starts either from a snapshot (synthetic `Added` events for every current object, as a
//!   watch with resourceVersion "" or "0" does) or after a resourceVersion still inside the
//!   window; an older one gives 410 [`Error::Gone`](capstan_api::Error::Gone), a newer one than the cache has reached
//!   waits a little, then gives 504 [`Error::Timeout`](capstan_api::Error::Timeout) ("Too large resource version");
//! - gets bookmarks every [`WatchCacheOptions::bookmark_interval`] when it asks for them, and an
//!   "initial-events-end" bookmark after its snapshot when it asks for that;
//! - is cut off with 429 [`Error::TooManyRequests`](capstan_api::Error::TooManyRequests) when it falls
//!   [`WatchCacheOptions::watcher_buffer`] events behind, so a slow watcher never grows memory
//!   or stalls the others. It can watch again from the last resourceVersion it saw.
//!
//! When the cache itself loses the store's history (the store compacted past it), it relists
//! and ends every watcher with 410 Gone, as kube-apiserver's cacher does.
//!
//! The module's files:
//!
//! - `events.rs`: what the cache holds and hands out: cached objects, filters, watch requests
//!   and events;
//! - `cache.rs`: the [`WatchCache`] and starting a watch on it;
//! - `mailbox.rs`: a watcher's bounded queue and its [`CacheWatch`] stream;
//! - `sync.rs`: following the store: the initial list, the store watch, relists, bookmarks;
//! - `cached_watch.rs`: [`CachedWatchSource`], the registry's watch source over a cache.

mod cache;
mod cached_watch;
mod events;
mod mailbox;
mod sync;

use std::time::Duration;

pub use cache::WatchCache;
pub use cached_watch::CachedWatchSource;
pub use events::{
    CacheEvent, CacheEventType, CacheWatchRequest, CachedObject, WatchFilter, WatchStart,
};
pub use mailbox::CacheWatch;

/// Tuning of a [`WatchCache`].
#[derive(Debug, Clone)]
pub struct WatchCacheOptions {
    /// How many recent events the cache keeps for watches that resume from a
    /// resourceVersion.
    pub window: usize,
    /// How many undelivered events a watcher may have before it is cut off.
    pub watcher_buffer: usize,
    /// How often watchers that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// How long a watch from a resourceVersion the cache has not reached yet waits.
    pub too_large_wait: Duration,
    /// Keys per page of the cache's initial list.
    pub list_page: usize,
}

impl Default for WatchCacheOptions {
    fn default() -> Self {
        WatchCacheOptions {
            window: 1024,
            watcher_buffer: 1024,
            bookmark_interval: Duration::from_secs(60),
            too_large_wait: Duration::from_secs(3),
            list_page: 10_000,
        }
    }
}

#[cfg(test)]
mod tests;
