//! The Endpoints and EndpointSlice controllers: Kubernetes' `pkg/controller/endpoint` and
//! `pkg/controller/endpointslice`, over the [`Client`].
//!
//! Both follow Services (the primary kind) and the Pods their selectors pick. Kubernetes
//! runs them as two controllers, and so does Capstan: [`EndpointsController`] writes one
//! `core/v1` Endpoints per Service, [`EndpointSliceController`](slices::EndpointSliceController)
//! (in [`slices`]) writes `discovery.k8s.io/v1` EndpointSlices. They share the helpers of this
//! module (which Pods count, which port a Service port targets on a Pod, which Services
//! select a Pod), and can share one [`InformerFactory`], so one Pod watch feeds both.
//!
//! # The Endpoints controller
//!
//! - **Triggers.** A Service's changes; a Pod's changes, mapped to every Service of its
//!   namespace whose selector matches the Pod's labels (old and new labels on an update, so
//!   a relabelled Pod leaves the Services it no longer matches); and an Endpoints object's
//!   changes, mapped to the Service of the same name (so an edited or deleted Endpoints is
//!   put back).
//! - **Which Services.** A Service with no selector (or an empty one), and an `ExternalName`
//!   Service, are left alone: their Endpoints are managed by hand, as in Kubernetes.
//! - **Which Pods.** Those of the Service's namespace matching its selector, with a Pod IP
//!   (of the Service's IP family), not terminal (`Succeeded`/`Failed`), and not terminating
//!   (no `deletionTimestamp`) unless `publishNotReadyAddresses` is set.
//! - **Addresses.** Each Pod gives an address with its `ip`, `nodeName`, a `targetRef` to
//!   the Pod (kind, namespace, name, uid) and, when the Pod's `subdomain` names the Service,
//!   its `hostname`. A ready Pod (condition `Ready` is `True`) goes to `addresses`, any other
//!   to `notReadyAddresses`; with `publishNotReadyAddresses` every Pod is ready.
//! - **Ports.** Each Service port becomes an Endpoints port with the Service port's `name`,
//!   `protocol` and `appProtocol`, and the number its `targetPort` resolves to on that Pod: a
//!   number is taken as is; a name is looked up among the Pod's container ports (and
//!   restartable init containers') with the same protocol. A Pod without that named port is
//!   left out of that port. A headless Service (`clusterIP: None`) without ports lists its
//!   addresses with no ports.
//! - **Subsets.** Addresses are packed as Kubernetes' `RepackSubsets` does: one subset per
//!   distinct set of addresses (with their readiness), carrying every port that set serves,
//!   so Pods whose named port resolves differently land in different subsets. Addresses are
//!   sorted by IP then Pod uid, ports by name, number and protocol, subsets by their ports
//!   then addresses: the same Pods always give the same bytes.
//! - **Capacity.** Past [`MAX_ENDPOINTS_CAPACITY`] (1000) addresses the Endpoints is
//!   truncated as Kubernetes does (ready addresses kept first, proportionally per subset) and
//!   annotated [`OVER_CAPACITY_ANNOTATION`]`: truncated`.
//! - **Writes.** The Endpoints is named like the Service, labelled with the Service's labels
//!   plus [`LABEL_MANAGED_BY`]`: endpoint-controller` (and
//!   [`HEADLESS_LABEL`] for a Service without a cluster IP: headless, or not allocated one).
//!   It is created when missing, updated (with the
//!   resourceVersion read) only when its subsets, labels or capacity annotation differ from
//!   what was computed, and never written otherwise: an unrelated Pod change (an annotation,
//!   a status field the controller ignores) causes no new revision. The
//!   `last-change-trigger-time` annotation is not written. Write failures are retried with
//!   per-key backoff and reported as `FailedToCreateEndpoint` / `FailedToUpdateEndpoint`
//!   warning Events.
//! - **Deletion.** Kubernetes puts no ownerReference on Endpoints: the controller deletes
//!   them itself. When a Service is deleted, its Endpoints (same name) is deleted; at start,
//!   once the caches have synced, every Endpoints without a Service is deleted too (Kubernetes'
//!   `checkLeftoverEndpoints`), except leader-election records
//!   ([`LEADER_ELECTION_ANNOTATION`]). This runs beside the reconciler, on its own work
//!   queue with per-key backoff, because the runtime does not reconcile deleted objects.
//!   An Endpoints the controller writes (its label) while its Service is already gone (a
//!   sync that read the Service just before the deletion) is swept as it appears, so a
//!   deleted Service never leaves its Endpoints behind.
//! - **A lagging cache** never causes duplicate or lost writes: after each write the
//!   controller waits (requeueing the Service after 100 ms) until its Endpoints cache has
//!   observed that write before it computes again, and every update carries the
//!   resourceVersion it was computed from (a 409 is retried).
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_api::Client;
//! use capstan_controllers::endpoints::{self, slices};
//! use capstan_controller::events::{EventBroadcaster, EventOptions};
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! async fn run(client: Arc<dyn Client>) {
//!     let factory = Arc::new(InformerFactory::new(client.clone(), ReflectorOptions::default()));
//!     let events = EventBroadcaster::new(client.clone(), EventOptions::default());
//!     let endpoints = endpoints::controller(
//!         client.clone(),
//!         factory.clone(),
//!         events.recorder(capstan_controllers::endpoints::COMPONENT),
//!     );
//!     let slices = slices::controller(
//!         client,
//!         factory,
//!         events.recorder(capstan_controllers::endpoints::slices::COMPONENT),
//!     );
//!     // Both return once their shutdown future completes, after the syncs in flight.
//!     let (a, b) = futures::future::join(
//!         endpoints.run(std::future::pending()),
//!         slices.run(std::future::pending()),
//!     )
//!     .await;
//!     a.and(b).unwrap();
//! }
//! ```

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::ext::{PodExt, ServiceExt};
use capstan_api::k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use capstan_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use capstan_api::kube_core::params::{DeleteParams, PostParams};
use capstan_api::kube_core::ObjectMeta;
use capstan_api::{Api, Client, Error, Resource};
use capstan_watch::NAMESPACE_INDEX;
use capstan_watch::{Cache, Delta, InformerFactory, ObjectKey, SharedInformer, WorkQueue};
use parking_lot::Mutex;

use capstan_controller::events::EventRecorder;
use capstan_controller::runtime::{
    Action, Context, Controller, ControllerError, ManagedController, Reconciler, ShutdownHandle,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::context::{BuiltinController, ControllerContext, StopSignal};

mod cleanup;
mod desired;
mod freshness;
mod pods;
#[cfg(test)]
mod tests;

use cleanup::*;
pub use desired::*;
use freshness::*;
pub use pods::*;

pub mod slices;

/// Kubernetes' name for the Endpoints controller: what `--controllers` lists.
pub const NAME: &str = "endpoints-controller";

/// The component name the Endpoints controller's Events report, and the value of its
/// [`LABEL_MANAGED_BY`] label (Kubernetes' `ControllerName`).
pub const COMPONENT: &str = "endpoint-controller";

/// The label marking Endpoints the controller manages (Kubernetes' `LabelManagedBy`).
pub const LABEL_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";

/// The label set (empty) on the Endpoints and EndpointSlices of a headless Service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Set to `truncated` on an Endpoints holding only [`MAX_ENDPOINTS_CAPACITY`] addresses of
/// more.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

/// The most addresses (ready and not ready) one Endpoints holds.
pub const MAX_ENDPOINTS_CAPACITY: usize = 1000;

/// Endpoints carrying this annotation are leader-election records, never swept as leftovers.
pub const LEADER_ELECTION_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// How long a reconcile waits for its cache to observe the controller's own last write.
const STALE_RETRY: Duration = Duration::from_millis(100);

/// Event reasons, as Kubernetes spells them.
pub mod reasons {
    /// The Endpoints could not be created (Warning).
    pub const FAILED_TO_CREATE_ENDPOINT: &str = "FailedToCreateEndpoint";
    /// The Endpoints could not be updated (Warning).
    pub const FAILED_TO_UPDATE_ENDPOINT: &str = "FailedToUpdateEndpoint";
}

// ---------------------------------------------------------------------------------------
// The reconciler
// ---------------------------------------------------------------------------------------

/// Writes each selector Service's Endpoints; see the [module docs](self).
pub struct EndpointsReconciler {
    client: Arc<dyn Client>,
    pods: Cache<Pod>,
    endpoints: Cache<Endpoints>,
    recorder: EventRecorder,
    freshness: Arc<Freshness>,
}

impl std::fmt::Debug for EndpointsReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointsReconciler")
            .finish_non_exhaustive()
    }
}

