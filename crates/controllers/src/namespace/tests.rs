use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Pod};
use capstan_api::kube_core::params::Patch;
use capstan_api::kube_core::params::PatchParams;
use capstan_api::testing::within;
use capstan_api::Api;
use capstan_apiserver::registry::Registry;
use capstan_controller::testing::ObjectHistory;
use capstan_watch::ReflectorOptions;

use super::*;

const LIMIT: Duration = Duration::from_secs(30);

fn registry() -> Arc<Registry> {
    capstan_apiserver::testing::registry()
}

async fn create(
    client: &Arc<dyn Client>,
    resource: &ResourceInfo,
    namespace: Option<&str>,
    object: Value,
) {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    client
        .create(resource, namespace, object, &PostParams::default())
        .await
        .unwrap();
}

fn kind(group: &str, kind: &str) -> ResourceInfo {
    ResourceInfo::builtin(group, kind).unwrap()
}

/// `team` with `configs` ConfigMaps and `pods` Pods, each with `finalizers`.
async fn populated(client: &Arc<dyn Client>, configs: usize, pods: usize, finalizers: &[&str]) {
    capstan_apiserver::testing::create_namespace(&**client, "team").await;
    for i in 0..configs {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("config-{i}"), "finalizers": finalizers}});
        create(client, &kind("", "ConfigMap"), Some("team"), object).await;
    }
    for i in 0..pods {
        let object = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod-{i}"), "finalizers": finalizers},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}});
        create(client, &kind("", "Pod"), Some("team"), object).await;
    }
}

async fn delete_namespace(client: &Arc<dyn Client>) {
    client
        .delete(&namespaces(), None, "team", &DeleteParams::default())
        .await
        .unwrap();
}

async fn condition(client: &Arc<dyn Client>, type_: &str) -> (String, String) {
    let namespace = client.get(&namespaces(), None, "team").await.unwrap();
    let conditions = namespace.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let found = conditions
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"));
    (
        found["status"].as_str().unwrap().to_string(),
        found["message"].as_str().unwrap().to_string(),
    )
}

/// The CustomResourceDefinition of Widgets (`widgets.example.com`, namespaced, `v1`), created
/// and, when `established`, reported `Established` as the API server's CRD controller does.
async fn widget_definition(client: &Arc<dyn Client>, established: bool) {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object"}}}],
        },
    });
    let crds = kind("apiextensions.k8s.io", "CustomResourceDefinition");
    create(client, &crds, None, crd).await;
    if established {
        let mut crd = client
            .get(&crds, None, "widgets.example.com")
            .await
            .unwrap();
        crd.data["status"] = json!({"conditions": [
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"},
        ]});
        client
            .update_status(&crds, None, crd, &PostParams::default())
            .await
            .unwrap();
    }
}

