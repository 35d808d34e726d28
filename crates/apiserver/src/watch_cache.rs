//! The watch cache: one store watch per resource, fanned out to any number of watchers.
//!
//! A [`WatchCache`] lists its resource's key prefix once, then follows the store's watch. It
//! keeps the current objects and a window of recent events. Each store event is decoded and
//! re-encoded (with its resourceVersion) **once**, into shared [`Bytes`]; watchers receive
//! clones of the same bytes, never copies. A watcher:
//!
//! - filters by namespace, label selector and field selector, and sees Kubernetes'
//!   transitions: an object that starts matching arrives as `Added`, one that stops matching
//!   as `Deleted` (with its previous content at the event's resourceVersion);
//! - starts either from a snapshot (synthetic `Added` events for every current object, as a
//!   watch with resourceVersion "" or "0" does) or after a resourceVersion still inside the
//!   window; an older one gives 410 [`Error::Gone`], a newer one than the cache has reached
//!   waits a little, then gives 504 [`Error::Timeout`] ("Too large resource version");
//! - gets bookmarks every [`WatchCacheOptions::bookmark_interval`] when it asks for them, and an
//!   "initial-events-end" bookmark after its snapshot when it asks for that;
//! - is cut off with 429 [`Error::TooManyRequests`] when it falls
//!   [`WatchCacheOptions::watcher_buffer`] events behind, so a slow watcher never grows memory
//!   or stalls the others. It can watch again from the last resourceVersion it saw.
//!
//! When the cache itself loses the store's history (the store compacted past it), it relists
//! and ends every watcher with 410 Gone, as kube-apiserver's cacher does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use capstan_api::kube_core::Selector;
use capstan_api::{selector, Error, FieldSelector, ResourceInfo};
use capstan_store::{Event, EventKind, Range, Revision, Store, WatchRequest};
use capstan_watch::backoff::ExponentialDelay;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;

use crate::codec;
use crate::registry::storage::store_error;

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

/// An object as the cache holds it: decoded once, with what filters need and its JSON.
#[derive(Debug)]
pub struct CachedObject {
    /// The storage key.
    pub key: Bytes,
    /// `metadata.namespace`, if any.
    pub namespace: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The values of the kind's field labels (and `metadata.name`, `metadata.namespace`).
    fields: Vec<(String, String)>,
    /// The object's JSON, with `metadata.resourceVersion` set.
    pub json: Bytes,
    /// The object's resourceVersion.
    pub revision: Revision,
}