impl EndpointsReconciler {
    /// A reconciler writing through `client`, reading Pods and Endpoints from these caches.
    pub fn new(
        client: Arc<dyn Client>,
        pods: Cache<Pod>,
        endpoints: Cache<Endpoints>,
        recorder: EventRecorder,
    ) -> Self {
        EndpointsReconciler {
            client,
            pods,
            endpoints,
            recorder,
            freshness: Arc::default(),
        }
    }

    async fn sync(&self, service: &Service, key: &ObjectKey) -> Result<Action, Error> {
        if managed_selector(service).is_none() {
            return Ok(Action::await_change());
        }
        if self.freshness.is_stale(key, &self.endpoints) {
            return Ok(Action::requeue(STALE_RETRY));
        }
        let pods = selected_pods(&self.pods, service);
        let current = self.endpoints.get(key);
        let desired = desired_endpoints(service, &pods, current.as_deref());
        if current
            .as_deref()
            .is_some_and(|current| endpoints_equivalent(current, &desired))
        {
            return Ok(Action::await_change());
        }
        let namespace = key.namespace.as_deref().unwrap_or_default();
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), namespace);
        let written = if current.is_some() {
            api.update(&PostParams::default(), &desired)
                .await
                .inspect_err(|error| {
                    self.recorder.warning(
                        &desired,
                        reasons::FAILED_TO_UPDATE_ENDPOINT,
                        format!("Failed to update endpoint {key}: {error}"),
                    )
                })?
        } else {
            api.create(&PostParams::default(), &desired)
                .await
                .inspect_err(|error| {
                    if !error.is_already_exists() {
                        self.recorder.warning(
                            &desired,
                            reasons::FAILED_TO_CREATE_ENDPOINT,
                            format!("Failed to create endpoint for service {key}: {error}"),
                        )
                    }
                })?
        };
        self.freshness.wrote(key, &written);
        Ok(Action::await_change())
    }
}

