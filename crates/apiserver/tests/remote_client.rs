//! The remote client end to end: `Api<K>` and a shared informer over `RemoteClient`, against
//! a real `ApiServer` on a local port. Every test is bounded by a timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchParams,
};
use capstan_api::kube_core::{ObjectMeta, WatchEvent};
use capstan_api::{Api, Client, Deletion, Error};
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::registry::Registry;
use capstan_apiserver::remote::RemoteClient;
use capstan_store::{memory::MemoryStore, Store};
use capstan_watch::{ObjectKey, ReflectorOptions, SharedInformer};
use futures::StreamExt;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("the test timed out");
}

/// A server on a free port over a fresh memory store (kept for compaction).
async fn serve() -> (ApiServer, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let registry = Arc::new(Registry::new(store.clone()));
    let server = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (server, store)
}

fn remote(server: &ApiServer) -> Arc<dyn Client> {
    Arc::new(RemoteClient::new(&server.url()).unwrap())
}

fn config_map(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
            .filter(|l: &BTreeMap<_, _>| !l.is_empty()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn data(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

#[tokio::test]
async fn typed_config_maps_round_trip_through_http() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let pp = PostParams::default();

        let created = api
            .create(&pp, &config_map("web", &[("app", "web")], &[("a", "1")]))
            .await
            .unwrap();
        assert!(created.metadata.uid.is_some());
        assert!(created.metadata.resource_version.is_some());
        assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
        api.create(&pp, &config_map("db", &[("app", "db")], &[]))
            .await
            .unwrap();

        let got = api.get("web").await.unwrap();
        assert_eq!(got.metadata.uid, created.metadata.uid);
        assert_eq!(data(&got)["a"], "1");

        let web = api
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        let names: Vec<_> = web
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["web"]);
        assert!(web.metadata.resource_version.is_some());
        let not_db = api
            .list(&ListParams::default().labels("app in (web, api),app!=db"))
            .await
            .unwrap();
        assert_eq!(not_db.items.len(), 1);
        assert_eq!(
            api.list(&ListParams::default()).await.unwrap().items.len(),
            2
        );

        let mut changed = got.clone();
        changed.data = Some([("a".to_string(), "2".to_string())].into());
        let updated = api.update(&pp, &changed).await.unwrap();
        assert_eq!(data(&updated)["a"], "2");
        assert_ne!(
            updated.metadata.resource_version,
            got.metadata.resource_version
        );

        let merged = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"b": "merged"}})),
            )
            .await
            .unwrap();
        assert_eq!(data(&merged)["a"], "2");
        assert_eq!(data(&merged)["b"], "merged");
        let strategic = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Strategic(
                    json!({"metadata": {"labels": {"tier": "front"}}, "data": {"a": null}}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(data(&strategic).get("a"), None);
        assert_eq!(data(&strategic)["b"], "merged");
        let labels = strategic.metadata.labels.clone().unwrap();
        assert_eq!(
            (labels["app"].as_str(), labels["tier"].as_str()),
            ("web", "front")
        );

        let deleted = api.delete("web", &DeleteParams::default()).await.unwrap();
        let Deletion::Deleted(last) = deleted else {
            panic!("expected Deleted, got {deleted:?}");
        };
        assert_eq!(last.metadata.name.as_deref(), Some("web"));
        assert!(api.get("web").await.unwrap_err().is_not_found());
        assert_eq!(api.get_opt("web").await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn a_delete_held_by_a_finalizer_is_pending_until_it_is_removed() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let mut held = config_map("held", &[], &[]);
        held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        api.create(&PostParams::default(), &held).await.unwrap();

        let deletion = api.delete("held", &DeleteParams::default()).await.unwrap();
        assert!(deletion.is_pending(), "{deletion:?}");
        assert!(deletion.into_inner().metadata.deletion_timestamp.is_some());
        assert!(api.get("held").await.is_ok());

        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
        assert!(api.get("held").await.unwrap_err().is_not_found());
    })
    .await;
}

