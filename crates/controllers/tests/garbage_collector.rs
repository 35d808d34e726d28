//! The garbage collector end to end, over the in-process registry on the memory store.
//!
//! Owners and dependents are Widgets (a namespaced custom kind), Fleets (a cluster-scoped
//! custom kind), ConfigMaps and Secrets with hand-set ownerReferences. Every case records the
//! watch history of all four kinds and asserts on it (the order of deletions, no dangling
//! reference in the final state), as well as on the live objects. The collector monitors
//! every built-in kind too, as it would in a cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::client::Deletion;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use capstan_api::kube_core::params::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use capstan_api::kube_core::{DynamicObject, ObjectList, ObjectMeta, WatchEvent};
use capstan_api::testing::within;
use capstan_api::{Client, Resource, ResourceInfo, Result as ApiResult, WatchStream};
use capstan_controllers::garbage_collector::{
    GarbageCollector, GarbageCollectorHandle, FOREGROUND_FINALIZER,
};
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const NS: &str = "default";
const LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Widget {
    metadata: ObjectMeta,
}

capstan_api::resource!(
    Widget,
    group = "example.com",
    version = "v1",
    kind = "Widget",
    plural = "widgets",
    scope = Namespaced
);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Fleet {
    metadata: ObjectMeta,
}

capstan_api::resource!(
    Fleet,
    group = "example.com",
    version = "v1",
    kind = "Fleet",
    plural = "fleets",
    scope = Cluster
);

fn widget() -> ResourceInfo {
    Widget::info()
}

fn fleet() -> ResourceInfo {
    Fleet::info()
}

fn config_map() -> ResourceInfo {
    ResourceInfo::builtin("", "ConfigMap").unwrap()
}

fn secret() -> ResourceInfo {
    ResourceInfo::builtin("", "Secret").unwrap()
}

/// The kinds the tests create, which the history records.
fn test_kinds() -> Vec<ResourceInfo> {
    vec![widget(), fleet(), config_map(), secret()]
}

/// Everything the collector monitors: every built-in kind and the two custom ones.
fn served_kinds() -> Vec<ResourceInfo> {
    ResourceInfo::builtins()
        .chain([widget(), fleet()])
        .collect()
}

fn registry() -> Arc<dyn Client> {
    let registry = capstan_apiserver::testing::registry();
    registry.register(widget());
    registry.register(fleet());
    registry
}

// ---------------------------------------------------------------------------------------------
// objects

fn owned_by(owner: &DynamicObject, block: bool) -> OwnerReference {
    let types = owner.types.clone().unwrap();
    OwnerReference {
        api_version: types.api_version,
        kind: types.kind,
        name: owner.metadata.name.clone().unwrap(),
        uid: owner.metadata.uid.clone().unwrap(),
        controller: None,
        block_owner_deletion: Some(block),
    }
}

fn uid(object: &DynamicObject) -> String {
    object.metadata.uid.clone().unwrap()
}

fn namespace_for(kind: &ResourceInfo, namespace: &str) -> Option<String> {
    kind.namespaced().then(|| namespace.to_string())
}

async fn create_in(
    client: &Arc<dyn Client>,
    kind: &ResourceInfo,
    namespace: &str,
    name: &str,
    owners: Vec<OwnerReference>,
) -> DynamicObject {
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind(),
        "metadata": { "name": name, "ownerReferences": owners },
    }))
    .unwrap();
    let namespace = namespace_for(kind, namespace);
    client
        .create(kind, namespace.as_deref(), object, &PostParams::default())
        .await
        .unwrap_or_else(|e| panic!("creating {} {name}: {e}", kind.kind()))
}

async fn create(
    client: &Arc<dyn Client>,
    kind: &ResourceInfo,
    name: &str,
    owners: Vec<OwnerReference>,
) -> DynamicObject {
    create_in(client, kind, NS, name, owners).await
}

async fn delete(
    client: &Arc<dyn Client>,
    kind: &ResourceInfo,
    name: &str,
    params: DeleteParams,
) -> Deletion {
    let namespace = namespace_for(kind, NS);
    client
        .delete(kind, namespace.as_deref(), name, &params)
        .await
        .unwrap()
}

