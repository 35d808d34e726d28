//! The informer cache: the objects a reflector keeps up to date, with indexes.
//!
//! Reads are cheap: the cache hands out `Arc<K>` clones of the objects it holds, never
//! copies. Indexes map a string (a namespace, a node name, an owner UID) to the keys of the
//! objects that produce it; the namespace index is built in, and more can be added at any
//! time, built at once from the current content.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use capstan_api::Resource;
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};

/// The name of the built-in index by namespace.
pub const NAMESPACE_INDEX: &str = "namespace";

/// An object's identity in a cache: its namespace (if namespaced) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The namespace, `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a namespaced object.
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// The key of a cluster-scoped object.
    pub fn cluster(name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: None,
            name: name.into(),
        }
    }

    /// The key of `object`.
    pub fn of<K: Resource>(object: &K) -> Self {
        let meta = object.meta();
        ObjectKey {
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectKey {
    /// `namespace/name`, or `name` for cluster-scoped objects (client-go's key format).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A change the cache went through, as handlers see it.
#[derive(Debug)]
pub enum Delta<K> {
    /// The object appeared.
    Added(Arc<K>),
    /// The object changed.
    Updated {
        /// What the cache held before.
        old: Arc<K>,
        /// What it holds now.
        new: Arc<K>,
    },
    /// The object went away: its final state as the watch reported it, or, for a deletion
    /// found by a relist, the last state the cache held.
    Deleted(Arc<K>),
}

impl<K> Clone for Delta<K> {
    fn clone(&self) -> Self {
        match self {
            Delta::Added(object) => Delta::Added(object.clone()),
            Delta::Updated { old, new } => Delta::Updated {
                old: old.clone(),
                new: new.clone(),
            },
            Delta::Deleted(object) => Delta::Deleted(object.clone()),
        }
    }
}

impl<K> Delta<K> {
    /// The object as it is after the change (for a deletion, its last state).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Delta::Added(object) | Delta::Deleted(object) => object,
            Delta::Updated { new, .. } => new,
        }
    }
}

/// A function from an object to its index values.
pub type IndexFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// An index holds the objects themselves (shared), so a lookup copies pointers and hashes
/// nothing but the value.
struct Index<K> {
    function: IndexFn<K>,
    entries: HashMap<String, HashMap<ObjectKey, Arc<K>>>,
}

impl<K> Index<K> {
    fn insert(&mut self, key: &ObjectKey, object: &Arc<K>) {
        for value in (self.function)(object) {
            self.entries
                .entry(value)
                .or_default()
                .insert(key.clone(), object.clone());
        }
    }

    fn remove(&mut self, key: &ObjectKey, object: &K) {
        for value in (self.function)(object) {
            if let Some(keys) = self.entries.get_mut(&value) {
                keys.remove(key);
                if keys.is_empty() {
                    self.entries.remove(&value);
                }
            }
        }
    }
}

struct Inner<K> {
    objects: HashMap<ObjectKey, Arc<K>>,
    indexes: HashMap<String, Index<K>>,
    subscribers: Vec<mpsc::UnboundedSender<Delta<K>>>,
    resource_version: String,
}

/// An informer's cache. Cheap to clone: clones share the same content.
pub struct Cache<K> {
    inner: Arc<RwLock<Inner<K>>>,
    synced: watch::Sender<bool>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl<K: Resource> Default for Cache<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> fmt::Debug for Cache<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.read();
        f.debug_struct("Cache")
            .field("objects", &inner.objects.len())
            .field("indexes", &inner.indexes.keys().collect::<Vec<_>>())
            .field("synced", &*self.synced.borrow())
            .finish()
    }
}

impl<K: Resource> Cache<K> {
    /// An empty, unsynced cache with the namespace index.
    pub fn new() -> Self {
        let cache = Cache {
            inner: Arc::new(RwLock::new(Inner {
                objects: HashMap::new(),
                indexes: HashMap::new(),
                subscribers: Vec::new(),
                resource_version: String::new(),
            })),
            synced: watch::channel(false).0,
        };
        cache.add_index(NAMESPACE_INDEX, |object: &K| {
            object.meta().namespace.clone().into_iter().collect()
        });
        cache
    }

