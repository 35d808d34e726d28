//! `store::memory`: the default, in-process backend with etcd v3 semantics.
//!
//! Every key keeps its chain of versions, and every write transaction appends one batch of
//! events to a log. Both are kept until [`Store::compact`], so reads at past revisions and
//! watches from past revisions work exactly as on etcd. Call `compact` periodically (the API
//! server does, as kube-apiserver does for etcd) or memory grows with every write.
//!
//! Concurrency: one reader-writer lock guards the state. Writers hold it only to apply an
//! already-validated transaction; readers hold it only to copy out the keys they return
//! (values are reference-counted [`Bytes`], so copying is cheap). Watchers never hold it while
//! waiting: live events reach them through a bounded broadcast ring, and a watcher that falls
//! behind the ring catches up from the log instead of stalling writers or growing memory.
//!
//! Compaction releases memory: old versions and log batches are dropped and their containers
//! shrunk, and the live ring holds only weak references to batches, so a compacted batch is
//! freed even while the ring still has a slot for it.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::RwLock;
use tokio::sync::broadcast;

use crate::{
    Error, Event, EventKind, KeyValue, Op, OpResult, Range, RangeResponse, Result, Revision, Store,
    Txn, TxnResponse, WatchRequest, WatchStream,
};

/// How many write batches the live ring holds before a slow watcher must catch up from the
/// log.
const DEFAULT_WATCH_RING: usize = 4096;

/// How many events a catching-up watcher copies out of the log per lock acquisition.
const CATCH_UP_CHUNK: usize = 1024;

/// The in-memory store. Cheap to clone: clones share the same state.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<State>,
    /// Weak: the log owns the batches, so compaction frees them even while a ring slot
    /// still points at one.
    live: broadcast::Sender<Weak<Batch>>,
}

/// The events of one write transaction.
struct Batch {
    revision: Revision,
    events: Vec<Event>,
}

struct State {
    revision: Revision,
    /// History before this revision is gone; 0 before the first compaction.
    compacted: Revision,
    keys: BTreeMap<Bytes, Vec<Version>>,
    log: VecDeque<Arc<Batch>>,
}

#[derive(Clone)]
struct Version {
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    /// `None` marks a deletion.
    value: Option<Bytes>,
}

impl MemoryStore {
    /// An empty store at revision 1.
    pub fn new() -> Self {
        Self::with_watch_ring(DEFAULT_WATCH_RING)
    }

    /// An empty store whose live watch ring holds `batches` write batches (at least 1).
    /// Smaller rings use less memory; watchers that fall further behind catch up from the
    /// log, which is slower but loses nothing.
    pub fn with_watch_ring(batches: usize) -> Self {
        let (live, _) = broadcast::channel(batches.max(1));
        MemoryStore {
            inner: Arc::new(Inner {
                state: RwLock::new(State {
                    revision: 1,
                    compacted: 0,
                    keys: BTreeMap::new(),
                    log: VecDeque::new(),
                }),
                live,
            }),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state.read();
        f.debug_struct("MemoryStore")
            .field("revision", &state.revision)
            .field("compacted", &state.compacted)
            .field("keys", &state.keys.len())
            .field("log_batches", &state.log.len())
            .finish()
    }
}

impl State {
    fn current(&self, key: &[u8]) -> Option<KeyValue> {
        let (key, versions) = self.keys.get_key_value(key)?;
        visible(key, versions, None)
    }

