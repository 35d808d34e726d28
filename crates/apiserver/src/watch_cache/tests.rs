//! Unit tests of the watch cache over the in-memory store.

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::{parse_label_selector, Resource};
use capstan_store::memory::MemoryStore;
use capstan_store::StoreExt;
use serde_json::json;

use std::sync::Arc;

use capstan_api::Error;
use capstan_store::{Revision, Store};
use futures::StreamExt;
use serde_json::Value;

use super::*;
use crate::codec;

use capstan_api::testing::within;

/// How long one test may take.
const LIMIT: Duration = Duration::from_secs(10);

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
    within(LIMIT, async {
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
    within(LIMIT, async {
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
    within(LIMIT, async {
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
    within(LIMIT, async {
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
    within(LIMIT, async {
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
    within(LIMIT, async {
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
    within(LIMIT, async {
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
    within(LIMIT, async {
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
    within(LIMIT, async {
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
    within(LIMIT, async {
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
