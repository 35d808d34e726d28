//! The Kubernetes API over loopback HTTP: GET and CREATE throughput, p99 latency at a fixed
//! rate, and event delivery to 1,000 concurrent watchers, on the in-memory store and (with
//! the `etcd` feature and `CAPSTAN_ETCD_ENDPOINTS`) on a real etcd in the same run.
//!
//! ```text
//! scripts/bench-with-etcd -p capstan-apiserver --features etcd --bench http_api
//! ```
//!
//! Client and server share the machine's two cores: the load comes from `RemoteClient`
//! tasks in the same process, over real TCP connections on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
use capstan_api::kube_core::params::{PostParams, WatchParams};
use capstan_api::kube_core::WatchEvent;
use capstan_api::{Api, Client};
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::registry::Registry;
use capstan_apiserver::remote::RemoteClient;
use capstan_store::{memory::MemoryStore, Store};
use futures::StreamExt;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: usize = 64;
const RUN: Duration = Duration::from_secs(4);
const WATCHERS: usize = 1_000;

fn config_map(name: String) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name);
    cm.data = Some(BTreeMap::from([("key".into(), "value".into())]));
    cm
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

async fn throughput<F, Fut>(operation: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let operation = Arc::new(operation);
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RUN;
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let operation = operation.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    operation(n).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    counter.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn measure(name: &str, store: Arc<dyn Store>) {
    let registry = Arc::new(Registry::new(store));
    let server = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client: Arc<dyn Client> = Arc::new(RemoteClient::new(&server.url()).unwrap());
    let namespace = format!("bench-{}", std::process::id());
    capstan_apiserver::testing::create_namespace(&*client, &namespace).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    api.create(&PostParams::default(), &config_map("target".into()))
        .await
        .unwrap();

    let get = {
        let api = api.clone();
        throughput(move |_| {
            let api = api.clone();
            async move {
                api.get("target").await.unwrap();
            }
        })
        .await
    };
    let create = {
        let api = api.clone();
        throughput(move |n| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &config_map(format!("cm-{n}")))
                    .await
                    .unwrap();
            }
        })
        .await
    };

    // Latency at a fixed rate of 1,000 GET/s for 5 s.
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::with_capacity(5_000);
    for _ in 0..5_000 {
        ticker.tick().await;
        let api = api.clone();
        requests.push(tokio::spawn(async move {
            let started = Instant::now();
            api.get("target").await.unwrap();
            started.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(requests.len());
    for request in requests {
        latencies.push(request.await.unwrap());
    }
    latencies.sort();

    // 1,000 watchers, each on its own HTTP connection; one write at a time.
    // From a fresh list's version, as a client would (the creates above went far past the
    // watch cache's window).
    let version = api
        .list(&capstan_api::kube_core::params::ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut streams = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let watcher_client: Arc<dyn Client> = Arc::new(RemoteClient::new(&server.url()).unwrap());
        let watcher_api: Api<ConfigMap> = Api::namespaced(watcher_client, &namespace);
        let params = WatchParams::default().fields("metadata.name=watched");
        streams.push(watcher_api.watch(&params, &version).await.unwrap());
    }
    let rounds = 10;
    let mut deliveries = Vec::with_capacity(WATCHERS * rounds);
    let watchers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut arrivals = Vec::with_capacity(rounds);
                while arrivals.len() < rounds {
                    match stream.next().await {
                        Some(Ok(WatchEvent::Added(_) | WatchEvent::Modified(_))) => {
                            arrivals.push(Instant::now())
                        }
                        Some(Ok(_)) => {}
                        other => panic!("watch ended: {other:?}"),
                    }
                }
                arrivals
            })
        })
        .collect();
    let mut writes = Vec::with_capacity(rounds);
    let mut watched = config_map("watched".into());
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(200)).await;
        watched.data = Some(BTreeMap::from([("round".into(), round.to_string())]));
        writes.push(Instant::now());
        watched = if round == 0 {
            api.create(&PostParams::default(), &watched).await.unwrap()
        } else {
            api.update(&PostParams::default(), &watched).await.unwrap()
        };
    }
    for watcher in watchers {
        for (round, arrived) in watcher.await.unwrap().into_iter().enumerate() {
            deliveries.push(arrived.duration_since(writes[round]));
        }
    }
    deliveries.sort();

    println!(
        "{name:>6}: GET {:.0}/s, CREATE {:.0}/s; GET at 1,000/s: p50 {:.2} ms, p99 {:.2} ms; \
         {WATCHERS} watchers: p50 {:.2} ms, p99 {:.2} ms",
        get,
        create,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&deliveries, 0.50),
        percentile(&deliveries, 0.99),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        measure("memory", Arc::new(MemoryStore::new())).await;
        #[cfg(feature = "etcd")]
        match capstan_store::etcd::endpoints_from_env() {
            Some(endpoints) => {
                let store = capstan_store::etcd::EtcdStore::connect(&endpoints)
                    .await
                    .unwrap();
                measure("etcd", Arc::new(store)).await;
            }
            None => eprintln!("CAPSTAN_ETCD_ENDPOINTS is not set: measuring the memory store only"),
        }
    });
}
