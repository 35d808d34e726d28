use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use futures::stream;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use kube_core::{ListMeta, ObjectMeta, ResourceExt};

use super::*;
use crate::testing::within;
use crate::{field::FieldSelector, selector};

/// A test-only in-memory `Client`: enough of the contract to exercise `Api<K>`.
#[derive(Default)]
struct MemoryClient {
    objects: Mutex<BTreeMap<String, DynamicObject>>,
    version: Mutex<u64>,
}

impl MemoryClient {
    fn next_version(&self) -> String {
        let mut version = self.version.lock().unwrap();
        *version += 1;
        version.to_string()
    }

    fn not_found(resource: &ResourceInfo, name: &str) -> Error {
        Error::NotFound {
            resource: resource.qualified_resource(),
            name: name.into(),
        }
    }
}

#[async_trait]
impl Client for MemoryClient {
    async fn get(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<DynamicObject> {
        let key = resource.key(namespace, name)?;
        let objects = self.objects.lock().unwrap();
        objects
            .get(&key)
            .cloned()
            .ok_or_else(|| Self::not_found(resource, name))
    }

    async fn list(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<ObjectList<DynamicObject>> {
        let labels =
            selector::parse_label_selector(params.label_selector.as_deref().unwrap_or(""))?;
        let fields = FieldSelector::parse(params.field_selector.as_deref().unwrap_or(""))?;
        fields.validate_for(resource)?;
        let prefix = match namespace {
            Some(namespace) => resource.namespace_prefix(namespace)?,
            None => resource.storage_prefix(),
        };
        let objects = self.objects.lock().unwrap();
        let items = objects
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, object)| object)
            .filter(|o| selector::matches(&labels, o.metadata.labels.as_ref()))
            .filter(|o| fields.matches_object(o))
            .cloned()
            .collect();
        Ok(ObjectList {
            types: TypeMeta {
                api_version: resource.api_version(),
                kind: format!("{}List", resource.kind()),
            },
            metadata: ListMeta {
                resource_version: Some(self.version.lock().unwrap().to_string()),
                ..ListMeta::default()
            },
            items,
        })
    }

    async fn create(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        mut object: DynamicObject,
        _params: &PostParams,
    ) -> Result<DynamicObject> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let key = resource.key(namespace, &name)?;
        let mut objects = self.objects.lock().unwrap();
        if objects.contains_key(&key) {
            return Err(Error::AlreadyExists {
                resource: resource.qualified_resource(),
                name,
            });
        }
        object.metadata.namespace = namespace.map(str::to_string);
        object.metadata.resource_version = Some(self.next_version());
        objects.insert(key, object.clone());
        Ok(object)
    }

    async fn update(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        mut object: DynamicObject,
        _params: &PostParams,
    ) -> Result<DynamicObject> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let key = resource.key(namespace, &name)?;
        let mut objects = self.objects.lock().unwrap();
        let current = objects
            .get(&key)
            .ok_or_else(|| Self::not_found(resource, &name))?;
        if object.metadata.resource_version.is_some()
            && object.metadata.resource_version != current.metadata.resource_version
        {
            return Err(Error::Conflict {
                resource: resource.qualified_resource(),
                name,
                message: Error::OBJECT_MODIFIED.into(),
            });
        }
        object.metadata.resource_version = Some(self.next_version());
        objects.insert(key, object.clone());
        Ok(object)
    }

    async fn update_status(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        self.update(resource, namespace, object, params).await
    }

    async fn patch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch<serde_json::Value>,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        let Patch::Merge(patch) = patch else {
            return Err(Error::UnsupportedMediaType {
                message: "only merge patches".into(),
            });
        };
        let current = self.get(resource, namespace, name).await?;
        let mut value = serde_json::to_value(current).unwrap();
        json_patch::merge(&mut value, patch);
        let object: DynamicObject =
            serde_json::from_value(value).map_err(|e| Error::bad_request(e.to_string()))?;
        let post = PostParams {
            dry_run: params.dry_run,
            field_manager: params.field_manager.clone(),
        };
        self.update(resource, namespace, object, &post).await
    }

    async fn delete(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        _params: &DeleteParams,
    ) -> Result<Deletion> {
        let key = resource.key(namespace, name)?;
        let mut objects = self.objects.lock().unwrap();
        let object = objects
            .remove(&key)
            .ok_or_else(|| Self::not_found(resource, name))?;
        Ok(Deletion::Deleted(object))
    }

    async fn watch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        _params: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream> {
        if !matches!(resource_version, "" | "0") {
            return Err(Error::Gone {
                message: format!("too old resource version: {resource_version}"),
            });
        }
        let list = self
            .list(resource, namespace, &ListParams::default())
            .await?;
        let events: Vec<_> = list
            .items
            .into_iter()
            .map(|o| Ok(WatchEvent::Added(o)))
            .collect();
        Ok(stream::iter(events).boxed())
    }
}

