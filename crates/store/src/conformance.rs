//! The `Store` contract as one test suite, for every backend (cargo feature `conformance`).
//!
//! Each case is a public async function taking a store and a key prefix of its own; it panics
//! when the store breaks the contract. [`store_conformance_tests!`](crate::store_conformance_tests)
//! turns the whole suite into `#[test]` functions for any backend:
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_store::{memory::MemoryStore, Store};
//!
//! capstan_store::store_conformance_tests!(|| async {
//!     Arc::new(MemoryStore::new()) as Arc<dyn Store>
//! });
//! # fn main() {}
//! ```
//!
//! Cases only touch keys under their prefix, so they can share one backend (a real etcd).
//! Compaction is global, so the compaction case runs alone: the macro holds a lock that every
//! other case shares.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{
    Compare, CompareOp, Error, EventKind, KeyValue, Op, OpResult, Range, Revision, Store, StoreExt,
    Txn, WatchRequest, MAX_VALUE_BYTES,
};

/// How long one case may take before it fails.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Lets the exclusive cases (compaction) run alone while the others run side by side.
#[derive(Debug, Default)]
pub struct CaseLock(RwLock<()>);

impl CaseLock {
    /// A new lock, usable in a `static`.
    pub const fn new() -> Self {
        CaseLock(RwLock::new(()))
    }
}

/// Runs one case on a fresh multi-threaded runtime with a store from `make`, a unique key
/// prefix and [`CASE_TIMEOUT`]. Used by [`store_conformance_tests!`](crate::store_conformance_tests).
pub fn run_case<M, MF, C, CF>(name: &str, lock: &CaseLock, exclusive: bool, make: M, case: C)
where
    M: FnOnce() -> MF,
    MF: Future<Output = Arc<dyn Store>>,
    C: FnOnce(Arc<dyn Store>, String) -> CF,
    CF: Future<Output = ()>,
{
    let (_shared, _exclusive);
    if exclusive {
        _exclusive = lock.0.write().unwrap_or_else(|e| e.into_inner());
    } else {
        _shared = lock.0.read().unwrap_or_else(|e| e.into_inner());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the case");
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let prefix = format!("/conformance/{name}/{}-{nonce}/", std::process::id());
    runtime.block_on(async {
        let store = make().await;
        tokio::time::timeout(CASE_TIMEOUT, case(store, prefix))
            .await
            .unwrap_or_else(|_| panic!("conformance case {name} timed out after {CASE_TIMEOUT:?}"));
    });
}

/// Generates one `#[test]` per conformance case, each with a store from `$make` (a closure
/// returning a future of `Arc<dyn Store>`).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@cases $make;
            shared: [
                create_fails_when_the_key_exists,
                update_with_a_stale_mod_revision_is_a_conflict_and_changes_nothing,
                delete_checks_the_mod_revision_and_reports_missing_keys,
                writes_keep_etcd_revisions_and_versions,
                range_pages_with_limit_and_continue_across_writes,
                range_at_a_past_revision_sees_the_past,
                watch_from_a_revision_replays_from_it_in_order,
                watch_across_many_writes_matches_a_final_list,
                watch_with_prev_kv_reports_previous_values_and_deletes,
                progress_notifications_report_writes_elsewhere,
                transactions_run_one_branch_atomically,
                sixteen_concurrent_read_modify_writers_lose_nothing,
                bad_input_is_rejected_and_changes_nothing
            ],
            exclusive: [compaction_makes_older_revisions_compacted]
        );
    };
    (@cases $make:expr; shared: [$($shared:ident),* $(,)?], exclusive: [$($exclusive:ident),* $(,)?]) => {
        static CONFORMANCE_LOCK: $crate::conformance::CaseLock =
            $crate::conformance::CaseLock::new();
        $(
            #[test]
            fn $shared() {
                $crate::conformance::run_case(
                    stringify!($shared), &CONFORMANCE_LOCK, false, $make, $crate::conformance::$shared,
                );
            }
        )*
        $(
            #[test]
            fn $exclusive() {
                $crate::conformance::run_case(
                    stringify!($exclusive), &CONFORMANCE_LOCK, true, $make, $crate::conformance::$exclusive,
                );
            }
        )*
    };
}

