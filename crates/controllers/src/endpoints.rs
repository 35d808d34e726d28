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
//! - **A lagging cache** never causes duplicate or lost writes: after each write the
//!   controller waits (requeueing the Service after 100 ms) until its Endpoints cache has
//!   observed that write before it computes again, and every update carries the
//!   resourceVersion it was computed from (a 409 is retried).
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_api::Client;
//! use capstan_controllers::endpoints::{slices::EndpointSliceController, EndpointsController};
//! use capstan_controller::events::{EventBroadcaster, EventOptions};
//! use capstan_watch::{InformerFactory, ReflectorOptions};
//!
//! async fn run(client: Arc<dyn Client>) {
//!     let factory = Arc::new(InformerFactory::new(client.clone(), ReflectorOptions::default()));
//!     let events = EventBroadcaster::new(client.clone(), EventOptions::default());
//!     let endpoints = EndpointsController::new(
//!         client.clone(),
//!         factory.clone(),
//!         events.recorder(capstan_controllers::endpoints::COMPONENT),
//!     );
//!     let slices = EndpointSliceController::new(
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
    Action, Context, Controller, ControllerError, Reconciler, ShutdownHandle,
};

pub mod slices;

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
// Pods and Services: what both controllers share
// ---------------------------------------------------------------------------------------

/// Whether `pod` is listed at all (Kubernetes' `ShouldPodBeInEndpoints`): not terminal
/// (`Succeeded` or `Failed`), with an IP, and not terminating unless `include_terminating`.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pod.is_terminal() || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || !pod.is_terminating()
}

/// The Pod's IPs: `status.podIPs`, or `status.podIP` alone.
fn pod_ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    status
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

fn is_ipv6(ip: &str) -> bool {
    matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

/// The IP family (`"IPv4"` or `"IPv6"`) of a Service: its first `ipFamilies` entry, else its
/// cluster IP's family; `None` for a headless Service without families.
pub fn service_ip_family(service: &Service) -> Option<&'static str> {
    let spec = service.spec.as_ref()?;
    if let Some(first) = spec.ip_families.as_ref().and_then(|f| f.first()) {
        return Some(if first == "IPv6" { "IPv6" } else { "IPv4" });
    }
    let ip = spec.cluster_ip.as_deref()?;
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => Some("IPv4"),
        Ok(IpAddr::V6(_)) => Some("IPv6"),
        Err(_) => None,
    }
}

/// The Pod IP a Service lists (Kubernetes' `podToEndpointAddressForService`): the first of
/// the Service's family, or for a headless Service without families the Pod's first IP.
pub fn pod_ip_for_service(service: &Service, pod: &Pod) -> Option<String> {
    let ips = pod_ips(pod);
    match service_ip_family(service) {
        None => ips.first().map(|ip| ip.to_string()),
        Some(family) => ips
            .into_iter()
            .find(|ip| is_ipv6(ip) == (family == "IPv6"))
            .map(str::to_string),
    }
}

/// The Service's selector, when it has a non-empty one and is not `ExternalName`: the Services
/// the controllers manage.
pub fn managed_selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether `selector` (a Service's equality selector) matches `labels`.
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value))
}

/// The keys of every Service in `services` (the informer cache) in the Pod's namespace whose
/// selector matches the Pod's labels.
pub fn services_selecting(services: &Cache<Service>, pod: &Pod) -> Vec<ObjectKey> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    services
        .by_index(NAMESPACE_INDEX, namespace)
        .iter()
        .filter(|service| {
            managed_selector(service)
                .is_some_and(|sel| selector_matches(sel, pod.metadata.labels.as_ref()))
        })
        .map(|service| ObjectKey::of(service.as_ref()))
        .collect()
}

/// The Pods in `pods` (the informer cache) the Service selects, sorted by name.
pub(crate) fn selected_pods(pods: &Cache<Pod>, service: &Service) -> Vec<Arc<Pod>> {
    let Some(selector) = managed_selector(service) else {
        return Vec::new();
    };
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let mut selected: Vec<Arc<Pod>> = pods
        .by_index(NAMESPACE_INDEX, namespace)
        .into_iter()
        .filter(|pod| selector_matches(selector, pod.metadata.labels.as_ref()))
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    selected
}