    /// The object at `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.inner.read().objects.get(key).cloned()
    }

    /// Every object, in no particular order.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.inner.read().objects.values().cloned().collect()
    }

    /// How many objects the cache holds.
    pub fn len(&self) -> usize {
        self.inner.read().objects.len()
    }

    /// Whether the cache holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects whose index `index` produces `value`; empty for an unknown index.
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<K>> {
        let inner = self.inner.read();
        let Some(objects) = inner.indexes.get(index).and_then(|i| i.entries.get(value)) else {
            return Vec::new();
        };
        objects.values().cloned().collect()
    }

    /// Adds (or replaces) the index `name`, built at once from the current content and kept
    /// up to date from then on.
    pub fn add_index(
        &self,
        name: &str,
        function: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) {
        let mut index = Index {
            function: Arc::new(function),
            entries: HashMap::new(),
        };
        let mut inner = self.inner.write();
        for (key, object) in &inner.objects {
            index.insert(key, object);
        }
        inner.indexes.insert(name.to_string(), index);
    }

    /// The resourceVersion the cache is up to date with.
    pub fn resource_version(&self) -> String {
        self.inner.read().resource_version.clone()
    }

    /// Whether the first list has been applied.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first list has been applied.
    pub async fn wait_for_sync(&self) {
        let mut synced = self.synced.subscribe();
        // The sender lives as long as the cache, so this only ends when synced.
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// A stream of every later change, after synthetic `Added` deltas for every object the
    /// cache holds now. Dropping it unsubscribes. The buffer is unbounded, as client-go's
    /// listeners are: a handler that stops reading holds memory until it is dropped.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Delta<K>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut inner = self.inner.write();
        for object in inner.objects.values() {
            let _ = sender.send(Delta::Added(object.clone()));
        }
        inner.subscribers.push(sender);
        receiver
    }

    /// Inserts or replaces an object. Returns the delta, or `None` when the cache already
    /// holds this resourceVersion of it.
    pub(crate) fn upsert(&self, object: K) -> Option<Delta<K>> {
        let key = ObjectKey::of(&object);
        let mut inner = self.inner.write();
        let old = inner.objects.get(&key).cloned();
        if let Some(old) = &old {
            if old.meta().resource_version == object.meta().resource_version {
                return None;
            }
        }
        let new = Arc::new(object);
        let inner = &mut *inner;
        for index in inner.indexes.values_mut() {
            if let Some(old) = &old {
                index.remove(&key, old);
            }
            index.insert(&key, &new);
        }
        inner.objects.insert(key, new.clone());
        let delta = match old {
            Some(old) => Delta::Updated { old, new },
            None => Delta::Added(new),
        };
        notify(&mut inner.subscribers, &delta);
        Some(delta)
    }

    /// Removes the object at `key`. The delta carries `last` (the final state a watch
    /// reported) or, when a relist found the object gone, the last state cached. Returns
    /// `None` if the object was not cached.
    pub(crate) fn remove(&self, key: &ObjectKey, last: Option<K>) -> Option<Delta<K>> {
        let mut inner = self.inner.write();
        let inner = &mut *inner;
        let old = inner.objects.remove(key)?;
        for index in inner.indexes.values_mut() {
            index.remove(key, &old);
        }
        let delta = Delta::Deleted(last.map(Arc::new).unwrap_or(old));
        notify(&mut inner.subscribers, &delta);
        Some(delta)
    }

    /// The keys the cache holds now.
    pub(crate) fn keys(&self) -> Vec<ObjectKey> {
        self.inner.read().objects.keys().cloned().collect()
    }

    pub(crate) fn set_resource_version(&self, resource_version: String) {
        self.inner.write().resource_version = resource_version;
    }

    pub(crate) fn mark_synced(&self) {
        self.synced.send_replace(true);
    }
}

