//! The reflector: keeps a [`Cache`] equal to what a [`Watch`] source holds.
//!
//! It lists (in pages), then watches from the list's resourceVersion. A stream that ends or
//! fails is resumed from the last resourceVersion seen, after an exponential backoff with
//! jitter ([`Backoff`]: 0.8 s to 30 s, reset after a quiet period). A 410 Gone (or Expired)
//! means the source's history is gone: the reflector lists again, and the cache ends equal to
//! a fresh list.
//!
//! An object that does not decode as `K` (stored by an older server, a custom kind whose
//! schema changed, a bug) never stops the reflector: the source is read through
//! [`Watch::list_decoded`] and [`Watch::watch_decoded`], and such an object is logged (a
//! `warn` with the kind, its namespace/name and the serde error), counted in
//! `capstan_informer_decode_errors_total` ([`InformerMetrics`]) and treated as absent: a
//! cached copy of it is removed (handlers see it deleted), and a later version that decodes
//! is added again. Every other object stays correct.
//!
//! A relist never holds two full copies of the data: each page is applied as it arrives
//! (objects whose resourceVersion did not change keep their cached `Arc`), only the keys
//! seen are remembered, and at the end the objects not seen are deleted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::kube_core::params::{ListParams, WatchParams};
use capstan_api::kube_core::WatchEvent;
use capstan_api::{Error, Resource};
use futures::StreamExt;

use crate::backoff::Backoff;
use crate::cache::{Cache, ObjectKey};
use crate::metrics::InformerMetrics;
use crate::{Undecodable, Watch};

/// How a reflector lists and watches.
#[derive(Debug, Clone)]
pub struct ReflectorOptions {
    /// Objects per list page (0: no paging).
    pub page_size: u32,
    /// Only objects with these labels (the Kubernetes string form).
    pub label_selector: Option<String>,
    /// Only objects with these fields (the Kubernetes string form).
    pub field_selector: Option<String>,
    /// How long the source may hold one watch open before ending it.
    pub watch_timeout: Duration,
    /// The backoff between failed attempts.
    pub backoff: Backoff,
}

impl Default for ReflectorOptions {
    fn default() -> Self {
        ReflectorOptions {
            page_size: 500,
            label_selector: None,
            field_selector: None,
            watch_timeout: Duration::from_secs(290),
            backoff: Backoff::default(),
        }
    }
}

/// Keeps a cache in step with a source. Build one, then [`run`](Reflector::run) it (usually
/// through a [`crate::SharedInformer`]).
pub struct Reflector<K: Resource> {
    source: Arc<dyn Watch<K>>,
    cache: Cache<K>,
    options: ReflectorOptions,
}

impl<K: Resource> Reflector<K> {
    /// A reflector filling `cache` from `source`.
    pub fn new(source: Arc<dyn Watch<K>>, cache: Cache<K>, options: ReflectorOptions) -> Self {
        Reflector {
            source,
            cache,
            options,
        }
    }