#[tokio::test]
async fn a_running_pod_deleted_over_http_is_pending_until_the_final_delete() {
    use capstan_api::k8s_openapi::api::core::v1::Pod;
    bounded(async {
        let (server, _) = serve().await;
        let pods: Api<Pod> = Api::namespaced(remote(&server), "default");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"nodeName": "node01", "containers": [{"name": "app", "image": "nginx"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let graceful = pods.delete("web", &DeleteParams::default()).await.unwrap();
        assert!(graceful.is_pending(), "waiting out its grace period");
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        let gone = pods.delete("web", &now).await.unwrap();
        assert!(!gone.is_pending(), "the final delete removes it");
        assert!(pods.get_opt("web").await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn delete_preconditions_and_dry_runs_travel_in_the_request() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        api.create(&dry, &config_map("ghost", &[], &[]))
            .await
            .unwrap();
        assert!(api.get("ghost").await.unwrap_err().is_not_found());

        let created = api
            .create(&PostParams::default(), &config_map("guarded", &[], &[]))
            .await
            .unwrap();
        let wrong_uid = DeleteParams::default().preconditions(Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        });
        let error = api.delete("guarded", &wrong_uid).await.unwrap_err();
        assert!(error.is_conflict(), "{error:?}");
        let dry_delete = DeleteParams::default().dry_run();
        api.delete("guarded", &dry_delete).await.unwrap();
        assert!(api.get("guarded").await.is_ok());
        let right_uid = DeleteParams::default().preconditions(Preconditions {
            uid: created.metadata.uid.clone(),
            resource_version: None,
        });
        assert!(!api
            .delete("guarded", &right_uid)
            .await
            .unwrap()
            .is_pending());
    })
    .await;
}

#[tokio::test]
async fn a_stale_resource_version_update_is_a_conflict() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let created = api
            .create(
                &PostParams::default(),
                &config_map("cm", &[], &[("v", "1")]),
            )
            .await
            .unwrap();
        let mut first = created.clone();
        first.data = Some([("v".to_string(), "2".to_string())].into());
        api.update(&PostParams::default(), &first).await.unwrap();

        let mut stale = created;
        stale.data = Some([("v".to_string(), "3".to_string())].into());
        let error = api
            .update(&PostParams::default(), &stale)
            .await
            .unwrap_err();
        let Error::Conflict { resource, name, .. } = &error else {
            panic!("expected Conflict, got {error:?}");
        };
        assert_eq!((resource.as_str(), name.as_str()), ("configmaps", "cm"));
        assert_eq!(error.code(), 409);
    })
    .await;
}

#[tokio::test]
async fn an_invalid_name_is_invalid_and_names_metadata_name() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let error = api
            .create(&PostParams::default(), &config_map("Not_Valid!", &[], &[]))
            .await
            .unwrap_err();
        let Error::Invalid { causes, .. } = &error else {
            panic!("expected Invalid, got {error:?}");
        };
        assert!(
            causes.iter().any(|c| c.field == "metadata.name"),
            "{causes:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn getting_a_missing_object_is_not_found() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let error = api.get("nowhere").await.unwrap_err();
        assert_eq!(
            error,
            Error::NotFound {
                resource: "configmaps".into(),
                name: "nowhere".into()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn listing_with_a_bad_label_selector_is_a_bad_request() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let error = api
            .list(&ListParams::default().labels("app in (web"))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::BadRequest { .. }), "{error:?}");
    })
    .await;
}

