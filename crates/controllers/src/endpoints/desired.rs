//! The desired Endpoints of a Service: subsets built from its Pods, sorted and truncated as
//! Kubernetes does, and the comparison that skips needless writes.

use super::*;

// ---------------------------------------------------------------------------------------
// Endpoints: the desired state
// ---------------------------------------------------------------------------------------

pub(super) type PortKey = (Option<String>, i32, String, Option<String>);

pub(super) fn port_key(port: &EndpointPort) -> PortKey {
    (
        port.name.clone(),
        port.port,
        port.protocol.clone().unwrap_or_else(|| "TCP".into()),
        port.app_protocol.clone(),
    )
}

/// An address's identity: its IP and the uid of the Pod it points at.
pub(super) type AddressKey = (String, String);

pub(super) fn address_key(address: &EndpointAddress) -> AddressKey {
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

pub(super) fn subset_sort_key(
    subset: &EndpointSubset,
) -> (Vec<PortKey>, Vec<AddressKey>, Vec<AddressKey>) {
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

pub(super) fn compare_subsets(a: &EndpointSubset, b: &EndpointSubset) -> Ordering {
    subset_sort_key(a).cmp(&subset_sort_key(b))
}

/// Truncates `subsets` to [`MAX_ENDPOINTS_CAPACITY`] addresses as Kubernetes'
/// `truncateEndpoints` does; returns whether anything was cut.
pub(super) fn truncate_subsets(subsets: &mut [EndpointSubset]) -> bool {
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
pub(super) fn endpoints_labels(service: &Service) -> BTreeMap<String, String> {
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
pub(super) fn endpoints_equivalent(a: &Endpoints, b: &Endpoints) -> bool {
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