async fn get(client: &Arc<dyn Client>, kind: &ResourceInfo, name: &str) -> Option<DynamicObject> {
    let namespace = namespace_for(kind, NS);
    match client.get(kind, namespace.as_deref(), name).await {
        Ok(object) => Some(object),
        Err(error) if error.is_not_found() => None,
        Err(error) => panic!("{error}"),
    }
}

/// Every object of the test kinds, in every namespace.
async fn all_objects(client: &Arc<dyn Client>) -> Vec<DynamicObject> {
    let mut objects = Vec::new();
    for kind in test_kinds() {
        let list = client
            .list(&kind, None, &ListParams::default())
            .await
            .unwrap();
        objects.extend(list.items);
    }
    objects
}

/// The references, live, that point at no existing object: `"<dependent> -> <owner uid>"`.
async fn dangling_references(client: &Arc<dyn Client>) -> Vec<String> {
    let objects = all_objects(client).await;
    let uids: HashSet<String> = objects.iter().map(uid).collect();
    objects
        .iter()
        .flat_map(|o| {
            let name = o.metadata.name.clone().unwrap();
            o.metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|r| !uids.contains(&r.uid))
                .map(move |r| format!("{name} -> {}", r.uid))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn gone(client: &Arc<dyn Client>, kind: &ResourceInfo, names: &[String]) -> bool {
    for name in names {
        if get(client, kind, name).await.is_some() {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// the collector

struct RunningGc {
    handle: GarbageCollectorHandle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningGc {
    async fn start(gc: GarbageCollector) -> RunningGc {
        let handle = gc.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gc.run(async move {
            let _ = stopped.await;
        }));
        handle.wait_for_sync().await;
        RunningGc { handle, stop, task }
    }

    async fn with(client: &Arc<dyn Client>) -> RunningGc {
        RunningGc::start(GarbageCollector::new(client.clone(), served_kinds())).await
    }

    /// Waits until the graph has seen every object in `objects` through a watch.
    async fn observed(&self, objects: &[&DynamicObject]) {
        let uids: Vec<String> = objects.iter().map(|o| uid(o)).collect();
        let handle = self.handle.clone();
        eventually("the collector observes the objects", move || {
            let all = uids.iter().all(|u| handle.has_observed(u));
            async move { all }
        })
        .await;
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// history

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Added,
    Modified,
    Deleted,
}

/// One watch event of one of the test kinds.
#[derive(Clone, Debug)]
struct Record {
    revision: u64,
    change: Change,
    kind: String,
    name: String,
    uid: String,
    owners: Vec<String>,
    deleting: bool,
    finalizers: Vec<String>,
}

/// Every watch event of the test kinds, from lists then watches started before the test
/// writes anything; ordered by the store's global revision.
struct History {
    records: Arc<Mutex<Vec<Record>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl History {
    async fn record(client: &Arc<dyn Client>) -> History {
        let records: Arc<Mutex<Vec<Record>>> = Arc::default();
        let mut tasks = Vec::new();
        for kind in test_kinds() {
            let list = client
                .list(&kind, None, &ListParams::default())
                .await
                .unwrap();
            let version = list.metadata.resource_version.clone().unwrap();
            for object in list.items {
                records.lock().push(Record::of(Change::Added, &object));
            }
            let params = WatchParams {
                bookmarks: false,
                ..WatchParams::default()
            };
            let mut events = client.watch(&kind, None, &params, &version).await.unwrap();
            let log = records.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    let record = match event {
                        Ok(WatchEvent::Added(o)) => Record::of(Change::Added, &o),
                        Ok(WatchEvent::Modified(o)) => Record::of(Change::Modified, &o),
                        Ok(WatchEvent::Deleted(o)) => Record::of(Change::Deleted, &o),
                        Ok(WatchEvent::Bookmark(_)) => continue,
                        other => panic!("history watch failed: {other:?}"),
                    };
                    log.lock().push(record);
                }
            }));
        }
        History { records, tasks }
    }

    fn records(&self) -> Vec<Record> {
        let mut records = self.records.lock().clone();
        records.sort_by_key(|r| r.revision);
        records
    }

    /// Waits until the history has caught up with the live objects: it has seen their
    /// revisions, and the deletion of every object it saw that is no longer alive (a delete
    /// can be the newest write, past every live object's revision).
    async fn catch_up(&self, client: &Arc<dyn Client>) {
        let objects = all_objects(client).await;
        let wanted: Vec<u64> = objects.iter().map(Record::revision_of).collect();
        let max = wanted.into_iter().max().unwrap_or(0);
        let live: std::collections::HashSet<String> = objects
            .iter()
            .filter_map(|o| o.metadata.uid.clone())
            .collect();
        eventually("the history catches up", || {
            let seen = self.records.lock().iter().map(|r| r.revision).max();
            let complete = self.final_state().keys().all(|uid| live.contains(uid));
            async move { seen.unwrap_or(0) >= max && complete }
        })
        .await;
    }

    fn deleted_at(&self, uid: &str) -> Option<u64> {
        self.records()
            .iter()
            .find(|r| r.uid == uid && r.change == Change::Deleted)
            .map(|r| r.revision)
    }

    /// The objects alive after the last recorded event, by uid.
    fn final_state(&self) -> HashMap<String, Record> {
        let mut state = HashMap::new();
        for record in self.records() {
            match record.change {
                Change::Deleted => {
                    state.remove(&record.uid);
                }
                _ => {
                    state.insert(record.uid.clone(), record);
                }
            }
        }
        state
    }

    /// References in the final recorded state that resolve to no recorded object.
    fn dangling(&self) -> Vec<String> {
        let state = self.final_state();
        state
            .values()
            .flat_map(|r| {
                r.owners
                    .iter()
                    .filter(|o| !state.contains_key(*o))
                    .map(move |o| format!("{} {} -> {o}", r.kind, r.name))
            })
            .collect()
    }
}

impl Drop for History {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Record {
    fn revision_of(object: &DynamicObject) -> u64 {
        object
            .metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn of(change: Change, object: &DynamicObject) -> Record {
        Record {
            revision: Record::revision_of(object),
            change,
            kind: object
                .types
                .as_ref()
                .map(|t| t.kind.clone())
                .unwrap_or_default(),
            name: object.metadata.name.clone().unwrap(),
            uid: uid(object),
            owners: object
                .metadata
                .owner_references
                .iter()
                .flatten()
                .map(|r| r.uid.clone())
                .collect(),
            deleting: object.metadata.deletion_timestamp.is_some(),
            finalizers: object.metadata.finalizers.clone().unwrap_or_default(),
        }
    }
}

/// A three-level tree: a Widget owning `width` ConfigMaps, each owning `depth` Secrets.
struct Tree {
    root: DynamicObject,
    config_maps: Vec<DynamicObject>,
    secrets: Vec<(usize, DynamicObject)>,
}

impl Tree {
    async fn create(
        client: &Arc<dyn Client>,
        name: &str,
        width: usize,
        depth: usize,
        block: bool,
    ) -> Tree {
        let root = create(client, &widget(), name, vec![]).await;
        let mut config_maps = Vec::new();
        let mut secrets = Vec::new();
        for i in 0..width {
            let cm = create(
                client,
                &config_map(),
                &format!("{name}-cm-{i}"),
                vec![owned_by(&root, block)],
            )
            .await;
            for j in 0..depth {
                let secret = create(
                    client,
                    &secret(),
                    &format!("{name}-secret-{i}-{j}"),
                    vec![owned_by(&cm, block)],
                )
                .await;
                secrets.push((i, secret));
            }
            config_maps.push(cm);
        }
        Tree {
            root,
            config_maps,
            secrets,
        }
    }

    fn all(&self) -> Vec<&DynamicObject> {
        std::iter::once(&self.root)
            .chain(&self.config_maps)
            .chain(self.secrets.iter().map(|(_, s)| s))
            .collect()
    }

    fn names(objects: &[DynamicObject]) -> Vec<String> {
        objects
            .iter()
            .map(|o| o.metadata.name.clone().unwrap())
            .collect()
    }

    fn secret_names(&self) -> Vec<String> {
        self.secrets
            .iter()
            .map(|(_, s)| s.metadata.name.clone().unwrap())
            .collect()
    }

    async fn is_gone(&self, client: &Arc<dyn Client>) -> bool {
        gone(
            client,
            &widget(),
            &[self.root.metadata.name.clone().unwrap()],
        )
        .await
            && gone(client, &config_map(), &Tree::names(&self.config_maps)).await
            && gone(client, &secret(), &self.secret_names()).await
    }
}

// ---------------------------------------------------------------------------------------------
// a client wrapper that lags watches of one kind and slows deletes

struct Tweaked {
    inner: Arc<dyn Client>,
    lagging_kind: Option<String>,
    lag: Duration,
    delete_delay: Duration,
}

#[async_trait]
impl Client for Tweaked {
    async fn get(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<DynamicObject> {
        self.inner.get(resource, namespace, name).await
    }

    async fn list(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> ApiResult<ObjectList<DynamicObject>> {
        self.inner.list(resource, namespace, params).await
    }

    async fn create(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> ApiResult<DynamicObject> {
        self.inner.create(resource, namespace, object, params).await
    }

    async fn update(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> ApiResult<DynamicObject> {
        self.inner.update(resource, namespace, object, params).await
    }

    async fn update_status(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: DynamicObject,
        params: &PostParams,
    ) -> ApiResult<DynamicObject> {
        self.inner
            .update_status(resource, namespace, object, params)
            .await
    }

    async fn patch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch<serde_json::Value>,
        params: &PatchParams,
    ) -> ApiResult<DynamicObject> {
        self.inner
            .patch(resource, namespace, name, patch, params)
            .await
    }

    async fn delete(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> ApiResult<Deletion> {
        tokio::time::sleep(self.delete_delay).await;
        self.inner.delete(resource, namespace, name, params).await
    }

    async fn watch(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> ApiResult<WatchStream> {
        let events = self
            .inner
            .watch(resource, namespace, params, resource_version)
            .await?;
        if self.lagging_kind.as_deref() != Some(resource.kind()) {
            return Ok(events);
        }
        let lag = self.lag;
        Ok(events
            .then(move |event| async move {
                tokio::time::sleep(lag).await;
                event
            })
            .boxed())
    }
}

// ---------------------------------------------------------------------------------------------
// tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_owner_in_the_background_deletes_its_dependents_three_levels_deep_leaving_no_orphans(
) {
    within(LIMIT, async {
        let client = registry();
        let history = History::record(&client).await;
        let gc = RunningGc::with(&client).await;
        let tree = Tree::create(&client, "app", 3, 2, false).await;
        let bystander = create(&client, &config_map(), "bystander", vec![]).await;
        gc.observed(&tree.all()).await;

        let deletion = delete(&client, &widget(), "app", DeleteParams::background()).await;
        assert!(
            !deletion.is_pending(),
            "Background deletes the owner at once"
        );
        eventually("the whole tree is collected", || tree.is_gone(&client)).await;
        history.catch_up(&client).await;

        assert!(get(&client, &config_map(), "bystander").await.is_some());
        assert_eq!(dangling_references(&client).await, Vec::<String>::new());
        assert_eq!(history.dangling(), Vec::<String>::new());
        assert!(history.final_state().contains_key(&uid(&bystander)));

        // Level by level: each dependent goes after its owner.
        let root_deleted = history.deleted_at(&uid(&tree.root)).unwrap();
        for cm in &tree.config_maps {
            let at = history.deleted_at(&uid(cm)).expect("config map deleted");
            assert!(at > root_deleted, "a ConfigMap went before its Widget");
        }
        for (i, secret) in &tree.secrets {
            let at = history.deleted_at(&uid(secret)).expect("secret deleted");
            let owner_at = history.deleted_at(&uid(&tree.config_maps[*i])).unwrap();
            assert!(at > owner_at, "a Secret went before its ConfigMap");
        }
        // Nothing was deleted in Foreground on the way.
        assert!(history.records().iter().all(|r| !r.deleting));
        gc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_with_two_owners_survives_losing_one_and_only_drops_that_reference() {
    within(LIMIT, async {
        let client = registry();
        let history = History::record(&client).await;
        let gc = RunningGc::with(&client).await;
        let first = create(&client, &widget(), "first", vec![]).await;
        let second = create(&client, &fleet(), "second", vec![]).await;
        let shared = create(
            &client,
            &config_map(),
            "shared",
            vec![owned_by(&first, false), owned_by(&second, true)],
        )
        .await;
        let only_first = create(
            &client,
            &secret(),
            "only-first",
            vec![owned_by(&first, false)],
        )
        .await;
        gc.observed(&[&first, &second, &shared, &only_first]).await;

        delete(&client, &widget(), "first", DeleteParams::background()).await;
        eventually("the dangling reference is removed", || async {
            let shared = get(&client, &config_map(), "shared").await.unwrap();
            shared.metadata.owner_references.unwrap_or_default().len() == 1
        })
        .await;
        eventually("the sole dependent is collected", || async {
            get(&client, &secret(), "only-first").await.is_none()
        })
        .await;

        let shared_now = get(&client, &config_map(), "shared").await.unwrap();
        assert_eq!(
            uid(&shared_now),
            uid(&shared),
            "the same object, not recreated"
        );
        assert_eq!(
            shared_now.metadata.owner_references.unwrap(),
            vec![owned_by(&second, true)],
            "only the reference to the surviving owner is left, unchanged"
        );
        history.catch_up(&client).await;
        assert_eq!(history.deleted_at(&uid(&shared)), None, "never deleted");
        assert_eq!(dangling_references(&client).await, Vec::<String>::new());
        assert_eq!(history.dangling(), Vec::<String>::new());
        gc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_keeps_the_owner_until_its_blocking_dependents_are_gone() {
    within(LIMIT, async {
        let client = registry();
        let history = History::record(&client).await;
        let gc = RunningGc::with(&client).await;
        let tree = Tree::create(&client, "app", 3, 2, true).await;
        let loose = create(
            &client,
            &config_map(),
            "app-loose",
            vec![owned_by(&tree.root, false)],
        )
        .await;
        gc.observed(&tree.all()).await;
        gc.observed(&[&loose]).await;

        let deletion = delete(&client, &widget(), "app", DeleteParams::foreground()).await;
        assert!(deletion.is_pending(), "the owner waits for its dependents");
        let pending = deletion.into_inner();
        assert!(pending.metadata.deletion_timestamp.is_some());
        assert!(pending
            .metadata
            .finalizers
            .unwrap()
            .contains(&FOREGROUND_FINALIZER.to_string()));

        eventually("the whole tree is collected", || tree.is_gone(&client)).await;
        eventually("the non-blocking dependent is collected too", || async {
            get(&client, &config_map(), "app-loose").await.is_none()
        })
        .await;
        history.catch_up(&client).await;

        let records = history.records();
        let root_uid = uid(&tree.root);
        let root_deleted = history.deleted_at(&root_uid).unwrap();
        let marked = records
            .iter()
            .find(|r| r.uid == root_uid && r.deleting)
            .expect("the owner was marked for deletion first")
            .revision;
        // Every blocking dependent goes while the owner waits, before its final delete.
        for cm in &tree.config_maps {
            let at = history.deleted_at(&uid(cm)).unwrap();
            assert!(
                marked < at && at < root_deleted,
                "ConfigMap outside the wait"
            );
        }
        for (i, secret) in &tree.secrets {
            let at = history.deleted_at(&uid(secret)).unwrap();
            assert!(marked < at && at < root_deleted, "Secret outside the wait");
            // The middle level was deleted in Foreground too: its Secrets went first.
            assert!(at < history.deleted_at(&uid(&tree.config_maps[*i])).unwrap());
        }
        for cm in &tree.config_maps {
            assert!(
                records.iter().any(|r| r.uid == uid(cm)
                    && r.deleting
                    && r.finalizers.contains(&FOREGROUND_FINALIZER.to_string())),
                "the ConfigMaps, which own Secrets, were deleted in Foreground"
            );
        }
        assert_eq!(dangling_references(&client).await, Vec::<String>::new());
        assert_eq!(history.dangling(), Vec::<String>::new());
        gc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_keeps_the_dependents_strips_the_reference_and_then_deletes_the_owner() {
    within(LIMIT, async {
        let client = registry();
        let history = History::record(&client).await;
        let gc = RunningGc::with(&client).await;
        let owner = create(&client, &widget(), "app", vec![]).await;
        let other = create(&client, &widget(), "other", vec![]).await;
        let mut dependents = Vec::new();
        for i in 0..3 {
            dependents.push(
                create(
                    &client,
                    &config_map(),
                    &format!("app-cm-{i}"),
                    vec![owned_by(&owner, true)],
                )
                .await,
            );
        }
        let grandchild = create(
            &client,
            &secret(),
            "app-secret",
            vec![owned_by(&dependents[0], false)],
        )
        .await;
        let shared = create(
            &client,
            &secret(),
            "shared",
            vec![owned_by(&owner, false), owned_by(&other, false)],
        )
        .await;
        let mut all: Vec<&DynamicObject> = dependents.iter().collect();
        all.extend([&owner, &other, &grandchild, &shared]);
        gc.observed(&all).await;

        let deletion = delete(&client, &widget(), "app", DeleteParams::orphan()).await;
        assert!(deletion.is_pending(), "the owner waits for the orphaning");
        eventually("the owner goes", || async {
            get(&client, &widget(), "app").await.is_none()
        })
        .await;
        history.catch_up(&client).await;

        let owner_deleted = history.deleted_at(&uid(&owner)).unwrap();
        for dependent in &dependents {
            let name = dependent.metadata.name.clone().unwrap();
            let now = get(&client, &config_map(), &name).await.expect("kept");
            assert_eq!(uid(&now), uid(dependent));
            assert!(now.metadata.owner_references.unwrap_or_default().is_empty());
            // The reference was removed before the owner's final delete.
            let released = history
                .records()
                .into_iter()
                .find(|r| r.uid == uid(dependent) && r.owners.is_empty())
                .expect("released")
                .revision;
            assert!(released < owner_deleted);
        }
        let shared_now = get(&client, &secret(), "shared").await.unwrap();
        assert_eq!(
            shared_now.metadata.owner_references.unwrap(),
            vec![owned_by(&other, false)]
        );
        assert!(get(&client, &secret(), "app-secret").await.is_some());
        assert!(get(&client, &widget(), "other").await.is_some());

        // Give a misbehaving collector time to delete something, then check nothing went.
        tokio::time::sleep(Duration::from_millis(300)).await;
        history.catch_up(&client).await;
        let deleted: Vec<String> = history
            .records()
            .into_iter()
            .filter(|r| r.change == Change::Deleted)
            .map(|r| r.name)
            .collect();
        assert_eq!(deleted, ["app"], "only the owner was deleted");
        assert_eq!(dangling_references(&client).await, Vec::<String>::new());
        assert_eq!(history.dangling(), Vec::<String>::new());
        gc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_recreated_under_its_name_gets_only_the_old_uids_dependents_collected_through_a_lagging_watch(
) {
    within(LIMIT, async {
        let client = registry();
        let history = History::record(&client).await;
        // The collector sees Widgets a second late: its graph is stale about owners.
        let lagging: Arc<dyn Client> = Arc::new(Tweaked {
            inner: client.clone(),
            lagging_kind: Some("Widget".into()),
            lag: Duration::from_secs(1),
            delete_delay: Duration::ZERO,
        });
        let gc = RunningGc::with(&lagging).await;

        let old_owner = create(&client, &widget(), "app", vec![]).await;
        let mut old = Vec::new();
        for i in 0..3 {
            old.push(
                create(
                    &client,
                    &config_map(),
                    &format!("old-{i}"),
                    vec![owned_by(&old_owner, false)],
                )
                .await,
            );
        }
        let mut everything: Vec<&DynamicObject> = old.iter().collect();
        everything.push(&old_owner);
        gc.observed(&everything).await;

        delete(&client, &widget(), "app", DeleteParams::background()).await;
        let new_owner = create(&client, &widget(), "app", vec![]).await;
        assert_ne!(uid(&new_owner), uid(&old_owner));
        // The new dependents have a second owner, deleted at once: losing it makes the
        // collector look at them while its graph has not seen their Widget yet.
        let helper = create(&client, &config_map(), "helper", vec![]).await;
        let mut new = Vec::new();
        for i in 0..3 {
            new.push(
                create(
                    &client,
                    &config_map(),
                    &format!("new-{i}"),
                    vec![owned_by(&new_owner, true), owned_by(&helper, false)],
                )
                .await,
            );
        }
        let mut fresh: Vec<&DynamicObject> = new.iter().collect();
        fresh.push(&helper);
        gc.observed(&fresh).await;
        delete(&client, &config_map(), "helper", DeleteParams::background()).await;

        let (cm_kind, new_names) = (config_map(), Tree::names(&new));
        eventually("the deleted helper's references are dropped", || async {
            for name in &new_names {
                let Some(now) = get(&client, &cm_kind, name).await else {
                    return true; // wrongly deleted: asserted below
                };
                if now.metadata.owner_references.unwrap_or_default().len() != 1 {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(
            !gc.handle.has_observed(&uid(&new_owner)),
            "the graph was still stale about the new owner"
        );
        for name in &new_names {
            let now = get(&client, &cm_kind, name)
                .await
                .expect("a dependent of the live owner was deleted");
            assert_eq!(
                now.metadata.owner_references.unwrap(),
                vec![owned_by(&new_owner, true)]
            );
        }

        let old_names = Tree::names(&old);
        eventually("the old uid's dependents are collected", || {
            gone(&client, &cm_kind, &old_names)
        })
        .await;
        gc.observed(&[&new_owner]).await;
        let handle = gc.handle.clone();
        eventually("the collector is idle", || {
            let metrics = handle.metrics();
            async move { metrics.delete_queue_depth == 0 }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        history.catch_up(&client).await;
        for dependent in &new {
            assert_eq!(history.deleted_at(&uid(dependent)), None);
            assert!(
                get(&client, &cm_kind, &dependent.metadata.name.clone().unwrap())
                    .await
                    .is_some()
            );
        }
        // The old dependents went only after the owner they named.
        let old_deleted = history.deleted_at(&uid(&old_owner)).unwrap();
        for dependent in &old {
            assert!(history.deleted_at(&uid(dependent)).unwrap() > old_deleted);
        }
        assert_eq!(dangling_references(&client).await, Vec::<String>::new());
        assert_eq!(history.dangling(), Vec::<String>::new());
        gc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_restarted_midway_still_finishes_with_no_orphans() {
    within(LIMIT, async {
        let client = registry();
        let history = History::record(&client).await;
        let background = Tree::create(&client, "bg", 6, 4, false).await;
        let foreground = Tree::create(&client, "fg", 3, 3, true).await;

        // The first collector deletes slowly, with one worker per queue.
        let slow: Arc<dyn Client> = Arc::new(Tweaked {
            inner: client.clone(),
            lagging_kind: None,
            lag: Duration::ZERO,
            delete_delay: Duration::from_millis(25),
        });
        let first = RunningGc::start(GarbageCollector::new(slow, served_kinds()).workers(1)).await;
        first.observed(&background.all()).await;
        first.observed(&foreground.all()).await;
        delete(&client, &widget(), "bg", DeleteParams::background()).await;
        delete(&client, &widget(), "fg", DeleteParams::foreground()).await;

        let records = history.records.clone();
        eventually("the first collector deletes a few dependents", || {
            let deleted = records
                .lock()
                .iter()
                .filter(|r| r.change == Change::Deleted && r.kind != "Widget")
                .count();
            async move { deleted >= 3 }
        })
        .await;
        first.stop().await;
        let left = all_objects(&client).await.len();
        assert!(left > 10, "stopped midway ({left} objects left)");
        assert!(
            get(&client, &widget(), "fg").await.is_some(),
            "the Foreground owner still waits"
        );

        let second = RunningGc::with(&client).await;
        eventually("the background tree is collected", || {
            background.is_gone(&client)
        })
        .await;
        eventually("the foreground tree is collected", || {
            foreground.is_gone(&client)
        })
        .await;
        history.catch_up(&client).await;
        assert_eq!(all_objects(&client).await.len(), 0);
        assert_eq!(dangling_references(&client).await, Vec::<String>::new());
        assert_eq!(history.dangling(), Vec::<String>::new());

        // Across the restart: Background dependents after their owners, Foreground ones
        // before.
        for cm in &background.config_maps {
            assert!(
                history.deleted_at(&uid(cm)).unwrap()
                    > history.deleted_at(&uid(&background.root)).unwrap()
            );
        }
        let fg_root = history.deleted_at(&uid(&foreground.root)).unwrap();
        for object in foreground.all().into_iter().skip(1) {
            assert!(history.deleted_at(&uid(object)).unwrap() < fg_root);
        }
        second.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scoped_owners_collect_namespaced_dependents_and_invalid_references_are_left_alone()
{
    within(LIMIT, async {
        let client = registry();
        let history = History::record(&client).await;
        let gc = RunningGc::with(&client).await;

        // A cluster-scoped owner of a namespaced dependent: valid.
        let fleet_owner = create(&client, &fleet(), "fleet", vec![]).await;
        let fleet_dependent = create(
            &client,
            &config_map(),
            "fleet-dependent",
            vec![owned_by(&fleet_owner, false)],
        )
        .await;
        // A cluster-scoped object naming a namespaced kind as owner: never collected.
        let ghost = OwnerReference {
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            name: "ghost".into(),
            uid: "ghost-uid".into(),
            controller: None,
            block_owner_deletion: None,
        };
        let stray = create(&client, &fleet(), "stray", vec![ghost]).await;
        // An owner in another namespace counts as absent: its dependent goes.
        capstan_apiserver::testing::create_namespace(&*client, "other").await;
        let elsewhere = create_in(&client, &widget(), "other", "elsewhere", vec![]).await;
        create(
            &client,
            &config_map(),
            "cross-namespace",
            vec![owned_by(&elsewhere, false)],
        )
        .await;
        // (The cross-namespace dependent may be collected before this looks for it.)
        gc.observed(&[&fleet_owner, &fleet_dependent, &stray, &elsewhere])
            .await;

        eventually("the cross-namespace dependent is collected", || async {
            get(&client, &config_map(), "cross-namespace")
                .await
                .is_none()
        })
        .await;
        delete(&client, &fleet(), "fleet", DeleteParams::background()).await;
        eventually("the Fleet's dependent is collected", || async {
            get(&client, &config_map(), "fleet-dependent")
                .await
                .is_none()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        assert!(
            get(&client, &fleet(), "stray").await.is_some(),
            "left alone"
        );
        let elsewhere_now = client
            .get(&widget(), Some("other"), "elsewhere")
            .await
            .unwrap();
        assert_eq!(
            uid(&elsewhere_now),
            uid(&elsewhere),
            "the real owner is untouched"
        );
        history.catch_up(&client).await;
        let deleted: BTreeMap<String, u64> = history
            .records()
            .into_iter()
            .filter(|r| r.change == Change::Deleted)
            .map(|r| (r.name, r.revision))
            .collect();
        assert_eq!(
            deleted.keys().cloned().collect::<Vec<_>>(),
            ["cross-namespace", "fleet", "fleet-dependent"]
        );
        assert!(deleted["fleet-dependent"] > deleted["fleet"]);
        gc.stop().await;
    })
    .await;
}
