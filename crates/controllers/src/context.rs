//! What a controller is built from, and the trait every built-in implements so the
//! [manager](crate::manager) can start it by name.
//!
//! # Contracts
//!
//! - **Who builds the context.** The [`ControllerManager`](crate::manager::ControllerManager),
//!   once per controller per leadership term: the client, the term's shared
//!   [`InformerFactory`], an [`EventRecorder`] named after the controller, the term's
//!   [`StopSignal`] and the manager's [`ControllerOptions`].
//! - **Building.** [`BuiltinController::from_context`] only wires informers and triggers; it
//!   writes nothing. It must run inside a tokio runtime (the factory starts informers at
//!   once).
//! - **Running.** [`BuiltinController::run_until`] runs until the stop signal resolves, then
//!   returns `Ok(())`; an `Err` means the controller could not run at all (misbuilt, or its
//!   caches did not sync), never a failed sync.

use std::sync::Arc;

use capstan_api::Client;
use capstan_controller::events::EventRecorder;
use capstan_controller::runtime::ControllerError;
use capstan_watch::InformerFactory;
use futures::future::{BoxFuture, Shared};

use crate::node_lifecycle::NodeLifecycleOptions;

/// A cloneable future that resolves when a controller must stop.
pub type StopSignal = Shared<BoxFuture<'static, ()>>;

/// Settings of the built-in controllers, shared by every term (Kubernetes' component
/// configuration of kube-controller-manager, for the controllers that have any here).
#[derive(Clone, Debug, Default)]
pub struct ControllerOptions {
    /// The node lifecycle controller's settings (`--node-monitor-period` and the like).
    pub node_lifecycle: NodeLifecycleOptions,
    /// The cluster's CA bundle (PEM): what the root CA publisher writes into every
    /// namespace's `kube-root-ca.crt` (kube-controller-manager's `--root-ca-file`). `None`: the
    /// API server has no CA (plain HTTP), and the ConfigMap carries an empty `ca.crt`.
    pub root_ca: Option<Arc<Vec<u8>>>,
}

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
    /// The built-in controllers' settings.
    pub options: Arc<ControllerOptions>,
}

impl std::fmt::Debug for ControllerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerContext")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A built-in controller: its Kubernetes name, the short names `--controllers` also accepts,
/// and how it is built from a [`ControllerContext`] and run. See the [module docs](self).
pub trait BuiltinController: Sized + Send + 'static {
    /// Kubernetes' name for the controller (`cmd/kube-controller-manager/names`), e.g.
    /// `replicaset-controller`: what `--controllers` lists and what its Events report.
    const NAME: &'static str;
    /// The older names kube-controller-manager still accepts for it in `--controllers`.
    const ALIASES: &'static [&'static str];

    /// Builds the controller from `ctx` (informers and triggers only; nothing is written).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the factory starts the informers at once.
    fn from_context(ctx: &ControllerContext) -> Self;

    /// Runs until `shutdown` resolves, then returns `Ok(())`.
    ///
    /// # Errors
    ///
    /// [`ControllerError`] when the controller cannot run (misbuilt, or caches not synced).
    fn run_until(self, shutdown: StopSignal) -> BoxFuture<'static, Result<(), ControllerError>>;
}