#[tokio::test]
async fn a_list_at_a_resource_version_not_yet_reached_times_out_with_504() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let error = api
            .list(
                &ListParams::default()
                    .at("1000")
                    .matching(capstan_api::kube_core::params::VersionMatch::NotOlderThan),
            )
            .await
            .unwrap_err();
        match &error {
            Error::Timeout { message } => {
                assert!(message.contains("Too large resource version"), "{message}")
            }
            other => panic!("expected a 504 timeout, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn a_strict_patch_with_an_unknown_field_is_a_bad_request_and_changes_nothing() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let created = api
            .create(
                &PostParams::default(),
                &config_map("strict", &[], &[("a", "1")]),
            )
            .await
            .unwrap();
        let error = api
            .patch(
                "strict",
                &PatchParams::default().validation_strict(),
                &Patch::Merge(json!({"data": {"a": "2"}, "dta": {"b": "3"}})),
            )
            .await
            .unwrap_err();
        match &error {
            Error::BadRequest { message, .. } => {
                assert!(message.contains(r#"unknown field "dta""#), "{message}")
            }
            other => panic!("expected a bad request, got {other:?}"),
        }
        let unchanged = api.get("strict").await.unwrap();
        assert_eq!(data(&unchanged)["a"], "1");
        assert_eq!(
            unchanged.metadata.resource_version,
            created.metadata.resource_version
        );
    })
    .await;
}

#[tokio::test]
async fn delete_collection_deletes_only_what_the_selectors_match() {
    bounded(async {
        let (server, _) = serve().await;
        let client = remote(&server);
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let other: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
        let pp = PostParams::default();
        for (name, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
            api.create(&pp, &config_map(name, &[("app", app)], &[]))
                .await
                .unwrap();
        }
        Api::<capstan_api::k8s_openapi::api::core::v1::Namespace>::cluster(client.clone())
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
            )
            .await
            .unwrap();
        other
            .create(&pp, &config_map("d", &[("app", "web")], &[]))
            .await
            .unwrap();

        // A dry run deletes nothing.
        let dry = api
            .delete_collection(
                &DeleteParams {
                    dry_run: true,
                    ..Default::default()
                },
                &ListParams::default().labels("app=web"),
            )
            .await
            .unwrap();
        assert_eq!(dry.items.len(), 2);
        assert_eq!(
            api.list(&ListParams::default()).await.unwrap().items.len(),
            3
        );

        let deleted = api
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels("app=web"),
            )
            .await
            .unwrap();
        let mut names: Vec<_> = deleted
            .items
            .iter()
            .filter_map(|cm| cm.metadata.name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        let left: Vec<_> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|cm| cm.metadata.name)
            .collect();
        assert_eq!(left, ["c"]);
        assert_eq!(
            other
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
            1
        );

        let error = api
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels("app in (web"),
            )
            .await
            .unwrap_err();
        assert!(matches!(error, Error::BadRequest { .. }), "{error:?}");
    })
    .await;
}

#[tokio::test]
async fn apply_patches_are_an_unsupported_media_type() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let error = api
            .patch(
                "any",
                &PatchParams::apply("me"),
                &Patch::Apply(json!({"data": {}})),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::UnsupportedMediaType { .. }),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn paging_with_limit_and_continue_returns_every_object_once() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        for i in 0..7 {
            api.create(
                &PostParams::default(),
                &config_map(&format!("cm-{i}"), &[], &[]),
            )
            .await
            .unwrap();
        }
        let mut names = Vec::new();
        let mut params = ListParams::default().limit(3);
        let mut pages = 0;
        loop {
            let page = api.list(&params).await.unwrap();
            pages += 1;
            assert!(page.items.len() <= 3);
            names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 7, "{names:?}");
    })
    .await;
}

