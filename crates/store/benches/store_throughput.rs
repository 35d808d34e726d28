//! Put, get, range and watch-delivery throughput of `store::memory`, and of `store::etcd`
//! against a real etcd in the same run.
//!
//! ```text
//! cargo bench -p capstan-store --features etcd --bench store_throughput
//! ```
//!
//! with `CAPSTAN_ETCD_ENDPOINTS` naming the etcd (`scripts/bench-store` starts one). Without
//! it, only the memory store is measured, and the run says so.
//!
//! The binary uses mimalloc, as a server built on Capstan would: with glibc's allocator the
//! memory store's concurrent puts spend most of their time re-faulting pages that glibc
//! trims from the heap after every batch (`docs/benchmarks.md` has both figures).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capstan_store::{memory::MemoryStore, Range, Store, StoreExt, WatchRequest};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Requests in flight per iteration, as a busy API server would have.
const CONCURRENCY: usize = 64;
/// Writes cycle over this many keys: mostly updates, like a cluster's objects.
const KEYSPACE: u64 = 10_000;
/// Both backends compact history every this many writes, as the API server does.
const COMPACT_EVERY: u64 = 65_536;
/// Keys per range read.
const RANGE_KEYS: usize = 100;
/// A value the size of a small Pod.
const VALUE: &[u8] = &[b'x'; 1024];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn backends(rt: &tokio::runtime::Runtime) -> Vec<(&'static str, Arc<dyn Store>)> {
    #[allow(unused_mut)]
    let mut backends: Vec<(&'static str, Arc<dyn Store>)> =
        vec![("memory", Arc::new(MemoryStore::new()))];
    #[cfg(feature = "etcd")]
    match capstan_store::etcd::endpoints_from_env() {
        Some(endpoints) => {
            let store = rt
                .block_on(capstan_store::etcd::EtcdStore::connect(&endpoints))
                .expect("etcd named by CAPSTAN_ETCD_ENDPOINTS");
            backends.push(("etcd", Arc::new(store)));
        }
        None => eprintln!("CAPSTAN_ETCD_ENDPOINTS is not set: measuring the memory store only"),
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = rt;
        eprintln!("built without the `etcd` feature: measuring the memory store only");
    }
    backends
}

/// Compacts to the current revision once every [`COMPACT_EVERY`] writes.
async fn compact_now_and_then(store: &dyn Store, writes_before: u64) {
    if writes_before % COMPACT_EVERY < CONCURRENCY as u64 {
        let current = store.current_revision().await.unwrap();
        // Another benchmark may have compacted there already.
        let _ = store.compact(current).await;
    }
}

fn bench_store(c: &mut Criterion) {
    let rt = runtime();
    let backends = backends(&rt);
    let counter = Arc::new(AtomicU64::new(0));
    let run = std::process::id();

    let mut group = c.benchmark_group("put");
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    for (name, store) in &backends {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let store = store.clone();
                let base = counter.fetch_add(CONCURRENCY as u64, Ordering::Relaxed);
                async move {
                    let puts = (0..CONCURRENCY as u64).map(|i| {
                        store.put(
                            format!("/bench/{run}/put/{:06}", (base + i) % KEYSPACE),
                            VALUE,
                        )
                    });
                    for result in futures::future::join_all(puts).await {
                        result.unwrap();
                    }
                    compact_now_and_then(&*store, base).await;
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    for (name, store) in &backends {
        let keys: Vec<String> = (0..CONCURRENCY)
            .map(|i| format!("/bench/{run}/get/{i:04}"))
            .collect();
        rt.block_on(async {
            for key in &keys {
                store.put(key.clone(), VALUE).await.unwrap();
            }
        });
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let store = store.clone();
                let keys = keys.clone();
                async move {
                    let gets = keys.into_iter().map(|key| {
                        let store = store.clone();
                        async move { store.get(key).await }
                    });
                    for result in futures::future::join_all(gets).await {
                        assert!(result.unwrap().is_some());
                    }
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("range_100_keys");
    group.throughput(Throughput::Elements(RANGE_KEYS as u64));
    for (name, store) in &backends {
        let prefix = format!("/bench/{run}/range/");
        rt.block_on(async {
            for i in 0..RANGE_KEYS {
                store.put(format!("{prefix}{i:04}"), VALUE).await.unwrap();
            }
        });
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let store = store.clone();
                let prefix = prefix.clone();
                async move {
                    let page = store.range(Range::prefix(prefix)).await.unwrap();
                    assert_eq!(page.kvs.len(), RANGE_KEYS);
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("watch_delivery");
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    for (name, store) in &backends {
        let prefix = format!("/bench/{run}/watch/");
        let watch = rt
            .block_on(store.watch(WatchRequest::prefix(prefix.clone())))
            .unwrap();
        let watch = Arc::new(tokio::sync::Mutex::new(watch));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let store = store.clone();
                let watch = watch.clone();
                let prefix = prefix.clone();
                let base = counter.fetch_add(CONCURRENCY as u64, Ordering::Relaxed);
                async move {
                    let puts = (0..CONCURRENCY as u64)
                        .map(|i| store.put(format!("{prefix}{:06}", (base + i) % KEYSPACE), VALUE));
                    futures::future::join_all(puts).await;
                    compact_now_and_then(&*store, base).await;
                    let mut watch = watch.lock().await;
                    for _ in 0..CONCURRENCY {
                        watch.next().await.unwrap().unwrap();
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench_store
}
criterion_main!(benches);
