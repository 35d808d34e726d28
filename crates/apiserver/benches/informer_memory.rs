//! An informer over 150,000 Pods: initial sync time and the memory it holds.
//!
//! ```text
//! cargo bench -p capstan-apiserver --bench informer_memory
//! ```
//!
//! Creates 150,000 Pods through the registry on the in-memory store and starts the Pod watch
//! cache (the API server's side). Then it starts a shared informer on them (paged list of
//! 500, through `Api<Pod>`, as a controller would) and measures the time to
//! `wait_for_sync` and the process's resident memory before and after: the difference is what
//! the informer holds. Budget: under 1 GiB.
//!
//! Then it forces a relist (the source answers 410 Gone once) and reports how far resident
//! memory peaked above the steady state while the informer relisted into its full cache: a
//! relist applies page by page, so it must stay far below a second full copy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use capstan_api::kube_core::params::PostParams;
use capstan_api::kube_core::params::{ListParams, WatchParams};
use capstan_api::kube_core::ObjectList;
use capstan_api::kube_core::ObjectMeta;
use capstan_api::{Api, Error};
use capstan_watch::{EventStream, ReflectorOptions, SharedInformer, Watch};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::Notify;

/// A source that can be told to end its stream and answer the next watch with 410 Gone.
struct Relistable {
    inner: Api<Pod>,
    gone: AtomicBool,
    cut: Arc<Notify>,
    watches: AtomicUsize,
}

#[async_trait]
impl Watch<Pod> for Relistable {
    async fn list(&self, params: &ListParams) -> capstan_api::Result<ObjectList<Pod>> {
        self.inner.list(params).await
    }

    async fn watch(&self, params: &WatchParams, rv: &str) -> capstan_api::Result<EventStream<Pod>> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        if self.gone.swap(false, Ordering::SeqCst) {
            return Err(Error::Gone {
                message: "forced by the benchmark".into(),
            });
        }
        let cut = self.cut.clone().notified_owned();
        Ok(self.inner.watch(params, rv).await?.take_until(cut).boxed())
    }
}

/// mimalloc, counting the bytes currently allocated: resident memory also counts pages the
/// allocator keeps after transient use, live bytes are what the program holds.
#[global_allocator]
static ALLOCATOR: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

fn live_mib() -> f64 {
    ALLOCATOR.allocated() as f64 / (1024.0 * 1024.0)
}

const PODS: usize = 150_000;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn pod(i: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("newkubia-6c9b8d7f5-{i:06}")),
            labels: Some(BTreeMap::from([
                ("app".into(), "newkubia".into()),
                ("pod-template-hash".into(), "6c9b8d7f5".into()),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(format!("node{:03}", i % 1000)),
            containers: vec![Container {
                name: "newkubia".into(),
                image: Some("luksa/kubia:v2".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let registry = capstan_apiserver::testing::client();
        let api: Api<Pod> = Api::namespaced(registry.clone(), "default");
        let started = Instant::now();
        for chunk in (0..PODS).collect::<Vec<_>>().chunks(256) {
            let creates = chunk.iter().map(|&i| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &pod(i)).await }
            });
            for created in futures::future::join_all(creates).await {
                created.unwrap();
            }
        }
        println!(
            "created {PODS} pods through the registry in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        // The API server's side: the Pod watch cache, started by a first watch.
        let warm = api.watch(&WatchParams::default(), "").await.unwrap();
        drop(warm);

        let source = Arc::new(Relistable {
            inner: Api::<Pod>::all(registry.clone()),
            gone: AtomicBool::new(false),
            cut: Arc::new(Notify::new()),
            watches: AtomicUsize::new(0),
        });
        let before = status_kib("VmRSS:");
        let live_before = live_mib();
        let started = Instant::now();
        let informer = SharedInformer::spawn(source.clone(), ReflectorOptions::default());
        informer.wait_for_sync().await;
        let synced = started.elapsed();
        assert_eq!(informer.cache().len(), PODS);
        let after = status_kib("VmRSS:");
        println!(
            "informer initial sync of {PODS} pods: {:.2} s ({:.0} pods/s)",
            synced.as_secs_f64(),
            PODS as f64 / synced.as_secs_f64()
        );
        println!(
            "live heap: {:.0} MiB before the informer, {:.0} MiB after: the informer holds {:.0} MiB ({:.1} KiB per pod)",
            live_before,
            live_mib(),
            live_mib() - live_before,
            (live_mib() - live_before) * 1024.0 / PODS as f64
        );
        println!(
            "resident memory: {:.0} MiB before the informer, {:.0} MiB after (+{:.0} MiB, including pages the allocator kept from transient list pages)",
            mib(before),
            mib(after),
            mib(after.saturating_sub(before))
        );

        // A relist into the full cache, with the peak-memory mark reset first.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let steady = status_kib("VmRSS:");
        let mut deltas = informer.subscribe();
        for _ in 0..PODS {
            deltas.recv().await.unwrap(); // the replay of the current objects
        }
        let watches = source.watches.load(Ordering::SeqCst);
        source.gone.store(true, Ordering::SeqCst);
        source.cut.notify_waiters();
        let started = Instant::now();
        // Done when the reflector watches again: once to get 410, once after the relist.
        while source.watches.load(Ordering::SeqCst) < watches + 2 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        println!("relist of {PODS} pods took {:.2} s", started.elapsed().as_secs_f64());
        println!("live heap after the relist: {:.0} MiB", live_mib());
        println!(
            "relist into the full cache: resident steady {:.0} MiB, peak {:.0} MiB (+{:.0} MiB; a second copy would be +{:.0} MiB)",
            mib(steady),
            mib(status_kib("VmHWM:")),
            mib(status_kib("VmHWM:").saturating_sub(steady)),
            mib(after.saturating_sub(before))
        );
        assert!(deltas.try_recv().is_err(), "an unchanged relist changes nothing");
    });
}