impl CachedObject {
    fn new(resource: &ResourceInfo, key: Bytes, mut object: Value, revision: Revision) -> Self {
        codec::set_resource_version(&mut object, revision);
        let metadata = &object["metadata"];
        let namespace = metadata["namespace"].as_str().map(String::from);
        let labels = metadata["labels"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let fields = ["metadata.name", "metadata.namespace"]
            .into_iter()
            .map(String::from)
            .chain(resource.field_labels().iter().cloned())
            .map(|label| {
                let value = capstan_api::field::field_value(&object, &label);
                (label, value)
            })
            .collect();
        let json = Bytes::from(serde_json::to_vec(&object).unwrap_or_default());
        CachedObject {
            key,
            namespace,
            labels,
            fields,
            json,
            revision,
        }
    }

    /// This object's content at another resourceVersion (a deletion's).
    fn at_revision(&self, resource: &ResourceInfo, revision: Revision) -> Option<Self> {
        let object: Value = serde_json::from_slice(&self.json).ok()?;
        Some(CachedObject::new(
            resource,
            self.key.clone(),
            object,
            revision,
        ))
    }

    fn field(&self, label: &str) -> &str {
        self.fields
            .iter()
            .find(|(name, _)| name == label)
            .map_or("", |(_, value)| value.as_str())
    }
}

/// What a watcher selects.
#[derive(Debug, Clone, Default)]
pub struct WatchFilter {
    /// Only objects in this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Only objects whose labels match.
    pub labels: Selector,
    /// Only objects whose fields match.
    pub fields: FieldSelector,
}

impl WatchFilter {
    /// Whether `object` passes the filter.
    pub fn matches(&self, object: &CachedObject) -> bool {
        if let Some(namespace) = &self.namespace {
            if object.namespace.as_deref() != Some(namespace.as_str()) {
                return false;
            }
        }
        selector::matches(&self.labels, Some(&object.labels))
            && self
                .fields
                .requirements()
                .iter()
                .all(|requirement| requirement.matches_value(object.field(&requirement.field)))
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// Synthetic `Added` events for every current object, then changes (resourceVersion ""
    /// or "0").
    Snapshot,
    /// Changes after this resourceVersion.
    After(Revision),
}

/// A watch on the cache.
#[derive(Debug, Clone)]
pub struct CacheWatchRequest {
    /// What the watcher selects.
    pub filter: WatchFilter,
    /// Where it starts.
    pub start: WatchStart,
    /// Whether it wants periodic bookmarks.
    pub bookmarks: bool,
    /// Whether it wants a bookmark marking the end of its snapshot's events.
    pub initial_events_end: bool,
}

/// The type of a [`CacheEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEventType {
    /// The object started to exist, or to match the watcher's filter.
    Added,
    /// The object changed and still matches.
    Modified,
    /// The object was deleted, or stopped matching.
    Deleted,
    /// No object changed; the watcher is up to date as of `revision`.
    Bookmark,
}

/// One event delivered to a watcher. `object` is shared with every other watcher.
#[derive(Debug, Clone)]
pub struct CacheEvent {
    /// What happened.
    pub kind: CacheEventType,
    /// The event's resourceVersion.
    pub revision: Revision,
    /// The object's JSON (for a bookmark, a minimal object carrying the resourceVersion).
    pub object: Bytes,
}

/// One change of the store, as the cache holds it.
struct StoredChange {
    revision: Revision,
    /// For a put: the new object. For a delete: the last content, at the delete's revision.
    object: Arc<CachedObject>,
    /// For a put of an existing key: the previous object.
    prev: Option<Arc<CachedObject>>,
    deleted: bool,
    /// `prev` at this change's revision, encoded when a watcher first needs it.
    prev_at_change: OnceLock<Option<Bytes>>,
}

impl StoredChange {
    /// What a watcher with `filter` sees of this change, if anything.
    fn for_watcher(&self, resource: &ResourceInfo, filter: &WatchFilter) -> Option<CacheEvent> {
        let event = |kind, object: &Bytes| CacheEvent {
            kind,
            revision: self.revision,
            object: object.clone(),
        };
        if self.deleted {
            return filter
                .matches(&self.object)
                .then(|| event(CacheEventType::Deleted, &self.object.json));
        }
        let now = filter.matches(&self.object);
        let before = self.prev.as_ref().is_some_and(|prev| filter.matches(prev));
        match (before, now) {
            (false, true) => Some(event(CacheEventType::Added, &self.object.json)),
            (true, true) => Some(event(CacheEventType::Modified, &self.object.json)),
            (true, false) => {
                let bytes = self.prev_at_change.get_or_init(|| {
                    let prev = self.prev.as_ref()?;
                    Some(prev.at_revision(resource, self.revision)?.json)
                });
                bytes
                    .as_ref()
                    .map(|bytes| event(CacheEventType::Deleted, bytes))
            }
            (false, false) => None,
        }
    }
}

/// A watch cache for one resource. Dropping it stops its store watch and ends its watchers.
pub struct WatchCache {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for WatchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("WatchCache")
            .field("resource", &self.shared.resource.qualified_resource())
            .field("revision", &state.revision)
            .field("objects", &state.objects.len())
            .field("watchers", &state.watchers.len())
            .finish()
    }
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        self.task.abort();
        for (_, slot) in self.shared.state.lock().watchers.drain() {
            slot.mailbox.close();
        }
    }
}

struct Shared {
    resource: ResourceInfo,
    options: WatchCacheOptions,
    state: Mutex<State>,
    /// The revision the cache has reached, for watches waiting on a newer one.
    reached: watch::Sender<Revision>,
}

