//! The EndpointSlice controller: Kubernetes' `pkg/controller/endpointslice`.
//!
//! It follows the same Services and Pods as the [Endpoints controller](super) and writes
//! `discovery.k8s.io/v1` EndpointSlices instead:
//!
//! - **Which Services and Pods.** Services with a non-empty selector (not `ExternalName`);
//!   the Pods they select that have an IP and are not terminal. Terminating Pods are listed,
//!   with their conditions saying so.
//! - **Endpoints.** One per Pod and address type: `addresses` (the Pod IP of that family),
//!   `conditions` (`serving`: the Pod is ready; `terminating`: it has a `deletionTimestamp`;
//!   `ready`: serving and not terminating, or always with `publishNotReadyAddresses`),
//!   `nodeName`, `targetRef` (the Pod, with its uid) and `hostname` when the Pod's
//!   `subdomain` names the Service. Topology (`zone`, hints) is not filled.
//! - **Slices.** One set per address type of the Service (`ipFamilies`; IPv4 by default),
//!   split by port set: each slice carries the ports (name, protocol, appProtocol, and the
//!   number the Service port's `targetPort` resolves to on its Pods) shared by all its
//!   endpoints, so Pods whose named port differs land in different slices. At most
//!   [`DEFAULT_MAX_ENDPOINTS_PER_SLICE`] (100, configurable) endpoints per slice.
//! - **Metadata.** `generateName: <service>-` (the API adds five random characters), the
//!   Service's labels plus [`LABEL_SERVICE_NAME`] and [`LABEL_MANAGED_BY`]`:`
//!   [`MANAGED_BY`] (and the headless label for a Service without a cluster IP), and a
//!   controlling ownerReference to the Service (`controller: true, blockOwnerDeletion: true`).
//! - **Churn.** The reconciler is Kubernetes' (`reconcileByPortMapping`): existing slices keep
//!   the endpoints still wanted, in place, and lose the others; slices that end up empty are
//!   deleted; new endpoints first fill slices already being updated, then one unchanged slice
//!   that can take them all, then new slices; a slice to be deleted is reused (updated in
//!   place) instead of creating a new one. A Service with no endpoints keeps one empty
//!   *placeholder* slice per address type. A slice changes only when its endpoints or labels
//!   do: unrelated Pod changes cause no write. Slices of the Service's name not owned by it
//!   (an older Service of that name) or of an address type it no longer has are deleted.
//! - **Deletion.** The slices are deleted with the Service: Kubernetes leaves that to the
//!   garbage collector (they are owned); this controller also deletes them itself when it
//!   sees the Service go, and at start sweeps its slices whose Service is gone, so it does not
//!   depend on a garbage collector running.
//! - **A lagging cache** never causes duplicate slices: after writing, the controller waits
//!   until its slice cache shows those writes before computing the Service again (as
//!   Kubernetes' `EndpointSliceTracker` does), and updates and deletes carry the
//!   resourceVersion or uid they were computed from.
//!
//! Write failures (other than conflicts) are reported as `FailedToUpdateEndpointSlices`
//! warning Events on the Service, and retried with per-key backoff.

use capstan_api::kube_core::ResourceExt;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use capstan_api::compat::{self, MaybeList};
use capstan_api::ext::{MetaExt, PodExt, ServiceExt};
use capstan_api::k8s_openapi::api::core::v1::{Pod, Service};
use capstan_api::k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use capstan_api::kube_core::params::{DeleteParams, PostParams, Preconditions};
use capstan_api::kube_core::ObjectMeta;
use capstan_api::{Api, Client, Error};
use capstan_watch::{Cache, InformerFactory, ObjectKey};