async fn remove_finalizers(client: &Arc<dyn Client>, resource: &ResourceInfo, name: &str) {
    client
        .patch(
            resource,
            Some("team"),
            name,
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            &PatchParams::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_namespace_that_is_not_being_deleted_is_left_alone() {
    within(LIMIT, async {
        let client: Arc<dyn Client> = registry();
        populated(&client, 1, 0, &[]).await;
        let reconciler = NamespaceReconciler::new(client.clone());
        assert_eq!(
            reconciler.sync("team").await.unwrap(),
            Action::await_change()
        );
        assert_eq!(
            reconciler.sync("missing").await.unwrap(),
            Action::await_change()
        );
        let configs = Api::<ConfigMap>::namespaced(client.clone(), "team");
        assert!(configs.get_opt("config-0").await.unwrap().is_some());
        let namespace = client.get(&namespaces(), None, "team").await.unwrap();
        assert!(namespace.data["status"]["conditions"].is_null());
    })
    .await;
}

#[tokio::test]
async fn content_with_finalizers_holds_the_namespace_and_is_reported_until_released() {
    within(LIMIT, async {
        let client: Arc<dyn Client> = registry();
        populated(&client, 2, 3, &["example.com/hold"]).await;
        delete_namespace(&client).await;
        let reconciler = NamespaceReconciler::new(client.clone());
        assert_eq!(reconciler.sync("team").await.unwrap(), Action::backoff());

        assert_eq!(
            condition(&client, conditions::CONTENT_REMAINING).await,
            (
                "True".into(),
                "Some resources are remaining: configmaps. has 2 objects, pods. has 3 objects"
                    .into()
            )
        );
        assert_eq!(
            condition(&client, conditions::FINALIZERS_REMAINING).await,
            (
                "True".into(),
                "Some content in the namespace has finalizers remaining: example.com/hold in 5 \
                 resource instances"
                    .into()
            )
        );
        assert_eq!(
            condition(&client, conditions::DISCOVERY_FAILURE).await.0,
            "False"
        );
        assert_eq!(
            condition(&client, conditions::CONTENT_FAILURE).await.0,
            "False"
        );
        // Every object is marked for deletion, and the namespace still holds its finalizer.
        let pods = Api::<Pod>::namespaced(client.clone(), "team");
        let pending = pods.get("pod-0").await.unwrap();
        assert!(pending.metadata.deletion_timestamp.is_some());
        let namespace = client.get(&namespaces(), None, "team").await.unwrap();
        assert_eq!(namespace.data["spec"]["finalizers"], json!(["kubernetes"]));

        // A second pass with nothing changed writes nothing.
        let before = namespace.metadata.resource_version.clone();
        assert_eq!(reconciler.sync("team").await.unwrap(), Action::backoff());
        let again = client.get(&namespaces(), None, "team").await.unwrap();
        assert_eq!(again.metadata.resource_version, before);

        for i in 0..2 {
            remove_finalizers(&client, &kind("", "ConfigMap"), &format!("config-{i}")).await;
        }
        for i in 0..3 {
            remove_finalizers(&client, &kind("", "Pod"), &format!("pod-{i}")).await;
        }
        assert_eq!(
            reconciler.sync("team").await.unwrap(),
            Action::await_change()
        );
        let gone = client.get(&namespaces(), None, "team").await.unwrap_err();
        assert!(matches!(gone, Error::NotFound { .. }), "{gone}");
    })
    .await;
}

#[tokio::test]
async fn custom_kinds_served_from_definitions_are_deleted_too() {
    within(LIMIT, async {
        let registry = registry();
        let widgets = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
        registry.register(widgets.clone());
        let client: Arc<dyn Client> = registry.clone();
        widget_definition(&client, true).await;
        populated(&client, 1, 0, &[]).await;
        let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
                            "metadata": {"name": "w", "finalizers": ["example.com/hold"]}});
        create(&client, &widgets, Some("team"), widget).await;
        delete_namespace(&client).await;

        let reconciler = NamespaceReconciler::new(client.clone());
        assert_eq!(reconciler.sync("team").await.unwrap(), Action::backoff());
        assert_eq!(
            condition(&client, conditions::CONTENT_REMAINING).await.1,
            "Some resources are remaining: widgets.example.com has 1 objects"
        );
        remove_finalizers(&client, &widgets, "w").await;
        assert_eq!(
            reconciler.sync("team").await.unwrap(),
            Action::await_change()
        );
        assert!(client.get(&namespaces(), None, "team").await.is_err());
        assert!(client.get(&widgets, Some("team"), "w").await.is_err());
    })
    .await;
}

#[tokio::test]
async fn a_definition_not_yet_established_serves_no_kind_to_discover() {
    within(LIMIT, async {
        let client: Arc<dyn Client> = registry();
        widget_definition(&client, false).await;
        let discovered = CrdDiscovery::new(client.clone()).resources().await.unwrap();
        assert!(
            !discovered.iter().any(|r| r.group() == "example.com"),
            "{discovered:?}"
        );
        assert!(discovered.iter().any(|r| r.kind() == "ConfigMap"));
    })
    .await;
}