struct State {
    /// Every change up to this revision is reflected.
    revision: Revision,
    /// Watches may start after any resourceVersion at or above this one.
    oldest: Revision,
    window: VecDeque<Arc<StoredChange>>,
    objects: BTreeMap<Bytes, Arc<CachedObject>>,
    watchers: HashMap<u64, Slot>,
    next_id: u64,
}

struct Slot {
    mailbox: Arc<Mailbox>,
    filter: WatchFilter,
    bookmarks: bool,
}

/// One watcher's bounded queue. The cache pushes without allocating once the queue has
/// grown to its working size, and wakes the watcher's task only if it is waiting.
struct Mailbox {
    queue: Mutex<VecDeque<Result<CacheEvent, Error>>>,
    capacity: usize,
    waker: AtomicWaker,
    /// No more items will come (the cache cut the watcher off, relisted, or stopped).
    closed: AtomicBool,
    /// Closed because the watcher fell `capacity` events behind.
    overflowed: AtomicBool,
}

impl Mailbox {
    fn new(capacity: usize) -> Self {
        Mailbox {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
        }
    }

    /// Queues `event`; returns `false` (and closes the mailbox) when it is full.
    fn push(&self, event: CacheEvent) -> bool {
        {
            let mut queue = self.queue.lock();
            if queue.len() >= self.capacity {
                drop(queue);
                self.overflowed.store(true, Ordering::Release);
                self.close();
                return false;
            }
            queue.push_back(Ok(event));
        }
        self.waker.wake();
        true
    }

    /// Queues `event` unless the mailbox is full; never closes it.
    fn offer(&self, event: CacheEvent) {
        {
            let mut queue = self.queue.lock();
            if queue.len() >= self.capacity {
                return;
            }
            queue.push_back(Ok(event));
        }
        self.waker.wake();
    }

    /// Ends the watch with `error` after what is queued.
    fn fail(&self, error: Error) {
        self.queue.lock().push_back(Err(error));
        self.close();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

impl WatchCache {
    /// Lists the resource's prefix in `store` (at `at`, or the current revision) and starts
    /// following the store's watch from there, on the current tokio runtime.
    ///
    /// Errors: [`Error::Gone`] when `at` was compacted; others as the store reports them.
    pub async fn start(
        store: Arc<dyn Store>,
        resource: ResourceInfo,
        options: WatchCacheOptions,
        at: Option<Revision>,
    ) -> Result<WatchCache, Error> {
        let prefix = Bytes::from(resource.storage_prefix());
        let (objects, revision) = list(&*store, &resource, &prefix, at, options.list_page).await?;
        let (reached, _) = watch::channel(revision);
        let shared = Arc::new(Shared {
            resource,
            options,
            state: Mutex::new(State {
                revision,
                oldest: revision,
                window: VecDeque::new(),
                objects,
                watchers: HashMap::new(),
                next_id: 0,
            }),
            reached,
        });
        let task = tokio::spawn(follow(Arc::downgrade(&shared), store, prefix));
        Ok(WatchCache { shared, task })
    }

    /// The resource this cache holds.
    pub fn resource(&self) -> &ResourceInfo {
        &self.shared.resource
    }

    /// The revision the cache has reached.
    pub fn revision(&self) -> Revision {
        self.shared.state.lock().revision
    }

    /// How many watchers are attached.
    pub fn watcher_count(&self) -> usize {
        self.shared.state.lock().watchers.len()
    }

    /// Starts a watch; see the module docs for the semantics.
    pub async fn watch(&self, request: CacheWatchRequest) -> Result<CacheWatch, Error> {
        if let WatchStart::After(revision) = request.start {
            self.watch_ready(revision).await?;
        }
        let shared = &self.shared;
        let resource = &shared.resource;
        let mut state = shared.state.lock();
        let mut initial = VecDeque::new();
        match request.start {
            WatchStart::Snapshot => {
                initial.extend(
                    state
                        .objects
                        .values()
                        .filter(|object| request.filter.matches(object))
                        .map(|object| CacheEvent {
                            kind: CacheEventType::Added,
                            revision: object.revision,
                            object: object.json.clone(),
                        }),
                );
                if request.initial_events_end {
                    initial.push_back(bookmark(resource, state.revision, true));
                }
            }
            WatchStart::After(revision) => {
                if revision < state.oldest {
                    return Err(Error::Gone {
                        message: format!("too old resource version: {revision} ({})", state.oldest),
                    });
                }
                let first = state.window.partition_point(|c| c.revision <= revision);
                initial.extend(
                    state
                        .window
                        .range(first..)
                        .filter_map(|change| change.for_watcher(resource, &request.filter)),
                );
            }
        }
        let mailbox = Arc::new(Mailbox::new(shared.options.watcher_buffer));
        let id = state.next_id;
        state.next_id += 1;
        state.watchers.insert(
            id,
            Slot {
                mailbox: mailbox.clone(),
                filter: request.filter,
                bookmarks: request.bookmarks,
            },
        );
        Ok(CacheWatch {
            initial,
            mailbox,
            cache: Arc::downgrade(shared),
            id,
            done: false,
        })
    }

    /// Waits until the cache has reached `revision` (every change up to it is in the cache),
    /// up to [`WatchCacheOptions::too_large_wait`].
    ///
    /// Errors: [`Error::Timeout`] ("Too large resource version") when it does not get there
    /// in time.
    pub async fn watch_ready(&self, revision: Revision) -> Result<(), Error> {
        let mut reached = self.shared.reached.subscribe();
        let outcome = tokio::time::timeout(
            self.shared.options.too_large_wait,
            reached.wait_for(|current| *current >= revision),
        )
        .await
        .map(|waited| waited.is_ok());
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::ServiceUnavailable {
                message: "the watch cache stopped".into(),
            }),
            Err(_) => Err(Error::Timeout {
                message: format!(
                    "Too large resource version: {revision}, current resource version: {}",
                    *reached.borrow()
                ),
            }),
        }
    }
}

