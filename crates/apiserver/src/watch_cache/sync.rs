//! Following the store: the initial list, the store watch (relisting when the store's history
//! is gone), applying each change, and bookmarks.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use capstan_api::{Error, ResourceInfo};
use capstan_store::{Event, EventKind, Range, Revision, Store, WatchRequest};
use capstan_watch::backoff::ExponentialDelay;
use futures::StreamExt;
use serde_json::Value;

use super::cache::{Shared, State};
use super::events::{CacheEvent, CacheEventType, CachedObject, StoredChange};
use crate::codec;
use crate::registry::storage::store_error;

pub(super) fn bookmark(
    resource: &ResourceInfo,
    revision: Revision,
    initial_events_end: bool,
) -> CacheEvent {
    let mut metadata = serde_json::json!({ "resourceVersion": codec::resource_version(revision) });
    if initial_events_end {
        metadata["annotations"] = serde_json::json!({ "k8s.io/initial-events-end": "true" });
    }
    let object = serde_json::json!({
        "apiVersion": resource.api_version(),
        "kind": resource.kind(),
        "metadata": metadata,
    });
    CacheEvent {
        kind: CacheEventType::Bookmark,
        revision,
        object: Bytes::from(crate::protobuf::struct_order::to_vec(&object)),
    }
}

pub(super) type Objects = BTreeMap<Bytes, Arc<CachedObject>>;

/// Lists `prefix` page by page at one revision.
pub(super) async fn list(
    store: &dyn Store,
    resource: &ResourceInfo,
    prefix: &Bytes,
    at: Option<Revision>,
    page: usize,
) -> Result<(Objects, Revision), Error> {
    let mut objects = BTreeMap::new();
    let mut range = Range::prefix(prefix.clone()).limit(page);
    if let Some(at) = at {
        range = range.at_revision(at);
    }
    let mut revision = at;
    loop {
        if let Some(revision) = revision {
            range = range.at_revision(revision);
        }
        let response = store
            .range(range.clone())
            .await
            .map_err(|e| store_error(e, resource, ""))?;
        revision = Some(response.revision);
        for kv in &response.kvs {
            match serde_json::from_slice::<Value>(&kv.value) {
                Ok(object) => {
                    let object =
                        CachedObject::new(resource, kv.key.clone(), object, kv.mod_revision);
                    objects.insert(kv.key.clone(), Arc::new(object));
                }
                Err(e) => {
                    tracing::warn!(key = ?kv.key, "watch cache skips an undecodable object: {e}")
                }
            }
        }
        match (response.more, response.kvs.last()) {
            (true, Some(last)) => range = range.start_after(&last.key),
            _ => return Ok((objects, response.revision)),
        }
    }
}

