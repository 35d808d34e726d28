//! Lists and watches against a compacted store: the compactor discards history on its
//! schedule, then an exact old `resourceVersion`, a continue token and a watch from before the
//! compaction each get 410 worded as kube-apiserver words it, on the memory store and (feature
//! `etcd`) on a real etcd. With `etcd`, a LIST bigger than the gRPC message limit is served
//! whole.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use capstan_api::kube_core::params::{ListParams, PostParams, VersionMatch, WatchParams};
use capstan_api::{Api, Client, Error};
use capstan_store::{Store, StoreExt};

use super::{CONTINUE_EXPIRED, LIST_TOO_OLD};
use crate::compactor::Compactor;
use crate::registry::test_support::within;
use crate::registry::Registry;

fn config_map(name: &str, data: &str) -> ConfigMap {
    let mut config = ConfigMap::default();
    config.metadata.name = Some(name.into());
    config.data = Some([("k".to_string(), data.to_string())].into());
    config
}

/// A namespace no other run uses (etcd is shared between runs), created first.
async fn namespace(client: &Arc<dyn Client>) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("compaction-{}-{nanos}", std::process::id());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(name.clone());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    name
}

/// Drives the compactor on `store` (ticking every `interval`, paused clock or real) past a
/// list, then checks what each kind of old read gets.
async fn old_reads_get_410_once_the_compactor_has_run(store: Arc<dyn Store>, interval: Duration) {
    let client: Arc<dyn Client> = Arc::new(Registry::new(store.clone()));
    let ns = namespace(&client).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for name in ["a", "b", "c"] {
        config_maps
            .create(&PostParams::default(), &config_map(name, "1"))
            .await
            .unwrap();
    }
    let page = config_maps
        .list(&ListParams::default().limit(1))
        .await
        .unwrap();
    let old = page.metadata.resource_version.clone().unwrap();
    let token = page.metadata.continue_.clone().unwrap();
    // Before any compaction, the old snapshot reads fine.
    let exact = ListParams {
        resource_version: Some(old.clone()),
        version_match: Some(VersionMatch::Exact),
        ..ListParams::default()
    };
    assert_eq!(config_maps.list(&exact).await.unwrap().items.len(), 3);

    let compactor = Compactor::start(store.clone(), interval).unwrap();
    config_maps
        .create(&PostParams::default(), &config_map("d", "1"))
        .await
        .unwrap();
    let written = store.current_revision().await.unwrap();
    // The first tick reads the revision (at or after `written`), the second compacts to it.
    let deadline = tokio::time::Instant::now() + interval * 20;
    while compactor.status().compacted.is_none_or(|c| c < written) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no compaction: {compactor:?}"
        );
        tokio::time::sleep(interval / 4).await;
    }
    let compacted = compactor.status().compacted.unwrap();

    let error = config_maps.list(&exact).await.unwrap_err();
    assert!(matches!(&error, Error::Gone { .. }), "{error:?}");
    assert_eq!(
        (error.code(), error.to_string().contains(LIST_TOO_OLD)),
        (410, true),
        "{error}"
    );

    let continued = ListParams {
        continue_token: Some(token),
        ..ListParams::default()
    };
    let error = config_maps.list(&continued).await.unwrap_err();
    assert!(matches!(&error, Error::Expired { .. }), "{error:?}");
    assert!(error.to_string().contains(CONTINUE_EXPIRED), "{error}");

    let error = config_maps
        .watch(&WatchParams::default(), &old)
        .await
        .err()
        .expect("a watch from a compacted resourceVersion is refused");
    assert_eq!(error.code(), 410, "{error:?}");
    // The compactor keeps running: it may have compacted further since.
    let message = error.to_string();
    let told: i64 = message
        .split_once(&format!("too old resource version: {old} ("))
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(revision, _)| revision.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    assert!(told >= compacted, "{message}");
    drop(compactor);

    // Current reads are untouched.
    let fresh = config_maps.list(&ListParams::default()).await.unwrap();
    assert_eq!(fresh.items.len(), 4);
    assert!(store
        .get(format!("/registry/configmaps/{ns}/a"))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(start_paused = true)]
async fn on_the_memory_store_old_lists_and_watches_get_410_after_compaction() {
    // Virtual time: the compactor ticks every 5 minutes, as by default.
    within(Duration::from_secs(24 * 3600), async {
        let store: Arc<dyn Store> = Arc::new(capstan_store::memory::MemoryStore::new());
        old_reads_get_410_once_the_compactor_has_run(store, Duration::from_secs(300)).await;
    })
    .await;
}