/// The events of one watch on a [`WatchCache`]. Dropping it detaches the watcher.
pub struct CacheWatch {
    initial: VecDeque<CacheEvent>,
    mailbox: Arc<Mailbox>,
    cache: Weak<Shared>,
    id: u64,
    done: bool,
}

impl Stream for CacheWatch {
    type Item = Result<CacheEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(event) = this.initial.pop_front() {
            return Poll::Ready(Some(Ok(event)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        // Register first, then look: a push after the look wakes us.
        this.mailbox.waker.register(cx.waker());
        if let Some(item) = this.mailbox.queue.lock().pop_front() {
            if item.is_err() {
                this.done = true;
            }
            return Poll::Ready(Some(item));
        }
        if !this.mailbox.closed.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // Closed: anything pushed before closing is delivered first.
        if let Some(item) = this.mailbox.queue.lock().pop_front() {
            return Poll::Ready(Some(item));
        }
        this.done = true;
        if this.mailbox.overflowed.load(Ordering::Acquire) {
            Poll::Ready(Some(Err(Error::TooManyRequests {
                message: format!(
                    "watch closed: the watcher fell {} events behind; watch again from the \
                     last resourceVersion it saw",
                    this.mailbox.capacity
                ),
                retry_after_seconds: Some(1),
            })))
        } else {
            Poll::Ready(None)
        }
    }
}

impl Drop for CacheWatch {
    fn drop(&mut self) {
        if let Some(shared) = self.cache.upgrade() {
            shared.state.lock().watchers.remove(&self.id);
        }
    }
}

fn bookmark(resource: &ResourceInfo, revision: Revision, initial_events_end: bool) -> CacheEvent {
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
        object: Bytes::from(object.to_string()),
    }
}

type Objects = BTreeMap<Bytes, Arc<CachedObject>>;

/// Lists `prefix` page by page at one revision.
async fn list(
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
async fn follow(shared: Weak<Shared>, store: Arc<dyn Store>, prefix: Bytes) {
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
async fn relist(shared: &Weak<Shared>, store: &dyn Store, prefix: &Bytes) -> bool {
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

fn apply(shared: &Shared, event: Event) {
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
fn dispatch(resource: &ResourceInfo, state: &mut State, change: &StoredChange) {
    state
        .watchers
        .retain(|_, slot| match change.for_watcher(resource, &slot.filter) {
            Some(event) => slot.mailbox.push(event),
            None => true,
        });
}

fn send_bookmarks(shared: &Shared) {
    let state = shared.state.lock();
    let event = bookmark(&shared.resource, state.revision, false);
    for slot in state.watchers.values().filter(|slot| slot.bookmarks) {
        // A full watcher skips this bookmark; the next event or bookmark carries on.
        slot.mailbox.offer(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use capstan_api::k8s_openapi::api::core::v1::Pod;
    use capstan_api::{parse_label_selector, Resource};
    use capstan_store::memory::MemoryStore;
    use capstan_store::StoreExt;
    use serde_json::json;

    use super::*;

    async fn within<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("test timed out")
    }

    fn pod(namespace: &str, name: &str, app: &str, node: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        })
    }

    async fn put_pod(store: &MemoryStore, object: Value) -> Revision {
        let metadata = &object["metadata"];
        let key = Pod::info()
            .key(
                metadata["namespace"].as_str(),
                metadata["name"].as_str().unwrap(),
            )
            .unwrap();
        store
            .put(key, codec::encode(&object).unwrap())
            .await
            .unwrap()
            .mod_revision
    }

    async fn cache(store: &MemoryStore, options: WatchCacheOptions) -> WatchCache {
        WatchCache::start(Arc::new(store.clone()), Pod::info(), options, None)
            .await
            .unwrap()
    }

    fn request(start: WatchStart) -> CacheWatchRequest {
        CacheWatchRequest {
            filter: WatchFilter::default(),
            start,
            bookmarks: false,
            initial_events_end: false,
        }
    }

    fn name(event: &CacheEvent) -> String {
        let object: Value = serde_json::from_slice(&event.object).unwrap();
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn resource_version(event: &CacheEvent) -> String {
        let object: Value = serde_json::from_slice(&event.object).unwrap();
        object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn next(watch: &mut CacheWatch) -> CacheEvent {
        watch.next().await.expect("stream open").expect("event")
    }

    #[tokio::test]
    async fn a_snapshot_watch_sees_every_object_as_added_then_live_changes() {
        within(async {
            let store = MemoryStore::new();
            put_pod(&store, pod("default", "a", "web", "")).await;
            put_pod(&store, pod("default", "b", "web", "")).await;
            let cache = cache(&store, WatchCacheOptions::default()).await;
            let mut watch = cache.watch(request(WatchStart::Snapshot)).await.unwrap();
            let (a, b) = (next(&mut watch).await, next(&mut watch).await);
            assert_eq!((a.kind, name(&a)), (CacheEventType::Added, "a".to_string()));
            assert_eq!((b.kind, name(&b)), (CacheEventType::Added, "b".to_string()));
            let revision = put_pod(&store, pod("default", "a", "web", "node01")).await;
            let modified = next(&mut watch).await;
            assert_eq!(modified.kind, CacheEventType::Modified);
            assert_eq!(modified.revision, revision);
            assert_eq!(resource_version(&modified), revision.to_string());
        })
        .await;
    }

    #[tokio::test]
    async fn label_changes_become_added_and_deleted_for_a_filtered_watcher() {
        within(async {
            let store = MemoryStore::new();
            let cache = cache(&store, WatchCacheOptions::default()).await;
            let mut watch = cache
                .watch(CacheWatchRequest {
                    filter: WatchFilter {
                        labels: parse_label_selector("app=web").unwrap(),
                        ..Default::default()
                    },
                    ..request(WatchStart::Snapshot)
                })
                .await
                .unwrap();
            put_pod(&store, pod("default", "a", "db", "")).await;
            put_pod(&store, pod("default", "a", "web", "")).await;
            let leaving = put_pod(&store, pod("default", "a", "cache", "")).await;
            let added = next(&mut watch).await;
            assert_eq!(added.kind, CacheEventType::Added, "it starts matching");
            let deleted = next(&mut watch).await;
            assert_eq!(deleted.kind, CacheEventType::Deleted, "it stops matching");
            assert_eq!(deleted.revision, leaving);
            let object: Value = serde_json::from_slice(&deleted.object).unwrap();
            assert_eq!(
                object["metadata"]["labels"]["app"], "web",
                "the last matching content"
            );
            assert_eq!(object["metadata"]["resourceVersion"], leaving.to_string());
        })
        .await;
    }

    #[tokio::test]
    async fn namespace_and_field_selectors_filter_events() {
        within(async {
            let store = MemoryStore::new();
            let cache = cache(&store, WatchCacheOptions::default()).await;
            let mut unscheduled_in_default = cache
                .watch(CacheWatchRequest {
                    filter: WatchFilter {
                        namespace: Some("default".into()),
                        fields: "spec.nodeName=".parse().unwrap(),
                        ..Default::default()
                    },
                    ..request(WatchStart::Snapshot)
                })
                .await
                .unwrap();
            put_pod(&store, pod("other", "x", "web", "")).await;
            put_pod(&store, pod("default", "bound", "web", "node01")).await;
            put_pod(&store, pod("default", "pending", "web", "")).await;
            let event = next(&mut unscheduled_in_default).await;
            assert_eq!(name(&event), "pending");
        })
        .await;
    }

    #[tokio::test]
    async fn every_watcher_gets_the_same_shared_bytes() {
        within(async {
            let store = MemoryStore::new();
            let cache = cache(&store, WatchCacheOptions::default()).await;
            let mut one = cache.watch(request(WatchStart::Snapshot)).await.unwrap();
            let mut two = cache.watch(request(WatchStart::Snapshot)).await.unwrap();
            put_pod(&store, pod("default", "a", "web", "")).await;
            let (a, b) = (next(&mut one).await, next(&mut two).await);
            assert_eq!(a.object.as_ptr(), b.object.as_ptr(), "encoded once, shared");
        })
        .await;
    }

    #[tokio::test]
    async fn a_watch_resumes_inside_the_window_and_older_versions_are_gone() {
        within(async {
            let store = MemoryStore::new();
            let cache = cache(
                &store,
                WatchCacheOptions {
                    window: 3,
                    ..Default::default()
                },
            )
            .await;
            let mut revisions = Vec::new();
            for i in 0..6 {
                revisions.push(put_pod(&store, pod("default", &format!("p{i}"), "web", "")).await);
            }
            // Wait until the cache has seen every write.
            cache.watch_ready(revisions[5]).await.unwrap();
            let mut resumed = cache
                .watch(request(WatchStart::After(revisions[3])))
                .await
                .unwrap();
            assert_eq!(name(&next(&mut resumed).await), "p4");
            assert_eq!(name(&next(&mut resumed).await), "p5");
            let gone = cache.watch(request(WatchStart::After(revisions[1]))).await;
            assert!(matches!(gone, Err(Error::Gone { .. })), "{:?}", gone.err());
        })
        .await;
    }

    #[tokio::test]
    async fn a_watch_from_a_revision_reached_elsewhere_in_the_store_starts_at_once() {
        within(async {
            let store = MemoryStore::new();
            let cache = cache(&store, WatchCacheOptions::default()).await;
            // A write of another kind moves the store's revision; progress tells the cache.
            let elsewhere = store
                .put("/registry/deployments/default/web", "{}")
                .await
                .unwrap()
                .mod_revision;
            let mut watch = cache
                .watch(request(WatchStart::After(elsewhere)))
                .await
                .unwrap();
            put_pod(&store, pod("default", "a", "web", "")).await;
            assert_eq!(name(&next(&mut watch).await), "a");
        })
        .await;
    }

    #[tokio::test]
    async fn a_watch_from_a_future_revision_times_out_as_too_large() {
        within(async {
            let store = MemoryStore::new();
            let cache = cache(
                &store,
                WatchCacheOptions {
                    too_large_wait: Duration::from_millis(100),
                    ..Default::default()
                },
            )
            .await;
            let future = store.current_revision().await.unwrap() + 100;
            let result = cache.watch(request(WatchStart::After(future))).await;
            match result {
                Err(Error::Timeout { message }) => {
                    assert!(message.contains("Too large resource version"), "{message}")
                }
                other => panic!("expected a timeout, got {:?}", other.err()),
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_slow_watcher_is_cut_off_while_the_others_get_everything() {
        within(async {
            let store = MemoryStore::new();
            let cache = cache(
                &store,
                WatchCacheOptions {
                    watcher_buffer: 4,
                    ..Default::default()
                },
            )
            .await;
            let mut slow = cache.watch(request(WatchStart::Snapshot)).await.unwrap();
            let mut fast = cache.watch(request(WatchStart::Snapshot)).await.unwrap();
            for i in 0..10 {
                put_pod(&store, pod("default", &format!("p{i}"), "web", "")).await;
                assert_eq!(name(&next(&mut fast).await), format!("p{i}"));
            }
            let mut delivered = 0;
            loop {
                match slow.next().await.expect("an error ends the stream") {
                    Ok(_) => delivered += 1,
                    Err(Error::TooManyRequests { message, .. }) => {
                        assert!(message.contains("fell 4 events behind"), "{message}");
                        break;
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            assert_eq!(delivered, 4, "what was buffered is still delivered");
            assert!(slow.next().await.is_none());
            assert_eq!(cache.watcher_count(), 1);
        })
        .await;
    }

    #[tokio::test]
    async fn bookmarks_come_periodically_and_after_the_initial_events_when_asked() {
        within(async {
            let store = MemoryStore::new();
            put_pod(&store, pod("default", "a", "web", "")).await;
            let cache = cache(
                &store,
                WatchCacheOptions {
                    bookmark_interval: Duration::from_millis(50),
                    ..Default::default()
                },
            )
            .await;
            let mut watch = cache
                .watch(CacheWatchRequest {
                    bookmarks: true,
                    initial_events_end: true,
                    ..request(WatchStart::Snapshot)
                })
                .await
                .unwrap();
            assert_eq!(next(&mut watch).await.kind, CacheEventType::Added);
            let end = next(&mut watch).await;
            assert_eq!(end.kind, CacheEventType::Bookmark);
            let object: Value = serde_json::from_slice(&end.object).unwrap();
            assert_eq!(
                object["metadata"]["annotations"]["k8s.io/initial-events-end"],
                "true"
            );
            let periodic = next(&mut watch).await;
            assert_eq!(periodic.kind, CacheEventType::Bookmark);
            assert_eq!(periodic.revision, cache.revision());
            let mut quiet = cache.watch(request(WatchStart::Snapshot)).await.unwrap();
            next(&mut quiet).await;
            let nothing = tokio::time::timeout(Duration::from_millis(200), quiet.next()).await;
            assert!(nothing.is_err(), "no bookmarks unless asked");
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn when_the_store_compacts_past_the_cache_it_relists_and_ends_watchers_with_gone() {
        within(async {
            let store = MemoryStore::with_watch_ring(1);
            let cache = cache(&store, WatchCacheOptions::default()).await;
            let mut watch = cache.watch(request(WatchStart::Snapshot)).await.unwrap();
            tokio::task::yield_now().await;
            // The cache's task cannot run in between: it falls behind the ring, and the
            // history it would catch up from is compacted away.
            for i in 0..5 {
                put_pod(&store, pod("default", &format!("p{i}"), "web", "")).await;
            }
            let current = store.current_revision().await.unwrap();
            store.compact(current).await.unwrap();
            let mut saw_gone = false;
            while let Some(item) = watch.next().await {
                if let Err(error) = item {
                    assert!(matches!(error, Error::Gone { .. }), "{error}");
                    saw_gone = true;
                }
            }
            assert!(saw_gone, "the watcher learns it must relist");
            let mut fresh = cache.watch(request(WatchStart::Snapshot)).await.unwrap();
            let mut names = Vec::new();
            for _ in 0..5 {
                names.push(name(&next(&mut fresh).await));
            }
            assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"], "the relisted state");
        })
        .await;
    }
}
