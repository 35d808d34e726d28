//! Unit tests of the garbage collector's graph, its reference bookkeeping and its discovery of
//! custom kinds.

use super::*;

fn reference(uid: &str, block: Option<bool>) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: format!("cm-{uid}"),
        uid: uid.into(),
        controller: None,
        block_owner_deletion: block,
    }
}

#[test]
fn reference_diffs_match_owners_by_uid() {
    let old = [reference("a", None), reference("b", Some(true))];
    let new = [reference("b", Some(false)), reference("c", None)];
    let (added, removed, changed) = references_diffs(&old, &new);
    assert_eq!(added, [reference("c", None)]);
    assert_eq!(removed, [reference("a", None)]);
    assert_eq!(
        changed,
        [(reference("b", Some(true)), reference("b", Some(false)))]
    );
}

#[test]
fn groups_come_from_the_api_version() {
    assert_eq!(group_of("v1"), "");
    assert_eq!(group_of("apps/v1"), "apps");
    assert_eq!(group_of("example.com/v1beta1"), "example.com");
}

#[test]
fn the_absent_owner_cache_forgets_the_oldest_first() {
    let mut absent = AbsentOwners::default();
    let identity = |uid: usize| Identity {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: Some("default".into()),
        name: "cm".into(),
        uid: uid.to_string(),
    };
    for uid in 0..=ABSENT_OWNER_CACHE_SIZE {
        absent.add(identity(uid));
    }
    assert!(!absent.contains(&identity(0)));
    assert!(absent.contains(&identity(1)));
    assert!(absent.contains(&identity(ABSENT_OWNER_CACHE_SIZE)));
}

// ---------------------------------------------------------------------------------------------
// custom resource discovery, over the in-memory registry serving CRDs

mod discovered_kinds {
    use capstan_api::kube_core::params::PostParams;
    use capstan_api::testing::{eventually, within};
    use serde_json::json;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    fn config_maps() -> ResourceInfo {
        ResourceInfo::builtin("", "ConfigMap").unwrap()
    }

    fn widgets() -> ResourceInfo {
        ResourceInfo::new("example.com", "v1", "Widget", "widgets", true)
    }

    fn crds() -> ResourceInfo {
        crate::util::custom_resources::custom_resource_definitions()
    }

    /// A registry serving its CRDs, as a client; the CRD controller lives as long as the
    /// returned handle.
    fn serving_registry() -> (
        Arc<dyn Client>,
        capstan_apiserver::apiextensions::CustomResourceController,
    ) {
        let registry = capstan_apiserver::testing::registry();
        let controller = capstan_apiserver::apiextensions::serve_custom_resources(registry.clone());
        (registry, controller)
    }