#[cfg(feature = "etcd")]
async fn etcd() -> Arc<dyn Store> {
    let store = capstan_store::etcd::EtcdStore::from_env()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "this test needs a real etcd: run `scripts/test`, or set {}: {e}",
                capstan_store::etcd::ENDPOINTS_ENV
            )
        });
    Arc::new(store)
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_old_lists_and_watches_get_410_after_compaction() {
    within(Duration::from_secs(60), async {
        // Real time on a real store: a short interval.
        old_reads_get_410_once_the_compactor_has_run(etcd().await, Duration::from_millis(300))
            .await;
    })
    .await;
}

#[cfg(all(feature = "etcd", feature = "server", feature = "client"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_a_list_larger_than_the_grpc_message_limit_is_served_whole() {
    within(Duration::from_secs(600), async {
        let store = etcd().await;
        let registry = Arc::new(Registry::new(store.clone()));
        let client: Arc<dyn Client> = registry.clone();
        let ns = namespace(&client).await;
        // 30,000 ConfigMaps of 1 KiB: about 40 MiB of JSON, ten times etcd-client's 4 MiB
        // limit for one response. Written straight to the store to keep the test short.
        let value = "x".repeat(1024);
        let mut puts = Vec::new();
        for i in 0..30_000 {
            let name = format!("cm-{i:05}");
            let object = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{i}"),
                    "creationTimestamp": "2026-01-01T00:00:00Z"},
                "data": {"k": value},
            });
            puts.push(capstan_store::Op::put(
                format!("/registry/configmaps/{ns}/{name}"),
                serde_json::to_vec(&object).unwrap(),
            ));
            if puts.len() == 100 {
                let txn = capstan_store::Txn::new().and_then(std::mem::take(&mut puts));
                store.txn(txn).await.unwrap();
            }
        }
        let config_maps: Api<ConfigMap> = Api::namespaced(client, &ns);
        let listed = config_maps.list(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), 30_000);
        assert!(listed.metadata.continue_.is_none());
        let revision: i64 = listed.metadata.resource_version.unwrap().parse().unwrap();
        assert!(listed.items.iter().all(|item| {
            let rv: i64 = item
                .metadata
                .resource_version
                .as_ref()
                .unwrap()
                .parse()
                .unwrap();
            rv <= revision
        }));

        // And over HTTP, in one request.
        let server = crate::http::ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let remote: Arc<dyn Client> =
            Arc::new(crate::remote::RemoteClient::new(&server.url()).unwrap());
        let over_http: Api<ConfigMap> = Api::namespaced(remote, &ns);
        let listed = over_http.list(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), 30_000);
    })
    .await;
}

#[cfg(all(feature = "server", feature = "client"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_registry_is_compacted_and_old_lists_over_http_get_410() {
    within(Duration::from_secs(30), async {
        let store = Arc::new(capstan_store::memory::MemoryStore::new());
        let registry = Arc::new(Registry::new(store.clone()));
        let options = crate::http::ApiServerOptions::default()
            .compaction_interval(Duration::from_millis(100));
        let server =
            crate::http::ApiServer::bind_with(registry, "127.0.0.1:0".parse().unwrap(), options)
                .await
                .unwrap();
        let remote: Arc<dyn Client> =
            Arc::new(crate::remote::RemoteClient::new(&server.url()).unwrap());
        let config_maps: Api<ConfigMap> = Api::namespaced(remote, "default");
        let created = config_maps
            .create(&PostParams::default(), &config_map("first", "1"))
            .await
            .unwrap();
        let old = created.metadata.resource_version.unwrap();
        let old_revision: i64 = old.parse().unwrap();
        config_maps
            .create(&PostParams::default(), &config_map("second", "1"))
            .await
            .unwrap();
        let exact = ListParams {
            resource_version: Some(old.clone()),
            version_match: Some(VersionMatch::Exact),
            ..ListParams::default()
        };
        // The server's compactor, not the test, discards the history.
        capstan_api::testing::eventually(Duration::from_secs(10), "the compaction", || {
            let store = store.clone();
            async move {
                store
                    .range(capstan_store::Range::key("/").at_revision(old_revision))
                    .await
                    .is_err()
            }
        })
        .await;
        let error = config_maps.list(&exact).await.unwrap_err();
        assert_eq!(error.code(), 410, "{error:?}");
        assert!(error.to_string().contains(LIST_TOO_OLD), "{error}");
        assert_eq!(
            config_maps
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
            2
        );
    })
    .await;
}
