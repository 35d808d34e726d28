//! One write fanned out to 10,000 watchers of the watch cache: p50 and p99 delivery latency.
//!
//! ```text
//! cargo bench -p capstan-apiserver --bench watch_fanout
//! ```
//!
//! Each round writes one Pod to the in-memory store and waits until every watcher has
//! received it; the latency of a delivery is from just before the write to the moment the
//! watcher's task holds the event. Budget: p99 < 20 ms.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_api::Resource;
use capstan_apiserver::codec;
use capstan_apiserver::watch_cache::{
    CacheWatchRequest, WatchCache, WatchCacheOptions, WatchFilter, WatchStart,
};
use capstan_store::{memory::MemoryStore, Store, StoreExt};
use futures::StreamExt;
use tokio::sync::Notify;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WATCHERS: usize = 10_000;
const ROUNDS: usize = 50;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let store = MemoryStore::new();
    let cache = WatchCache::start(
        Arc::new(store.clone()) as Arc<dyn Store>,
        Pod::info(),
        WatchCacheOptions::default(),
        None,
    )
    .await
    .unwrap();
    let delivered = Arc::new(AtomicUsize::new(0));
    let all_delivered = Arc::new(Notify::new());
    let mut watchers = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let mut watch = cache
            .watch(CacheWatchRequest {
                filter: WatchFilter::default(),
                start: WatchStart::Snapshot,
                bookmarks: false,
                initial_events_end: false,
            })
            .await
            .unwrap();
        let delivered = delivered.clone();
        let all_delivered = all_delivered.clone();
        watchers.push(tokio::spawn(async move {
            let mut arrivals = Vec::with_capacity(ROUNDS);
            while arrivals.len() < ROUNDS {
                let event = watch.next().await.expect("open").expect("event");
                arrivals.push((event.revision, Instant::now()));
                if delivered.fetch_add(1, Ordering::AcqRel) + 1 == WATCHERS {
                    all_delivered.notify_one();
                }
            }
            arrivals
        }));
    }
    let mut writes = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod-{round}"), "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        });
        delivered.store(0, Ordering::Release);
        let notified = all_delivered.notified();
        let start = Instant::now();
        let kv = store
            .put(
                format!("/registry/pods/default/pod-{round}"),
                codec::encode(&pod).unwrap(),
            )
            .await
            .unwrap();
        writes.push((kv.mod_revision, start));
        tokio::time::timeout(Duration::from_secs(30), notified)
            .await
            .expect("every watcher got the event");
    }
    let mut latencies = Vec::with_capacity(WATCHERS * ROUNDS);
    for watcher in watchers {
        for (revision, arrived) in watcher.await.unwrap() {
            let (_, start) = writes.iter().find(|(r, _)| *r == revision).unwrap();
            latencies.push(arrived.duration_since(*start));
        }
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "watch_fanout: {WATCHERS} watchers x {ROUNDS} writes = {} deliveries",
        latencies.len()
    );
    println!(
        "delivery latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
}