fn key(prefix: &str, name: &str) -> Bytes {
    Bytes::from(format!("{prefix}{name}"))
}

async fn values(store: &dyn Store, range: Range) -> BTreeMap<Bytes, Bytes> {
    store
        .range(range)
        .await
        .expect("range")
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect()
}

/// A second create of a key fails with `AlreadyExists`, reports the current value, and
/// changes nothing.
pub async fn create_fails_when_the_key_exists(store: Arc<dyn Store>, prefix: String) {
    let k = key(&prefix, "a");
    let first = store.create(k.clone(), "one").await.expect("first create");
    assert_eq!(first.version, 1);
    assert_eq!(first.create_revision, first.mod_revision);
    match store.create(k.clone(), "two").await {
        Err(Error::AlreadyExists { key, current }) => {
            assert_eq!(key, k);
            assert_eq!(*current, first);
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.get(k).await.unwrap(), Some(first));
}

/// An update guarded by a stale mod revision is a `Conflict` naming both revisions, and the
/// value stays; the fresh revision succeeds.
pub async fn update_with_a_stale_mod_revision_is_a_conflict_and_changes_nothing(
    store: Arc<dyn Store>,
    prefix: String,
) {
    let k = key(&prefix, "a");
    let v1 = store.create(k.clone(), "1").await.unwrap();
    let v2 = store.update(k.clone(), "2", v1.mod_revision).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.create_revision, v1.create_revision);
    assert!(v2.mod_revision > v1.mod_revision);
    match store.update(k.clone(), "3", v1.mod_revision).await {
        Err(Error::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, k);
            assert_eq!(expected, v1.mod_revision);
            assert_eq!(actual, v2.mod_revision);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get(k.clone()).await.unwrap(), Some(v2.clone()));
    let missing = store
        .update(key(&prefix, "missing"), "x", v2.mod_revision)
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    assert_eq!(store.get(key(&prefix, "missing")).await.unwrap(), None);
}

/// Delete honours the expected mod revision, returns what it removed, and reports a
/// missing key as `NotFound`.
pub async fn delete_checks_the_mod_revision_and_reports_missing_keys(
    store: Arc<dyn Store>,
    prefix: String,
) {
    let k = key(&prefix, "a");
    let v1 = store.create(k.clone(), "1").await.unwrap();
    let v2 = store.update(k.clone(), "2", v1.mod_revision).await.unwrap();
    let stale = store.delete(k.clone(), Some(v1.mod_revision)).await;
    assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");
    assert_eq!(store.get(k.clone()).await.unwrap(), Some(v2.clone()));
    let removed = store
        .delete(k.clone(), Some(v2.mod_revision))
        .await
        .unwrap();
    assert_eq!(removed, v2);
    assert_eq!(store.get(k.clone()).await.unwrap(), None);
    let again = store.delete(k.clone(), None).await;
    assert!(matches!(again, Err(Error::NotFound { .. })), "{again:?}");
    let guarded = store.delete(k.clone(), Some(v2.mod_revision)).await;
    assert!(
        matches!(guarded, Err(Error::NotFound { .. })),
        "{guarded:?}"
    );
}