#[tokio::test]
async fn a_watch_from_a_lists_resource_version_streams_changes_in_order() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        api.create(&PostParams::default(), &config_map("before", &[], &[]))
            .await
            .unwrap();
        let list = api.list(&ListParams::default()).await.unwrap();
        let rv = list.metadata.resource_version.unwrap();
        let mut events = api.watch(&WatchParams::default(), &rv).await.unwrap();

        let created = api
            .create(&PostParams::default(), &config_map("w", &[], &[("v", "1")]))
            .await
            .unwrap();
        let patched = api
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"v": "2"}})),
            )
            .await
            .unwrap();
        api.delete("w", &DeleteParams::default()).await.unwrap();

        let mut seen = Vec::new();
        while seen.len() < 3 {
            match events.next().await.expect("the watch ended early").unwrap() {
                WatchEvent::Added(cm) => seen.push(("added", cm)),
                WatchEvent::Modified(cm) => seen.push(("modified", cm)),
                WatchEvent::Deleted(cm) => seen.push(("deleted", cm)),
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(status) => panic!("unexpected error event {status:?}"),
            }
        }
        let kinds: Vec<_> = seen.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds, ["added", "modified", "deleted"]);
        assert!(seen
            .iter()
            .all(|(_, cm)| cm.metadata.name.as_deref() == Some("w")));
        assert_eq!(
            seen[0].1.metadata.resource_version,
            created.metadata.resource_version
        );
        assert_eq!(
            seen[1].1.metadata.resource_version,
            patched.metadata.resource_version
        );
        assert_eq!(data(&seen[1].1)["v"], "2");
    })
    .await;
}

#[tokio::test]
async fn a_watch_with_a_selector_and_a_timeout_sees_only_matches_then_ends() {
    bounded(async {
        let (server, _) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let rv = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let params = WatchParams::default().labels("app=web").timeout(2);
        let events = api.watch(&params, &rv).await.unwrap();
        api.create(
            &PostParams::default(),
            &config_map("other", &[("app", "db")], &[]),
        )
        .await
        .unwrap();
        api.create(
            &PostParams::default(),
            &config_map("web", &[("app", "web")], &[]),
        )
        .await
        .unwrap();
        // The server closes the stream after the timeout; the stream then ends.
        let events: Vec<_> = events.collect().await;
        let names: Vec<_> = events
            .into_iter()
            .filter_map(|e| match e.unwrap() {
                WatchEvent::Added(cm) => cm.metadata.name,
                _ => None,
            })
            .collect();
        assert_eq!(names, ["web"]);
    })
    .await;
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_is_gone() {
    bounded(async {
        let (server, store) = serve().await;
        let api: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        let created = api
            .create(
                &PostParams::default(),
                &config_map("old", &[], &[("v", "0")]),
            )
            .await
            .unwrap();
        for v in 1..5 {
            api.patch(
                "old",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"v": v.to_string()}})),
            )
            .await
            .unwrap();
        }
        store
            .compact(store.current_revision().await.unwrap())
            .await
            .unwrap();
        let old_rv = created.metadata.resource_version.unwrap();
        let error = match api.watch(&WatchParams::default(), &old_rv).await {
            Err(error) => error,
            Ok(mut events) => match events.next().await {
                Some(Err(error)) => {
                    assert!(
                        events.next().await.is_none(),
                        "the stream goes on after an error"
                    );
                    error
                }
                other => panic!("expected an error, got {other:?}"),
            },
        };
        assert!(matches!(error, Error::Gone { .. }), "{error:?}");
    })
    .await;
}

#[tokio::test]
async fn a_shared_informer_over_http_syncs_and_follows_creates_and_deletes() {
    bounded(async {
        let (server, _) = serve().await;
        let writer: Api<ConfigMap> = Api::namespaced(remote(&server), "default");
        writer
            .create(&PostParams::default(), &config_map("existing", &[], &[]))
            .await
            .unwrap();

        let source = Api::<ConfigMap>::all(Arc::new(RemoteClient::new(&server.url()).unwrap()));
        let informer = SharedInformer::spawn(Arc::new(source), ReflectorOptions::default());
        informer.wait_for_sync().await;
        let existing = ObjectKey::namespaced("default", "existing");
        assert!(informer.cache().get(&existing).is_some());

        let mut deltas = informer.subscribe();
        writer
            .create(&PostParams::default(), &config_map("fresh", &[], &[]))
            .await
            .unwrap();
        writer
            .delete("existing", &DeleteParams::default())
            .await
            .unwrap();
        let fresh = ObjectKey::namespaced("default", "fresh");
        while informer.cache().get(&fresh).is_none() || informer.cache().get(&existing).is_some() {
            deltas.recv().await.expect("the informer stopped");
        }
        let names: Vec<_> = informer
            .cache()
            .list()
            .iter()
            .map(|cm| cm.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["fresh"]);
    })
    .await;
}

