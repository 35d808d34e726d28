//! The [`Controller`] builder and its run loop: informers feed keys to a work queue, workers
//! drain it through a [`Reconciler`].

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use capstan_api::{Client, Resource, ResourceScope};
use capstan_watch::queue::RateLimiter;
use capstan_watch::{
    Cache, Delta, InformerFactory, ObjectKey, Processing, ReflectorOptions, SharedInformer,
    WorkQueue,
};
use futures::future::{self, BoxFuture};
use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::metrics::{ControllerMetrics, Outcome};
use super::reconciler::{Action, Context, Reconciler};
use super::ControllerError;

/// The default number of reconciles a controller runs at once.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Asks one or more controllers to shut down gracefully, and tells who is waiting.
///
/// Cheap to clone; clones share one signal, which stays on once triggered. Hand the same
/// handle to several controllers ([`Controller::with_shutdown_handle`]) to stop them together.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    signal: watch::Sender<bool>,
}

impl Default for ShutdownHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownHandle {
    /// A handle not yet triggered.
    pub fn new() -> Self {
        ShutdownHandle {
            signal: watch::channel(false).0,
        }
    }

    /// Asks for shutdown: no new reconcile starts, the ones in flight finish, and
    /// [`Controller::run`] returns. Idempotent.
    pub fn shut_down(&self) {
        self.signal.send_replace(true);
    }

    /// Whether [`shut_down`](Self::shut_down) was called.
    pub fn is_shut_down(&self) -> bool {
        *self.signal.borrow()
    }

    /// Completes once [`shut_down`](Self::shut_down) has been called.
    pub async fn wait(&self) {
        let mut signal = self.signal.subscribe();
        // The sender lives in `self`, so this only ends once the signal is on.
        let _ = signal.wait_for(|down| *down).await;
    }
}

/// One watched kind, type-erased: its informer and how its changes map to primary keys.
trait Source: Send {
    fn kind(&self) -> String;
    fn is_synced(&self) -> bool;
    fn wait_for_sync(&self) -> BoxFuture<'static, ()>;
    /// Subscribes to the informer and spawns the task feeding mapped keys to `queue`.
    fn start(&self, queue: WorkQueue<ObjectKey>) -> JoinHandle<()>;
}

type Mapper<C> = Arc<dyn Fn(&C) -> Vec<ObjectKey> + Send + Sync>;

struct InformerSource<C: Resource> {
    informer: Arc<SharedInformer<C>>,
    mapper: Mapper<C>,
}

impl<C: Resource> Source for InformerSource<C> {
    fn kind(&self) -> String {
        C::info().qualified_kind()
    }

    fn is_synced(&self) -> bool {
        self.informer.cache().is_synced()
    }

    fn wait_for_sync(&self) -> BoxFuture<'static, ()> {
        let informer = self.informer.clone();
        async move { informer.wait_for_sync().await }.boxed()
    }

    fn start(&self, queue: WorkQueue<ObjectKey>) -> JoinHandle<()> {
        let mut deltas = self.informer.subscribe();
        let (informer, mapper) = (self.informer.clone(), self.mapper.clone());
        tokio::spawn(async move {
            // Holding the informer keeps its reflector running as long as this feed.
            let _informer = informer;
            while let Some(delta) = deltas.recv().await {
                // An update maps both states, so an object that moved from one primary to
                // another (a changed owner or label) triggers both.
                if let Delta::Updated { old, .. } = &delta {
                    for key in mapper(old) {
                        queue.add(key);
                    }
                }
                for key in mapper(delta.object()) {
                    queue.add(key);
                }
            }
        })
    }
}