/// Each write moves the global revision forward; a key's create revision, mod revision and
/// version follow etcd, and a re-created key starts a new life.
pub async fn writes_keep_etcd_revisions_and_versions(store: Arc<dyn Store>, prefix: String) {
    let k = key(&prefix, "a");
    let before = store.current_revision().await.unwrap();
    let created = store.create(k.clone(), "1").await.unwrap();
    assert!(created.mod_revision > before);
    assert!(store.current_revision().await.unwrap() >= created.mod_revision);
    let updated = store.put(k.clone(), "2").await.unwrap();
    assert_eq!(updated.create_revision, created.mod_revision);
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(updated.version, 2);
    store.delete(k.clone(), None).await.unwrap();
    let reborn = store.create(k.clone(), "3").await.unwrap();
    assert!(reborn.create_revision > updated.mod_revision);
    assert_eq!(reborn.version, 1, "deletion resets the version");
    // Reads do not move the revision; a transaction that writes nothing does not either.
    let at = store.current_revision().await.unwrap();
    store.get(k.clone()).await.unwrap();
    let noop = store
        .txn(Txn::new().and_then([Op::delete(key(&prefix, "never-existed"))]))
        .await
        .unwrap();
    assert_eq!(noop.results, vec![OpResult::Delete { prev: None }]);
    assert!(noop.revision >= at);
    assert_eq!(
        store.get(k).await.unwrap().map(|kv| kv.mod_revision),
        Some(reborn.mod_revision)
    );
}

/// Paging with a limit at the first page's revision returns exactly the snapshot of that
/// revision, whatever is written between pages.
pub async fn range_pages_with_limit_and_continue_across_writes(
    store: Arc<dyn Store>,
    prefix: String,
) {
    for i in 0..25 {
        store
            .create(key(&prefix, &format!("{i:02}")), format!("v{i}"))
            .await
            .unwrap();
    }
    let first = store
        .range(Range::prefix(prefix.clone()).limit(10))
        .await
        .unwrap();
    assert_eq!(first.kvs.len(), 10);
    assert!(first.more);
    assert_eq!(first.count, 25);
    let snapshot = first.revision;
    let mut seen: Vec<KeyValue> = first.kvs;
    let mut writes = 0;
    loop {
        // Churn between pages: new keys, deletes and updates, before and after the cursor.
        store
            .create(key(&prefix, &format!("{writes:02}-new")), "late")
            .await
            .unwrap();
        store
            .delete(key(&prefix, &format!("{:02}", 24 - writes)), None)
            .await
            .unwrap();
        store
            .put(key(&prefix, &format!("{writes:02}")), "changed")
            .await
            .unwrap();
        writes += 1;
        let last = seen.last().unwrap().key.clone();
        let page = store
            .range(
                Range::prefix(prefix.clone())
                    .start_after(&last)
                    .limit(10)
                    .at_revision(snapshot),
            )
            .await
            .unwrap();
        assert_eq!(page.revision, snapshot);
        seen.extend(page.kvs);
        if !page.more {
            break;
        }
    }
    assert_eq!(seen.len(), 25, "every key of the snapshot, once");
    for (i, kv) in seen.iter().enumerate() {
        assert_eq!(kv.key, key(&prefix, &format!("{i:02}")));
        assert_eq!(kv.value, format!("v{i}"));
        assert!(kv.mod_revision <= snapshot);
    }
}

/// A range at a past revision sees values, creations and deletions as they were then.
pub async fn range_at_a_past_revision_sees_the_past(store: Arc<dyn Store>, prefix: String) {
    let a = key(&prefix, "a");
    let b = key(&prefix, "b");
    let a1 = store.create(a.clone(), "a1").await.unwrap();
    let at_a1 = a1.mod_revision;
    let b1 = store.create(b.clone(), "b1").await.unwrap();
    store
        .update(a.clone(), "a2", a1.mod_revision)
        .await
        .unwrap();
    store
        .delete(b.clone(), Some(b1.mod_revision))
        .await
        .unwrap();

    let then = values(&*store, Range::prefix(prefix.clone()).at_revision(at_a1)).await;
    assert_eq!(then, BTreeMap::from([(a.clone(), Bytes::from("a1"))]));
    let later = values(
        &*store,
        Range::prefix(prefix.clone()).at_revision(b1.mod_revision),
    )
    .await;
    assert_eq!(
        later,
        BTreeMap::from([
            (a.clone(), Bytes::from("a1")),
            (b.clone(), Bytes::from("b1"))
        ])
    );
    let now = values(&*store, Range::prefix(prefix.clone())).await;
    assert_eq!(now, BTreeMap::from([(a.clone(), Bytes::from("a2"))]));
    let single = store
        .range(Range::key(b.clone()).at_revision(b1.mod_revision))
        .await
        .unwrap();
    assert_eq!(single.kvs, vec![b1]);
}