fn client() -> Arc<dyn Client> {
    Arc::new(MemoryClient::default())
}

fn pod(name: &str, app: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("app".to_string(), app.to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec::default()),
        ..Pod::default()
    }
}

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(1);

#[tokio::test]
async fn typed_pods_round_trip_through_dynamic_objects() {
    within(LIMIT, async {
        let client = client();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let created = pods
            .create(&PostParams::default(), &pod("web", "web"))
            .await
            .unwrap();
        assert_eq!(created.namespace().as_deref(), Some("default"));
        assert!(created.resource_version().is_some());

        let stored = client
            .get(&Pod::info(), Some("default"), "web")
            .await
            .unwrap();
        let types = stored.types.unwrap();
        assert_eq!(
            (types.api_version.as_str(), types.kind.as_str()),
            ("v1", "Pod")
        );

        let fetched = pods.get("web").await.unwrap();
        assert_eq!(fetched, created);
    })
    .await;
}

#[tokio::test]
async fn list_with_label_selector_returns_only_matching_pods() {
    within(LIMIT, async {
        let client = client();
        let default: Api<Pod> = Api::namespaced(client.clone(), "default");
        let other: Api<Pod> = Api::namespaced(client.clone(), "other");
        for (name, app) in [("web-1", "web"), ("web-2", "web"), ("db", "db")] {
            default
                .create(&PostParams::default(), &pod(name, app))
                .await
                .unwrap();
        }
        other
            .create(&PostParams::default(), &pod("web-3", "web"))
            .await
            .unwrap();

        let names = |list: ObjectList<Pod>| -> Vec<String> {
            list.items.iter().map(ResourceExt::name_any).collect()
        };
        let web = ListParams::default().labels("app=web");
        assert_eq!(names(default.list(&web).await.unwrap()), ["web-1", "web-2"]);
        let everywhere: Api<Pod> = Api::all(client.clone());
        assert_eq!(
            names(everywhere.list(&web).await.unwrap()),
            ["web-1", "web-2", "web-3"]
        );
        let not_web = ListParams::default().labels("app notin (web)");
        assert_eq!(names(default.list(&not_web).await.unwrap()), ["db"]);
        let by_name = ListParams::default().fields("metadata.name=web-2");
        assert_eq!(names(default.list(&by_name).await.unwrap()), ["web-2"]);
    })
    .await;
}

