//! [`ManagedController`]: a [`Controller`] bundled with its [`Reconciler`], ready to run.
//!
//! Every long-running controller is the same pair: the runtime controller (its informers,
//! triggers and work queue) and the reconciler it drives. This type holds the pair once, so
//! a concrete controller is a type alias (`ManagedController<ReplicaSet, ReplicaSetReconciler>`)
//! plus a function that builds it, instead of a wrapper struct repeating `Debug`,
//! `concurrency`, `metrics` and `run`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use capstan_api::Resource;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::{Controller, ControllerError, ControllerMetrics, Reconciler, ShutdownHandle};

/// A task that runs beside the controller (e.g. a cleanup of what the controller's own
/// watches cannot see) and returns soon after its [`ShutdownHandle`] shuts down.
type Companion = Box<dyn FnOnce(ShutdownHandle) -> BoxFuture<'static, ()> + Send>;

/// A [`Controller`] for `K` with the [`Reconciler`] it runs, and optional companion tasks.
///
/// # Contracts
///
/// - **Who calls what.** A controller's module builds it ([`new`](Self::new), then triggers
///   and settings on the [`Controller`] beforehand); its user tunes it
///   ([`concurrency`](Self::concurrency), [`map_reconciler`](Self::map_reconciler)) and calls
///   [`run`](Self::run) once.
/// - **Companions.** Each [companion](Self::with_companion) starts when `run` starts, with the
///   controller's [`ShutdownHandle`], and must return soon after that handle shuts down; `run`
///   returns once the controller and every companion have returned. When the controller
///   returns first (it failed to start), the handle is shut down so the companions stop too.
/// - **Errors.** Exactly [`Controller::run`]'s: a companion has no error of its own to report.
pub struct ManagedController<K: Resource, R: Reconciler<K>> {
    controller: Controller<K>,
    reconciler: R,
    companions: Vec<Companion>,
}

impl<K: Resource, R: Reconciler<K>> fmt::Debug for ManagedController<K, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedController")
            .field("controller", &self.controller)
            .field("companions", &self.companions.len())
            .finish_non_exhaustive()
    }
}

impl<K: Resource, R: Reconciler<K>> ManagedController<K, R> {
    /// Bundles `controller` (already given its triggers) with the `reconciler` it runs.
    pub fn new(controller: Controller<K>, reconciler: R) -> Self {
        ManagedController {
            controller,
            reconciler,
            companions: Vec::new(),
        }
    }

    /// Runs `start(handle)` beside the controller: see the type's contracts.
    #[must_use]
    pub fn with_companion<F, Fut>(mut self, start: F) -> Self
    where
        F: FnOnce(ShutdownHandle) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.companions
            .push(Box::new(move |handle| start(handle).boxed()));
        self
    }

    /// Runs at most `workers` reconciles at once (as [`Controller::concurrency`]).
    #[must_use]
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.controller = self.controller.concurrency(workers);
        self
    }

    /// Replaces the reconciler with `change(reconciler)`, e.g. to set a reconciler's clock:
    /// `controller.map_reconciler(|r| r.with_clock(clock))`.
    #[must_use]
    pub fn map_reconciler(mut self, change: impl FnOnce(R) -> R) -> Self {
        self.reconciler = change(self.reconciler);
        self
    }

    /// The reconciler, for inspection (e.g. a reconciler's expectations).
    pub fn reconciler(&self) -> &R {
        &self.reconciler
    }

    /// The runtime controller, for inspection (e.g. its cache).
    pub fn controller(&self) -> &Controller<K> {
        &self.controller
    }

    /// The runtime controller's metrics, live (as [`Controller::metrics`]).
    pub fn metrics(&self) -> Arc<ControllerMetrics> {
        self.controller.metrics()
    }

    /// Runs the controller and its companions until `shutdown` completes; reconciles in
    /// flight then finish, the companions return, and it returns `Ok(())`.
    ///
    /// # Errors
    ///
    /// As [`Controller::run`]: a misbuilt controller, or caches that did not sync in time.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControllerError> {
        let ManagedController {
            controller,
            reconciler,
            companions,
        } = self;
        let controller = controller.graceful_shutdown_on(shutdown);
        let handle = controller.shutdown_handle();
        let companions =
            futures::future::join_all(companions.into_iter().map(|start| start(handle.clone())));
        let controller = async move {
            let result = controller.run(reconciler).await;
            // A controller that failed to start must not leave its companions waiting.
            handle.shut_down();
            result
        };
        let (result, _) = futures::join!(controller, companions);
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
    use capstan_api::testing::within;

    use super::*;
    use crate::runtime::{Action, Context};

    const LIMIT: Duration = Duration::from_secs(30);

    /// A reconciler with nothing to do.
    struct Idle;

    #[async_trait::async_trait]
    impl Reconciler<ConfigMap> for Idle {
        type Error = capstan_api::Error;

        async fn reconcile(&self, _: Arc<ConfigMap>, _: &Context) -> Result<Action, Self::Error> {
            Ok(Action::await_change())
        }
    }

    /// A companion that waits for the shutdown, then takes a moment, then says it returned.
    fn companion(
        returned: &Arc<AtomicBool>,
    ) -> impl FnOnce(ShutdownHandle) -> BoxFuture<'static, ()> {
        let returned = returned.clone();
        move |handle| {
            async move {
                handle.wait().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                returned.store(true, Ordering::SeqCst);
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn run_returns_once_shut_down_and_every_companion_has_returned() {
        within(LIMIT, async {
            let returned = Arc::new(AtomicBool::new(false));
            let client = capstan_apiserver::testing::client();
            let managed =
                ManagedController::new(Controller::<ConfigMap>::from_client(client), Idle)
                    .with_companion(companion(&returned));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let run = tokio::spawn(managed.run(async {
                let _ = stopped.await;
            }));
            stop.send(()).unwrap();
            run.await.unwrap().unwrap();
            assert!(
                returned.load(Ordering::SeqCst),
                "run returned before its companion"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_controller_that_cannot_start_stops_its_companions_and_says_why() {
        within(LIMIT, async {
            let returned = Arc::new(AtomicBool::new(false));
            let client = capstan_apiserver::testing::client();
            let managed =
                ManagedController::new(Controller::<ConfigMap>::from_client(client), Idle)
                    .concurrency(0)
                    .with_companion(companion(&returned));
            let result = managed.run(std::future::pending()).await;
            assert!(
                matches!(result, Err(ControllerError::ZeroConcurrency { .. })),
                "{result:?}"
            );
            assert!(
                returned.load(Ordering::SeqCst),
                "the companion was left running"
            );
        })
        .await;
    }
}