/// A watch from revision N replays every event of its range from N on, in order, then
/// follows live writes.
pub async fn watch_from_a_revision_replays_from_it_in_order(store: Arc<dyn Store>, prefix: String) {
    let mut revisions = Vec::new();
    for i in 0..10 {
        let kv = store
            .put(key(&prefix, &format!("k{i}")), format!("{i}"))
            .await
            .unwrap();
        revisions.push(kv.mod_revision);
    }
    // Writes outside the range are not seen.
    let outside = format!("{}-outside", prefix.trim_end_matches('/'));
    store.put(outside, "x").await.unwrap();
    let from = revisions[4];
    let mut watch = store
        .watch(WatchRequest::prefix(prefix.clone()).from_revision(from))
        .await
        .unwrap();
    let live = store.put(key(&prefix, "live"), "after").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let event = watch.next().await.expect("stream ended").expect("event");
        seen.push(event);
    }
    for (event, (i, revision)) in seen.iter().zip(revisions.iter().enumerate().skip(4)) {
        assert_eq!(event.kind, EventKind::Put);
        assert_eq!(event.kv.key, key(&prefix, &format!("k{i}")));
        assert_eq!(event.revision(), *revision);
    }
    assert_eq!(seen[6].kv, live);
}

/// Events of a watch, applied in order to an empty map, equal a separate list at the end.
pub async fn watch_across_many_writes_matches_a_final_list(store: Arc<dyn Store>, prefix: String) {
    let start = store.current_revision().await.unwrap() + 1;
    let mut watch = store
        .watch(WatchRequest::prefix(prefix.clone()).from_revision(start))
        .await
        .unwrap();
    let writer = {
        let store = store.clone();
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 0..400_u64 {
                let k = key(&prefix, &format!("k{:02}", (i * 7) % 23));
                let revision = match i % 5 {
                    0..=2 => store.put(k, format!("v{i}")).await.unwrap().mod_revision,
                    3 => match store.delete(k, None).await {
                        Ok(_) | Err(Error::NotFound { .. }) => last,
                        Err(e) => panic!("delete: {e}"),
                    },
                    _ => {
                        let other = key(&prefix, &format!("k{:02}", (i * 3) % 23));
                        let k2 = if other == k {
                            key(&prefix, "pair")
                        } else {
                            other
                        };
                        store
                            .txn(Txn::new().and_then([Op::put(k, "t"), Op::put(k2, "t")]))
                            .await
                            .unwrap()
                            .revision
                    }
                };
                last = last.max(revision);
            }
            last
        })
    };
    let last = writer.await.unwrap();
    // A sentinel written after everything else: once it arrives, every event has.
    let sentinel = store.put(key(&prefix, "sentinel"), "end").await.unwrap();
    assert!(sentinel.mod_revision > last);
    let mut state: BTreeMap<Bytes, (Bytes, Revision)> = BTreeMap::new();
    let mut previous = 0;
    while previous < sentinel.mod_revision {
        let event = watch.next().await.expect("stream ended").expect("event");
        assert!(
            event.revision() >= previous,
            "events arrive in revision order"
        );
        previous = event.revision();
        match event.kind {
            EventKind::Put => {
                state.insert(event.kv.key, (event.kv.value, event.kv.mod_revision));
            }
            EventKind::Delete => {
                assert!(
                    state.remove(&event.kv.key).is_some(),
                    "a delete follows a put"
                );
            }
            EventKind::Progress => panic!("progress items only when asked for"),
        }
    }
    let listed: BTreeMap<Bytes, (Bytes, Revision)> = store
        .range(Range::prefix(prefix.clone()))
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
        .collect();
    assert_eq!(state, listed);
}

