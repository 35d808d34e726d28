//! The controller manager: the built-in controllers (and yours) run together against any
//! [`Client`], by one replica at a time when leader election is on.
//!
//! ```text
//! ControllerManager::new(client)
//!     .with_builtins()                          // ReplicaSet, Deployment, Endpoints, ...
//!     .add("website", |ctx| async move { ... }) // your own, beside them
//!     .controllers("*,-job-controller".parse()?) // optional: kube-controller-manager's --controllers
//!     .leader_election(elector)                 // optional: one active replica
//!     .run(shutdown).await
//! ```
//!
//! # Contracts
//!
//! - **Names.** Controllers are registered by name: the built-ins under Kubernetes' names
//!   ([`BUILTIN_CONTROLLERS`], each with the aliases kube-controller-manager accepts), yours
//!   under the name given to [`add`](ControllerManager::add). Registering a name again
//!   replaces the earlier controller. The name is also the Events' component and the work
//!   queue's metrics label.
//! - **Selection.** [`controllers`](ControllerManager::controllers) takes
//!   kube-controller-manager's `--controllers` list ([`ControllerSelection`]; `*` by
//!   default): only the controllers it enables start. A name in the list that no registered
//!   controller has (by name or alias) makes [`run`](ControllerManager::run) fail at once
//!   with [`ManagerError::Selection`], listing the known names;
//!   [`enabled_controller_names`](ControllerManager::enabled_controller_names) checks the
//!   same beforehand.
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

use capstan_api::Client;
use capstan_watch::{InformerFactory, InformerSyncCheck, ReflectorOptions, WorkQueueMetrics};
use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::daemonset::DaemonSetController;
use crate::deployment::DeploymentController;
use crate::disruption::DisruptionController;
use crate::endpoints::slices::EndpointSliceController;
use crate::endpoints::EndpointsController;
use crate::garbage_collector::GarbageCollector;
use crate::job::JobController;
use crate::namespace::NamespaceController;
use crate::node_lifecycle::NodeLifecycleController;
use crate::replicaset::ReplicaSetController;
use capstan_controller::events::{EventBroadcaster, EventOptions};
use capstan_controller::leader::{LeaderElector, RunOutcome};
use capstan_controller::runtime::ControllerError;

mod selection;

pub use crate::context::{BuiltinController, ControllerContext, ControllerOptions, StopSignal};
pub use selection::{ControllerSelection, SelectionError};

type Start =
    Box<dyn Fn(ControllerContext) -> BoxFuture<'static, Result<(), ControllerError>> + Send + Sync>;

/// One registered controller: its name, the other names `--controllers` knows it by, and
/// how to start it.
struct Registration {
    name: String,
    aliases: Vec<String>,
    start: Start,
}

impl Registration {
    fn is_enabled(&self, selection: &ControllerSelection) -> bool {
        let aliases: Vec<&str> = self.aliases.iter().map(String::as_str).collect();
        selection.is_enabled(&self.name, &aliases)
    }
}

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
    /// The `--controllers` list names a controller that is not registered; nothing was
    /// started.
    #[error(transparent)]
    Selection(#[from] SelectionError),
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
    controllers: Vec<Registration>,
    selection: ControllerSelection,
    options: Arc<ControllerOptions>,
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
            .field("selection", &self.selection.to_string())
            .field("elector", &self.elector)
            .finish_non_exhaustive()
    }
}

/// The names of the built-in controllers [`ControllerManager::with_builtins`] registers, as
/// kube-controller-manager names them.
pub const BUILTIN_CONTROLLERS: [&str; 12] = [
    crate::replicaset::NAME,
    crate::deployment::NAME,
    crate::endpoints::NAME,
    crate::endpoints::slices::NAME,
    crate::node_lifecycle::NAME,
    crate::daemonset::NAME,
    crate::garbage_collector::NAME,
    crate::job::NAME,
    crate::namespace::NAME,
    crate::disruption::NAME,
    crate::serviceaccount::NAME,
    crate::serviceaccount::ROOT_CA_PUBLISHER_NAME,
];

impl ControllerManager {
    /// A manager with no controllers yet, over `client`.
    pub fn new(client: Arc<dyn Client>) -> Self {
        ControllerManager {
            client,
            controllers: Vec::new(),
            selection: ControllerSelection::all(),
            options: Arc::default(),
            elector: None,
            events: EventOptions::default(),
            reflector: ReflectorOptions::default(),
            queue_metrics: None,
            sync_check: None,
        }
    }

