//! Registry create and get throughput for Pods, through the typed `Api<Pod>` (admission,
//! defaulting and validation included), on the in-memory store and, in the same run, on the
//! real etcd named by `CAPSTAN_ETCD_ENDPOINTS`.
//!
//! ```text
//! scripts/bench-registry    # starts a throwaway etcd, then runs this with --features etcd
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use capstan_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use capstan_api::kube_core::params::PostParams;
use capstan_api::kube_core::ObjectMeta;
use capstan_api::{Api, Client};
use capstan_apiserver::registry::Registry;
use capstan_store::{memory::MemoryStore, Store};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Requests in flight per iteration.
const CONCURRENCY: usize = 64;
/// Both stores compact history every this many creates, as the API server does.
const COMPACT_EVERY: u64 = 65_536;

fn pod(name: String) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(BTreeMap::from([
                ("app".into(), "newkubia".into()),
                ("pod-template-hash".into(), "6c9b8d7f5".into()),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "newkubia".into(),
                image: Some("luksa/kubia:v2".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".into(), Quantity("100m".into())),
                        ("memory".into(), Quantity("64Mi".into())),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
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

fn bench_registry(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run = std::process::id();
    let counter = Arc::new(AtomicU64::new(0));
    let apis: Vec<(&str, Arc<dyn Store>, Api<Pod>)> = backends(&rt)
        .into_iter()
        .map(|(name, store)| {
            let registry: Arc<dyn Client> = Arc::new(Registry::new(store.clone()));
            let namespace = format!("bench-{run}");
            rt.block_on(capstan_apiserver::testing::create_namespace(
                &*registry, &namespace,
            ));
            (
                name,
                store,
                Api::namespaced(registry, &format!("bench-{run}")),
            )
        })
        .collect();

    let mut group = c.benchmark_group("registry_create_pod");
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    for (name, store, api) in &apis {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let base = counter.fetch_add(CONCURRENCY as u64, Ordering::Relaxed);
                let api = api.clone();
                let store = store.clone();
                async move {
                    let creates = (0..CONCURRENCY as u64).map(|i| {
                        let api = api.clone();
                        async move {
                            api.create(&PostParams::default(), &pod(format!("pod-{}", base + i)))
                                .await
                        }
                    });
                    for created in futures::future::join_all(creates).await {
                        created.unwrap();
                    }
                    if base % COMPACT_EVERY < CONCURRENCY as u64 {
                        let current = store.current_revision().await.unwrap();
                        let _ = store.compact(current).await;
                    }
                }
            })
        });
    }
    group.finish();

    // As HTTP clients write: with a field manager, so every create records its managedFields.
    let with_manager = PostParams {
        field_manager: Some("bench".into()),
        ..PostParams::default()
    };
    let with_manager = &with_manager;
    let mut group = c.benchmark_group("registry_create_pod_with_manager");
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    for (name, store, api) in &apis {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let base = counter.fetch_add(CONCURRENCY as u64, Ordering::Relaxed);
                let api = api.clone();
                let store = store.clone();
                async move {
                    let creates = (0..CONCURRENCY as u64).map(|i| {
                        let api = api.clone();
                        async move {
                            api.create(with_manager, &pod(format!("managed-{}", base + i)))
                                .await
                        }
                    });
                    for created in futures::future::join_all(creates).await {
                        created.unwrap();
                    }
                    if base % COMPACT_EVERY < CONCURRENCY as u64 {
                        let current = store.current_revision().await.unwrap();
                        let _ = store.compact(current).await;
                    }
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("registry_get_pod");
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    for (name, _, api) in &apis {
        let names: Vec<String> = (0..CONCURRENCY).map(|i| format!("get-{i}")).collect();
        rt.block_on(async {
            for name in &names {
                api.create(&PostParams::default(), &pod(name.clone()))
                    .await
                    .unwrap();
            }
        });
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let api = api.clone();
                let names = names.clone();
                async move {
                    let gets = names.into_iter().map(|name| {
                        let api = api.clone();
                        async move { api.get(&name).await }
                    });
                    for got in futures::future::join_all(gets).await {
                        got.unwrap();
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
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench_registry
}
criterion_main!(benches);