/// With `prev_kv`, puts and deletes carry what the key held before; deletes carry the
/// delete's revision.
pub async fn watch_with_prev_kv_reports_previous_values_and_deletes(
    store: Arc<dyn Store>,
    prefix: String,
) {
    let k = key(&prefix, "a");
    let mut watch = store
        .watch(WatchRequest::key(k.clone()).with_prev_kv())
        .await
        .unwrap();
    let v1 = store.create(k.clone(), "1").await.unwrap();
    let v2 = store.update(k.clone(), "2", v1.mod_revision).await.unwrap();
    let removed = store.delete(k.clone(), None).await.unwrap();
    let created = watch.next().await.unwrap().unwrap();
    assert_eq!(
        (created.kind, &created.kv, &created.prev),
        (EventKind::Put, &v1, &None)
    );
    let updated = watch.next().await.unwrap().unwrap();
    assert_eq!(updated.kv, v2);
    assert_eq!(updated.prev, Some(v1));
    let deleted = watch.next().await.unwrap().unwrap();
    assert_eq!(deleted.kind, EventKind::Delete);
    assert_eq!(deleted.kv.key, k);
    assert!(deleted.kv.value.is_empty());
    assert!(deleted.revision() > v2.mod_revision);
    assert_eq!(deleted.prev, Some(removed));
}

/// A watch that asked for progress learns that writes outside its range moved the revision
/// on, and still gets its own events in order; one that did not ask gets no progress items.
pub async fn progress_notifications_report_writes_elsewhere(store: Arc<dyn Store>, prefix: String) {
    let watched = key(&prefix, "watched/");
    let mut with_progress = store
        .watch(WatchRequest::prefix(watched.clone()).with_progress_notify())
        .await
        .unwrap();
    let mut without = store
        .watch(WatchRequest::prefix(watched.clone()))
        .await
        .unwrap();
    let elsewhere = store.put(key(&prefix, "elsewhere"), "x").await.unwrap();
    loop {
        let item = with_progress.next().await.unwrap().unwrap();
        assert_eq!(
            item.kind,
            EventKind::Progress,
            "nothing was written in range yet"
        );
        assert!(item.kv.key.is_empty());
        if item.revision() >= elsewhere.mod_revision {
            break;
        }
    }
    let inside = store.put(key(&prefix, "watched/a"), "y").await.unwrap();
    let mut previous = elsewhere.mod_revision;
    loop {
        let item = with_progress.next().await.unwrap().unwrap();
        assert!(
            item.revision() >= previous,
            "items arrive in revision order"
        );
        previous = item.revision();
        if item.kind == EventKind::Put {
            assert_eq!(item.kv, inside);
            break;
        }
    }
    let first = without.next().await.unwrap().unwrap();
    assert_eq!(first.kind, EventKind::Put, "no progress items unless asked");
    assert_eq!(first.kv, inside);
}