    async fn create_widget_definition(client: &Arc<dyn Client>) {
        let crd: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget",
                          "listKind": "WidgetList"},
                "scope": "Namespaced",
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}},
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object"}}},
                ],
            },
        }))
        .unwrap();
        client
            .create(&crds(), None, crd, &PostParams::default())
            .await
            .unwrap();
    }

    async fn create(
        client: &Arc<dyn Client>,
        resource: &ResourceInfo,
        name: &str,
        owners: Vec<OwnerReference>,
    ) -> DynamicObject {
        capstan_apiserver::testing::create_namespace(&**client, "default").await;
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": resource.api_version(),
            "kind": resource.kind(),
            "metadata": {"name": name, "ownerReferences": owners},
        }))
        .unwrap();
        client
            .create(resource, Some("default"), object, &PostParams::default())
            .await
            .unwrap()
    }

    fn owned_by(owner: &DynamicObject, resource: &ResourceInfo) -> OwnerReference {
        OwnerReference {
            api_version: resource.api_version(),
            kind: resource.kind().to_string(),
            name: owner.metadata.name.clone().unwrap(),
            uid: owner.metadata.uid.clone().unwrap(),
            controller: None,
            block_owner_deletion: None,
        }
    }

    async fn exists(client: &Arc<dyn Client>, resource: &ResourceInfo, name: &str) -> bool {
        match client.get(resource, Some("default"), name).await {
            Ok(_) => true,
            Err(error) if error.is_not_found() => false,
            Err(error) => panic!("{error}"),
        }
    }

    /// Runs `collector` until the returned sender is dropped or sent to.
    fn start(
        collector: GarbageCollector,
    ) -> (
        GarbageCollectorHandle,
        tokio::sync::oneshot::Sender<()>,
        JoinHandle<()>,
    ) {
        let handle = collector.handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(collector.run(async move {
            let _ = stopped.await;
        }));
        (handle, stop, task)
    }

    #[tokio::test]
    async fn a_retired_kind_is_known_absent_and_an_unmonitored_one_unknown() {
        let collector =
            GarbageCollector::new(capstan_apiserver::testing::client(), [config_maps()]);
        let shared = collector.shared.clone();
        assert_eq!(
            shared.lookup_kind("v1", "ConfigMap").unwrap().kind(),
            "ConfigMap"
        );
        assert_eq!(
            shared.lookup_kind("example.com/v1", "Widget").unwrap_err(),
            UnmonitoredKind::Unknown
        );
        shared
            .retired
            .lock()
            .insert(("example.com".into(), "Widget".into()));
        assert_eq!(
            shared.lookup_kind("example.com/v2", "Widget").unwrap_err(),
            UnmonitoredKind::Retired
        );
    }

    #[tokio::test]
    async fn kinds_established_before_the_start_are_monitored_once_synced() {
        within(LIMIT, async {
            let (client, crd_controller) = serving_registry();
            create_widget_definition(&client).await;
            crd_controller.synced().await;
            eventually(LIMIT, "the Widget definition is established", || async {
                let crd = client
                    .get(&crds(), None, "widgets.example.com")
                    .await
                    .unwrap();
                crate::util::custom_resources::is_established(&crd.data)
            })
            .await;
            let collector =
                GarbageCollector::new(client.clone(), [config_maps()]).discover_custom_resources();
            let (handle, stop, task) = start(collector);
            handle.wait_for_sync().await;
            assert!(handle.is_monitoring("example.com", "Widget"));
            let widget = handle
                .monitored_kinds()
                .into_iter()
                .find(|k| k.kind() == "Widget")
                .unwrap();
            assert_eq!(widget.version(), "v1", "the storage version is read");
            let _ = stop.send(());
            task.await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn a_kind_is_monitored_while_its_definition_lives_and_its_dependents_outlive_it_not() {
        within(LIMIT, async {
            let (client, _crd_controller) = serving_registry();
            let collector = GarbageCollector::new(client.clone(), [config_maps()])
                .discover_custom_resources()
                .workers(2);
            let (handle, stop, task) = start(collector);
            handle.wait_for_sync().await;
            assert!(!handle.is_monitoring("example.com", "Widget"));

            create_widget_definition(&client).await;
            eventually(LIMIT, "Widgets are monitored", || {
                let monitoring = handle.is_monitoring("example.com", "Widget");
                async move { monitoring }
            })
            .await;
            let widget = create(&client, &widgets(), "w", Vec::new()).await;
            let config = create(
                &client,
                &config_maps(),
                "owned-by-w",
                vec![owned_by(&widget, &widgets())],
            )
            .await;
            let widget_uid = widget.metadata.uid.clone().unwrap();
            let config_uid = config.metadata.uid.clone().unwrap();
            eventually(LIMIT, "the graph links the ConfigMap to its Widget", || {
                let linked = handle.dependents(&widget_uid) == [config_uid.clone()];
                async move { linked }
            })
            .await;

            // Deleting the definition deletes the Widget; its ConfigMap follows.
            client
                .delete(
                    &crds(),
                    None,
                    "widgets.example.com",
                    &DeleteParams::default(),
                )
                .await
                .unwrap();
            eventually(
                LIMIT,
                "the ConfigMap owned by the Widget is collected",
                || {
                    let client = client.clone();
                    async move { !exists(&client, &config_maps(), "owned-by-w").await }
                },
            )
            .await;
            eventually(LIMIT, "Widgets are no longer monitored", || {
                let monitoring = handle.is_monitoring("example.com", "Widget");
                async move { !monitoring }
            })
            .await;
            let _ = stop.send(());
            task.await.unwrap();
        })
        .await;
    }
}
