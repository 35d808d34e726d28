//! The controller manager: the built-in controllers (and yours) run together against any
//! [`Client`], by one replica at a time when leader election is on.
//!
//! ```text
//! ControllerManager::new(client)
//!     .with_builtins()                          // ReplicaSet, Deployment, Endpoints, ...
//!     .add("website", |ctx| async move { ... }) // your own, beside them
//!     .leader_election(elector)                 // optional: one active replica
//!     .run(shutdown).await
//! ```
//!
//! # Contracts
//!
//! - **One term, one set of informers.** Each time this replica starts leading (or at once,
//!   without leader election), the manager builds a fresh [`InformerFactory`] and
//!   [`EventBroadcaster`] and starts every registered controller with a
//!   [`ControllerContext`]: the client, the shared factory (so one Pod watch feeds every
//!   controller that needs Pods), an event recorder named after the controller, and the
//!   shutdown signal the controller must stop on.
//! - **Fencing.** When leadership is lost, every controller task is dropped at once: no
//!   controller of this replica acts after its renew deadline, which passes before the lease
//!   can go to another replica (see [`leader`](capstan_controller::leader)). [`run`](ControllerManager::run)
//!   then returns [`RunOutcome::Lost`]; like kube-controller-manager, which exits, the caller
//!   decides whether to campaign again (call `run` again) or stop.
//! - **Failures.** A controller whose `run` returns an error stops the others (gracefully)
//!   and `run` returns [`ManagerError::Controller`] naming it. A panicking controller is
//!   [`ManagerError::Panicked`].
//! - **Shutdown.** Without leader election, `shutdown` stops every controller gracefully
//!   (reconciles in flight finish). With leader election, shutdown drops the controllers and,
//!   if the elector's configuration says so, releases the lease for the next replica.

use std::future::Future;
use std::sync::Arc;

use capstan_api::{Client, ResourceInfo};
use capstan_watch::{InformerFactory, InformerSyncCheck, ReflectorOptions, WorkQueueMetrics};
use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::daemonset::DaemonSetController;
use crate::deployment::DeploymentController;
use crate::endpoints::slices::EndpointSliceController;
use crate::endpoints::EndpointsController;
use crate::garbage_collector::GarbageCollector;
use crate::job::JobController;
use crate::node_lifecycle::{NodeLifecycleController, NodeLifecycleOptions};
use crate::replicaset::ReplicaSetController;
use capstan_controller::events::{EventBroadcaster, EventOptions, EventRecorder};
use capstan_controller::leader::{LeaderElector, RunOutcome};
use capstan_controller::runtime::ControllerError;

/// A cloneable future that resolves when a controller must stop.
pub type StopSignal = Shared<BoxFuture<'static, ()>>;

/// What a controller gets to start with; see the [module docs](self).
#[derive(Clone)]
pub struct ControllerContext {
    /// The API.
    pub client: Arc<dyn Client>,
    /// The informers this term's controllers share.
    pub factory: Arc<InformerFactory>,
    /// Events, reported as the controller's name.
    pub recorder: EventRecorder,
    /// Resolves when the controller must stop; pass it to the controller's `run`.
    pub shutdown: StopSignal,
}

type Start =
    Box<dyn Fn(ControllerContext) -> BoxFuture<'static, Result<(), ControllerError>> + Send + Sync>;

/// Why the manager stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// A controller's `run` failed (misbuilt, or its caches did not sync in time); the other
    /// controllers were stopped.
    #[error("controller {name} failed: {error}")]
    Controller {
        /// The controller's name.
        name: String,
        /// Its error.
        error: ControllerError,
    },
    /// A controller's task panicked; the other controllers were stopped.
    #[error("controller {name} panicked")]
    Panicked {
        /// The controller's name.
        name: String,
    },
}

/// Runs controllers together; see the [module docs](self).
pub struct ControllerManager {
    client: Arc<dyn Client>,
    controllers: Vec<(String, Start)>,
    elector: Option<LeaderElector>,
    events: EventOptions,
    reflector: ReflectorOptions,
    queue_metrics: Option<WorkQueueMetrics>,
    sync_check: Option<InformerSyncCheck>,
}