fn notify<K>(subscribers: &mut Vec<mpsc::UnboundedSender<Delta<K>>>, delta: &Delta<K>) {
    subscribers.retain(|subscriber| subscriber.send(delta.clone()).is_ok());
}

#[cfg(test)]
mod tests {
    use capstan_api::k8s_openapi::api::core::v1::{Pod, PodSpec};
    use capstan_api::kube_core::ObjectMeta;

    use super::*;

    fn pod(namespace: &str, name: &str, node: &str, rv: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn by_node(pod: &Pod) -> Vec<String> {
        pod.spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .into_iter()
            .collect()
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        let mut names: Vec<_> = pods
            .iter()
            .map(|pod| pod.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn reads_hand_out_the_same_shared_object() {
        let cache = Cache::new();
        cache.upsert(pod("default", "a", "n1", "1"));
        let key = ObjectKey::namespaced("default", "a");
        let (one, two) = (cache.get(&key).unwrap(), cache.get(&key).unwrap());
        assert!(Arc::ptr_eq(&one, &two), "no copy per read");
    }

    #[test]
    fn the_namespace_index_is_built_in() {
        let cache = Cache::new();
        cache.upsert(pod("default", "a", "n1", "1"));
        cache.upsert(pod("kube-system", "b", "n1", "2"));
        assert_eq!(names(cache.by_index(NAMESPACE_INDEX, "default")), ["a"]);
    }

    #[test]
    fn an_index_added_later_covers_existing_and_future_objects_and_follows_changes() {
        let cache = Cache::new();
        cache.upsert(pod("default", "a", "n1", "1"));
        cache.add_index("node", by_node);
        cache.upsert(pod("default", "b", "n1", "2"));
        assert_eq!(names(cache.by_index("node", "n1")), ["a", "b"]);
        cache.upsert(pod("default", "a", "n2", "3"));
        assert_eq!(names(cache.by_index("node", "n1")), ["b"]);
        assert_eq!(names(cache.by_index("node", "n2")), ["a"]);
        cache.remove(&ObjectKey::namespaced("default", "b"), None);
        assert!(cache.by_index("node", "n1").is_empty());
        assert!(cache.by_index("no-such-index", "n1").is_empty());
    }

    #[test]
    fn the_same_resource_version_twice_is_one_change() {
        let cache = Cache::new();
        assert!(matches!(
            cache.upsert(pod("d", "a", "n", "1")),
            Some(Delta::Added(_))
        ));
        assert!(cache.upsert(pod("d", "a", "n", "1")).is_none());
        assert!(matches!(
            cache.upsert(pod("d", "a", "n", "2")),
            Some(Delta::Updated { .. })
        ));
        assert!(cache
            .remove(&ObjectKey::namespaced("d", "missing"), None)
            .is_none());
    }

    #[tokio::test]
    async fn a_subscriber_first_gets_what_is_cached_then_every_change() {
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let cache = Cache::new();
            cache.upsert(pod("default", "a", "n1", "1"));
            let mut deltas = cache.subscribe();
            cache.upsert(pod("default", "a", "n1", "2"));
            cache.remove(&ObjectKey::namespaced("default", "a"), None);
            assert!(matches!(deltas.recv().await, Some(Delta::Added(_))));
            assert!(matches!(deltas.recv().await, Some(Delta::Updated { .. })));
            assert!(matches!(deltas.recv().await, Some(Delta::Deleted(_))));
            drop(deltas);
            cache.upsert(pod("default", "b", "n1", "3"));
            assert_eq!(
                cache.inner.read().subscribers.len(),
                0,
                "dropping unsubscribes"
            );
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn wait_for_sync_returns_once_marked_synced() {
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let cache: Cache<Pod> = Cache::new();
            assert!(!cache.is_synced());
            let waiter = {
                let cache = cache.clone();
                tokio::spawn(async move { cache.wait_for_sync().await })
            };
            cache.mark_synced();
            waiter.await.unwrap();
            assert!(cache.is_synced());
        })
        .await
        .unwrap();
    }
}