/// The ownerReference that makes `owner` the controller of what carries it: `owner`'s
/// apiVersion, kind, name and uid, with `controller` and `blockOwnerDeletion` set, as
/// Kubernetes' controllers write it. [`controller_owner_key`] reads it back.
pub fn controller_reference<K: Resource>(owner: &K) -> OwnerReference {
    let info = K::info();
    let meta = owner.meta();
    OwnerReference {
        api_version: info.api_version(),
        kind: info.kind().to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The key of the object that controls `child`: the owner reference with `controller: true`
/// whose `apiVersion` and `kind` are `K`'s. A namespaced owner is looked up in the child's
/// namespace; a cluster-scoped one by name alone. `None` when no such reference exists (or
/// when a cluster-scoped child names a namespaced owner, which Kubernetes does not allow).
pub fn controller_owner_key<K: Resource, C: Resource>(child: &C) -> Option<ObjectKey> {
    let api_version = K::api_version(&());
    let kind = K::kind(&());
    let meta = child.meta();
    let owner = meta.owner_references.as_ref()?.iter().find(|owner| {
        owner.controller == Some(true) && owner.api_version == api_version && owner.kind == kind
    })?;
    if <K::Scope as ResourceScope>::NAMESPACED {
        let namespace = meta.namespace.clone()?;
        Some(ObjectKey::namespaced(namespace, owner.name.clone()))
    } else {
        Some(ObjectKey::cluster(owner.name.clone()))
    }
}

/// The index [`add_controller_index`] adds: objects by the uid of their controller.
pub const CONTROLLER_UID_INDEX: &str = "controllerUID";

/// The index value of a namespace's objects without a controller (uids never hold a NUL).
fn orphans_of(namespace: &str) -> String {
    format!("\0orphans/{namespace}")
}

/// Indexes `cache` by the uid of each object's controller (its owner reference with
/// `controller: true`), and each object without one as an orphan of its namespace, as
/// Kubernetes' `podControllerUID` index does. [`controlled_or_orphans`] reads it. Idempotent:
/// every controller sharing an informer may add it.
pub fn add_controller_index<K: Resource>(cache: &Cache<K>) {
    cache.add_index(CONTROLLER_UID_INDEX, |object: &K| {
        let meta = object.meta();
        let controller = meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true));
        vec![match controller {
            Some(owner) => owner.uid.clone(),
            None => orphans_of(meta.namespace.as_deref().unwrap_or_default()),
        }]
    });
}

/// The objects of `namespace` the owner with `uid` controls, and with `include_orphans` those
/// without a controller: what a controller may keep or adopt (Kubernetes'
/// `FilterPodsByOwner`), without scanning the namespace. Needs [`add_controller_index`] on
/// `cache`; without it the answer is empty.
pub fn controlled_or_orphans<K: Resource>(
    cache: &Cache<K>,
    namespace: &str,
    uid: &str,
    include_orphans: bool,
) -> Vec<Arc<K>> {
    let mut objects: Vec<Arc<K>> = cache
        .by_index(CONTROLLER_UID_INDEX, uid)
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref().unwrap_or_default() == namespace)
        .collect();
    if include_orphans {
        objects.extend(cache.by_index(CONTROLLER_UID_INDEX, &orphans_of(namespace)));
    }
    objects
}

/// Aborts the tasks it holds when dropped, so no feed outlives its controller.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Runs a [`Reconciler`] for the kind `K`, triggered by `K`'s changes and by the changes of
/// the kinds it [owns](Self::owns) or [watches](Self::watches).
///
/// Build it from an [`InformerFactory`] ([`new`](Self::new)), a client
/// ([`from_client`](Self::from_client)) or a shared informer
/// ([`for_informer`](Self::for_informer)), add triggers and settings, then
/// [`run`](Self::run) it. See the [module documentation](super) for the contracts.
pub struct Controller<K: Resource> {
    name: Arc<str>,
    primary: Arc<SharedInformer<K>>,
    factory: Option<Arc<InformerFactory>>,
    sources: Vec<Box<dyn Source>>,
    unsourced: Vec<String>,
    concurrency: usize,
    queue: WorkQueue<ObjectKey>,
    sync_timeout: Option<Duration>,
    shutdown: ShutdownHandle,
    shutdown_signals: Vec<BoxFuture<'static, ()>>,
    metrics: Arc<ControllerMetrics>,
}