    /// Lists and watches until the future is dropped. Never returns on its own: every error
    /// is retried after the backoff, and Gone leads to a relist.
    pub async fn run(mut self) {
        let mut needs_list = true;
        loop {
            if needs_list {
                match self.list().await {
                    Ok(()) => needs_list = false,
                    Err(e) => {
                        let delay = self.options.backoff.next_delay();
                        tracing::warn!(
                            kind = K::kind(&()).as_ref(),
                            "list failed, retrying in {delay:?}: {e}"
                        );
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            match self.watch().await {
                Ok(0) => {
                    // A stream that ends without a single event would make us spin.
                    let delay = self.options.backoff.next_delay();
                    tokio::time::sleep(delay).await;
                }
                Ok(_) => {}
                Err(e) if e.is_gone() => {
                    tracing::info!(
                        kind = K::kind(&()).as_ref(),
                        "watch history gone, relisting: {e}"
                    );
                    needs_list = true;
                }
                Err(e) => {
                    let delay = self.options.backoff.next_delay();
                    tracing::warn!(
                        kind = K::kind(&()).as_ref(),
                        "watch failed, resuming in {delay:?}: {e}"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Lists every page into the cache; objects the list no longer has are deleted.
    async fn list(&mut self) -> Result<(), Error> {
        let mut seen = HashSet::new();
        let mut params = ListParams {
            label_selector: self.options.label_selector.clone(),
            field_selector: self.options.field_selector.clone(),
            ..Default::default()
        };
        if self.options.page_size > 0 {
            params.limit = Some(self.options.page_size);
        }
        let resource_version = loop {
            let page = self.source.list_decoded(&params).await?;
            for item in page.items {
                match item {
                    Ok(object) => {
                        seen.insert(ObjectKey::of(&object));
                        self.cache.upsert(object);
                    }
                    // Not marked seen: a cached copy of it is removed below.
                    Err(undecodable) => skip_undecodable::<K>(&undecodable, "LIST"),
                }
            }
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params.continue_token = Some(token),
                None => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        for key in self.cache.keys() {
            if !seen.contains(&key) {
                self.cache.remove(&key, None);
            }
        }
        self.cache.set_resource_version(resource_version);
        self.cache.mark_synced();
        Ok(())
    }

    /// Watches from the cache's resourceVersion until the stream ends (`Ok` with the number
    /// of events seen) or fails.
    async fn watch(&mut self) -> Result<usize, Error> {
        let mut params = WatchParams {
            label_selector: self.options.label_selector.clone(),
            field_selector: self.options.field_selector.clone(),
            bookmarks: true,
            ..Default::default()
        };
        params.timeout = Some(self.options.watch_timeout.as_secs().max(1) as u32);
        let mut events = self
            .source
            .watch_decoded(&params, &self.cache.resource_version())
            .await?;
        let mut seen = 0;
        while let Some(event) = events.next().await {
            seen += 1;
            let resource_version = match event? {
                WatchEvent::Added(Ok(object)) | WatchEvent::Modified(Ok(object)) => {
                    let resource_version = object.meta().resource_version.clone();
                    self.cache.upsert(object);
                    resource_version
                }
                WatchEvent::Deleted(Ok(object)) => {
                    let resource_version = object.meta().resource_version.clone();
                    self.cache.remove(&ObjectKey::of(&object), Some(object));
                    resource_version
                }
                // The object exists but cannot be read as `K`: whatever copy the cache holds
                // is stale, so it goes (handlers see it deleted); a later version that
                // decodes comes back as added.
                WatchEvent::Added(Err(undecodable))
                | WatchEvent::Modified(Err(undecodable))
                | WatchEvent::Deleted(Err(undecodable)) => {
                    skip_undecodable::<K>(&undecodable, "WATCH");
                    let key = ObjectKey {
                        namespace: undecodable.namespace.clone(),
                        name: undecodable.name.clone(),
                    };
                    self.cache.remove(&key, None);
                    undecodable.resource_version
                }
                WatchEvent::Bookmark(bookmark) => Some(bookmark.metadata.resource_version),
                WatchEvent::Error(status) => return Err(Error::from_status(*status)),
            };
            if let Some(resource_version) = resource_version.filter(|rv| !rv.is_empty()) {
                self.cache.set_resource_version(resource_version);
            }
        }
        Ok(seen)
    }
}

/// Logs and counts an object the source sent that does not decode as `K`.
fn skip_undecodable<K: Resource>(undecodable: &Undecodable, verb: &str) {
    let resource = K::info().qualified_resource();
    InformerMetrics::count_decode_error(&resource);
    let object = match &undecodable.namespace {
        Some(namespace) => format!("{namespace}/{}", undecodable.name),
        None => undecodable.name.clone(),
    };
    tracing::warn!(
        kind = K::kind(&()).as_ref(),
        %resource,
        %object,
        verb,
        error = %undecodable.error,
        "skipping an object that does not decode; it is treated as absent"
    );
}
