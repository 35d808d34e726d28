//! Shared informers: one reflector per kind, any number of handlers.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use capstan_api::health::HealthCheck;
use capstan_api::{Api, Client, Resource};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::cache::{Cache, Delta};
use crate::metrics::WorkQueueMetrics;
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

/// One started informer of a factory: the `Arc<SharedInformer<K>>`, its kind's name and its
/// cache, to tell whether it has synced.
struct Started {
    informer: Arc<dyn Any + Send + Sync>,
    kind: String,
    synced: Box<dyn Fn() -> bool + Send + Sync>,
}

/// Hands out one shared informer per kind, all watching through one client, so every
/// component of a process shares one reflector (and one watch) per kind.
///
/// It also carries what the components built on it report to: the
/// [`WorkQueueMetrics`] their work queues register in (see
/// [`with_queue_metrics`](Self::with_queue_metrics)).
pub struct InformerFactory {
    client: Arc<dyn Client>,
    options: ReflectorOptions,
    informers: Mutex<HashMap<TypeId, Started>>,
    queue_metrics: Option<WorkQueueMetrics>,
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
            queue_metrics: None,
        }
    }

    /// Controllers built on this factory register their work queues in `metrics`, under
    /// their names (client-go's workqueue metrics provider, per component).
    #[must_use]
    pub fn with_queue_metrics(mut self, metrics: WorkQueueMetrics) -> Self {
        self.queue_metrics = Some(metrics);
        self
    }

    /// Where work queues built on this factory report, if anywhere.
    pub fn queue_metrics(&self) -> Option<&WorkQueueMetrics> {
        self.queue_metrics.as_ref()
    }

    /// The informer for `K`, started on first use (on the current tokio runtime).
    pub fn informer<K: Resource>(&self) -> Arc<SharedInformer<K>> {
        let mut informers = self.informers.lock();
        let entry = informers.entry(TypeId::of::<K>()).or_insert_with(|| {
            let source: Arc<dyn Watch<K>> = Arc::new(Api::<K>::all(self.client.clone()));
            let informer = Arc::new(SharedInformer::spawn(source, self.options.clone()));
            let cache = informer.cache().clone();
            Started {
                informer: Arc::new(informer),
                kind: K::info().qualified_kind(),
                synced: Box::new(move || cache.is_synced()),
            }
        });
        entry
            .informer
            .downcast_ref::<Arc<SharedInformer<K>>>()
            .expect("the map holds one informer type per TypeId")
            .clone()
    }

    /// The kinds whose informer was started and has not synced yet, sorted; empty once
    /// every started informer has (client-go's `WaitForCacheSync` without waiting).
    pub fn unsynced(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .informers
            .lock()
            .values()
            .filter(|started| !(started.synced)())
            .map(|started| started.kind.clone())
            .collect();
        kinds.sort();
        kinds
    }
}

/// The `informer-sync` health check of a component whose informers come and go (with
/// leadership terms): it fails while the informers being tracked have not all synced, and
/// passes when they have, or when nothing is tracked (a replica standing by, which is
/// healthy). Cheap to clone: clones share what is tracked.
#[derive(Clone)]
pub struct InformerSyncCheck {
    name: Arc<str>,
    tracked: Arc<Mutex<Option<(u64, Unsynced)>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

type Unsynced = Box<dyn Fn() -> Vec<String> + Send + Sync>;

impl std::fmt::Debug for InformerSyncCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InformerSyncCheck")
            .field("name", &self.name)
            .field("tracking", &self.tracked.lock().is_some())
            .finish()
    }
}

impl Default for InformerSyncCheck {
    fn default() -> Self {
        Self::new("informer-sync")
    }
}

impl InformerSyncCheck {
    /// A check named `name` (Kubernetes' `informer-sync`, kube-scheduler's
    /// `sched-handler-sync`), tracking nothing yet.
    pub fn new(name: &str) -> Self {
        InformerSyncCheck {
            name: name.into(),
            tracked: Arc::default(),
            next: Arc::default(),
        }
    }

    /// Tracks `factory`'s informers until the returned guard drops (the end of a term).
    /// The check holds the factory weakly.
    pub fn track(&self, factory: &Arc<InformerFactory>) -> SyncTracking {
        let factory = Arc::downgrade(factory);
        self.track_with(move || {
            factory
                .upgrade()
                .map(|factory| factory.unsynced())
                .unwrap_or_default()
        })
    }

    /// Tracks whatever `unsynced` reports (the kinds not synced yet) until the returned guard
    /// drops.
    pub fn track_with(
        &self,
        unsynced: impl Fn() -> Vec<String> + Send + Sync + 'static,
    ) -> SyncTracking {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.tracked.lock() = Some((id, Box::new(unsynced)));
        SyncTracking {
            check: self.clone(),
            id,
        }
    }

    /// `Ok` when everything tracked has synced (or nothing is tracked); otherwise which kinds
    /// have not.
    pub fn status(&self) -> Result<(), String> {
        let tracked = self.tracked.lock();
        let Some((_, unsynced)) = tracked.as_ref() else {
            return Ok(());
        };
        let kinds = unsynced();
        if kinds.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} informers not synced yet: {}",
                kinds.len(),
                kinds.join(", ")
            ))
        }
    }
}

#[async_trait::async_trait]
impl HealthCheck for InformerSyncCheck {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> Result<(), String> {
        self.status()
    }
}

/// Tracking by an [`InformerSyncCheck`]; dropping it stops the tracking (unless something
/// else is tracked since).
#[must_use = "dropping it stops the tracking at once"]
#[derive(Debug)]
pub struct SyncTracking {
    check: InformerSyncCheck,
    id: u64,
}

impl Drop for SyncTracking {
    fn drop(&mut self) {
        let mut tracked = self.check.tracked.lock();
        if tracked.as_ref().is_some_and(|(id, _)| *id == self.id) {
            *tracked = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn the_sync_check_fails_while_a_tracked_term_has_unsynced_informers() {
        let check = InformerSyncCheck::new("informer-sync");
        assert_eq!(check.status(), Ok(()), "nothing tracked: standing by");
        let synced = Arc::new(AtomicBool::new(false));
        let term = {
            let synced = synced.clone();
            check.track_with(move || {
                if synced.load(Ordering::SeqCst) {
                    Vec::new()
                } else {
                    vec!["Node".into(), "apps/Deployment".into()]
                }
            })
        };
        assert_eq!(
            check.status(),
            Err("2 informers not synced yet: Node, apps/Deployment".into())
        );
        synced.store(true, Ordering::SeqCst);
        assert_eq!(check.clone().status(), Ok(()));
        synced.store(false, Ordering::SeqCst);
        let next = check.track_with(|| vec!["Pod".into()]);
        drop(term); // an older term ending does not untrack the newer one
        assert!(check.status().is_err());
        drop(next);
        assert_eq!(check.status(), Ok(()));
        assert_eq!(HealthCheck::name(&check), "informer-sync");
    }
}