    /// Registers the built-in controllers ([`BUILTIN_CONTROLLERS`], in that order).
    pub fn with_builtins(self) -> Self {
        self.register::<ReplicaSetController>()
            .register::<DeploymentController>()
            .register::<EndpointsController>()
            .register::<EndpointSliceController>()
            .register::<NodeLifecycleController>()
            .register::<DaemonSetController>()
            .register::<GarbageCollector>()
            .register::<JobController>()
            .register::<NamespaceController>()
            .register::<DisruptionController>()
            .register::<crate::serviceaccount::ServiceAccountsController>()
            .register::<crate::serviceaccount::RootCaPublisher>()
    }

    /// Registers the built-in controller `B` under [`B::NAME`](BuiltinController::NAME) and
    /// its aliases, built each term with [`BuiltinController::from_context`].
    pub fn register<B: BuiltinController>(self) -> Self {
        self.add_with_aliases(B::NAME, B::ALIASES.iter().copied(), |ctx| {
            let shutdown = ctx.shutdown.clone();
            B::from_context(&ctx).run_until(shutdown)
        })
    }

    /// Registers a controller: `start` is called at the start of every term with a
    /// [`ControllerContext`], and its future runs the controller until `ctx.shutdown`
    /// resolves. A name already registered is replaced.
    pub fn add<F, Fut>(self, name: impl Into<String>, start: F) -> Self
    where
        F: Fn(ControllerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ControllerError>> + Send + 'static,
    {
        self.add_with_aliases(name, std::iter::empty::<String>(), start)
    }

    /// As [`add`](Self::add), with other names `--controllers` also knows it by (e.g. the
    /// short names kube-controller-manager kept when it renamed its controllers).
    pub fn add_with_aliases<F, Fut>(
        mut self,
        name: impl Into<String>,
        aliases: impl IntoIterator<Item = impl Into<String>>,
        start: F,
    ) -> Self
    where
        F: Fn(ControllerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ControllerError>> + Send + 'static,
    {
        let name = name.into();
        self.controllers.retain(|existing| existing.name != name);
        self.controllers.push(Registration {
            name,
            aliases: aliases.into_iter().map(Into::into).collect(),
            start: Box::new(move |ctx| start(ctx).boxed()),
        });
        self
    }

    /// Runs only the controllers `selection` enables (kube-controller-manager's
    /// `--controllers`; every registered controller by default). See the [module docs](self).
    pub fn controllers(mut self, selection: ControllerSelection) -> Self {
        self.selection = selection;
        self
    }

    /// Sets the built-in controllers' settings, handed to each in its [`ControllerContext`].
    pub fn options(mut self, options: ControllerOptions) -> Self {
        self.options = Arc::new(options);
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

    /// The registered controllers' names, in registration order (enabled or not).
    pub fn controller_names(&self) -> Vec<&str> {
        self.controllers
            .iter()
            .map(|registration| registration.name.as_str())
            .collect()
    }

    /// The names of the controllers [`run`](Self::run) starts, in registration order.
    ///
    /// Errors: [`SelectionError::Unknown`] when the `--controllers` list names a controller
    /// that is not registered (by name or alias).
    pub fn enabled_controller_names(&self) -> Result<Vec<&str>, SelectionError> {
        let known = self.controllers.iter().flat_map(|registration| {
            std::iter::once(registration.name.as_str())
                .chain(registration.aliases.iter().map(String::as_str))
        });
        self.selection.validate(known)?;
        Ok(self
            .controllers
            .iter()
            .filter(|registration| registration.is_enabled(&self.selection))
            .map(|registration| registration.name.as_str())
            .collect())
    }

    /// Runs every controller until `shutdown` resolves, or (with leader election) until
    /// leadership is lost. Returns how the run ended: [`RunOutcome::Shutdown`] after a
    /// shutdown, [`RunOutcome::Lost`] after losing leadership, [`RunOutcome::NeverLed`] when
    /// shut down before leading.
    ///
    /// Errors: [`ManagerError::Selection`] at once when the `--controllers` list names an
    /// unknown controller; otherwise [`ManagerError`] when a controller failed or panicked.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<RunOutcome, ManagerError> {
        self.enabled_controller_names()?;
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
        let enabled = self
            .controllers
            .iter()
            .filter(|registration| registration.is_enabled(&self.selection));
        for registration in enabled {
            let name = &registration.name;
            let ctx = ControllerContext {
                client: self.client.clone(),
                factory: factory.clone(),
                recorder: events.recorder(name.clone()),
                shutdown: stop.clone(),
                options: self.options.clone(),
            };
            let task = controllers.spawn((registration.start)(ctx));
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
