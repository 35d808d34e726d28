//! kube-rs against Capstan, both ways (feature `kube`).
//!
//! kube-rs' `Api`, `watcher`, `reflector`, `Controller`, discovery and server-side apply run
//! against the registry in process (`kube_bridge::client`, no socket) and over HTTP
//! (`ApiServer::bind` + `kube::Config::new`); and Capstan's own `Api<K>` runs over
//! `KubeClient`, the `Client` over kube-rs, with every verb and the typed errors.

#![cfg(feature = "kube")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Pod};
use capstan_api::kube_core::params as capstan_params;
use capstan_api::testing::{eventually, within};
use capstan_api::{Api as CapstanApi, Client as CapstanClient, Error};
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::kube_bridge::{self, KubeClient};
use capstan_apiserver::registry::Registry;
use capstan_apiserver::watch_cache::WatchCacheOptions;
use capstan_store::memory::MemoryStore;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use parking_lot::Mutex;

const LIMIT: Duration = Duration::from_secs(30);

fn config_map(name: &str, value: &str) -> ConfigMap {
    let mut object = ConfigMap::default();
    object.metadata.name = Some(name.into());
    object.data = Some(BTreeMap::from([("key".to_string(), value.to_string())]));
    object
}

fn registry() -> Arc<Registry> {
    capstan_apiserver::testing::registry()
}

/// kube's client for `server`, from its URL as a kubeconfig would give it.
fn over_http(server: &ApiServer) -> kube::Client {
    let config = kube::Config::new(server.url().parse().expect("the server's URL parses"));
    kube::Client::try_from(config).expect("a kube client over HTTP")
}

/// The API server on a free loopback port, and kube's client for it.
async fn served(registry: Arc<Registry>) -> (ApiServer, kube::Client) {
    let server = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the server binds");
    let client = over_http(&server);
    (server, client)
}

