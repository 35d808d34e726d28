//! Custom resources through their whole life, over the in-process registry serving
//! CustomResourceDefinitions at run time (`serve_custom_resources`): the garbage collector
//! discovers a CRD's kind once it is established, collects custom dependents of built-in
//! owners and built-in dependents of custom owners (background, foreground, orphan), and the
//! namespace controller empties a namespace of its custom objects.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::kube_core::DynamicObject;
use capstan_api::testing::{eventually, within};
use capstan_api::{Client, ResourceInfo};
use capstan_apiserver::apiextensions::{serve_custom_resources, CustomResourceController};
use capstan_controllers::garbage_collector::{GarbageCollector, GarbageCollectorHandle};
use capstan_controllers::namespace::{self, NamespaceReconciler};
use capstan_controllers::util::custom_resources::{custom_resource_definitions, is_established};
use capstan_watch::{InformerFactory, ReflectorOptions};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(30);
const NS: &str = "default";

fn widgets() -> ResourceInfo {
    ResourceInfo::new("example.com", "v1", "Widget", "widgets", true)
}

fn config_maps() -> ResourceInfo {
    ResourceInfo::builtin("", "ConfigMap").unwrap()
}

fn pods() -> ResourceInfo {
    ResourceInfo::builtin("", "Pod").unwrap()
}

fn namespaces() -> ResourceInfo {
    ResourceInfo::builtin("", "Namespace").unwrap()
}

/// A registry serving its CRDs, as a client, and the CRD controller (alive while kept).
fn cluster() -> (Arc<dyn Client>, CustomResourceController) {
    let registry = capstan_apiserver::testing::registry();
    let controller = serve_custom_resources(registry.clone());
    (registry, controller)
}

/// Creates the Widget CRD (`widgets.example.com`) and waits until it is established.
async fn define_widgets(client: &Arc<dyn Client>) {
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget",
                      "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object"}}}],
        },
    }))
    .unwrap();
    client
        .create(
            &custom_resource_definitions(),
            None,
            crd,
            &PostParams::default(),
        )
        .await
        .unwrap();
    eventually(LIMIT, "the Widget CRD is established", || {
        let client = client.clone();
        async move {
            let crd = client
                .get(&custom_resource_definitions(), None, "widgets.example.com")
                .await
                .unwrap();
            is_established(&crd.data)
        }
    })
    .await;
}

fn owned_by(owner: &DynamicObject, block_owner_deletion: bool) -> OwnerReference {
    let types = owner.types.clone().unwrap();
    OwnerReference {
        api_version: types.api_version,
        kind: types.kind,
        name: owner.metadata.name.clone().unwrap(),
        uid: owner.metadata.uid.clone().unwrap(),
        controller: None,
        block_owner_deletion: Some(block_owner_deletion),
    }
}

async fn create_in(
    client: &Arc<dyn Client>,
    resource: &ResourceInfo,
    namespace: &str,
    name: &str,
    owners: Vec<OwnerReference>,
) -> DynamicObject {
    capstan_apiserver::testing::create_namespace(&**client, namespace).await;
    let mut object = json!({
        "apiVersion": resource.api_version(),
        "kind": resource.kind(),
        "metadata": {"name": name, "ownerReferences": owners},
    });
    if resource.kind() == "Pod" {
        object["spec"] = json!({"containers": [{"name": "app", "image": "nginx"}]});
    }
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    client
        .create(resource, Some(namespace), object, &PostParams::default())
        .await
        .unwrap_or_else(|e| panic!("creating {} {name}: {e}", resource.kind()))
}

async fn create(
    client: &Arc<dyn Client>,
    resource: &ResourceInfo,
    name: &str,
    owners: Vec<OwnerReference>,
) -> DynamicObject {
    create_in(client, resource, NS, name, owners).await
}

async fn get(
    client: &Arc<dyn Client>,
    resource: &ResourceInfo,
    name: &str,
) -> Option<DynamicObject> {
    match client.get(resource, Some(NS), name).await {
        Ok(object) => Some(object),
        Err(error) if error.is_not_found() => None,
        Err(error) => panic!("{error}"),
    }
}

async fn delete(
    client: &Arc<dyn Client>,
    resource: &ResourceInfo,
    name: &str,
    params: DeleteParams,
) {
    client
        .delete(resource, Some(NS), name, &params)
        .await
        .unwrap();
}

async fn wait_gone(client: &Arc<dyn Client>, resource: &ResourceInfo, name: &str) {
    eventually(
        LIMIT,
        format!("{} {name} is deleted", resource.kind()),
        || {
            let client = client.clone();
            let resource = resource.clone();
            let name = name.to_string();
            async move { get(&client, &resource, &name).await.is_none() }
        },
    )
    .await;
}