/// The cache's task: follows the store's watch, relisting when the store's history is gone.
pub(super) async fn follow(shared: Weak<Shared>, store: Arc<dyn Store>, prefix: Bytes) {
    // Store-watch retries wait 100 ms doubling to 10 s; the count resets on every event.
    let backoff = ExponentialDelay::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut failures = 0_u32;
    let mut bookmarks = {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        tokio::time::interval(shared.options.bookmark_interval)
    };
    bookmarks.tick().await;
    loop {
        let Some(from) = shared.upgrade().map(|s| s.state.lock().revision + 1) else {
            return;
        };
        let request = WatchRequest::prefix(prefix.clone())
            .from_revision(from)
            .with_prev_kv()
            .with_progress_notify();
        let mut events = match store.watch(request).await {
            Ok(events) => events,
            Err(capstan_store::Error::Compacted { .. }) => {
                if !relist(&shared, &*store, &prefix).await {
                    tokio::time::sleep(backoff.delay(failures)).await;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!("watch cache cannot watch the store, retrying: {e}");
                tokio::time::sleep(backoff.delay(failures)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        loop {
            tokio::select! {
                item = events.next() => match item {
                    Some(Ok(event)) => {
                        failures = 0;
                        let Some(shared) = shared.upgrade() else { return };
                        apply(&shared, event);
                    }
                    Some(Err(capstan_store::Error::Compacted { .. })) => {
                        relist(&shared, &*store, &prefix).await;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::warn!("watch cache lost the store watch, resuming: {e}");
                        tokio::time::sleep(backoff.delay(failures)).await;
                        break;
                    }
                    None => break,
                },
                _ = bookmarks.tick() => {
                    let Some(shared) = shared.upgrade() else { return };
                    send_bookmarks(&shared);
                }
            }
        }
    }
}

/// Rebuilds the cache from a fresh list and ends every watcher with 410 Gone. Returns
/// whether the list succeeded.
pub(super) async fn relist(shared: &Weak<Shared>, store: &dyn Store, prefix: &Bytes) -> bool {
    let Some(strong) = shared.upgrade() else {
        return false;
    };
    let page = strong.options.list_page;
    let listed = list(store, &strong.resource, prefix, None, page).await;
    let (objects, revision) = match listed {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!("watch cache cannot relist: {e}");
            return false;
        }
    };
    let mut state = strong.state.lock();
    state.objects = objects;
    state.window.clear();
    state.revision = revision;
    state.oldest = revision;
    for (_, slot) in state.watchers.drain() {
        slot.mailbox.fail(Error::Gone {
            message: "the watch cache was reinitialized; list again, then watch".into(),
        });
    }
    strong.reached.send_replace(revision);
    true
}

pub(super) fn apply(shared: &Shared, event: Event) {
    let resource = &shared.resource;
    let mut state = shared.state.lock();
    let revision = event.revision();
    if revision <= state.revision && event.kind != EventKind::Progress {
        return;
    }
    let change = match event.kind {
        EventKind::Progress => None,
        EventKind::Put => match serde_json::from_slice::<Value>(&event.kv.value) {
            Ok(object) => {
                let object = Arc::new(CachedObject::new(
                    resource,
                    event.kv.key.clone(),
                    object,
                    revision,
                ));
                let prev = state.objects.insert(event.kv.key.clone(), object.clone());
                Some(StoredChange {
                    revision,
                    object,
                    prev,
                    deleted: false,
                    prev_at_change: OnceLock::new(),
                })
            }
            Err(e) => {
                tracing::warn!(key = ?event.kv.key, "watch cache skips an undecodable object: {e}");
                None
            }
        },
        EventKind::Delete => state.objects.remove(&event.kv.key).and_then(|prev| {
            let object = Arc::new(prev.at_revision(resource, revision)?);
            Some(StoredChange {
                revision,
                object,
                prev: Some(prev),
                deleted: true,
                prev_at_change: OnceLock::new(),
            })
        }),
    };
    state.revision = state.revision.max(revision);
    if let Some(change) = change {
        let change = Arc::new(change);
        dispatch(resource, &mut state, &change);
        state.window.push_back(change);
        while state.window.len() > shared.options.window {
            if let Some(evicted) = state.window.pop_front() {
                state.oldest = evicted.revision;
            }
        }
    }
    let reached = state.revision;
    drop(state);
    shared.reached.send_if_modified(|current| {
        let moved = *current < reached;
        *current = reached.max(*current);
        moved
    });
}

/// Hands `change` to every watcher it concerns; cuts off the ones that cannot keep up.
pub(super) fn dispatch(resource: &ResourceInfo, state: &mut State, change: &StoredChange) {
    state
        .watchers
        .retain(|_, slot| match change.for_watcher(resource, &slot.filter) {
            Some(event) => slot.mailbox.push(event),
            None => true,
        });
}

pub(super) fn send_bookmarks(shared: &Shared) {
    let state = shared.state.lock();
    let event = bookmark(&shared.resource, state.revision, false);
    for slot in state.watchers.values().filter(|slot| slot.bookmarks) {
        // A full watcher skips this bookmark; the next event or bookmark carries on.
        slot.mailbox.offer(event.clone());
    }
}
