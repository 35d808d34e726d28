//! The [`Reconciler`] SPI, its decisions ([`Action`]) and what it is told ([`Context`]).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::Resource;
use capstan_watch::ObjectKey;

use super::controller::ShutdownHandle;

/// What the runtime does with a key after a reconcile: the reconciler's decision, as a value.
///
/// Every action also leaves the key subject to the usual triggers: a change to the object, an
/// owned child or a mapped object queues it again whatever was decided here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "an Action only takes effect when returned to the runtime"]
pub enum Action {
    /// Reconcile the key again after this long, even if nothing changes (a periodic resync, or
    /// polling something the controller does not watch). A zero duration queues it at once.
    Requeue(Duration),
    /// Do not reconcile the key again until something it is triggered by changes.
    AwaitChange,
    /// Retry the key after its next per-key exponential backoff delay, from the work queue's
    /// rate limiter (by default 5 ms doubling up to 1000 s, within a global 10 retries per
    /// second). This is the default answer to an error.
    Backoff,
}

impl Action {
    /// Reconcile again after `after`; see [`Action::Requeue`].
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }

    /// Wait for the next change; see [`Action::AwaitChange`].
    pub fn await_change() -> Self {
        Action::AwaitChange
    }

    /// Retry with per-key exponential backoff; see [`Action::Backoff`].
    pub fn backoff() -> Self {
        Action::Backoff
    }
}

/// What the runtime tells a reconcile besides the object: which key, how many attempts at it
/// failed in a row, and whether the controller is shutting down.
///
/// Cheap to clone. [`Context::new`] builds one for calling a reconciler directly in unit
/// tests.
#[derive(Clone, Debug)]
pub struct Context {
    controller: Arc<str>,
    key: ObjectKey,
    retries: u32,
    shutdown: ShutdownHandle,
}

impl Context {
    /// A context for reconciling `key` on behalf of the controller named `controller`, with no
    /// failed attempt before and its own shutdown handle, never triggered. For tests that call
    /// a reconciler directly.
    pub fn new(controller: &str, key: ObjectKey) -> Self {
        Context {
            controller: controller.into(),
            key,
            retries: 0,
            shutdown: ShutdownHandle::new(),
        }
    }

    /// The same context, with `retries` failed attempts before this one.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    pub(crate) fn for_worker(
        controller: Arc<str>,
        key: ObjectKey,
        retries: u32,
        shutdown: ShutdownHandle,
    ) -> Self {
        Context {
            controller,
            key,
            retries,
            shutdown,
        }
    }

    /// The name of the controller running this reconcile.
    pub fn controller(&self) -> &str {
        &self.controller
    }

    /// The key being reconciled: the object's namespace and name.
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// How many times in a row this key was retried with [`Action::Backoff`] since it last
    /// succeeded (0 on a first attempt). An error policy can give up or escalate on it.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Whether the controller has been asked to shut down. A long reconcile may check it and
    /// return early; the runtime waits for it either way.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_shut_down()
    }

    /// Completes once the controller has been asked to shut down; for `select!` in long
    /// reconciles.
    pub async fn shutting_down(&self) {
        self.shutdown.wait().await
    }
}

/// Brings one object's actual state to its desired state: the controller SPI.
///
/// **Who calls it.** The [`Controller`](super::Controller) runtime calls
/// [`reconcile`](Self::reconcile) from its workers, with the latest state of the primary
/// object from the informer cache, whenever the object, one of its owned children or a
/// mapped object changes, and when an earlier [`Action`] asks for it. A key whose object is
/// no longer in the cache (deleted) is not reconciled: use finalizers to clean up before an
/// object goes away. The runtime never runs two reconciles of the same key at once, and runs
/// at most its concurrency of them in total.
///
/// **Idempotency.** Reconciles are level-based: they may run any number of times for the
/// same state (after a restart, a relist, a requeue, or a change that does not matter), and
/// with a cache that lags the API. A reconcile must read what it needs, compute the
/// difference, and write only that, so running it twice does no more than running it once.
/// Writes should carry the `resourceVersion` they were computed from: a 409 Conflict then
/// means the cache was stale and an error (retried with backoff) is the right answer.
///
/// **Errors.** `Err` means the attempt failed and may be retried; the runtime counts it in
/// the metrics, logs it and asks [`error_policy`](Self::error_policy) what to do (by default,
/// retry with per-key exponential backoff). An error never stops the controller. A panic in
/// `reconcile` is caught, counted as an error and retried with backoff.
///
/// **Shape.** The trait is object safe: hold reconcilers as `Arc<dyn Reconciler<K, Error =
/// E>>` (`Arc<R>` is itself a reconciler), or pass them by value to
/// [`Controller::run`](super::Controller::run). Closures become reconcilers through
/// [`reconciler_fn`].
#[async_trait]
pub trait Reconciler<K: Resource>: Send + Sync + 'static {
    /// Why an attempt failed.
    type Error: fmt::Display + fmt::Debug + Send + Sync + 'static;

    /// Reconciles `object` (the cached state of [`Context::key`]) and says what next.
    async fn reconcile(&self, object: Arc<K>, ctx: &Context) -> Result<Action, Self::Error>;

    /// Decides what happens after `reconcile` failed with `error` on `object`.
    ///
    /// The default retries with per-key exponential backoff ([`Action::Backoff`]). Called on
    /// the worker, right after the failure; it must not block.
    fn error_policy(&self, object: Arc<K>, error: &Self::Error, ctx: &Context) -> Action {
        let _ = (object, error, ctx);
        Action::Backoff
    }
}