/// The status code of a kube-rs API error.
fn api_code(error: &kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// get, list, create, replace, delete and their errors, as kube-rs sees them.
async fn crud(client: kube::Client) {
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    let created = config_maps
        .create(&PostParams::default(), &config_map("crud", "one"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let again = config_maps
        .create(&PostParams::default(), &config_map("crud", "one"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&again), 409);

    let mut read = config_maps.get("crud").await.unwrap();
    assert_eq!(read.data.as_ref().unwrap()["key"], "one");
    read.data = Some(BTreeMap::from([("key".into(), "two".into())]));
    let replaced = config_maps
        .replace("crud", &PostParams::default(), &read)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    // The resourceVersion just replaced is stale now.
    let stale = config_maps
        .replace("crud", &PostParams::default(), &read)
        .await
        .unwrap_err();
    assert_eq!(api_code(&stale), 409);

    let listed = config_maps.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = listed.iter().map(|cm| cm.metadata.name.clone()).collect();
    assert_eq!(names, vec![Some("crud".to_string())]);
    assert!(listed.metadata.resource_version.is_some());

    config_maps
        .delete("crud", &DeleteParams::default())
        .await
        .unwrap();
    let gone = config_maps.get("crud").await.unwrap_err();
    assert_eq!(api_code(&gone), 404);
    assert!(config_maps.get_opt("crud").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_verbs_work_in_process() {
    within(LIMIT, crud(kube_bridge::client(registry()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_verbs_work_over_http() {
    within(LIMIT, async {
        let (_server, client) = served(registry()).await;
        crud(client).await;
    })
    .await;
}

/// A kube-rs watcher sees the initial objects, then a change, as they happen.
async fn watcher_streams(client: kube::Client, config: watcher::Config) {
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    config_maps
        .create(&PostParams::default(), &config_map("before", "1"))
        .await
        .unwrap();
    let mut events = watcher(config_maps.clone(), config).boxed();
    let mut initial = BTreeSet::new();
    loop {
        match events
            .try_next()
            .await
            .unwrap()
            .expect("the watcher goes on")
        {
            watcher::Event::Init => {}
            watcher::Event::InitApply(cm) => {
                initial.insert(cm.metadata.name.unwrap());
            }
            watcher::Event::InitDone => break,
            other => panic!("unexpected event before InitDone: {other:?}"),
        }
    }
    assert_eq!(initial, BTreeSet::from(["before".to_string()]));
    // The stream is live: the change arrives while the watch is open, not when it ends.
    config_maps
        .create(&PostParams::default(), &config_map("after", "2"))
        .await
        .unwrap();
    loop {
        match events
            .try_next()
            .await
            .unwrap()
            .expect("the watcher goes on")
        {
            watcher::Event::Apply(cm) if cm.metadata.name.as_deref() == Some("after") => break,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_streams_in_process() {
    within(
        LIMIT,
        watcher_streams(kube_bridge::client(registry()), watcher::Config::default()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_with_streaming_lists_streams_in_process() {
    within(
        LIMIT,
        watcher_streams(
            kube_bridge::client(registry()),
            watcher::Config::default().streaming_lists(),
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_streams_over_http() {
    within(LIMIT, async {
        let (_server, client) = served(registry()).await;
        watcher_streams(client.clone(), watcher::Config::default()).await;
        let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
        config_maps
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .unwrap();
        watcher_streams(client, watcher::Config::default().streaming_lists()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_reflector_store_follows_the_registry() {
    within(LIMIT, async {
        let client = kube_bridge::client(registry());
        let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
        for name in ["a", "b", "c"] {
            config_maps
                .create(&PostParams::default(), &config_map(name, name))
                .await
                .unwrap();
        }
        let (store, writer) = reflector::store::<ConfigMap>();
        let feed = reflector(writer, watcher(config_maps.clone(), Default::default()))
            .applied_objects()
            .for_each(|_| async {});
        let feed = tokio::spawn(feed);
        store.wait_until_ready().await.unwrap();
        let names = |store: &reflector::Store<ConfigMap>| -> BTreeSet<String> {
            store
                .state()
                .iter()
                .filter_map(|cm| cm.metadata.name.clone())
                .collect()
        };
        assert_eq!(names(&store).len(), 3);
        config_maps
            .delete("b", &DeleteParams::default())
            .await
            .unwrap();
        config_maps
            .create(&PostParams::default(), &config_map("d", "d"))
            .await
            .unwrap();
        let expected: BTreeSet<String> = ["a", "c", "d"].map(String::from).into();
        eventually(LIMIT, "the store to hold a, c and d", || async {
            names(&store) == expected
        })
        .await;
        feed.abort();
    })
    .await;
}

/// What the test controller has seen: reconciles per ConfigMap name.
#[derive(Default)]
struct Reconciles(Mutex<BTreeMap<String, u32>>);

async fn reconcile(
    config_map: Arc<ConfigMap>,
    context: Arc<(Api<ConfigMap>, Reconciles)>,
) -> Result<Action, kube::Error> {
    let (api, reconciles) = &*context;
    let name = config_map.metadata.name.clone().unwrap_or_default();
    let count = {
        let mut counts = reconciles.0.lock();
        let count = counts.entry(name.clone()).or_default();
        *count += 1;
        *count
    };
    let patch = serde_json::json!({"metadata": {"annotations": {"reconciled": count.to_string()}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(Action::requeue(Duration::from_millis(100)))
}

fn error_policy(
    _: Arc<ConfigMap>,
    _: &kube::Error,
    _: Arc<(Api<ConfigMap>, Reconciles)>,
) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_controller_reconciles_and_requeues_in_process() {
    within(LIMIT, async {
        let client = kube_bridge::client(registry());
        let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
        config_maps
            .create(&PostParams::default(), &config_map("managed", "x"))
            .await
            .unwrap();
        let context = Arc::new((config_maps.clone(), Reconciles::default()));
        let controller = Controller::new(config_maps.clone(), watcher::Config::default())
            .run(reconcile, error_policy, context.clone())
            .for_each(|_| async {});
        let controller = tokio::spawn(controller);
        // Requeued every 100 ms (and on its own writes): three reconciles come quickly.
        eventually(LIMIT, "three reconciles of `managed`", || async {
            context.1 .0.lock().get("managed").copied().unwrap_or(0) >= 3
        })
        .await;
        let managed = config_maps.get("managed").await.unwrap();
        let annotation = managed.metadata.annotations.unwrap()["reconciled"].clone();
        assert!(annotation.parse::<u32>().unwrap() >= 1);
        controller.abort();
    })
    .await;
}

/// Server-side apply through kube-rs: creates, then changes the applied field.
async fn server_side_apply(client: kube::Client) {
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
    let params = PatchParams::apply("kube-bridge-test").force();
    let applied = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "applied"},
        "data": {"key": "one"},
    });
    let created = config_maps
        .patch("applied", &params, &Patch::Apply(&applied))
        .await
        .unwrap_or_else(|e| panic!("server-side apply (create) failed: {e:?}"));
    assert_eq!(created.data.unwrap()["key"], "one");
    let mut changed = applied.clone();
    changed["data"]["key"] = "two".into();
    let updated = config_maps
        .patch("applied", &params, &Patch::Apply(&changed))
        .await
        .unwrap_or_else(|e| panic!("server-side apply (update) failed: {e:?}"));
    assert_eq!(updated.data.unwrap()["key"], "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_server_side_apply_in_process() {
    within(LIMIT, server_side_apply(kube_bridge::client(registry()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_server_side_apply_over_http() {
    within(LIMIT, async {
        let (_server, client) = served(registry()).await;
        server_side_apply(client).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_discovery_finds_the_built_in_kinds() {
    within(LIMIT, async {
        let client = kube_bridge::client(registry());
        let discovery = kube::Discovery::new(client).run().await.unwrap();
        let (resource, capabilities) = discovery
            .get("apps")
            .and_then(|group| group.recommended_kind("Deployment"))
            .expect("apps/v1 Deployment is discovered");
        assert_eq!(resource.plural, "deployments");
        assert_eq!(capabilities.scope, kube::discovery::Scope::Namespaced);
        assert!(discovery.has_group(""));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_aggregated_discovery_finds_the_built_in_kinds() {
    within(LIMIT, async {
        let client = kube_bridge::client(registry());
        let discovery = kube::Discovery::new(client)
            .run_aggregated()
            .await
            .unwrap_or_else(|e| panic!("aggregated discovery failed: {e:?}"));
        let (resource, _) = discovery
            .get("apps")
            .and_then(|group| group.recommended_kind("Deployment"))
            .expect("apps/v1 Deployment is discovered");
        assert_eq!(resource.plural, "deployments");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_metadata_watcher_sees_objects_in_process() {
    within(LIMIT, async {
        let client = kube_bridge::client(registry());
        let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
        config_maps
            .create(&PostParams::default(), &config_map("meta", "m"))
            .await
            .unwrap();
        let metadata: Api<PartialObjectMeta<ConfigMap>> =
            Api::default_namespaced(config_maps.into_client());
        let mut objects = watcher(metadata, Default::default())
            .applied_objects()
            .boxed();
        let first = objects
            .try_next()
            .await
            .unwrap_or_else(|e| panic!("the metadata watcher failed: {e:?}"))
            .expect("an object");
        assert_eq!(first.metadata.name.as_deref(), Some("meta"));
        assert_eq!(first.types.unwrap().kind, "PartialObjectMetadata");
    })
    .await;
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
    }))
    .unwrap()
}

/// Capstan's `Api<Pod>` over `KubeClient` over kube-rs over the registry: every verb of the
/// `Client` trait and its typed errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capstan_api_over_kube_client_serves_every_verb() {
    within(LIMIT, async {
        let kube_client = KubeClient::new(kube_bridge::client(registry()));
        assert_eq!(kube_client.default_namespace(), "default");
        let client: Arc<dyn CapstanClient> = Arc::new(kube_client);
        let pods: CapstanApi<Pod> = CapstanApi::namespaced(client.clone(), "default");
        let post = capstan_params::PostParams::default();

        let mut watch = pods
            .watch(&capstan_params::WatchParams::default(), "0")
            .await
            .unwrap();
        let created = pods.create(&post, &pod("web-1")).await.unwrap();
        assert!(matches!(
            pods.create(&post, &pod("web-1")).await.unwrap_err(),
            Error::AlreadyExists { .. }
        ));
        let event = watch.next().await.unwrap().unwrap();
        assert!(
            matches!(&event, capstan_api::kube_core::WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("web-1")),
            "{event:?}"
        );

        let mut invalid = pod("bad");
        invalid.spec.as_mut().unwrap().containers.clear();
        match pods.create(&post, &invalid).await.unwrap_err() {
            Error::Invalid { causes, .. } => assert!(!causes.is_empty()),
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert!(pods.get("missing").await.unwrap_err().is_not_found());

        let mut read = pods.get("web-1").await.unwrap();
        read.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("tier".into(), "front".into());
        let updated = pods.update(&post, &read).await.unwrap();
        assert!(matches!(
            pods.update(&post, &read).await.unwrap_err(),
            Error::Conflict { .. }
        ));

        let mut status = updated.clone();
        status.status = Some(serde_json::from_value(serde_json::json!({"phase": "Running"})).unwrap());
        let with_status = pods.update_status(&post, &status).await.unwrap();
        assert_eq!(
            with_status.status.unwrap().phase.as_deref(),
            Some("Running")
        );

        let patch = serde_json::json!({"metadata": {"annotations": {"patched": "yes"}}});
        let patched = pods
            .patch(
                "web-1",
                &capstan_params::PatchParams::default(),
                &capstan_params::Patch::Merge(patch),
            )
            .await
            .unwrap();
        assert_eq!(patched.metadata.annotations.unwrap()["patched"], "yes");

        let listed = pods
            .list(&capstan_params::ListParams::default().labels("app=web"))
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(created.metadata.uid, listed.items[0].metadata.uid);

        pods.create(&post, &pod("web-2")).await.unwrap();
        let deletion = pods
            .delete("web-2", &capstan_params::DeleteParams::default())
            .await
            .unwrap();
        // A Pod no node runs is gone at once.
        assert!(!deletion.is_pending(), "{deletion:?}");
        pods.create(&post, &pod("web-3")).await.unwrap();
        let deleted = pods
            .delete_collection(
                &capstan_params::DeleteParams::default(),
                &capstan_params::ListParams::default().labels("app=web"),
            )
            .await
            .unwrap();
        assert_eq!(deleted.items.len(), 2);
        assert!(pods.list(&Default::default()).await.unwrap().items.is_empty());
    })
    .await;
}

/// A watch from a resourceVersion the watch cache no longer holds is 410 over `KubeClient`,
/// as Capstan's reflector expects it (then it relists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_client_watch_from_a_forgotten_version_is_gone() {
    within(LIMIT, async {
        let registry = Arc::new(
            Registry::new(Arc::new(MemoryStore::new())).with_watch_cache(WatchCacheOptions {
                window: 4,
                ..WatchCacheOptions::default()
            }),
        );
        let client: Arc<dyn CapstanClient> =
            Arc::new(KubeClient::new(kube_bridge::client(registry)));
        let config_maps: CapstanApi<ConfigMap> = CapstanApi::namespaced(client, "default");
        let params = capstan_params::WatchParams::default();
        // Starts the watch cache.
        let _live = config_maps.watch(&params, "0").await.unwrap();
        let first = config_maps
            .create(&Default::default(), &config_map("v0", "0"))
            .await
            .unwrap();
        for i in 1..10 {
            config_maps
                .create(&Default::default(), &config_map(&format!("v{i}"), "x"))
                .await
                .unwrap();
        }
        let old = first.metadata.resource_version.unwrap();
        let error = match config_maps.watch(&params, &old).await {
            Err(error) => error,
            Ok(mut stream) => stream
                .next()
                .await
                .expect("an error event")
                .expect_err("the old version is gone"),
        };
        assert!(
            matches!(error, Error::Gone { .. } | Error::Expired { .. }),
            "{error:?}"
        );
    })
    .await;
}

/// `KubeClient` over kube's HTTP stack (not the bridge), as against a real cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capstan_api_over_kube_client_over_http() {
    within(LIMIT, async {
        let (_server, kube) = served(registry()).await;
        let client: Arc<dyn CapstanClient> = Arc::new(KubeClient::new(kube));
        let config_maps: CapstanApi<ConfigMap> = CapstanApi::namespaced(client, "default");
        let mut watch = config_maps
            .watch(&capstan_params::WatchParams::default(), "0")
            .await
            .unwrap();
        config_maps
            .create(&Default::default(), &config_map("remote", "r"))
            .await
            .unwrap();
        let event = watch.next().await.unwrap().unwrap();
        assert!(
            matches!(&event, capstan_api::kube_core::WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("remote")),
            "{event:?}"
        );
        assert_eq!(config_maps.get("remote").await.unwrap().data.unwrap()["key"], "r");
    })
    .await;
}
