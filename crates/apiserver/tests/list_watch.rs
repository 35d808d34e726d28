//! List-watch end to end: a shared informer over the registry (and its watch cache) on the
//! memory store and on real etcd, with its watch streams cut every few events and the store
//! compacted in the middle.
//!
//! While history lasts, the handlers must see exactly the writes, in order: none missed,
//! duplicated or reordered. Across a gap (watches held back while more changes than the
//! watch cache's window happen and the store compacts), the reflector must relist, and the
//! informer must end equal to a fresh list, still with no duplicate and no version going
//! backwards. The test asserts on the recorded log of handler deltas.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
use capstan_api::kube_core::params::{DeleteParams, ListParams, PostParams, WatchParams};
use capstan_api::kube_core::ObjectList;
use capstan_api::{Api, Client, Deletion, Result};
use capstan_apiserver::registry::Registry;
use capstan_apiserver::watch_cache::WatchCacheOptions;
use capstan_store::{memory::MemoryStore, Store};
use capstan_watch::{Backoff, Delta, EventStream, ReflectorOptions, SharedInformer, Watch};
use futures::StreamExt;
use tokio::sync::{mpsc::UnboundedReceiver, watch};

/// Cuts every watch stream after `every` events, counts lists, and can hold new watches back.
struct Cutting {
    inner: Api<ConfigMap>,
    every: usize,
    open: watch::Receiver<bool>,
    lists: AtomicUsize,
}

#[async_trait]
impl Watch<ConfigMap> for Cutting {
    async fn list(&self, params: &ListParams) -> Result<ObjectList<ConfigMap>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(params).await
    }

    async fn watch(&self, params: &WatchParams, rv: &str) -> Result<EventStream<ConfigMap>> {
        let mut open = self.open.clone();
        let _ = open.wait_for(|open| *open).await;
        Ok(self.inner.watch(params, rv).await?.take(self.every).boxed())
    }
}

type Log = Vec<(String, String, &'static str)>;

fn record(delta: &Delta<ConfigMap>) -> (String, String, &'static str) {
    let kind = match delta {
        Delta::Added(_) => "added",
        Delta::Updated { .. } => "updated",
        Delta::Deleted(_) => "deleted",
    };
    let object = delta.object();
    (
        object.metadata.name.clone().unwrap_or_default(),
        object.metadata.resource_version.clone().unwrap_or_default(),
        kind,
    )
}

fn fold(log: &Log) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for (name, rv, kind) in log {
        if *kind == "deleted" {
            state.remove(name);
        } else {
            state.insert(name.clone(), rv.clone());
        }
    }
    state
}

async fn fresh_list(api: &Api<ConfigMap>) -> BTreeMap<String, String> {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|cm| {
            (
                cm.metadata.name.unwrap(),
                cm.metadata.resource_version.unwrap(),
            )
        })
        .collect()
}

async fn drain_until(
    deltas: &mut UnboundedReceiver<Delta<ConfigMap>>,
    log: &mut Log,
    want: &BTreeMap<String, String>,
) {
    while fold(log) != *want {
        let delta = deltas.recv().await.expect("the informer is running");
        log.push(record(&delta));
    }
}

fn config_map(name: &str, value: usize) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.data = Some(BTreeMap::from([("value".into(), value.to_string())]));
    cm
}

/// Writes through the API; returns what the handlers should see of each write.
async fn churn(api: &Api<ConfigMap>, rounds: usize, seed: usize) -> Log {
    let mut expected = Vec::new();
    for i in 0..rounds {
        let name = format!("cm-{:02}", (i * 7 + seed) % 13);
        let existing = api.get_opt(&name).await.unwrap();
        match (existing, i % 4) {
            (Some(_), 3) => {
                let deleted = api.delete(&name, &DeleteParams::default()).await.unwrap();
                assert!(matches!(deleted, Deletion::Deleted(_)));
                expected.push((name, String::new(), "deleted"));
            }
            (Some(mut cm), _) => {
                cm.data = Some(BTreeMap::from([("value".into(), i.to_string())]));
                let updated = api.update(&PostParams::default(), &cm).await.unwrap();
                let rv = updated.metadata.resource_version.unwrap();
                expected.push((name, rv, "updated"));
            }
            (None, _) => {
                let created = api
                    .create(&PostParams::default(), &config_map(&name, i))
                    .await
                    .unwrap();
                let rv = created.metadata.resource_version.unwrap();
                expected.push((name, rv, "added"));
            }
        }
    }
    expected
}