impl std::fmt::Debug for ControllerManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerManager")
            .field("controllers", &self.controller_names())
            .field("elector", &self.elector)
            .finish_non_exhaustive()
    }
}

/// The names of the built-in controllers [`ControllerManager::with_builtins`] registers, as
/// kube-controller-manager names them.
pub const BUILTIN_CONTROLLERS: [&str; 8] = [
    "replicaset-controller",
    "deployment-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "node-lifecycle-controller",
    "daemonset-controller",
    "garbage-collector-controller",
    "job-controller",
];

impl ControllerManager {
    /// A manager with no controllers yet, over `client`.
    pub fn new(client: Arc<dyn Client>) -> Self {
        ControllerManager {
            client,
            controllers: Vec::new(),
            elector: None,
            events: EventOptions::default(),
            reflector: ReflectorOptions::default(),
            queue_metrics: None,
            sync_check: None,
        }
    }

    /// Registers the built-in controllers ([`BUILTIN_CONTROLLERS`]).
    pub fn with_builtins(self) -> Self {
        self.add(BUILTIN_CONTROLLERS[0], |ctx| {
            ReplicaSetController::new(ctx.client, ctx.factory, ctx.recorder).run(ctx.shutdown)
        })
        .add(BUILTIN_CONTROLLERS[1], |ctx| {
            DeploymentController::new(ctx.client, ctx.factory, ctx.recorder).run(ctx.shutdown)
        })
        .add(BUILTIN_CONTROLLERS[2], |ctx| {
            EndpointsController::new(ctx.client, ctx.factory, ctx.recorder).run(ctx.shutdown)
        })
        .add(BUILTIN_CONTROLLERS[3], |ctx| {
            EndpointSliceController::new(ctx.client, ctx.factory, ctx.recorder).run(ctx.shutdown)
        })
        .add(BUILTIN_CONTROLLERS[4], |ctx| {
            let options = NodeLifecycleOptions::default();
            NodeLifecycleController::new(ctx.client, ctx.factory, ctx.recorder, options)
                .run(ctx.shutdown)
        })
        .add(BUILTIN_CONTROLLERS[5], |ctx| {
            DaemonSetController::new(ctx.client, ctx.factory, ctx.recorder).run(ctx.shutdown)
        })
        .add(BUILTIN_CONTROLLERS[6], |ctx| async move {
            // Every built-in kind can own or be owned.
            let mut collector = GarbageCollector::new(ctx.client, ResourceInfo::builtins());
            if let Some(metrics) = ctx.factory.queue_metrics() {
                collector = collector.queue_metrics(metrics);
            }
            collector.run(ctx.shutdown).await;
            Ok(())
        })
        .add(BUILTIN_CONTROLLERS[7], |ctx| {
            JobController::new(ctx.client, ctx.factory, ctx.recorder).run(ctx.shutdown)
        })
    }

