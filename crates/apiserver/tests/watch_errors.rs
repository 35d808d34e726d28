//! Watches whose history is gone, as clients meet them: kube-apiserver answers a watch from
//! an expired resourceVersion with `200` and a single `ERROR` event carrying the 410
//! `Status`, and client-go's reflector and kube-rs' watcher relist on exactly that. Both
//! Capstan's own reflector (over HTTP) and a kube-rs `watcher` + `reflector` must relist and
//! converge to the truth after their watch expires.
//!
//! Each test watches a server whose watch cache keeps a small window, shuts the server down
//! gracefully (the watch ends cleanly), writes more changes than the window holds (some of
//! which the watcher must learn: a deletion and new objects), serves the same registry again
//! on the same address, and waits for the client's store to equal a fresh list.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
use capstan_api::kube_core::params::{DeleteParams, ListParams, PostParams};
use capstan_api::testing::{eventually, within};
use capstan_api::{Api, Client};
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::registry::Registry;
use capstan_apiserver::remote::RemoteClient;
use capstan_apiserver::watch_cache::WatchCacheOptions;
use capstan_store::memory::MemoryStore;
use capstan_watch::{Cache, Reflector, ReflectorOptions};
use futures::StreamExt;

const DEADLINE: Duration = Duration::from_secs(60);

/// A registry whose watch cache keeps only the last four changes.
fn registry() -> Arc<Registry> {
    Arc::new(
        Registry::new(Arc::new(MemoryStore::new())).with_watch_cache(WatchCacheOptions {
            window: 4,
            ..WatchCacheOptions::default()
        }),
    )
}

fn config_map(name: &str) -> ConfigMap {
    let mut object = ConfigMap::default();
    object.metadata.name = Some(name.into());
    object
        .data
        .get_or_insert_with(Default::default)
        .insert("key".into(), name.into());
    object
}

fn in_process(registry: &Arc<Registry>) -> Api<ConfigMap> {
    let client: Arc<dyn Client> = registry.clone();
    Api::namespaced(client, "default")
}

/// The names of the ConfigMaps in `default`, as a fresh list has them.
async fn truth(config_maps: &Api<ConfigMap>) -> BTreeSet<String> {
    config_maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|object| object.metadata.name)
        .collect()
}

/// Binds `address`, retrying while the old socket lets go of it.
async fn serve_again(registry: Arc<Registry>, address: SocketAddr) -> ApiServer {
    let mut attempts = 0;
    loop {
        match ApiServer::bind(registry.clone(), address).await {
            Ok(server) => return server,
            Err(e) if attempts < 50 => {
                attempts += 1;
                tracing::debug!("rebinding {address}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("rebinding {address}: {e}"),
        }
    }
}

/// While no server runs: deletes `a`, creates `c0`..`c9` (more changes than the window).
async fn change_beyond_the_window(config_maps: &Api<ConfigMap>) {
    config_maps
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    for index in 0..10 {
        config_maps
            .create(&PostParams::default(), &config_map(&format!("c{index}")))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capstans_reflector_relists_and_converges_after_its_watch_expires() {
    within(DEADLINE, async {
        let registry = registry();
        let config_maps = in_process(&registry);
        for name in ["a", "b"] {
            config_maps
                .create(&PostParams::default(), &config_map(name))
                .await
                .unwrap();
        }
        let server = ApiServer::bind(registry.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let address = server.address();
        let remote: Arc<dyn Client> = Arc::new(RemoteClient::new(&server.url()).unwrap());
        let source = Arc::new(Api::<ConfigMap>::namespaced(remote, "default"));
        let cache = Cache::new();
        let reflector =
            tokio::spawn(Reflector::new(source, cache.clone(), ReflectorOptions::default()).run());
        let names = |cache: &Cache<ConfigMap>| -> BTreeSet<String> {
            cache
                .list()
                .iter()
                .filter_map(|object| object.metadata.name.clone())
                .collect()
        };
        eventually(Duration::from_secs(20), "the first list", || {
            let seen = names(&cache);
            async move { seen == BTreeSet::from(["a".to_string(), "b".to_string()]) }
        })
        .await;

        server.shutdown(Duration::from_secs(5)).await;
        change_beyond_the_window(&config_maps).await;
        let _server = serve_again(registry.clone(), address).await;

        let expected = truth(&config_maps).await;
        eventually(
            Duration::from_secs(30),
            "the reflector converges after relisting",
            || {
                let seen = names(&cache);
                let expected = expected.clone();
                async move { seen == expected }
            },
        )
        .await;
        reflector.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_rs_watcher_relists_and_converges_after_its_watch_expires() {
    use kube::runtime::{reflector, watcher, WatchStreamExt};

    within(DEADLINE, async {
        let registry = registry();
        let config_maps = in_process(&registry);
        for name in ["a", "b"] {
            config_maps
                .create(&PostParams::default(), &config_map(name))
                .await
                .unwrap();
        }
        let server = ApiServer::bind(registry.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let address = server.address();
        let config = kube::Config::new(server.url().parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
        let (reader, writer) = reflector::store();
        // Counts the (re)lists: each starts with `Init`.
        let lists = Arc::new(AtomicUsize::new(0));
        let counted = lists.clone();
        let stream = reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(move |event| {
                if let Ok(watcher::Event::Init) = event {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                futures::future::ready(())
            });
        let watching = tokio::spawn(stream);
        let names = move || -> BTreeSet<String> {
            reader
                .state()
                .iter()
                .filter_map(|object| object.metadata.name.clone())
                .collect()
        };
        let first = names.clone();
        eventually(Duration::from_secs(20), "the first list", || {
            let seen = first();
            async move { seen == BTreeSet::from(["a".to_string(), "b".to_string()]) }
        })
        .await;
        assert_eq!(lists.load(Ordering::SeqCst), 1);

        server.shutdown(Duration::from_secs(5)).await;
        change_beyond_the_window(&config_maps).await;
        let _server = serve_again(registry.clone(), address).await;

        let expected = truth(&config_maps).await;
        eventually(
            Duration::from_secs(40),
            "the kube-rs store converges after relisting",
            || {
                let seen = names();
                let expected = expected.clone();
                async move { seen == expected }
            },
        )
        .await;
        assert!(
            lists.load(Ordering::SeqCst) >= 2,
            "the watcher relisted after the 410"
        );
        watching.abort();
    })
    .await;
}
