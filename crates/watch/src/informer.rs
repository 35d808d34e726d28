//! Shared informers: one reflector per kind, any number of handlers.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use capstan_api::{Api, Client, Resource};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::cache::{Cache, Delta};
use crate::reflector::{Reflector, ReflectorOptions};
use crate::Watch;

/// A reflector running on its own task, with the cache it fills. Handlers subscribe and
/// unsubscribe at any time; each first receives the cache's current objects as `Added`.
/// Dropping the informer stops its reflector.
pub struct SharedInformer<K: Resource> {
    cache: Cache<K>,
    task: tokio::task::JoinHandle<()>,
}

impl<K: Resource> std::fmt::Debug for SharedInformer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedInformer")
            .field("kind", &K::kind(&()))
            .field("cache", &self.cache)
            .finish()
    }
}

impl<K: Resource> SharedInformer<K> {
    /// Starts listing and watching `source` on the current tokio runtime.
    pub fn spawn(source: Arc<dyn Watch<K>>, options: ReflectorOptions) -> Self {
        let cache = Cache::new();
        let reflector = Reflector::new(source, cache.clone(), options);
        SharedInformer {
            cache,
            task: tokio::spawn(reflector.run()),
        }
    }

    /// The informer's cache.
    pub fn cache(&self) -> &Cache<K> {
        &self.cache
    }

    /// Every change from now on, after the current objects as `Added`; see
    /// [`Cache::subscribe`]. Drop the receiver to unsubscribe.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Delta<K>> {
        self.cache.subscribe()
    }

    /// Waits until the first list has been applied.
    pub async fn wait_for_sync(&self) {
        self.cache.wait_for_sync().await
    }
}

impl<K: Resource> Drop for SharedInformer<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Hands out one shared informer per kind, all watching through one client, so every
/// component of a process shares one reflector (and one watch) per kind.
pub struct InformerFactory {
    client: Arc<dyn Client>,
    options: ReflectorOptions,
    informers: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for InformerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InformerFactory")
            .field("informers", &self.informers.lock().len())
            .finish()
    }
}

impl InformerFactory {
    /// A factory whose informers watch every namespace through `client`.
    pub fn new(client: Arc<dyn Client>, options: ReflectorOptions) -> Self {
        InformerFactory {
            client,
            options,
            informers: Mutex::new(HashMap::new()),
        }
    }

    /// The informer for `K`, started on first use (on the current tokio runtime).
    pub fn informer<K: Resource>(&self) -> Arc<SharedInformer<K>> {
        let mut informers = self.informers.lock();
        let entry = informers.entry(TypeId::of::<K>()).or_insert_with(|| {
            let source: Arc<dyn Watch<K>> = Arc::new(Api::<K>::all(self.client.clone()));
            Arc::new(Arc::new(SharedInformer::spawn(
                source,
                self.options.clone(),
            )))
        });
        entry
            .downcast_ref::<Arc<SharedInformer<K>>>()
            .expect("the map holds one informer type per TypeId")
            .clone()
    }
}