/// The container port a Service port targets on `pod` (Kubernetes' `FindPort`): a numeric
/// `targetPort` as is (the Service `port` when unset), a named one looked up among the
/// Pod's containers' and restartable init containers' ports of the same protocol. `None`
/// when the Pod has no such named port.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(number)) => Some(*number),
        Some(IntOrString::String(name)) => {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// Whether the Pod's `hostname` is published (Kubernetes' `ShouldSetHostname`): it has one
/// and its `subdomain` names the Service.
pub(crate) fn published_hostname<'a>(pod: &'a Pod, service: &Service) -> Option<&'a str> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == service.metadata.name.as_deref()
        && pod.metadata.namespace == service.metadata.namespace)
        .then_some(hostname)
}

/// A `targetRef` to the Pod: kind, namespace, name and uid.
pub(crate) fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

// ---------------------------------------------------------------------------------------
// Endpoints: the desired state
// ---------------------------------------------------------------------------------------

type PortKey = (Option<String>, i32, String, Option<String>);

fn port_key(port: &EndpointPort) -> PortKey {
    (
        port.name.clone(),
        port.port,
        port.protocol.clone().unwrap_or_else(|| "TCP".into()),
        port.app_protocol.clone(),
    )
}

/// An address's identity: its IP and the uid of the Pod it points at.
type AddressKey = (String, String);

fn address_key(address: &EndpointAddress) -> AddressKey {
    let uid = address
        .target_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .unwrap_or_default();
    (address.ip.clone(), uid)
}

/// The subsets of the Service's Endpoints for `pods` (any Pods: those the selector does not
/// match should not be passed). See the [module docs](self) for the rules; deterministic.
pub fn endpoint_subsets(service: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let service_ports = spec.ports.as_deref().unwrap_or_default();
    let headless = service.is_headless();

    // Per port (`None`: the no-port sentinel of a headless Service), each address's readiness;
    // not ready wins over ready.
    let mut addresses: HashMap<AddressKey, EndpointAddress> = HashMap::new();
    let mut by_port: BTreeMap<Option<PortKey>, BTreeMap<AddressKey, bool>> = BTreeMap::new();
    let mut ports: HashMap<PortKey, EndpointPort> = HashMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, publish_not_ready) {
            continue;
        }
        let Some(ip) = pod_ip_for_service(service, pod) else {
            continue;
        };
        let address = EndpointAddress {
            ip,
            hostname: published_hostname(pod, service).map(str::to_string),
            node_name: pod.node_name().map(str::to_string),
            target_ref: Some(pod_reference(pod)),
        };
        let key = address_key(&address);
        let ready = publish_not_ready || pod.is_ready();
        addresses.entry(key.clone()).or_insert(address);
        let mut add = |port: Option<PortKey>| {
            let entry = by_port
                .entry(port)
                .or_default()
                .entry(key.clone())
                .or_insert(ready);
            *entry = *entry && ready;
        };
        if service_ports.is_empty() {
            if headless {
                add(None);
            }
            continue;
        }
        for service_port in service_ports {
            let Some(number) = find_port(pod, service_port) else {
                continue;
            };
            let port = EndpointPort {
                name: service_port.name.clone(),
                port: number,
                protocol: Some(
                    service_port
                        .protocol
                        .clone()
                        .unwrap_or_else(|| "TCP".into()),
                ),
                app_protocol: service_port.app_protocol.clone(),
            };
            let key = port_key(&port);
            ports.entry(key.clone()).or_insert(port);
            add(Some(key));
        }
    }

    // Group the ports by the exact set of addresses (with readiness) that serve them.
    let mut groups: BTreeMap<Vec<(AddressKey, bool)>, Vec<Option<PortKey>>> = BTreeMap::new();
    for (port, set) in by_port {
        groups
            .entry(set.into_iter().collect())
            .or_default()
            .push(port);
    }
    let mut subsets: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(set, group)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) = set.into_iter().partition(|(_, r)| *r);
            let collect = |keys: Vec<(AddressKey, bool)>| {
                let list: Vec<EndpointAddress> =
                    keys.iter().map(|(k, _)| addresses[k].clone()).collect();
                (!list.is_empty()).then_some(list)
            };
            let mut subset_ports: Vec<PortKey> = group.into_iter().flatten().collect();
            subset_ports.sort();
            let subset_ports: Vec<EndpointPort> =
                subset_ports.iter().map(|k| ports[k].clone()).collect();
            EndpointSubset {
                addresses: collect(ready),
                not_ready_addresses: collect(not_ready),
                ports: (!subset_ports.is_empty()).then_some(subset_ports),
            }
        })
        .collect();
    subsets.sort_by(compare_subsets);
    subsets
}