    /// Checks that `revision` can be read.
    fn check_readable(&self, revision: Revision) -> Result<()> {
        if revision < self.compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted: Some(self.compacted),
            });
        }
        if revision > self.revision {
            return Err(Error::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        Ok(())
    }

    fn apply(&mut self, txn: Txn) -> TxnResponse {
        let succeeded = txn
            .compare
            .iter()
            .all(|compare| compare.holds(self.current(&compare.key).as_ref()));
        let ops = if succeeded { txn.success } else { txn.failure };
        let next = self.revision + 1;
        let mut results = Vec::with_capacity(ops.len());
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Get(key) => results.push(OpResult::Get(self.current(&key))),
                Op::Put { key, value } => {
                    // One lookup finds or makes the key's chain; most keys keep one version.
                    let entry = self.keys.entry(key);
                    let key = entry.key().clone();
                    let versions = entry.or_insert_with(|| Vec::with_capacity(1));
                    let prev = versions.last().and_then(|v| v.at(&key));
                    let kv = KeyValue {
                        create_revision: prev.as_ref().map_or(next, |p| p.create_revision),
                        mod_revision: next,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        key,
                        value,
                    };
                    versions.push(Version {
                        create_revision: kv.create_revision,
                        mod_revision: next,
                        version: kv.version,
                        value: Some(kv.value.clone()),
                    });
                    events.push(Event {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                        prev: prev.clone(),
                    });
                    results.push(OpResult::Put { kv, prev });
                }
                Op::Delete(key) => {
                    let prev = self.current(&key);
                    if prev.is_some() {
                        if let Some(versions) = self.keys.get_mut(&key) {
                            versions.push(Version {
                                create_revision: 0,
                                mod_revision: next,
                                version: 0,
                                value: None,
                            });
                        }
                        events.push(Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key,
                                value: Bytes::new(),
                                create_revision: 0,
                                mod_revision: next,
                                version: 0,
                            },
                            prev: prev.clone(),
                        });
                    }
                    results.push(OpResult::Delete { prev });
                }
            }
        }
        if !events.is_empty() {
            self.revision = next;
            self.log.push_back(Arc::new(Batch {
                revision: next,
                events,
            }));
        }
        TxnResponse {
            succeeded,
            revision: self.revision,
            results,
        }
    }

    fn compact(&mut self, revision: Revision) {
        self.keys.retain(|_, versions| {
            // Keep the newest version at or before `revision` (it answers reads at
            // `revision`) and everything after it; a kept deletion answers nothing.
            let newer = versions.partition_point(|v| v.mod_revision <= revision);
            let mut keep_from = newer.saturating_sub(1);
            if versions
                .get(keep_from)
                .is_some_and(|v| v.value.is_none() && v.mod_revision <= revision)
            {
                keep_from += 1;
            }
            versions.drain(..keep_from);
            if versions.capacity() > 2 * versions.len().max(1) {
                versions.shrink_to_fit();
            }
            !versions.is_empty()
        });
        while self
            .log
            .front()
            .is_some_and(|batch| batch.revision < revision)
        {
            self.log.pop_front();
        }
        if self.log.capacity() > 2 * self.log.len().max(16) {
            self.log.shrink_to_fit();
        }
        self.compacted = revision;
    }

    /// Copies the events of `watch` from revision `from` up to `until` out of the log, at
    /// least one batch and about [`CATCH_UP_CHUNK`] events at most. Returns the next revision
    /// to read.
    fn read_log(
        &self,
        watch: &WatchRequest,
        from: Revision,
        until: Revision,
        out: &mut VecDeque<Event>,
    ) -> Revision {
        let first = self.log.partition_point(|batch| batch.revision < from);
        let before = out.len();
        let mut next = from;
        for batch in self.log.range(first..) {
            if batch.revision > until || out.len() >= CATCH_UP_CHUNK {
                break;
            }
            out.extend(matching(watch, &batch.events));
            next = batch.revision + 1;
        }
        if watch.progress_notify && next > from && out.len() == before {
            out.push_back(Event::progress(next - 1));
        }
        next.max(from)
    }
}

impl Version {
    /// This version of `key`, unless it marks a deletion.
    fn at(&self, key: &Bytes) -> Option<KeyValue> {
        Some(KeyValue {
            key: key.clone(),
            value: self.value.clone()?,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        })
    }
}