#[async_trait]
impl<K: Resource, R: Reconciler<K> + ?Sized> Reconciler<K> for Arc<R> {
    type Error = R::Error;

    async fn reconcile(&self, object: Arc<K>, ctx: &Context) -> Result<Action, Self::Error> {
        (**self).reconcile(object, ctx).await
    }

    fn error_policy(&self, object: Arc<K>, error: &Self::Error, ctx: &Context) -> Action {
        (**self).error_policy(object, error, ctx)
    }
}

/// An error policy for [`FnReconciler`]: a closure `Fn(Arc<K>, &E, &Context) -> Action`, or
/// [`BackoffOnError`].
pub trait ErrorPolicy<K, E>: Send + Sync + 'static {
    /// What to do after `error` on `object`; see [`Reconciler::error_policy`].
    fn decide(&self, object: Arc<K>, error: &E, ctx: &Context) -> Action;
}

/// The default error policy: retry with per-key exponential backoff ([`Action::Backoff`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct BackoffOnError;

impl<K, E> ErrorPolicy<K, E> for BackoffOnError {
    fn decide(&self, _object: Arc<K>, _error: &E, _ctx: &Context) -> Action {
        Action::Backoff
    }
}

impl<K, E, F> ErrorPolicy<K, E> for F
where
    F: Fn(Arc<K>, &E, &Context) -> Action + Send + Sync + 'static,
{
    fn decide(&self, object: Arc<K>, error: &E, ctx: &Context) -> Action {
        self(object, error, ctx)
    }
}

/// A [`Reconciler`] made of a closure; see [`reconciler_fn`].
pub struct FnReconciler<F, P = BackoffOnError> {
    reconcile: F,
    policy: P,
}

impl<F, P> fmt::Debug for FnReconciler<F, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnReconciler").finish_non_exhaustive()
    }
}

/// Turns a closure `Fn(Arc<K>, Context) -> impl Future<Output = Result<Action, E>>` into a
/// [`Reconciler`] whose errors back off exponentially per key.
///
/// The context comes by value (it is cheap to clone), so the future can own it:
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
/// use capstan_controller::runtime::{reconciler_fn, Action, Context, Reconciler};
///
/// let reconciler = reconciler_fn(|config: Arc<ConfigMap>, ctx: Context| async move {
///     println!("{} has {} keys", ctx.key(), config.data.as_ref().map_or(0, |d| d.len()));
///     Ok::<_, capstan_api::Error>(Action::requeue(Duration::from_secs(300)))
/// })
/// // Optional: the default retries with backoff.
/// .with_error_policy(|_config: Arc<ConfigMap>, _error: &capstan_api::Error, ctx: &Context| {
///     if ctx.retries() < 5 { Action::backoff() } else { Action::await_change() }
/// });
/// # fn is_reconciler<R: Reconciler<ConfigMap>>(_: &R) {}
/// # is_reconciler(&reconciler);
/// ```
pub fn reconciler_fn<F>(reconcile: F) -> FnReconciler<F> {
    FnReconciler {
        reconcile,
        policy: BackoffOnError,
    }
}

impl<F> FnReconciler<F> {
    /// Replaces the error policy with `policy`; see [`Reconciler::error_policy`].
    pub fn with_error_policy<K, E, P>(self, policy: P) -> FnReconciler<F, P>
    where
        P: Fn(Arc<K>, &E, &Context) -> Action + Send + Sync + 'static,
    {
        FnReconciler {
            reconcile: self.reconcile,
            policy,
        }
    }
}

#[async_trait]
impl<K, F, Fut, E, P> Reconciler<K> for FnReconciler<F, P>
where
    K: Resource,
    F: Fn(Arc<K>, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: fmt::Display + fmt::Debug + Send + Sync + 'static,
    P: ErrorPolicy<K, E>,
{
    type Error = E;

    async fn reconcile(&self, object: Arc<K>, ctx: &Context) -> Result<Action, E> {
        (self.reconcile)(object, ctx.clone()).await
    }

    fn error_policy(&self, object: Arc<K>, error: &E, ctx: &Context) -> Action {
        self.policy.decide(object, error, ctx)
    }
}