async fn informer_survives_cut_streams_and_compaction(store: Arc<dyn Store>, namespace: &str) {
    // The window covers phase 1 (the cache starts at the informer's first watch, after the
    // seeds), so phase 1 never loses history; phase 2's gap is longer than the window.
    let registry = Registry::new(store.clone()).with_watch_cache(WatchCacheOptions {
        window: 64,
        ..Default::default()
    });
    let client: Arc<dyn Client> = Arc::new(registry);
    capstan_apiserver::testing::create_namespace(&*client, namespace).await;
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    for i in 0..10 {
        api.create(&PostParams::default(), &config_map(&format!("seed-{i}"), i))
            .await
            .unwrap();
    }
    let (gate, open) = watch::channel(true);
    let source = Arc::new(Cutting {
        inner: api.clone(),
        every: 5,
        open,
        lists: AtomicUsize::new(0),
    });
    let informer = SharedInformer::spawn(
        source.clone(),
        ReflectorOptions {
            page_size: 4,
            backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(50)),
            ..Default::default()
        },
    );
    let mut deltas = informer.subscribe();
    informer.wait_for_sync().await;
    let mut log = Log::new();
    drain_until(&mut deltas, &mut log, &fresh_list(&api).await).await;
    let lists_after_sync = source.lists.load(Ordering::SeqCst);
    assert_eq!(lists_after_sync, 3, "ten objects in pages of four");

    // Phase 1: streams cut every five events, history intact: exactly the writes, in order.
    let start = log.len();
    let expected = churn(&api, 60, 0).await;
    drain_until(&mut deltas, &mut log, &fresh_list(&api).await).await;
    let seen: Log = log[start..]
        .iter()
        .map(|(name, rv, kind)| {
            let rv = if *kind == "deleted" {
                String::new()
            } else {
                rv.clone()
            };
            (name.clone(), rv, *kind)
        })
        .collect();
    assert_eq!(seen, expected, "no event missed, duplicated or reordered");
    assert_eq!(
        source.lists.load(Ordering::SeqCst),
        lists_after_sync,
        "resuming cut streams never relists"
    );

    // Phase 2: watches held back while more changes than the cache's window happen and the
    // store compacts. The informer must relist and end equal to a fresh list.
    gate.send_replace(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gap_start = log.len();
    churn(&api, 100, 5).await;
    let current = store.current_revision().await.unwrap();
    store.compact(current).await.unwrap();
    // A consistent watch (no resourceVersion) waits until the watch cache holds every change
    // of the gap. Without it, a cache lagging behind the store under load could still hold
    // the informer's resume point, and the informer would rightly resume without a relist.
    drop(
        api.watch(&WatchParams::default(), "")
            .await
            .expect("a consistent watch"),
    );
    gate.send_replace(true);
    let want = fresh_list(&api).await;
    drain_until(&mut deltas, &mut log, &want).await;
    assert!(
        source.lists.load(Ordering::SeqCst) > lists_after_sync,
        "the gap forced a relist"
    );
    let cached: BTreeMap<String, String> = informer
        .cache()
        .list()
        .iter()
        .map(|cm| {
            (
                cm.metadata.name.clone().unwrap(),
                cm.metadata.resource_version.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(cached, want, "the informer equals a fresh list");
    let mut delivered = BTreeSet::new();
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (name, rv, kind) in &log[gap_start..] {
        assert!(
            delivered.insert((name.as_str(), rv.as_str(), *kind)),
            "{name}@{rv} {kind} delivered twice"
        );
        let rv: u64 = rv.parse().unwrap();
        if let Some(previous) = last.insert(name.as_str(), rv) {
            assert!(rv >= previous, "{name} went back from {previous} to {rv}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_on_the_memory_store_survives_cut_streams_and_compaction() {
    tokio::time::timeout(
        Duration::from_secs(60),
        informer_survives_cut_streams_and_compaction(Arc::new(MemoryStore::new()), "default"),
    )
    .await
    .expect("finished in time");
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_on_etcd_survives_cut_streams_and_compaction() {
    let store = capstan_store::etcd::EtcdStore::from_env()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "this test needs a real etcd ({e}): run `scripts/test`, which installs and \
                 starts one and exports CAPSTAN_ETCD_ENDPOINTS"
            )
        });
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    tokio::time::timeout(
        Duration::from_secs(60),
        informer_survives_cut_streams_and_compaction(Arc::new(store), &format!("lw-{nonce}")),
    )
    .await
    .expect("finished in time");
}