/// The key as of `at` (the newest version when `None`), unless deleted.
fn visible(key: &Bytes, versions: &[Version], at: Option<Revision>) -> Option<KeyValue> {
    let version = match at {
        None => versions.last()?,
        Some(at) => {
            let newer = versions.partition_point(|v| v.mod_revision <= at);
            versions.get(newer.checked_sub(1)?)?
        }
    };
    version.at(key)
}

fn matching<'a>(watch: &'a WatchRequest, events: &'a [Event]) -> impl Iterator<Item = Event> + 'a {
    events
        .iter()
        .filter(|event| watch.contains(&event.kv.key))
        .map(|event| Event {
            kind: event.kind,
            kv: event.kv.clone(),
            prev: if watch.prev_kv {
                event.prev.clone()
            } else {
                None
            },
        })
}

#[async_trait]
impl Store for MemoryStore {
    async fn range(&self, range: Range) -> Result<RangeResponse> {
        range.validate()?;
        let state = self.inner.state.read();
        if let Some(revision) = range.revision {
            state.check_readable(revision)?;
        }
        let upper = if range.end.is_empty() {
            Bound::Included(&range.start[..])
        } else if range.end[..] == [0] {
            Bound::Unbounded
        } else if range.end <= range.start {
            return Ok(RangeResponse {
                kvs: Vec::new(),
                more: false,
                count: 0,
                revision: range.revision.unwrap_or(state.revision),
            });
        } else {
            Bound::Excluded(&range.end[..])
        };
        let mut kvs = Vec::new();
        let mut count = 0_i64;
        for (key, versions) in state
            .keys
            .range::<[u8], _>((Bound::Included(&range.start[..]), upper))
        {
            if range.limit != 0 && kvs.len() >= range.limit {
                // Past the page: only count what is visible.
                if visible_at(versions, range.revision) {
                    count += 1;
                }
                continue;
            }
            if let Some(kv) = visible(key, versions, range.revision) {
                count += 1;
                kvs.push(kv);
            }
        }
        Ok(RangeResponse {
            more: count > kvs.len() as i64,
            kvs,
            count,
            revision: range.revision.unwrap_or(state.revision),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        txn.validate()?;
        let mut state = self.inner.state.write();
        let before = state.revision;
        let response = state.apply(txn);
        if response.revision != before {
            if let Some(batch) = state.log.back() {
                // No receivers is fine: nobody watches.
                let _ = self.inner.live.send(Arc::downgrade(batch));
            }
        }
        Ok(response)
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        request.validate()?;
        let state = self.inner.state.read();
        let next = state.revision + 1;
        let from = request.start_revision.unwrap_or(next);
        if from > next {
            return Err(Error::FutureRevision {
                requested: from,
                current: state.revision,
            });
        }
        if from < state.compacted {
            return Err(Error::Compacted {
                requested: from,
                compacted: Some(state.compacted),
            });
        }
        // Subscribing under the lock: every batch after `state.revision` reaches the ring.
        let live = self.inner.live.subscribe();
        let watcher = Watcher {
            store: Arc::downgrade(&self.inner),
            live,
            next: from,
            log_until: state.revision,
            pending: VecDeque::new(),
            request,
            done: false,
        };
        drop(state);
        Ok(futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next_event().await?;
            Some((item, watcher))
        })
        .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut state = self.inner.state.write();
        if revision <= state.compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted: Some(state.compacted),
            });
        }
        if revision > state.revision {
            return Err(Error::FutureRevision {
                requested: revision,
                current: state.revision,
            });
        }
        state.compact(revision);
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.state.read().revision)
    }
}

fn visible_at(versions: &[Version], at: Option<Revision>) -> bool {
    match at {
        None => versions.last().is_some_and(|v| v.value.is_some()),
        Some(at) => {
            let newer = versions.partition_point(|v| v.mod_revision <= at);
            newer > 0 && versions[newer - 1].value.is_some()
        }
    }
}