#[tokio::test]
async fn an_established_definition_serves_one_kind_per_served_version() {
    within(LIMIT, async {
        let client: Arc<dyn Client> = registry();
        widget_definition(&client, true).await;
        let discovered = CrdDiscovery::new(client.clone()).resources().await.unwrap();
        let widgets: Vec<String> = discovered
            .iter()
            .filter(|r| r.group() == "example.com")
            .map(ResourceInfo::api_version)
            .collect();
        assert_eq!(widgets, ["example.com/v1"]);
    })
    .await;
}

#[tokio::test]
async fn a_kind_whose_list_answers_not_found_has_nothing_to_delete() {
    within(LIMIT, async {
        let client: Arc<dyn Client> = registry();
        populated(&client, 1, 0, &[]).await;
        delete_namespace(&client).await;
        // Discovered, but not served by the registry: its list is 404.
        let unserved = ResourceInfo::new("example.com", "v1", "Gadget", "gadgets", true);
        let reconciler =
            NamespaceReconciler::new(client.clone()).with_discovery(StaticDiscovery(move || {
                ResourceInfo::builtins()
                    .chain([unserved.clone()])
                    .collect::<Vec<_>>()
            }));
        assert_eq!(
            reconciler.sync("team").await.unwrap(),
            Action::await_change()
        );
        let gone = client.get(&namespaces(), None, "team").await.unwrap_err();
        assert!(gone.is_not_found(), "{gone}");
    })
    .await;
}

struct Broken;

#[async_trait]
impl Discovery for Broken {
    async fn resources(&self) -> Result<Vec<ResourceInfo>, Error> {
        Err(Error::ServiceUnavailable {
            message: "discovery is down".into(),
        })
    }
}

#[tokio::test]
async fn a_discovery_failure_is_reported_and_retried() {
    within(LIMIT, async {
        let client: Arc<dyn Client> = registry();
        populated(&client, 1, 0, &[]).await;
        delete_namespace(&client).await;
        let reconciler = NamespaceReconciler::new(client.clone()).with_discovery(Broken);
        assert_eq!(reconciler.sync("team").await.unwrap(), Action::backoff());
        let (status, message) = condition(&client, conditions::DISCOVERY_FAILURE).await;
        assert_eq!(status, "True");
        assert!(message.contains("discovery is down"), "{message}");
        assert!(client.get(&namespaces(), None, "team").await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn the_running_controller_empties_and_removes_a_deleted_namespace() {
    within(LIMIT, async {
        let registry = registry();
        let client: Arc<dyn Client> = registry.clone();
        populated(&client, 2, 3, &[]).await;
        let history = ObjectHistory::<Namespace>::record(client.clone());
        let factory = Arc::new(InformerFactory::new(
            client.clone(),
            ReflectorOptions::default(),
        ));
        let reconciler = NamespaceReconciler::new(client.clone())
            .with_discovery(StaticDiscovery(move || registry.resources()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(controller(factory, reconciler).run(async {
            let _ = stopped.await;
        }));
        history
            .wait_until(|namespaces| namespaces.keys().any(|key| key.name == "team"))
            .await;
        delete_namespace(&client).await;
        history
            .wait_until(|namespaces| !namespaces.keys().any(|key| key.name == "team"))
            .await;
        // Before it went, the namespace reported its content removed.
        let last = history
            .revisions()
            .into_iter()
            .rev()
            .find(|r| r.object.metadata.name.as_deref() == Some("team"))
            .unwrap();
        let conditions = last
            .object
            .status
            .clone()
            .unwrap()
            .conditions
            .unwrap_or_default();
        let remaining = conditions
            .iter()
            .find(|c| c.type_ == conditions::CONTENT_REMAINING)
            .expect("the content condition");
        assert_eq!(remaining.reason.as_deref(), Some("ContentRemoved"));
        assert!(Api::<Pod>::namespaced(client.clone(), "team")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty());
        let _ = stop.send(());
        run.await.unwrap().unwrap();
    })
    .await;
}