#[tokio::test]
async fn a_client_from_a_kubeconfig_talks_to_the_server() {
    bounded(async {
        let (server, _) = serve().await;
        let dir = std::env::temp_dir().join(format!(
            "capstan-remote-{}-{}",
            std::process::id(),
            server.address().port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        server.write_kubeconfig(&path).unwrap();
        let client = RemoteClient::from_kubeconfig(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(client.base_url(), server.url());
        assert_eq!(client.default_namespace(), Some("default"));

        let namespace = client.default_namespace().unwrap().to_string();
        let api: Api<ConfigMap> = Api::namespaced(Arc::new(client), &namespace);
        api.create(
            &PostParams::default(),
            &config_map("via-kubeconfig", &[], &[]),
        )
        .await
        .unwrap();
        assert!(api.get("via-kubeconfig").await.is_ok());
    })
    .await;
}

#[tokio::test]
#[cfg(not(feature = "tls"))]
async fn an_https_kubeconfig_is_refused_without_the_tls_feature() {
    bounded(async {
        let dir = std::env::temp_dir().join(format!("capstan-remote-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            capstan_apiserver::http::kubeconfig("https://127.0.0.1:6443"),
        )
        .unwrap();
        let error = RemoteClient::from_kubeconfig(&path).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(error, Error::BadRequest { .. }), "{error:?}");
        assert!(error.to_string().contains("TLS"), "{error}");
    })
    .await;
}

#[tokio::test]
#[cfg(feature = "tls")]
async fn an_https_kubeconfig_without_a_certificate_authority_is_refused() {
    bounded(async {
        let dir = std::env::temp_dir().join(format!("capstan-remote-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            capstan_apiserver::http::kubeconfig("https://127.0.0.1:6443"),
        )
        .unwrap();
        let error = RemoteClient::from_kubeconfig(&path).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(error, Error::BadRequest { .. }), "{error:?}");
        assert!(
            error.to_string().contains("certificate-authority"),
            "{error}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_server_that_is_not_running_is_service_unavailable() {
    bounded(async {
        // A port that was free a moment ago and has nobody listening now.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let client: Arc<dyn Client> =
            Arc::new(RemoteClient::new(&format!("http://{address}")).unwrap());
        let api: Api<ConfigMap> = Api::namespaced(client, "default");

        let error = api.get("anything").await.unwrap_err();
        assert!(
            matches!(error, Error::ServiceUnavailable { .. }),
            "{error:?}"
        );
        assert!(error.is_retryable());
        let error = api
            .watch(&WatchParams::default(), "")
            .await
            .err()
            .expect("a watch on a dead server fails");
        assert!(
            matches!(error, Error::ServiceUnavailable { .. }),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn deleting_a_namespace_remotely_reports_it_pending_while_its_content_is_removed() {
    bounded(async {
        let (server, _store) = serve().await;
        let client = remote(&server);
        let namespaces =
            Api::<capstan_api::k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        let mut namespace = capstan_api::k8s_openapi::api::core::v1::Namespace::default();
        namespace.metadata.name = Some("leaving".into());
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        match namespaces
            .delete("leaving", &DeleteParams::default())
            .await
            .unwrap()
        {
            Deletion::Pending(namespace) => assert_eq!(
                namespace.status.and_then(|s| s.phase).as_deref(),
                Some("Terminating")
            ),
            Deletion::Deleted(_) => panic!("a namespace with the kubernetes finalizer is pending"),
        }
    })
    .await;
}