use super::{
    find_port, is_ipv6, managed_selector, pod_ips, pod_reference, published_hostname, run_cleanup,
    selected_pods, service_ip_family, services_selecting, should_pod_be_in_endpoints, Freshness,
    HEADLESS_LABEL, STALE_RETRY,
};
use capstan_controller::events::EventRecorder;
use capstan_controller::runtime::{
    Action, Context, Controller, ControllerError, ManagedController, Reconciler,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::context::{BuiltinController, ControllerContext, StopSignal};

/// Kubernetes' name for the controller: what `--controllers` lists.
pub const NAME: &str = "endpointslice-controller";

/// The component name the controller's Events report.
pub const COMPONENT: &str = "endpoint-slice-controller";

/// The label naming a slice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The label naming a slice's manager.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// This controller's value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// The most endpoints a slice holds by default (Kubernetes' `--max-endpoints-per-slice`).
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The index this controller adds to the EndpointSlice cache: `<namespace>/<service>` of
/// the slices it manages.
pub const SERVICE_INDEX: &str = "endpointslice-controller/service";

/// Event reasons, as Kubernetes spells them.
pub mod reasons {
    /// Writing a Service's slices failed (Warning).
    pub const FAILED_TO_UPDATE_ENDPOINT_SLICES: &str = "FailedToUpdateEndpointSlices";
}

fn managed_by_us(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .is_some_and(|v| v == MANAGED_BY)
}

/// `<namespace>/<service>` for a slice this controller manages.
fn service_of(slice: &EndpointSlice) -> Option<String> {
    if !managed_by_us(slice) {
        return None;
    }
    let service = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    let namespace = slice.namespace_str();
    Some(format!("{namespace}/{service}"))
}

fn index_value(key: &ObjectKey) -> String {
    format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or_default(),
        key.name
    )
}

// ---------------------------------------------------------------------------------------
// The desired endpoints
// ---------------------------------------------------------------------------------------

/// The address types a Service's slices have: its `ipFamilies`, else its cluster IP's family,
/// else IPv4.
pub fn address_types(service: &Service) -> Vec<&'static str> {
    let families: Vec<&'static str> = service
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .map(|f| if f == "IPv6" { "IPv6" } else { "IPv4" })
        .collect();
    if !families.is_empty() {
        let mut families = families;
        families.dedup();
        return families;
    }
    vec![service_ip_family(service).unwrap_or("IPv4")]
}

/// The endpoint of `pod` for `service`'s slices of `address_type` (Kubernetes' `podToEndpoint`).
pub fn pod_to_endpoint(pod: &Pod, service: &Service, address_type: &str) -> Endpoint {
    let serving = pod.is_ready();
    let terminating = pod.is_terminating();
    let publish = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let ready = publish || (serving && !terminating);
    Endpoint {
        addresses: pod_ips(pod)
            .into_iter()
            .filter(|ip| is_ipv6(ip) == (address_type == "IPv6"))
            .map(str::to_string)
            .collect(),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: published_hostname(pod, service).map(str::to_string),
        node_name: pod.node_name().map(str::to_string),
        target_ref: Some(pod_reference(pod)),
        ..Endpoint::default()
    }
}