/// Compaction turns reads at and watches from older revisions into `Compacted`, keeps the
/// compaction revision readable, and refuses to compact twice or into the future.
pub async fn compaction_makes_older_revisions_compacted(store: Arc<dyn Store>, prefix: String) {
    let k = key(&prefix, "a");
    let v1 = store.create(k.clone(), "1").await.unwrap();
    let v2 = store.update(k.clone(), "2", v1.mod_revision).await.unwrap();
    let v3 = store.update(k.clone(), "3", v2.mod_revision).await.unwrap();
    store.compact(v2.mod_revision).await.expect("compact");

    let old = store
        .range(Range::key(k.clone()).at_revision(v1.mod_revision))
        .await;
    assert!(
        matches!(old, Err(Error::Compacted { requested, .. }) if requested == v1.mod_revision),
        "{old:?}"
    );
    let kept = store
        .range(Range::key(k.clone()).at_revision(v2.mod_revision))
        .await
        .unwrap();
    assert_eq!(kept.kvs, vec![v2.clone()]);
    assert_eq!(store.get(k.clone()).await.unwrap(), Some(v3.clone()));

    let watch = store
        .watch(WatchRequest::key(k.clone()).from_revision(v1.mod_revision))
        .await;
    assert!(
        matches!(watch, Err(Error::Compacted { .. })),
        "watch from a compacted revision: {:?}",
        watch.err()
    );
    let mut resumed = store
        .watch(WatchRequest::key(k.clone()).from_revision(v3.mod_revision))
        .await
        .unwrap();
    assert_eq!(resumed.next().await.unwrap().unwrap().kv, v3);

    let twice = store.compact(v1.mod_revision).await;
    assert!(matches!(twice, Err(Error::Compacted { .. })), "{twice:?}");
    let current = store.current_revision().await.unwrap();
    let future = store.compact(current + 1000).await;
    assert!(
        matches!(future, Err(Error::FutureRevision { requested, .. }) if requested == current + 1000),
        "{future:?}"
    );
}

/// A transaction runs its success branch only when every compare holds, its failure branch
/// otherwise, and all its writes share one revision.
pub async fn transactions_run_one_branch_atomically(store: Arc<dyn Store>, prefix: String) {
    let a = key(&prefix, "a");
    let b = key(&prefix, "b");
    let c = key(&prefix, "c");
    let a1 = store.create(a.clone(), "1").await.unwrap();
    let both = store
        .txn(
            Txn::new()
                .when([
                    Compare::value(a.clone(), CompareOp::Equal, "1"),
                    Compare::version(b.clone(), CompareOp::Equal, 0),
                ])
                .and_then([
                    Op::put(b.clone(), "from-txn"),
                    Op::put(a.clone(), "2"),
                    Op::get(a.clone()),
                ])
                .or_else([Op::get(a.clone())]),
        )
        .await
        .unwrap();
    assert!(both.succeeded);
    let [OpResult::Put {
        kv: put_b,
        prev: None,
    }, OpResult::Put {
        kv: put_a,
        prev: Some(prev_a),
    }, OpResult::Get(Some(got_a))] = &both.results[..]
    else {
        panic!("unexpected results {:?}", both.results);
    };
    assert_eq!(put_b.mod_revision, both.revision);
    assert_eq!(
        put_a.mod_revision, both.revision,
        "one revision per transaction"
    );
    assert_eq!(prev_a, &a1);
    assert_eq!(got_a.value, "2");

    let failed = store
        .txn(
            Txn::new()
                .when([Compare::mod_revision(
                    a.clone(),
                    CompareOp::Equal,
                    a1.mod_revision,
                )])
                .and_then([Op::put(c.clone(), "never"), Op::delete(b.clone())])
                .or_else([Op::get(a.clone()), Op::get(c.clone())]),
        )
        .await
        .unwrap();
    assert!(!failed.succeeded);
    assert_eq!(
        failed.results,
        vec![OpResult::Get(Some(put_a.clone())), OpResult::Get(None)]
    );
    assert_eq!(store.get(c.clone()).await.unwrap(), None);
    assert_eq!(store.get(b.clone()).await.unwrap(), Some(put_b.clone()));

    let greater = store
        .txn(
            Txn::new()
                .when([Compare::mod_revision(
                    a.clone(),
                    CompareOp::Greater,
                    a1.mod_revision,
                )])
                .and_then([Op::delete(a.clone()), Op::delete(b.clone())]),
        )
        .await
        .unwrap();
    assert!(greater.succeeded);
    assert!(values(&*store, Range::prefix(prefix.clone()))
        .await
        .is_empty());
}