impl<K: Resource> fmt::Debug for Controller<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.name)
            .field("kind", &K::info().qualified_kind())
            .field(
                "triggers",
                &self.sources.iter().map(|s| s.kind()).collect::<Vec<_>>(),
            )
            .field("concurrency", &self.concurrency)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl<K: Resource> Controller<K> {
    /// A controller for `K` whose informers (for `K` and for every kind it owns or watches)
    /// come from `factory`, so they are shared with the rest of the process.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the factory starts `K`'s informer at once.
    pub fn new(factory: Arc<InformerFactory>) -> Self {
        let primary = factory.informer::<K>();
        let mut controller = Self::for_informer(primary);
        controller.factory = Some(factory);
        controller
    }

    /// A controller for `K` with its own [`InformerFactory`] over `client`, watching every
    /// namespace with the default reflector options.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`new`](Self::new).
    pub fn from_client(client: Arc<dyn Client>) -> Self {
        Self::new(Arc::new(InformerFactory::new(
            client,
            ReflectorOptions::default(),
        )))
    }

    /// A controller for `K` fed by `informer`. Without a factory
    /// ([`with_factory`](Self::with_factory)), other kinds can only be added with their own
    /// informers ([`owns_informer`](Self::owns_informer),
    /// [`watches_informer`](Self::watches_informer)).
    pub fn for_informer(informer: Arc<SharedInformer<K>>) -> Self {
        let primary: Box<dyn Source> = Box::new(InformerSource {
            informer: informer.clone(),
            mapper: Arc::new(|object: &K| vec![ObjectKey::of(object)]),
        });
        let queue = WorkQueue::new();
        let metrics = Arc::new(ControllerMetrics::default());
        metrics.set_queue(queue.clone());
        Controller {
            name: K::kind(&()).to_ascii_lowercase().into(),
            primary: informer,
            factory: None,
            sources: vec![primary],
            unsourced: Vec::new(),
            concurrency: DEFAULT_CONCURRENCY,
            queue,
            sync_timeout: None,
            shutdown: ShutdownHandle::new(),
            shutdown_signals: Vec::new(),
            metrics,
        }
    }

    /// Takes the informers of owned and watched kinds from `factory` from now on.
    #[must_use]
    pub fn with_factory(mut self, factory: Arc<InformerFactory>) -> Self {
        self.factory = Some(factory);
        self
    }

    /// Names the controller in logs and in [`Context::controller`]; the default is `K`'s
    /// kind in lowercase.
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// Runs at most `workers` reconciles at once (default [`DEFAULT_CONCURRENCY`]). Zero
    /// makes [`run`](Self::run) fail with [`ControllerError::ZeroConcurrency`].
    #[must_use]
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers;
        self
    }

    /// Replaces the work queue's rate limiter, which times [`Action::Backoff`] retries. The
    /// default is client-go's: per key 5 ms doubling up to 1000 s, and at most 10 retries per
    /// second overall after a burst of 100.
    #[must_use]
    pub fn rate_limiter(mut self, limiter: impl RateLimiter<ObjectKey>) -> Self {
        self.queue = WorkQueue::with_rate_limiter(limiter);
        self.metrics.set_queue(self.queue.clone());
        self
    }

    /// Gives up with [`ControllerError::CacheSyncTimeout`] when the caches have not synced
    /// within `timeout` (by default it waits as long as it takes, as client-go does; a kind the
    /// API does not serve then never syncs).
    #[must_use]
    pub fn sync_timeout(mut self, timeout: Duration) -> Self {
        self.sync_timeout = Some(timeout);
        self
    }

    /// Shuts down gracefully once `signal` completes (a Ctrl-C future, a leader election
    /// lost, a test's trigger), as [`ShutdownHandle::shut_down`] does. May be called several
    /// times: the first signal wins.
    #[must_use]
    pub fn graceful_shutdown_on(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown_signals.push(signal.boxed());
        self
    }

    /// Shares `handle`'s signal instead of the controller's own, so one handle stops several
    /// controllers.
    #[must_use]
    pub fn with_shutdown_handle(mut self, handle: ShutdownHandle) -> Self {
        self.shutdown = handle;
        self
    }

    /// Reconciles the controlling owner of every `Child` that changes: the owner reference
    /// with `controller: true` whose `apiVersion` and `kind` are `K`'s, in the child's
    /// namespace (see [`controller_owner_key`]). `Child`'s informer comes from the factory;
    /// without one, [`run`](Self::run) fails with [`ControllerError::NoInformerFactory`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the factory starts the informer at once.
    #[must_use]
    pub fn owns<Child: Resource>(self) -> Self {
        match self.factory.clone() {
            Some(factory) => self.owns_informer(factory.informer::<Child>()),
            None => self.unsourced::<Child>(),
        }
    }

    /// As [`owns`](Self::owns), with `Child`'s informer given.
    #[must_use]
    pub fn owns_informer<Child: Resource>(self, informer: Arc<SharedInformer<Child>>) -> Self {
        self.watches_informer(informer, |child: &Child| {
            controller_owner_key::<K, Child>(child)
        })
    }

    /// Reconciles the keys `mapper` returns for every `Other` that changes (for an update,
    /// for both its old and new state). `Other`'s informer comes from the factory; without
    /// one, [`run`](Self::run) fails with [`ControllerError::NoInformerFactory`].
    ///
    /// `mapper` runs on the feed task, once per change: it must be quick and must not block.
    /// It may read other caches (the controller's [`cache`](Self::cache), say).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the factory starts the informer at once.
    #[must_use]
    pub fn watches<Other, I>(self, mapper: impl Fn(&Other) -> I + Send + Sync + 'static) -> Self
    where
        Other: Resource,
        I: IntoIterator<Item = ObjectKey>,
    {
        match self.factory.clone() {
            Some(factory) => self.watches_informer(factory.informer::<Other>(), mapper),
            None => self.unsourced::<Other>(),
        }
    }

    /// As [`watches`](Self::watches), with `Other`'s informer given.
    #[must_use]
    pub fn watches_informer<Other, I>(
        mut self,
        informer: Arc<SharedInformer<Other>>,
        mapper: impl Fn(&Other) -> I + Send + Sync + 'static,
    ) -> Self
    where
        Other: Resource,
        I: IntoIterator<Item = ObjectKey>,
    {
        self.sources.push(Box::new(InformerSource {
            informer,
            mapper: Arc::new(move |object: &Other| mapper(object).into_iter().collect()),
        }));
        self
    }

    fn unsourced<C: Resource>(mut self) -> Self {
        self.unsourced.push(C::info().qualified_kind());
        self
    }

    /// The primary kind's cache: what reconciles read, and what mappers may consult.
    pub fn cache(&self) -> &Cache<K> {
        self.primary.cache()
    }

    /// The handle that shuts this controller down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The controller's metrics, live: keep the `Arc` and take snapshots while it runs.
    pub fn metrics(&self) -> Arc<ControllerMetrics> {
        self.metrics.clone()
    }

    /// Runs the controller until it is shut down, then returns `Ok(())`.
    ///
    /// It subscribes to every informer, waits until all their caches have synced, then runs
    /// [`concurrency`](Self::concurrency) workers. Each worker takes a key from the work queue
    /// (never one another worker holds), reads the object from the primary cache, calls
    /// `reconciler` and applies the resulting [`Action`] (or, after an error, the one
    /// [`Reconciler::error_policy`] returns):
    ///
    /// | outcome | what happens to the key |
    /// |---|---|
    /// | `Ok(Action::Requeue(d))` | backoff forgotten; queued again after `d` |
    /// | `Ok(Action::AwaitChange)` | backoff forgotten; queued on the next change |
    /// | `Ok(Action::Backoff)` | queued again after the key's next backoff delay |
    /// | `Err` → `Requeue(d)` | queued again after `d`; backoff kept |
    /// | `Err` → `AwaitChange` | queued on the next change; backoff kept |
    /// | `Err` → `Backoff` | queued again after the key's next backoff delay |
    /// | panic | counted as an error; queued again after the next backoff delay |
    /// | object not cached | skipped; backoff forgotten |
    ///
    /// On shutdown (a [`ShutdownHandle`] or a [`graceful_shutdown_on`](Self::graceful_shutdown_on)
    /// signal), workers take no new key, the reconciles in flight finish, and `run` returns;
    /// queued and delayed keys are dropped (the next start finds them again by listing).
    /// Dropping the future instead aborts everything at once, reconciles in flight included.
    ///
    /// # Errors
    ///
    /// [`ControllerError::NoInformerFactory`] and [`ControllerError::ZeroConcurrency`] for a
    /// misbuilt controller, before anything starts; [`ControllerError::CacheSyncTimeout`]
    /// when a [`sync_timeout`](Self::sync_timeout) passes first. Reconcile errors never end
    /// `run`.
    pub async fn run<R: Reconciler<K>>(self, reconciler: R) -> Result<(), ControllerError> {
        let Controller {
            name,
            primary,
            factory,
            sources,
            unsourced,
            concurrency,
            queue,
            sync_timeout,
            shutdown,
            shutdown_signals,
            metrics,
        } = self;
        if let Some(kind) = unsourced.into_iter().next() {
            return Err(ControllerError::NoInformerFactory {
                controller: name.to_string(),
                kind,
            });
        }
        if concurrency == 0 {
            return Err(ControllerError::ZeroConcurrency {
                controller: name.to_string(),
            });
        }
        if shutdown.is_shut_down() {
            return Ok(());
        }
        // The factory's component reports its queues as Kubernetes' workqueue metrics.
        if let Some(metrics) = factory.as_ref().and_then(|f| f.queue_metrics()) {
            queue.register_metrics(&name, metrics);
        }

        let mut tasks = AbortOnDrop(Vec::new());
        for signal in shutdown_signals {
            let shutdown = shutdown.clone();
            tasks.0.push(tokio::spawn(async move {
                signal.await;
                shutdown.shut_down();
            }));
        }

        // Subscribe before waiting, so nothing that changes while the caches sync is missed:
        // the keys pile up (deduplicated) in the queue until the workers start.
        for source in &sources {
            tasks.0.push(source.start(queue.clone()));
        }
        let all_synced = future::join_all(sources.iter().map(|s| s.wait_for_sync()));
        let synced = async {
            match sync_timeout {
                Some(timeout) => tokio::time::timeout(timeout, all_synced).await.is_ok(),
                None => {
                    all_synced.await;
                    true
                }
            }
        };
        tokio::select! {
            biased;
            () = shutdown.wait() => {
                queue.shut_down();
                return Ok(());
            }
            synced = synced => if !synced {
                queue.shut_down();
                return Err(ControllerError::CacheSyncTimeout {
                    controller: name.to_string(),
                    kinds: sources.iter().filter(|s| !s.is_synced()).map(|s| s.kind()).collect(),
                    timeout: sync_timeout.unwrap_or_default(),
                });
            }
        }
        tracing::debug!(controller = %name, workers = concurrency, "caches synced, starting workers");

        let worker = Arc::new(Worker {
            name: name.clone(),
            cache: primary.cache().clone(),
            queue: queue.clone(),
            reconciler,
            shutdown: shutdown.clone(),
            metrics,
        });
        let mut workers = JoinSet::new();
        for _ in 0..concurrency {
            workers.spawn(worker.clone().run());
        }
        drop(worker);

        shutdown.wait().await;
        tracing::debug!(controller = %name, "shutting down: waiting for reconciles in flight");
        queue.shut_down();
        while let Some(ended) = workers.join_next().await {
            if let Err(error) = ended {
                tracing::error!(controller = %name, %error, "a worker ended abnormally");
            }
        }
        drop(tasks);
        Ok(())
    }
}