#[async_trait]
impl Reconciler<Service> for EndpointsReconciler {
    type Error = Error;

    async fn reconcile(&self, service: Arc<Service>, ctx: &Context) -> Result<Action, Error> {
        self.sync(&service, ctx.key()).await
    }
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

/// The Endpoints controller: a [`Controller`] for Services watching Pods and Endpoints, run
/// with an [`EndpointsReconciler`], plus (as a companion task) the cleanup of deleted
/// Services' Endpoints. See the [module docs](self). Build it with [`controller`]; tune its
/// workers (Kubernetes' `--concurrent-endpoint-syncs`) with
/// [`concurrency`](ManagedController::concurrency).
pub type EndpointsController = ManagedController<Service, EndpointsReconciler>;

/// A controller writing through `client`, with the Service, Pod and Endpoints informers of
/// `factory` and Events from `recorder` (whose component is usually [`COMPONENT`]).
///
/// # Panics
///
/// Outside a tokio runtime: the factory starts the informers at once.
pub fn controller(
    client: Arc<dyn Client>,
    factory: Arc<InformerFactory>,
    recorder: EventRecorder,
) -> EndpointsController {
    let services = factory.informer::<Service>();
    let pods = factory.informer::<Pod>();
    let endpoints = factory.informer::<Endpoints>();
    let controller = Controller::<Service>::new(factory).named(COMPONENT);
    let service_cache = controller.cache().clone();
    let controller = controller
        .watches_informer(pods.clone(), move |pod: &Pod| {
            services_selecting(&service_cache, pod)
        })
        .watches_informer(endpoints.clone(), |endpoints: &Endpoints| {
            [ObjectKey::of(endpoints)]
        });
    let reconciler = EndpointsReconciler::new(
        client.clone(),
        pods.cache().clone(),
        endpoints.cache().clone(),
        recorder,
    );
    let synced = {
        let (services, endpoints) = (services.clone(), endpoints.clone());
        async move {
            services.wait_for_sync().await;
            endpoints.wait_for_sync().await;
        }
    };
    let leftovers = {
        let (services, endpoints) = (services.clone(), endpoints.clone());
        move || {
            endpoints
                .cache()
                .list()
                .iter()
                .filter(|e| {
                    !e.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(LEADER_ELECTION_ANNOTATION))
                })
                .map(|e| ObjectKey::of(e.as_ref()))
                .filter(|key| services.cache().get(key).is_none())
                .collect()
        }
    };
    let freshness = reconciler.freshness.clone();
    let sweep = move |key: ObjectKey| {
        let client = client.clone();
        freshness.forget(&key);
        async move {
            let namespace = key.namespace.clone().unwrap_or_default();
            let api: Api<Endpoints> = Api::namespaced(client, &namespace);
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(error) if error.is_not_found() => Ok(()),
                Err(error) => Err(error),
            }
        }
    };
    // The Endpoints this controller wrote (its label), by their Service's key.
    let written = written_keys(&endpoints, |endpoints: &Endpoints| {
        let ours = endpoints
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(LABEL_MANAGED_BY))
            .is_some_and(|by| by == COMPONENT);
        ours.then(|| ObjectKey::of(endpoints))
    });
    ManagedController::new(controller, reconciler).with_companion(move |handle| {
        run_cleanup(
            COMPONENT, services, written, synced, leftovers, sweep, handle,
        )
    })
}

impl BuiltinController for EndpointsController {
    const NAME: &'static str = NAME;
    const ALIASES: &'static [&'static str] = &["endpoint"];

    fn from_context(ctx: &ControllerContext) -> Self {
        controller(
            ctx.client.clone(),
            ctx.factory.clone(),
            ctx.recorder.clone(),
        )
    }

    fn run_until(self, shutdown: StopSignal) -> BoxFuture<'static, Result<(), ControllerError>> {
        self.run(shutdown).boxed()
    }
}