/// The ports of `service` as served by `pod` (Kubernetes' `getEndpointPorts`), in the
/// Service's order; ports whose named target the Pod lacks are left out.
pub fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    ports
        .iter()
        .filter_map(|port| {
            let number = find_port(pod, port)?;
            Some(EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect()
}

type PortsKey = Vec<(String, i32, String, Option<String>)>;

fn ports_key(ports: &[EndpointPort]) -> PortsKey {
    let mut key: PortsKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

type EndpointKey = (Vec<String>, String);

fn endpoint_key(endpoint: &Endpoint) -> EndpointKey {
    let uid = endpoint
        .target_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .unwrap_or_default();
    (endpoint.addresses.clone(), uid)
}

/// One port set's wanted endpoints, by key.
struct PortGroup {
    ports: Vec<EndpointPort>,
    endpoints: BTreeMap<EndpointKey, Endpoint>,
}

fn desired_groups(
    service: &Service,
    pods: &[Arc<Pod>],
    address_type: &str,
) -> BTreeMap<PortsKey, PortGroup> {
    let mut groups: BTreeMap<PortsKey, PortGroup> = BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let endpoint = pod_to_endpoint(pod, service, address_type);
        if endpoint.addresses.is_empty() {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        groups
            .entry(ports_key(&ports))
            .or_insert_with(|| PortGroup {
                ports,
                endpoints: BTreeMap::new(),
            })
            .endpoints
            .insert(endpoint_key(&endpoint), endpoint);
    }
    groups
}

/// The labels of the Service's slices: the Service's (but the reserved ones), the Service
/// name, the manager, and the headless label when the Service has no cluster IP (Kubernetes'
/// `!IsServiceIPSet`).
pub fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.remove(LABEL_SERVICE_NAME);
    labels.remove(LABEL_MANAGED_BY);
    labels.remove(HEADLESS_LABEL);
    labels.insert(LABEL_SERVICE_NAME.into(), service.name_any());
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    if !service.is_cluster_ip_set() {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let uid = service.metadata.uid.as_deref().unwrap_or_default();
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Service" && o.controller == Some(true) && o.uid == uid)
}

fn new_slice(
    service: &Service,
    address_type: &str,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
    labels: &BTreeMap<String, String>,
) -> EndpointSlice {
    let name = service.name_any();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name,
                uid: service.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: compat::value(endpoints),
        ports: Some(ports),
    }
}

/// The writes that bring a Service's slices to the wanted state.
#[derive(Clone, Debug, Default)]
pub struct SlicePlan {
    /// New slices (with `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Existing slices, changed (they carry the resourceVersion they were read at).
    pub update: Vec<EndpointSlice>,
    /// Existing slices to delete.
    pub delete: Vec<Arc<EndpointSlice>>,
}

impl SlicePlan {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Plans the writes bringing `existing` (the slices labelled for this Service and managed by
/// this controller) to what `service` and its selected `pods` want, with at most `max`
/// endpoints per slice. See the [module docs](self) for the rules.
pub fn plan_slices(
    service: &Service,
    pods: &[Arc<Pod>],
    existing: &[Arc<EndpointSlice>],
    max: usize,
) -> SlicePlan {
    let max = max.max(1);
    let types = address_types(service);
    let labels = slice_labels(service);
    let mut plan = SlicePlan::default();

    let mut existing: Vec<Arc<EndpointSlice>> = existing.to_vec();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut by_type: BTreeMap<String, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in existing {
        if owned_by(&slice, service) && types.contains(&slice.address_type.as_str()) {
            by_type
                .entry(slice.address_type.clone())
                .or_default()
                .push(slice);
        } else {
            plan.delete.push(slice);
        }
    }

    for address_type in types {
        let mut desired = desired_groups(service, pods, address_type);
        let mut to_delete: Vec<Arc<EndpointSlice>> = Vec::new();
        let mut to_create: Vec<EndpointSlice> = Vec::new();
        let mut to_update: Vec<EndpointSlice> = Vec::new();
        let mut unchanged_total = 0usize;

        let mut existing_groups: BTreeMap<PortsKey, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for slice in by_type.remove(address_type).unwrap_or_default() {
            let key = ports_key(slice.ports.as_deref().unwrap_or_default());
            if desired.contains_key(&key) {
                existing_groups.entry(key).or_default().push(slice);
            } else {
                to_delete.push(slice);
            }
        }

        for (key, group) in desired.iter_mut() {
            let mut updated: Vec<EndpointSlice> = Vec::new();
            let mut unchanged: Vec<Arc<EndpointSlice>> = Vec::new();
            for slice in existing_groups.remove(key).unwrap_or_default() {
                let mut changed = slice.metadata.labels.as_ref() != Some(&labels);
                let current = slice.endpoints.items();
                let mut kept = Vec::with_capacity(current.len());
                for endpoint in current {
                    match group.endpoints.remove(&endpoint_key(endpoint)) {
                        Some(wanted) => {
                            changed |= &wanted != endpoint;
                            kept.push(wanted);
                        }
                        None => changed = true,
                    }
                }
                if kept.is_empty() {
                    to_delete.push(slice);
                } else if changed {
                    let mut slice = (*slice).clone();
                    slice.endpoints = compat::value(kept);
                    slice.metadata.labels = Some(labels.clone());
                    updated.push(slice);
                } else {
                    unchanged.push(slice);
                }
            }
            let mut remaining: VecDeque<Endpoint> =
                std::mem::take(&mut group.endpoints).into_values().collect();
            // New endpoints go first into slices written anyway, fullest first.
            updated.sort_by_key(|s| std::cmp::Reverse(s.endpoints.items().len()));
            for slice in &mut updated {
                while slice.endpoints.items().len() < max {
                    let Some(endpoint) = remaining.pop_front() else {
                        break;
                    };
                    slice.endpoints.items_mut().push(endpoint);
                }
            }
            // Then into the one unchanged slice that can take them all, the fullest that can.
            if !remaining.is_empty() && remaining.len() < max {
                let best = unchanged
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.endpoints.items().len() + remaining.len() <= max)
                    .max_by_key(|(_, s)| s.endpoints.items().len())
                    .map(|(i, _)| i);
                if let Some(i) = best {
                    let mut slice = (*unchanged.remove(i)).clone();
                    slice.endpoints.items_mut().extend(remaining.drain(..));
                    updated.push(slice);
                }
            }
            // Then into new slices.
            let remaining: Vec<Endpoint> = remaining.into();
            for chunk in remaining.chunks(max) {
                to_create.push(new_slice(
                    service,
                    address_type,
                    group.ports.clone(),
                    chunk.to_vec(),
                    &labels,
                ));
            }
            unchanged_total += unchanged.len();
            to_update.extend(updated);
        }

        // A Service without endpoints keeps one empty placeholder slice.
        if to_create.is_empty() && to_update.is_empty() && unchanged_total == 0 {
            let placeholder = to_delete.iter().position(|s| {
                s.endpoints.items().is_empty() && s.ports.as_deref().unwrap_or_default().is_empty()
            });
            match placeholder {
                Some(i) if to_delete.len() == 1 => {
                    let slice = to_delete.remove(i);
                    if slice.metadata.labels.as_ref() != Some(&labels) {
                        let mut slice = (*slice).clone();
                        slice.metadata.labels = Some(labels.clone());
                        to_update.push(slice);
                    }
                }
                _ => to_create.push(new_slice(
                    service,
                    address_type,
                    Vec::new(),
                    Vec::new(),
                    &labels,
                )),
            }
        }

        // Reuse the slices about to be deleted instead of creating new ones.
        for created in to_create {
            match to_delete.pop() {
                Some(old) => {
                    let mut slice = (*old).clone();
                    slice.metadata.labels = created.metadata.labels;
                    slice.endpoints = created.endpoints;
                    slice.ports = created.ports;
                    to_update.push(slice);
                }
                None => plan.create.push(created),
            }
        }
        plan.update.extend(to_update);
        plan.delete.extend(to_delete);
    }
    plan
}

// ---------------------------------------------------------------------------------------
// The reconciler
// ---------------------------------------------------------------------------------------

/// Writes each selector Service's EndpointSlices; see the [module docs](self).
pub struct EndpointSliceReconciler {
    client: Arc<dyn Client>,
    pods: Cache<Pod>,
    slices: Cache<EndpointSlice>,
    recorder: EventRecorder,
    freshness: Arc<Freshness>,
    max_endpoints_per_slice: usize,
}

impl std::fmt::Debug for EndpointSliceReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSliceReconciler")
            .field("max_endpoints_per_slice", &self.max_endpoints_per_slice)
            .finish_non_exhaustive()
    }
}

/// Adds [`SERVICE_INDEX`] to a slice cache (idempotent).
fn add_service_index(slices: &Cache<EndpointSlice>) {
    slices.add_index(SERVICE_INDEX, |slice: &EndpointSlice| {
        service_of(slice).into_iter().collect()
    });
}

impl EndpointSliceReconciler {
    /// A reconciler writing through `client`, reading Pods and EndpointSlices from these
    /// caches (it adds [`SERVICE_INDEX`] to the slice cache), with at most
    /// [`DEFAULT_MAX_ENDPOINTS_PER_SLICE`] endpoints per slice.
    pub fn new(
        client: Arc<dyn Client>,
        pods: Cache<Pod>,
        slices: Cache<EndpointSlice>,
        recorder: EventRecorder,
    ) -> Self {
        add_service_index(&slices);
        EndpointSliceReconciler {
            client,
            pods,
            slices,
            recorder,
            freshness: Arc::default(),
            max_endpoints_per_slice: DEFAULT_MAX_ENDPOINTS_PER_SLICE,
        }
    }

    /// Puts at most `max` endpoints in a slice (default [`DEFAULT_MAX_ENDPOINTS_PER_SLICE`];
    /// at least 1).
    #[must_use]
    pub fn max_endpoints_per_slice(mut self, max: usize) -> Self {
        self.max_endpoints_per_slice = max.max(1);
        self
    }

    async fn sync(&self, service: &Service, key: &ObjectKey) -> Result<Action, Error> {
        if managed_selector(service).is_none() {
            return Ok(Action::await_change());
        }
        if self.freshness.is_stale(key, &self.slices) {
            return Ok(Action::requeue(STALE_RETRY));
        }
        let pods = selected_pods(&self.pods, service);
        let existing = self.slices.by_index(SERVICE_INDEX, &index_value(key));
        let plan = plan_slices(service, &pods, &existing, self.max_endpoints_per_slice);
        if plan.is_empty() {
            return Ok(Action::await_change());
        }
        self.write(key, plan).await.inspect_err(|error| {
            if !error.is_conflict() && !error.is_not_found() {
                self.recorder.warning(
                    service,
                    reasons::FAILED_TO_UPDATE_ENDPOINT_SLICES,
                    format!("Error updating Endpoint Slices for Service {key}: {error}"),
                );
            }
        })?;
        Ok(Action::await_change())
    }

    async fn write(&self, key: &ObjectKey, plan: SlicePlan) -> Result<(), Error> {
        let namespace = key.namespace.as_deref().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), namespace);
        for slice in &plan.create {
            let created = api.create(&PostParams::default(), slice).await?;
            self.freshness.wrote(key, &created);
        }
        for slice in &plan.update {
            let updated = api.update(&PostParams::default(), slice).await?;
            self.freshness.wrote(key, &updated);
        }
        for slice in &plan.delete {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: slice.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let name = slice.name_str();
            match api.delete(name, &params).await {
                Ok(_) => self.freshness.deleted(key, slice.as_ref()),
                Err(error) if error.is_not_found() => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Reconciler<Service> for EndpointSliceReconciler {
    type Error = Error;

    async fn reconcile(&self, service: Arc<Service>, ctx: &Context) -> Result<Action, Error> {
        self.sync(&service, ctx.key()).await
    }
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

/// The EndpointSlice controller: a [`Controller`] for Services watching Pods and owning
/// EndpointSlices, run with an [`EndpointSliceReconciler`], plus (as a companion task) the
/// cleanup of deleted Services' slices. See the [module docs](self). Build it with
/// [`controller`]; cap a slice's size with
/// [`map_reconciler`](ManagedController::map_reconciler) and
/// [`EndpointSliceReconciler::max_endpoints_per_slice`]; tune its workers (Kubernetes'
/// `--concurrent-service-endpoint-syncs`) with [`concurrency`](ManagedController::concurrency).
pub type EndpointSliceController = ManagedController<Service, EndpointSliceReconciler>;

/// A controller writing through `client`, with the Service, Pod and EndpointSlice informers
/// of `factory` and Events from `recorder` (whose component is usually [`COMPONENT`]).
///
/// # Panics
///
/// Outside a tokio runtime: the factory starts the informers at once.
pub fn controller(
    client: Arc<dyn Client>,
    factory: Arc<InformerFactory>,
    recorder: EventRecorder,
) -> EndpointSliceController {
    let services = factory.informer::<Service>();
    let pods = factory.informer::<Pod>();
    let slices = factory.informer::<EndpointSlice>();
    let controller = Controller::<Service>::new(factory)
        .named(NAME)
        .owns_informer(slices.clone());
    let service_cache = controller.cache().clone();
    let controller = controller.watches_informer(pods.clone(), move |pod: &Pod| {
        services_selecting(&service_cache, pod)
    });
    let reconciler = EndpointSliceReconciler::new(
        client.clone(),
        pods.cache().clone(),
        slices.cache().clone(),
        recorder,
    );
    let synced = {
        let (services, slices) = (services.clone(), slices.clone());
        async move {
            services.wait_for_sync().await;
            slices.wait_for_sync().await;
        }
    };
    let leftovers = {
        let (services, slices) = (services.clone(), slices.clone());
        move || {
            let mut keys: Vec<ObjectKey> = slices
                .cache()
                .list()
                .iter()
                .filter(|slice| managed_by_us(slice))
                .filter_map(|slice| {
                    let name = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
                    let namespace = slice.namespace().unwrap_or_default();
                    Some(ObjectKey::namespaced(namespace, name.clone()))
                })
                .filter(|key| services.cache().get(key).is_none())
                .collect();
            keys.sort();
            keys.dedup();
            keys
        }
    };
    let slice_cache = slices.cache().clone();
    let freshness = reconciler.freshness.clone();
    let sweep = move |key: ObjectKey| {
        let client = client.clone();
        freshness.forget(&key);
        let doomed = slice_cache.by_index(SERVICE_INDEX, &index_value(&key));
        async move {
            let namespace = key.namespace.clone().unwrap_or_default();
            let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
            for slice in doomed {
                let name = slice.name_str();
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(error) if error.is_not_found() => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(())
        }
    };
    // The slices this controller wrote, by their Service's key.
    let written = super::written_keys(&slices, |slice: &EndpointSlice| {
        let name = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
        managed_by_us(slice)
            .then(|| ObjectKey::namespaced(slice.namespace().unwrap_or_default(), name.clone()))
    });
    ManagedController::new(controller, reconciler).with_companion(move |handle| {
        run_cleanup(NAME, services, written, synced, leftovers, sweep, handle)
    })
}

impl BuiltinController for EndpointSliceController {
    const NAME: &'static str = NAME;
    const ALIASES: &'static [&'static str] = &["endpointslice"];

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

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::k8s_openapi::api::core::v1::{
        PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    fn service() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                cluster_ip: Some("10.96.0.10".into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn pods(n: usize) -> Vec<Arc<Pod>> {
        (0..n)
            .map(|i| {
                Arc::new(Pod {
                    metadata: ObjectMeta {
                        name: Some(format!("p{i}")),
                        namespace: Some("default".into()),
                        uid: Some(format!("uid-{i}")),
                        ..ObjectMeta::default()
                    },
                    spec: Some(PodSpec::default()),
                    status: Some(PodStatus {
                        pod_ip: Some(format!("10.1.{}.{}", i / 250, i % 250)),
                        conditions: Some(vec![PodCondition {
                            type_: "Ready".into(),
                            status: "True".into(),
                            ..PodCondition::default()
                        }]),
                        ..PodStatus::default()
                    }),
                })
            })
            .collect()
    }

    /// Applies a plan as the API would, naming created slices in order.
    fn apply(
        existing: Vec<Arc<EndpointSlice>>,
        plan: SlicePlan,
        next: &mut usize,
    ) -> Vec<Arc<EndpointSlice>> {
        let mut by_name: BTreeMap<String, Arc<EndpointSlice>> = existing
            .into_iter()
            .map(|s| (s.metadata.name.clone().unwrap(), s))
            .collect();
        for slice in plan.delete {
            by_name.remove(slice.metadata.name.as_ref().unwrap());
        }
        for slice in plan.update {
            by_name.insert(slice.metadata.name.clone().unwrap(), Arc::new(slice));
        }
        for mut slice in plan.create {
            *next += 1;
            slice.metadata.name = Some(format!("web-{next}"));
            by_name.insert(slice.metadata.name.clone().unwrap(), Arc::new(slice));
        }
        by_name.into_values().collect()
    }

    #[test]
    fn endpoints_split_at_the_maximum_and_a_second_plan_changes_nothing() {
        let svc = service();
        let pods = pods(250);
        let mut next = 0;
        let slices = apply(Vec::new(), plan_slices(&svc, &pods, &[], 100), &mut next);
        let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.items().len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert!(plan_slices(&svc, &pods, &slices, 100).is_empty());
    }

    #[test]
    fn a_removed_pod_is_taken_out_in_place_and_a_new_one_fills_that_slice() {
        let svc = service();
        let mut all = pods(101);
        let mut next = 0;
        let slices = apply(
            Vec::new(),
            plan_slices(&svc, &all[..100], &[], 100),
            &mut next,
        );
        assert_eq!(slices.len(), 1);
        // One pod leaves, another joins: one update, nothing created.
        all.remove(0);
        let plan = plan_slices(&svc, &all, &slices, 100);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 1, 0)
        );
        assert_eq!(plan.update[0].endpoints.items().len(), 100);
    }

    #[test]
    fn a_service_without_endpoints_keeps_one_placeholder_slice() {
        let svc = service();
        let mut next = 0;
        let slices = apply(Vec::new(), plan_slices(&svc, &[], &[], 100), &mut next);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.items().is_empty());
        assert!(plan_slices(&svc, &[], &slices, 100).is_empty());
        // Endpoints arriving reuse the placeholder.
        let plan = plan_slices(&svc, &pods(3), &slices, 100);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 1, 0)
        );
    }

    #[test]
    fn slices_of_another_owner_are_deleted() {
        let svc = service();
        let mut next = 0;
        let slices = apply(Vec::new(), plan_slices(&svc, &pods(2), &[], 100), &mut next);
        let mut newer = service();
        newer.metadata.uid = Some("other".into());
        let plan = plan_slices(&newer, &pods(2), &slices, 100);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (1, 0, 1)
        );
    }
}