/// Sixteen writers doing read-modify-write on one counter: the final value equals the
/// number of successful writes, and every failure is a `Conflict`.
pub async fn sixteen_concurrent_read_modify_writers_lose_nothing(
    store: Arc<dyn Store>,
    prefix: String,
) {
    const WRITERS: usize = 16;
    const ATTEMPTS: usize = 25;
    let counter = key(&prefix, "counter");
    store.create(counter.clone(), "0").await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = store.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let (mut successes, mut conflicts) = (0_u64, 0_u64);
            for _ in 0..ATTEMPTS {
                let current = store.get(counter.clone()).await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&current.value)
                    .unwrap()
                    .parse()
                    .unwrap();
                match store
                    .update(counter.clone(), (n + 1).to_string(), current.mod_revision)
                    .await
                {
                    Ok(_) => successes += 1,
                    Err(Error::Conflict { .. }) => conflicts += 1,
                    Err(other) => panic!("a failure other than Conflict: {other}"),
                }
                tokio::task::yield_now().await;
            }
            (successes, conflicts)
        }));
    }
    let (mut successes, mut conflicts) = (0, 0);
    for task in tasks {
        let (s, c) = task.await.unwrap();
        successes += s;
        conflicts += c;
    }
    assert_eq!(successes + conflicts, (WRITERS * ATTEMPTS) as u64);
    assert!(successes > 0);
    let last = store.get(counter).await.unwrap().unwrap();
    assert_eq!(
        std::str::from_utf8(&last.value).unwrap(),
        successes.to_string()
    );
    assert_eq!(last.version as u64, successes + 1);
}

/// Empty keys, oversized values and revisions in the future get typed errors and leave the
/// store unchanged.
pub async fn bad_input_is_rejected_and_changes_nothing(store: Arc<dyn Store>, prefix: String) {
    let k = key(&prefix, "a");
    let empty = store.create(Bytes::new(), "v").await;
    assert!(matches!(empty, Err(Error::InvalidKey { .. })), "{empty:?}");
    let empty_range = store.range(Range::key(Bytes::new())).await;
    assert!(
        matches!(empty_range, Err(Error::InvalidKey { .. })),
        "{empty_range:?}"
    );

    let too_large = vec![b'x'; MAX_VALUE_BYTES + 1];
    let oversized = store.create(k.clone(), too_large.clone()).await;
    assert!(
        matches!(oversized, Err(Error::ValueTooLarge { size, limit }) if size == MAX_VALUE_BYTES + 1 && limit == MAX_VALUE_BYTES),
        "{oversized:?}"
    );
    let in_txn = store
        .txn(Txn::new().and_then([
            Op::put(key(&prefix, "b"), "ok"),
            Op::put(k.clone(), too_large),
        ]))
        .await;
    assert!(
        matches!(in_txn, Err(Error::ValueTooLarge { .. })),
        "{in_txn:?}"
    );

    let current = store.current_revision().await.unwrap();
    let future = current + 1000;
    let read = store
        .range(Range::prefix(prefix.clone()).at_revision(future))
        .await;
    assert!(
        matches!(read, Err(Error::FutureRevision { requested, .. }) if requested == future),
        "{read:?}"
    );
    let watch = store
        .watch(WatchRequest::prefix(prefix.clone()).from_revision(future))
        .await;
    assert!(
        matches!(watch, Err(Error::FutureRevision { .. })),
        "{:?}",
        watch.err()
    );
    let compact = store.compact(future).await;
    assert!(
        matches!(compact, Err(Error::FutureRevision { .. })),
        "{compact:?}"
    );
    let negative = store
        .range(Range::prefix(prefix.clone()).at_revision(-1))
        .await;
    assert!(
        matches!(negative, Err(Error::InvalidRequest { .. })),
        "{negative:?}"
    );

    assert!(
        values(&*store, Range::prefix(prefix.clone()))
            .await
            .is_empty(),
        "nothing was written"
    );
    // The store still works after the rejections.
    store.create(k, "fine").await.unwrap();
}