#[tokio::test]
async fn client_errors_surface_unchanged_through_api() {
    within(LIMIT, async {
        let pods: Api<Pod> = Api::namespaced(client(), "default");
        let error = pods.get("missing").await.unwrap_err();
        assert_eq!(error.to_string(), r#"pods "missing" not found"#);
        assert_eq!(pods.get_opt("missing").await.unwrap(), None);

        pods.create(&PostParams::default(), &pod("web", "web"))
            .await
            .unwrap();
        let again = pods
            .create(&PostParams::default(), &pod("web", "web"))
            .await;
        assert!(again.unwrap_err().is_already_exists());

        let bad = pods.list(&ListParams::default().labels("app in (a")).await;
        assert_eq!(bad.unwrap_err().code(), 400);
        let unsupported = pods
            .list(&ListParams::default().fields("spec.replicas=1"))
            .await;
        assert_eq!(
            unsupported.unwrap_err(),
            Error::bad_request("field label not supported: spec.replicas")
        );

        let everywhere: Api<Pod> = Api::all(pods.client().clone());
        assert!(matches!(
            everywhere.get("web").await,
            Err(Error::BadRequest { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn stale_updates_conflict_and_fresh_ones_succeed() {
    within(LIMIT, async {
        let pods: Api<Pod> = Api::namespaced(client(), "default");
        let created = pods
            .create(&PostParams::default(), &pod("web", "web"))
            .await
            .unwrap();
        let mut fresh = created.clone();
        fresh.labels_mut().insert("tier".into(), "fe".into());
        let updated = pods.update(&PostParams::default(), &fresh).await.unwrap();
        assert_eq!(updated.labels()["tier"], "fe");

        let stale = pods
            .update(&PostParams::default(), &created)
            .await
            .unwrap_err();
        assert!(stale.is_conflict());
        assert!(!stale.is_retryable());
    })
    .await;
}

#[tokio::test]
async fn merge_patch_and_delete_are_typed() {
    within(LIMIT, async {
        let pods: Api<Pod> = Api::namespaced(client(), "default");
        pods.create(&PostParams::default(), &pod("web", "web"))
            .await
            .unwrap();
        let patch = serde_json::json!({ "metadata": { "labels": { "app": "api" } } });
        let patched = pods
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        assert_eq!(patched.labels()["app"], "api");

        let deletion = pods.delete("web", &DeleteParams::default()).await.unwrap();
        assert!(!deletion.is_pending());
        assert_eq!(deletion.into_inner().name_any(), "web");
        assert!(pods.get("web").await.unwrap_err().is_not_found());
    })
    .await;
}

#[tokio::test]
async fn watch_yields_typed_events_and_gone_for_old_versions() {
    within(LIMIT, async {
        let nodes: Api<Node> = Api::cluster(client());
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let events: Vec<_> = nodes
            .watch(&WatchParams::default(), "0")
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(events.len(), 1);
        let Ok(WatchEvent::Added(added)) = &events[0] else {
            panic!("expected an Added event, got {:?}", events[0]);
        };
        assert_eq!(added.name_any(), "n1");

        let gone = nodes.watch(&WatchParams::default(), "1").await;
        assert!(gone.err().is_some_and(|e| e.is_gone()));
    })
    .await;
}

#[tokio::test]
async fn per_item_lists_and_watches_name_undecodable_objects_where_strict_ones_fail() {
    within(LIMIT, async {
        let memory = Arc::new(MemoryClient::default());
        let client: Arc<dyn Client> = memory.clone();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(&PostParams::default(), &pod("good", "web"))
            .await
            .unwrap();
        let bad: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": "bad", "namespace": "default", "resourceVersion": "9" },
            "spec": { "containers": "not a list" },
        }))
        .unwrap();
        let key = Pod::info().key(Some("default"), "bad").unwrap();
        memory.objects.lock().unwrap().insert(key, bad);

        assert!(matches!(
            pods.list(&ListParams::default()).await,
            Err(Error::Internal { .. })
        ));
        let list = pods.list_decoded(&ListParams::default()).await.unwrap();
        let (good, bad): (Vec<_>, Vec<_>) = list.items.into_iter().partition(Result::is_ok);
        assert_eq!(good.len(), 1);
        let undecodable = bad.into_iter().next().unwrap().unwrap_err();
        assert_eq!(
            (
                undecodable.namespace.as_deref(),
                undecodable.name.as_str(),
                undecodable.resource_version.as_deref()
            ),
            (Some("default"), "bad", Some("9"))
        );
        assert!(
            undecodable
                .error
                .to_string()
                .contains(r#"cannot convert Pod "bad""#),
            "{}",
            undecodable.error
        );

        let strict: Vec<_> = pods
            .watch(&WatchParams::default(), "0")
            .await
            .unwrap()
            .collect()
            .await;
        assert!(strict.iter().any(Result::is_err));
        let events: Vec<_> = pods
            .watch_decoded(&WatchParams::default(), "0")
            .await
            .unwrap()
            .collect()
            .await;
        let names: Vec<_> = events
            .into_iter()
            .map(|event| match event.unwrap() {
                WatchEvent::Added(Ok(pod)) => pod.name_any(),
                WatchEvent::Added(Err(undecodable)) => format!("!{}", undecodable.name),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(names, ["!bad", "good"]);
    })
    .await;
}

#[test]
fn objects_that_do_not_fit_the_kind_fail_conversion_with_internal() {
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "web" },
        "spec": { "containers": "not a list" },
    }))
    .unwrap();
    let error = from_dynamic::<Pod>(&Pod::info(), object).unwrap_err();
    assert!(matches!(error, Error::Internal { .. }));
    assert!(
        error.to_string().contains(r#"cannot convert Pod "web""#),
        "{error}"
    );
}

#[test]
fn deletion_maps_keep_the_outcome() {
    let pending: Deletion<u32> = Deletion::Pending(1);
    let mapped = pending.try_map(|n| Ok(n + 1)).unwrap();
    assert_eq!(mapped, Deletion::Pending(2));
    assert!(mapped.is_pending());
}