fn subset_sort_key(subset: &EndpointSubset) -> (Vec<PortKey>, Vec<AddressKey>, Vec<AddressKey>) {
    (
        subset.ports.iter().flatten().map(port_key).collect(),
        subset.addresses.iter().flatten().map(address_key).collect(),
        subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(address_key)
            .collect(),
    )
}

fn compare_subsets(a: &EndpointSubset, b: &EndpointSubset) -> Ordering {
    subset_sort_key(a).cmp(&subset_sort_key(b))
}

/// Truncates `subsets` to [`MAX_ENDPOINTS_CAPACITY`] addresses as Kubernetes'
/// `truncateEndpoints` does; returns whether anything was cut.
fn truncate_subsets(subsets: &mut [EndpointSubset]) -> bool {
    let count = |s: &Option<Vec<EndpointAddress>>| s.as_ref().map_or(0, Vec::len);
    let total_ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let total_not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if total_ready + total_not_ready <= MAX_ENDPOINTS_CAPACITY {
        return false;
    }
    let truncate_ready = total_ready > MAX_ENDPOINTS_CAPACITY;
    let (max, total) = if truncate_ready {
        (MAX_ENDPOINTS_CAPACITY, total_ready)
    } else {
        (MAX_ENDPOINTS_CAPACITY - total_ready, total_not_ready)
    };
    let mut room = max;
    let last = subsets.len().saturating_sub(1);
    for (i, subset) in subsets.iter_mut().enumerate() {
        let list = if truncate_ready {
            subset.not_ready_addresses = None;
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let here = count(list);
        let mut keep = (here * max).div_ceil(total.max(1));
        if i == last || keep > room {
            keep = room;
        }
        if let Some(addresses) = list.as_mut() {
            addresses.truncate(keep);
            room -= addresses.len();
            if addresses.is_empty() {
                *list = None;
            }
        }
    }
    true
}

/// The labels of the Service's Endpoints: the Service's, the managed-by label, and the
/// headless label when the Service has no cluster IP (Kubernetes' `!IsServiceIPSet`).
fn endpoints_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(LABEL_MANAGED_BY.into(), COMPONENT.into());
    if !service.is_cluster_ip_set() {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The Endpoints the controller wants for `service` given the selected `pods`, carried over
/// from `current` (its metadata kept, its subsets, labels and capacity annotation replaced).
pub fn desired_endpoints(
    service: &Service,
    pods: &[Arc<Pod>],
    current: Option<&Endpoints>,
) -> Endpoints {
    let mut subsets = endpoint_subsets(service, pods);
    let truncated = truncate_subsets(&mut subsets);
    let mut metadata = current.map(|c| c.metadata.clone()).unwrap_or(ObjectMeta {
        name: service.metadata.name.clone(),
        namespace: service.metadata.namespace.clone(),
        ..ObjectMeta::default()
    });
    metadata.labels = Some(endpoints_labels(service));
    let mut annotations = metadata.annotations.take().unwrap_or_default();
    if truncated {
        annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Endpoints {
        metadata,
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// Whether two Endpoints agree on what the controller manages: subsets, labels and the
/// capacity annotation (an empty list is the same as none).
fn endpoints_equivalent(a: &Endpoints, b: &Endpoints) -> bool {
    fn norm(subsets: &Option<Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
        subsets
            .iter()
            .flatten()
            .map(|s| EndpointSubset {
                addresses: s.addresses.clone().filter(|a| !a.is_empty()),
                not_ready_addresses: s.not_ready_addresses.clone().filter(|a| !a.is_empty()),
                ports: s.ports.clone().filter(|p| !p.is_empty()).map(|ports| {
                    ports
                        .into_iter()
                        .map(|mut p| {
                            p.protocol.get_or_insert_with(|| "TCP".into());
                            p
                        })
                        .collect()
                }),
            })
            .collect()
    }
    let capacity = |e: &Endpoints| {
        e.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OVER_CAPACITY_ANNOTATION).cloned())
    };
    norm(&a.subsets) == norm(&b.subsets)
        && a.metadata.labels.clone().unwrap_or_default()
            == b.metadata.labels.clone().unwrap_or_default()
        && capacity(a) == capacity(b)
}

// ---------------------------------------------------------------------------------------
// Freshness: waiting for the cache to see the controller's own writes
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct PendingWrites {
    /// Objects written, with the resourceVersion the write returned.
    written: Vec<(ObjectKey, String)>,
    /// Objects deleted, with their uid.
    deleted: Vec<(ObjectKey, String)>,
}

/// Remembers, per Service, the controller's writes its cache has not shown yet (Kubernetes'
/// `EndpointSliceTracker`, by resourceVersion instead of generation since these kinds have
/// no spec). A reconcile computed from a cache missing one of its own writes would undo or
/// repeat it.
#[derive(Debug, Default)]
pub(crate) struct Freshness {
    pending: Mutex<HashMap<ObjectKey, PendingWrites>>,
}

fn revision(resource_version: &str) -> Option<u64> {
    resource_version.parse().ok()
}

impl Freshness {
    pub(crate) fn wrote<K: Resource>(&self, service: &ObjectKey, object: &K) {
        if let Some(rv) = object.meta().resource_version.clone() {
            self.pending
                .lock()
                .entry(service.clone())
                .or_default()
                .written
                .push((ObjectKey::of(object), rv));
        }
    }

    pub(crate) fn deleted<K: Resource>(&self, service: &ObjectKey, object: &K) {
        let uid = object.meta().uid.clone().unwrap_or_default();
        self.pending
            .lock()
            .entry(service.clone())
            .or_default()
            .deleted
            .push((ObjectKey::of(object), uid));
    }

    pub(crate) fn forget(&self, service: &ObjectKey) {
        self.pending.lock().remove(service);
    }

    /// Whether `cache` has not yet shown one of the writes made for `service`. Observed
    /// writes are forgotten.
    pub(crate) fn is_stale<K: Resource>(&self, service: &ObjectKey, cache: &Cache<K>) -> bool {
        let mut pending = self.pending.lock();
        let Some(writes) = pending.get_mut(service) else {
            return false;
        };
        let cache_revision = revision(&cache.resource_version());
        writes.written.retain(|(key, rv)| {
            let Some(wanted) = revision(rv) else {
                return false;
            };
            let seen = cache
                .get(key)
                .and_then(|o| o.meta().resource_version.as_deref().and_then(revision));
            // Seen itself (or a later version), or the whole cache has moved past it (it was
            // changed or deleted since by someone else).
            !(seen.is_some_and(|seen| seen >= wanted)
                || cache_revision.is_some_and(|c| c >= wanted))
        });
        writes.deleted.retain(|(key, uid)| {
            cache
                .get(key)
                .is_some_and(|o| o.meta().uid.as_deref() == Some(uid.as_str()))
        });
        let stale = !writes.written.is_empty() || !writes.deleted.is_empty();
        if !stale {
            pending.remove(service);
        }
        stale
    }
}

// ---------------------------------------------------------------------------------------
// Cleanup of what deleted Services leave behind
// ---------------------------------------------------------------------------------------

/// Runs `sweep` for every Service key that is deleted (from the Service informer's feed) and,
/// once `synced` completes, for each key `leftovers` returns; until `shutdown`. A key whose
/// Service exists (again) in the cache is skipped; a failed sweep is retried with per-key
/// backoff.
pub(crate) async fn run_cleanup<S, F>(
    name: &'static str,
    services: Arc<SharedInformer<Service>>,
    synced: impl Future<Output = ()> + Send,
    leftovers: impl FnOnce() -> Vec<ObjectKey>,
    sweep: S,
    shutdown: ShutdownHandle,
) where
    S: Fn(ObjectKey) -> F,
    F: Future<Output = Result<(), Error>>,
{
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    let mut deltas = services.subscribe();
    let feed_queue = queue.clone();
    let feed = tokio::spawn(async move {
        while let Some(delta) = deltas.recv().await {
            if let Delta::Deleted(service) = delta {
                feed_queue.add(ObjectKey::of(service.as_ref()));
            }
        }
    });
    let work = async {
        synced.await;
        for key in leftovers() {
            queue.add(key);
        }
        while let Some(key) = queue.get().await {
            if services.cache().get(&key).is_some() {
                queue.forget(&key);
                continue;
            }
            match sweep(key.key().clone()).await {
                Ok(()) => queue.forget(&key),
                Err(error) => {
                    tracing::warn!(controller = name, key = %*key, %error, "cleanup failed; retrying");
                    queue.add_rate_limited(key.key().clone());
                }
            }
        }
    };
    tokio::select! {
        () = shutdown.wait() => {}
        () = work => {}
    }
    queue.shut_down();
    feed.abort();
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

/// The Endpoints controller: a [`Controller`] for Services watching Pods and Endpoints, with
/// an [`EndpointsReconciler`], plus the cleanup of deleted Services' Endpoints. See the
/// [module docs](self).
pub struct EndpointsController {
    client: Arc<dyn Client>,
    controller: Controller<Service>,
    reconciler: EndpointsReconciler,
    services: Arc<SharedInformer<Service>>,
    endpoints: Arc<SharedInformer<Endpoints>>,
}

impl std::fmt::Debug for EndpointsController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointsController")
            .field("controller", &self.controller)
            .finish_non_exhaustive()
    }
}

impl EndpointsController {
    /// A controller writing through `client`, with the Service, Pod and Endpoints informers of
    /// `factory` and Events from `recorder` (whose component is usually [`COMPONENT`]).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the factory starts the informers at once.
    pub fn new(
        client: Arc<dyn Client>,
        factory: Arc<InformerFactory>,
        recorder: EventRecorder,
    ) -> Self {
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
        EndpointsController {
            client,
            controller,
            reconciler,
            services,
            endpoints,
        }
    }

    /// Runs at most `workers` syncs at once (Kubernetes' `--concurrent-endpoint-syncs`, 5
    /// there; the runtime's default here).
    #[must_use]
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.controller = self.controller.concurrency(workers);
        self
    }

    /// The underlying runtime controller's metrics.
    pub fn metrics(&self) -> Arc<capstan_controller::runtime::ControllerMetrics> {
        self.controller.metrics()
    }

    /// Runs until `shutdown` completes; syncs in flight then finish and it returns `Ok(())`.
    ///
    /// # Errors
    ///
    /// As [`Controller::run`].
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControllerError> {
        let EndpointsController {
            client,
            controller,
            reconciler,
            services,
            endpoints,
        } = self;
        let controller = controller.graceful_shutdown_on(shutdown);
        let handle = controller.shutdown_handle();
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
        let cleanup = run_cleanup(COMPONENT, services, synced, leftovers, sweep, handle);
        let (result, ()) = futures::join!(controller.run(reconciler), cleanup);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
    };

    fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                cluster_ip: Some("10.96.0.10".into()),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            target_port: Some(target),
            ..ServicePort::default()
        }
    }

    fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: http_port,
                        protocol: Some("TCP".into()),
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        })
    }

    fn ips(addresses: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        addresses.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn pods_with_different_named_ports_land_in_different_subsets() {
        let svc = service(vec![port("http", 80, IntOrString::String("http".into()))]);
        let pods = vec![
            pod("a", "10.0.0.2", true, 8080),
            pod("b", "10.0.0.1", false, 8080),
            pod("c", "10.0.0.3", true, 9090),
        ];
        let subsets = endpoint_subsets(&svc, &pods);
        assert_eq!(subsets.len(), 2);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.1"]);
        assert_eq!(subsets[1].ports.as_ref().unwrap()[0].port, 9090);
        assert_eq!(ips(&subsets[1].addresses), ["10.0.0.3"]);
    }

    #[test]
    fn ports_served_by_the_same_addresses_share_one_subset() {
        let svc = service(vec![
            port("http", 80, IntOrString::String("http".into())),
            port("metrics", 9100, IntOrString::Int(9100)),
        ]);
        let pods = vec![pod("a", "10.0.0.1", true, 8080)];
        let subsets = endpoint_subsets(&svc, &pods);
        assert_eq!(subsets.len(), 1);
        let ports: Vec<i32> = subsets[0].ports.iter().flatten().map(|p| p.port).collect();
        assert_eq!(ports, [8080, 9100]);
        let address = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(address.node_name.as_deref(), Some("node-1"));
        assert_eq!(
            address.target_ref.as_ref().unwrap().uid.as_deref(),
            Some("uid-a")
        );
    }

    /// Kubernetes lists the addresses of a Service without ports only when it is headless
    /// (`clusterIP: None`), but labels the Endpoints headless whenever it has no cluster IP.
    #[test]
    fn only_a_headless_service_without_ports_lists_addresses_without_ports() {
        let pods = [pod("a", "10.0.0.1", true, 8080)];
        let cases = [
            (Some("None"), true, true),
            (Some(""), false, true),
            (None, false, true),
            (Some("10.96.0.10"), false, false),
        ];
        for (cluster_ip, listed, labelled) in cases {
            let mut svc = service(vec![]);
            svc.spec.as_mut().unwrap().cluster_ip = cluster_ip.map(str::to_string);
            let subsets = endpoint_subsets(&svc, &pods);
            assert_eq!(!subsets.is_empty(), listed, "{cluster_ip:?}");
            if listed {
                assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1"]);
                assert!(subsets[0].ports.is_none(), "{cluster_ip:?}");
            }
            let labels = desired_endpoints(&svc, &pods, None)
                .metadata
                .labels
                .unwrap();
            assert_eq!(
                labels.contains_key(HEADLESS_LABEL),
                labelled,
                "{cluster_ip:?}"
            );
        }
    }

    #[test]
    fn publishing_not_ready_addresses_lists_every_pod_as_ready() {
        let mut svc = service(vec![port("http", 80, IntOrString::Int(8080))]);
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let subsets = endpoint_subsets(&svc, &[pod("a", "10.0.0.1", false, 8080)]);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1"]);
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn terminating_and_terminal_pods_and_pods_without_ip_are_left_out() {
        let svc = service(vec![port("http", 80, IntOrString::Int(8080))]);
        let mut terminating = (*pod("a", "10.0.0.1", true, 8080)).clone();
        terminating.metadata.deletion_timestamp = Some(
            capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                capstan_api::k8s_openapi::jiff::Timestamp::now(),
            ),
        );
        let mut done = (*pod("b", "10.0.0.2", true, 8080)).clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut no_ip = (*pod("c", "", true, 8080)).clone();
        no_ip.status.as_mut().unwrap().pod_ip = None;
        let pods: Vec<Arc<Pod>> = [terminating, done, no_ip]
            .into_iter()
            .map(Arc::new)
            .collect();
        assert!(endpoint_subsets(&svc, &pods).is_empty());
    }

    #[test]
    fn over_capacity_endpoints_are_truncated_keeping_ready_addresses() {
        let svc = service(vec![port("http", 80, IntOrString::Int(8080))]);
        let pods: Vec<Arc<Pod>> = (0..1200)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.1.{}.{}", i / 250, i % 250),
                    i < 900,
                    8080,
                )
            })
            .collect();
        let endpoints = desired_endpoints(&svc, &pods, None);
        let subsets = endpoints.subsets.unwrap();
        let ready: usize = subsets.iter().map(|s| ips(&s.addresses).len()).sum();
        let not_ready: usize = subsets
            .iter()
            .map(|s| ips(&s.not_ready_addresses).len())
            .sum();
        assert_eq!((ready, not_ready), (900, 100));
        assert_eq!(
            endpoints.metadata.annotations.unwrap()[OVER_CAPACITY_ANNOTATION],
            "truncated"
        );
    }

    #[test]
    fn a_named_port_must_match_the_protocol() {
        let mut udp = port("dns", 53, IntOrString::String("http".into()));
        udp.protocol = Some("UDP".into());
        assert_eq!(find_port(&pod("a", "10.0.0.1", true, 8080), &udp), None);
        let tcp = port("http", 80, IntOrString::String("http".into()));
        assert_eq!(
            find_port(&pod("a", "10.0.0.1", true, 8080), &tcp),
            Some(8080)
        );
    }
}