/// One watch's cursor: it reads the log up to `log_until`, then follows the live ring.
struct Watcher {
    store: Weak<Inner>,
    live: broadcast::Receiver<Weak<Batch>>,
    /// The next revision to deliver.
    next: Revision,
    /// Revisions up to this one come from the log; later ones from the ring.
    log_until: Revision,
    pending: VecDeque<Event>,
    request: WatchRequest,
    done: bool,
}

impl Watcher {
    /// The next event, an error that ends the watch, or `None` once the store is gone.
    async fn next_event(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if self.next <= self.log_until {
                let store = self.store.upgrade()?;
                let state = store.state.read();
                if self.next < state.compacted {
                    self.done = true;
                    return Some(Err(Error::Compacted {
                        requested: self.next,
                        compacted: Some(state.compacted),
                    }));
                }
                let until = self.log_until;
                self.next = state.read_log(&self.request, self.next, until, &mut self.pending);
                if self.pending.is_empty() && self.next <= until {
                    // No batch between `next` and `until` (revisions without writes): done.
                    self.next = until + 1;
                }
                continue;
            }
            // A batch compacted away since it was sent is gone: read the log, which tells.
            match self.live.recv().await.map(|batch| batch.upgrade()) {
                Ok(Some(batch)) if batch.revision < self.next => {}
                Ok(Some(batch)) if batch.revision == self.next => {
                    self.pending.extend(matching(&self.request, &batch.events));
                    if self.pending.is_empty() && self.request.progress_notify {
                        self.pending.push_back(Event::progress(batch.revision));
                    }
                    self.next = batch.revision + 1;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the ring: read what was missed from the log, then rejoin
                    // the ring at its tail. Resubscribing under the lock leaves no gap.
                    let store = self.store.upgrade()?;
                    let state = store.state.read();
                    self.live = self.live.resubscribe();
                    self.log_until = state.revision;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::StoreExt;

    async fn within<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("test timed out")
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_the_ring_catches_up_from_the_log() {
        within(async {
            let store = MemoryStore::with_watch_ring(2);
            let mut watch = store.watch(WatchRequest::prefix("k/")).await.unwrap();
            for i in 0..100 {
                store.put(format!("k/{i:03}"), "v").await.unwrap();
            }
            for i in 0..100 {
                let event = watch.next().await.unwrap().unwrap();
                assert_eq!(event.kv.key, format!("k/{i:03}"));
                assert_eq!(event.revision(), 2 + i);
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_lagging_watcher_whose_history_is_compacted_gets_a_compacted_error() {
        within(async {
            let store = MemoryStore::with_watch_ring(1);
            let mut watch = store.watch(WatchRequest::prefix("k/")).await.unwrap();
            for i in 0..10 {
                store.put(format!("k/{i}"), "v").await.unwrap();
            }
            let current = store.current_revision().await.unwrap();
            store.compact(current).await.unwrap();
            let mut seen = 0;
            loop {
                match watch.next().await.unwrap() {
                    Ok(_) => seen += 1,
                    Err(Error::Compacted { .. }) => break,
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
            assert!(seen < 10, "it cannot have seen every event, saw {seen}");
            assert!(
                watch.next().await.is_none(),
                "the watch ends after the error"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn compaction_drops_deleted_keys_and_old_versions_but_keeps_current_values() {
        within(async {
            let store = MemoryStore::new();
            let a = store.put("a", "1").await.unwrap();
            store.update("a", "2", a.mod_revision).await.unwrap();
            store.put("b", "1").await.unwrap();
            store.delete("b", None).await.unwrap();
            let current = store.current_revision().await.unwrap();
            store.compact(current).await.unwrap();
            let state = store.inner.state.read();
            assert_eq!(state.keys.len(), 1, "the deleted key is gone");
            assert_eq!(state.keys[&b"a"[..]].len(), 1, "one version of a remains");
            assert_eq!(
                state.log.len(),
                1,
                "only the batch at the compaction point remains"
            );
        })
        .await;
    }

    /// A value that counts its own drops, to see when the store lets go of it.
    struct Tracked(Arc<std::sync::atomic::AtomicUsize>, Vec<u8>);

    impl AsRef<[u8]> for Tracked {
        fn as_ref(&self) -> &[u8] {
            &self.1
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn compaction_frees_old_values_even_while_a_watcher_is_subscribed() {
        within(async {
            let store = MemoryStore::new();
            let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            // A watcher that reads nothing keeps its ring subscription open the whole time.
            let _idle = store.watch(WatchRequest::prefix("big/")).await.unwrap();
            for _ in 0..50 {
                let value = Bytes::from_owner(Tracked(dropped.clone(), vec![7; 64 * 1024]));
                store.put("big/one", value).await.unwrap();
            }
            assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 0);
            let current = store.current_revision().await.unwrap();
            store.compact(current).await.unwrap();
            // Every version but the current one and the one before it (the `prev` of the
            // event at the compaction point, which stays in the log) is gone: neither the
            // key's chain, the log, nor the live ring holds them.
            assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 48);
            let state = store.inner.state.read();
            assert!(state.keys[&b"big/one"[..]].capacity() <= 2);
            assert!(state.log.capacity() <= 32, "{}", state.log.capacity());
        })
        .await;
    }

    #[tokio::test]
    async fn a_watcher_behind_a_compaction_gets_compacted_not_a_gap() {
        within(async {
            let store = MemoryStore::new();
            let mut watch = store.watch(WatchRequest::prefix("k/")).await.unwrap();
            for i in 0..5 {
                store.put(format!("k/{i}"), "v").await.unwrap();
            }
            let current = store.current_revision().await.unwrap();
            store.compact(current).await.unwrap();
            // The ring still has slots for the batches, but they are gone.
            match watch.next().await.unwrap() {
                Err(Error::Compacted { compacted, .. }) => assert_eq!(compacted, Some(current)),
                other => panic!("expected a compacted error, got {other:?}"),
            }
        })
        .await;
    }

    #[tokio::test]
    async fn rejected_requests_leave_revision_and_contents_untouched() {
        within(async {
            let store = MemoryStore::new();
            let kept = store.put("k", "v").await.unwrap();
            let revision = store.current_revision().await.unwrap();
            let oversized = vec![0_u8; crate::MAX_VALUE_BYTES + 1];
            let rejected = [
                store.put("", "v").await.err(),
                store.put("k2", oversized.clone()).await.err(),
                store
                    .txn(Txn::new().and_then([Op::put("k3", "ok"), Op::put("k4", oversized)]))
                    .await
                    .err(),
                store
                    .txn(Txn::new().and_then([Op::put("k", "1"), Op::delete("k")]))
                    .await
                    .err(),
                store.update("k", "v2", kept.mod_revision + 5).await.err(),
                store.create("k", "again").await.err(),
                store.compact(revision + 10).await.err(),
                store
                    .range(Range::key("k").at_revision(revision + 1))
                    .await
                    .err(),
                store
                    .watch(WatchRequest::key("k").from_revision(revision + 2))
                    .await
                    .err(),
            ];
            for (i, error) in rejected.iter().enumerate() {
                assert!(error.is_some(), "request {i} was accepted");
            }
            assert_eq!(store.current_revision().await.unwrap(), revision);
            let all = store.range(Range::prefix("k")).await.unwrap();
            assert_eq!(all.kvs, vec![kept]);
        })
        .await;
    }

    #[tokio::test]
    async fn dropping_the_store_ends_its_watches() {
        within(async {
            let store = MemoryStore::new();
            let mut watch = store.watch(WatchRequest::prefix("k/")).await.unwrap();
            store.put("k/1", "v").await.unwrap();
            drop(store);
            // The history goes with the store: an event not yet read may go with it.
            let mut delivered = 0;
            while let Some(item) = watch.next().await {
                assert!(item.is_ok(), "{item:?}");
                delivered += 1;
            }
            assert!(delivered <= 1);
        })
        .await;
    }
}