/// The garbage collector as the controller manager runs it: every built-in kind, plus the
/// custom kinds it discovers.
struct RunningCollector {
    handle: GarbageCollectorHandle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningCollector {
    async fn start(client: &Arc<dyn Client>) -> RunningCollector {
        let collector = GarbageCollector::new(client.clone(), ResourceInfo::builtins())
            .discover_custom_resources()
            .workers(4);
        let handle = collector.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(collector.run(async move {
            let _ = stopped.await;
        }));
        handle.wait_for_sync().await;
        RunningCollector { handle, stop, task }
    }

    async fn monitoring_widgets(&self) {
        let handle = self.handle.clone();
        eventually(LIMIT, "the collector monitors Widgets", move || {
            let monitoring = handle.is_monitoring("example.com", "Widget");
            async move { monitoring }
        })
        .await;
    }

    async fn observed(&self, objects: &[&DynamicObject]) {
        let uids: Vec<String> = objects
            .iter()
            .map(|o| o.metadata.uid.clone().unwrap())
            .collect();
        let handle = self.handle.clone();
        eventually(LIMIT, "the collector observes the objects", move || {
            let all = uids.iter().all(|uid| handle.has_observed(uid));
            async move { all }
        })
        .await;
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

#[tokio::test]
async fn a_custom_object_owned_by_a_deleted_config_map_is_collected() {
    within(LIMIT * 2, async {
        let (client, _crds) = cluster();
        let collector = RunningCollector::start(&client).await;
        define_widgets(&client).await;
        collector.monitoring_widgets().await;

        let owner = create(&client, &config_maps(), "settings", Vec::new()).await;
        let widget = create(&client, &widgets(), "w", vec![owned_by(&owner, false)]).await;
        let survivor = create(&client, &widgets(), "unowned", Vec::new()).await;
        collector.observed(&[&owner, &widget, &survivor]).await;

        delete(
            &client,
            &config_maps(),
            "settings",
            DeleteParams::background(),
        )
        .await;
        wait_gone(&client, &widgets(), "w").await;
        assert!(get(&client, &widgets(), "unowned").await.is_some());
        collector.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_custom_owner_deleted_in_background_takes_its_pods_with_it() {
    within(LIMIT * 2, async {
        let (client, _crds) = cluster();
        define_widgets(&client).await;
        // Started after the CRD is established: its kind is monitored from the first sync.
        let collector = RunningCollector::start(&client).await;
        assert!(collector.handle.is_monitoring("example.com", "Widget"));

        let widget = create(&client, &widgets(), "w", Vec::new()).await;
        let pod = create(&client, &pods(), "p", vec![owned_by(&widget, false)]).await;
        collector.observed(&[&widget, &pod]).await;

        delete(&client, &widgets(), "w", DeleteParams::background()).await;
        wait_gone(&client, &pods(), "p").await;
        collector.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_custom_owner_deleted_in_foreground_goes_after_its_pods() {
    within(LIMIT * 2, async {
        let (client, _crds) = cluster();
        let collector = RunningCollector::start(&client).await;
        define_widgets(&client).await;
        collector.monitoring_widgets().await;

        let widget = create(&client, &widgets(), "w", Vec::new()).await;
        let pod = create(&client, &pods(), "p", vec![owned_by(&widget, true)]).await;
        collector.observed(&[&widget, &pod]).await;

        delete(&client, &widgets(), "w", DeleteParams::foreground()).await;
        wait_gone(&client, &pods(), "p").await;
        wait_gone(&client, &widgets(), "w").await;
        collector.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_custom_owner_deleted_with_orphan_propagation_leaves_its_pods() {
    within(LIMIT * 2, async {
        let (client, _crds) = cluster();
        let collector = RunningCollector::start(&client).await;
        define_widgets(&client).await;
        collector.monitoring_widgets().await;

        let widget = create(&client, &widgets(), "w", Vec::new()).await;
        let pod = create(&client, &pods(), "p", vec![owned_by(&widget, true)]).await;
        collector.observed(&[&widget, &pod]).await;

        delete(&client, &widgets(), "w", DeleteParams::orphan()).await;
        wait_gone(&client, &widgets(), "w").await;
        let orphan = get(&client, &pods(), "p").await.expect("the Pod stays");
        assert!(orphan
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty());
        collector.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_namespace_with_custom_objects_is_deleted_completely() {
    within(LIMIT * 2, async {
        let (client, _crds) = cluster();
        define_widgets(&client).await;
        for name in ["a", "b"] {
            create_in(&client, &widgets(), "team", name, Vec::new()).await;
        }
        create_in(&client, &config_maps(), "team", "settings", Vec::new()).await;

        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let controller = namespace::controller(factory, NamespaceReconciler::new(client.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controller.run(async move {
            let _ = stopped.await;
        }));

        client
            .delete(&namespaces(), None, "team", &DeleteParams::default())
            .await
            .unwrap();
        eventually(LIMIT, "the namespace team is removed", || {
            let client = client.clone();
            async move {
                match client.get(&namespaces(), None, "team").await {
                    Ok(_) => false,
                    Err(error) if error.is_not_found() => true,
                    Err(error) => panic!("{error}"),
                }
            }
        })
        .await;
        let left = client
            .list(&widgets(), Some("team"), &Default::default())
            .await
            .unwrap();
        assert!(left.items.is_empty(), "{:?}", left.items);
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    })
    .await;
}
