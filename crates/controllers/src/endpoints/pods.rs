//! Pods and Services: what the Endpoints and EndpointSlice controllers share (which Pods a
//! Service selects, their addresses, ports and hostnames).

use super::*;
use capstan_api::ext::MetaExt;

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
pub(super) fn pod_ips(pod: &Pod) -> Vec<&str> {
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

pub(super) fn is_ipv6(ip: &str) -> bool {
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
    let namespace = pod.namespace_str();
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
    let namespace = service.namespace_str();
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