    /// Registers a controller: `start` is called at the start of every term with a
    /// [`ControllerContext`], and its future runs the controller until `ctx.shutdown`
    /// resolves. A name already registered is replaced.
    pub fn add<F, Fut>(mut self, name: impl Into<String>, start: F) -> Self
    where
        F: Fn(ControllerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ControllerError>> + Send + 'static,
    {
        let name = name.into();
        self.controllers.retain(|(existing, _)| *existing != name);
        self.controllers
            .push((name, Box::new(move |ctx| start(ctx).boxed())));
        self
    }

    /// Runs the controllers only while `elector` leads.
    pub fn leader_election(mut self, elector: LeaderElector) -> Self {
        self.elector = Some(elector);
        self
    }

    /// Sets how Events are recorded.
    pub fn event_options(mut self, options: EventOptions) -> Self {
        self.events = options;
        self
    }

    /// Sets how the informers list and watch.
    pub fn reflector_options(mut self, options: ReflectorOptions) -> Self {
        self.reflector = options;
        self
    }

    /// Reports every controller's work queue in `metrics` (Kubernetes' `workqueue_*`
    /// series, by controller name), term after term: each term's [`InformerFactory`]
    /// carries it (see [`InformerFactory::with_queue_metrics`]).
    pub fn queue_metrics(mut self, metrics: WorkQueueMetrics) -> Self {
        self.queue_metrics = Some(metrics);
        self
    }

    /// Makes `check` track each term's informers: the component's `informer-sync`
    /// readiness fails from the start of a term until every informer started has synced, and
    /// passes while this replica stands by.
    pub fn informer_sync_check(mut self, check: InformerSyncCheck) -> Self {
        self.sync_check = Some(check);
        self
    }

    /// The registered controllers' names, in registration order.
    pub fn controller_names(&self) -> Vec<&str> {
        self.controllers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Runs every controller until `shutdown` resolves, or (with leader election) until
    /// leadership is lost. Returns how the run ended: [`RunOutcome::Shutdown`] after a
    /// shutdown, [`RunOutcome::Lost`] after losing leadership, [`RunOutcome::NeverLed`] when
    /// shut down before leading.
    ///
    /// Errors: [`ManagerError`] when a controller failed or panicked.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<RunOutcome, ManagerError> {
        let this = Arc::new(self);
        let Some(elector) = this.elector.clone() else {
            this.run_term(shutdown.boxed().shared()).await?;
            return Ok(RunOutcome::Shutdown);
        };
        let failure: Arc<Mutex<Option<ManagerError>>> = Arc::default();
        let outcome = {
            let (this, failure) = (this.clone(), failure.clone());
            elector
                .run(shutdown, move |token| async move {
                    let lost = async move { token.lost().await }.boxed().shared();
                    if let Err(error) = this.run_term(lost).await {
                        *failure.lock() = Some(error);
                    }
                })
                .await
        };
        let failure = failure.lock().take();
        match failure {
            Some(error) => Err(error),
            None => Ok(outcome),
        }
    }

    /// One term: fresh informers and recorders, every controller started, until `stop`
    /// resolves or one of them fails. Dropping this future aborts every controller.
    async fn run_term(&self, stop: StopSignal) -> Result<(), ManagerError> {
        let mut factory = InformerFactory::new(self.client.clone(), self.reflector.clone());
        if let Some(metrics) = &self.queue_metrics {
            factory = factory.with_queue_metrics(metrics.clone());
        }
        let factory = Arc::new(factory);
        let _tracking = self.sync_check.as_ref().map(|check| check.track(&factory));
        let events = EventBroadcaster::new(self.client.clone(), self.events.clone());
        // A failing controller stops the others through this.
        let (fail, failed) = watch::channel(false);
        let stop: StopSignal = {
            let mut failed = failed.clone();
            futures::future::select(
                stop,
                async move {
                    let _ = failed.wait_for(|failed| *failed).await;
                }
                .boxed(),
            )
            .map(|_| ())
            .boxed()
            .shared()
        };
        let mut controllers = JoinSet::new();
        let mut names = std::collections::HashMap::new();
        for (name, start) in &self.controllers {
            let ctx = ControllerContext {
                client: self.client.clone(),
                factory: factory.clone(),
                recorder: events.recorder(name.clone()),
                shutdown: stop.clone(),
            };
            let task = controllers.spawn(start(ctx));
            names.insert(task.id(), name.clone());
        }
        let mut first_failure = None;
        while let Some(joined) = controllers.join_next_with_id().await {
            let name = |id| names.get(&id).cloned().unwrap_or_default();
            let failure = match joined {
                Ok((_, Ok(()))) => continue,
                Ok((id, Err(error))) => ManagerError::Controller {
                    name: name(id),
                    error,
                },
                Err(error) => ManagerError::Panicked {
                    name: name(error.id()),
                },
            };
            tracing::error!(%failure, "stopping every controller");
            let _ = fail.send(true);
            first_failure.get_or_insert(failure);
        }
        events.flush().await;
        match first_failure {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}