/// What every worker of one running controller shares.
struct Worker<K: Resource, R> {
    name: Arc<str>,
    cache: Cache<K>,
    queue: WorkQueue<ObjectKey>,
    reconciler: R,
    shutdown: ShutdownHandle,
    metrics: Arc<ControllerMetrics>,
}

impl<K: Resource, R: Reconciler<K>> Worker<K, R> {
    /// Takes keys until shutdown; the reconcile in flight then finishes first.
    async fn run(self: Arc<Self>) {
        loop {
            let next = tokio::select! {
                biased;
                () = self.shutdown.wait() => return,
                next = self.queue.get() => next,
            };
            let Some(key) = next else { return };
            if self.shutdown.is_shut_down() {
                // Taken in the same instant as the shutdown: not started, dropped as done.
                return;
            }
            self.process(key).await;
        }
    }

    /// Reconciles one key and applies the decision; the guard drops at the end, marking the
    /// key done (and queueing it again if it changed meanwhile).
    async fn process(&self, key: Processing<ObjectKey>) {
        let Some(object) = self.cache.get(&key) else {
            tracing::debug!(controller = %self.name, key = %*key, "not cached (deleted): skipped");
            self.queue.forget(&key);
            self.metrics.record_skipped();
            return;
        };
        let ctx = Context::for_worker(
            self.name.clone(),
            key.key().clone(),
            self.queue.num_requeues(&key),
            self.shutdown.clone(),
        );
        let span = tracing::info_span!(
            "reconcile",
            controller = %self.name,
            key = %ctx.key(),
            retries = ctx.retries(),
        );
        let started = Instant::now();
        let result = AssertUnwindSafe(self.reconciler.reconcile(object.clone(), &ctx))
            .catch_unwind()
            .instrument(span.clone())
            .await;
        let elapsed = started.elapsed();
        let (outcome, action) = match result {
            Ok(Ok(action)) => {
                if action != Action::Backoff {
                    self.queue.forget(&key);
                }
                tracing::debug!(parent: &span, ?action, ?elapsed, "reconciled");
                (Outcome::Success, action)
            }
            Ok(Err(error)) => {
                let policy = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    self.reconciler.error_policy(object, &error, &ctx)
                }));
                let action = policy.unwrap_or_else(|panic| {
                    tracing::error!(parent: &span, panic = panic_message(&*panic), "error policy panicked");
                    Action::Backoff
                });
                tracing::warn!(parent: &span, %error, ?action, "reconcile failed");
                (Outcome::Error, action)
            }
            Err(panic) => {
                tracing::error!(parent: &span, panic = panic_message(&*panic), "reconcile panicked");
                (Outcome::Panic, Action::Backoff)
            }
        };
        self.metrics.record(outcome, elapsed);
        match action {
            Action::Requeue(after) => self.queue.add_after(key.key().clone(), after),
            Action::AwaitChange => {}
            Action::Backoff => self.queue.add_rate_limited(key.key().clone()),
        }
    }
}

/// The message of a panic payload, when it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
