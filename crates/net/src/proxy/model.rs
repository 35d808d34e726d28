//! From Services and their endpoints to the desired [`ProxyState`]: pure functions, no I/O.
//!
//! - Services of type ClusterIP, NodePort and LoadBalancer with a cluster IP are proxied;
//!   headless Services (`clusterIP: None`) and ExternalName Services are not.
//! - NodePort and LoadBalancer Services also get their node ports.
//! - `sessionAffinity: ClientIP` becomes [`SessionAffinity::ClientIp`] with the configured
//!   timeout (10800 s by default).
//! - Endpoints come from EndpointSlices (labelled `kubernetes.io/service-name`) or from
//!   Endpoints; only ready ones are used (`conditions.ready` unset counts as ready, as the API
//!   defines it; Endpoints' `notReadyAddresses` are left out). A Service port's endpoints are
//!   those whose port has the same name and protocol, of the cluster IP's address family.
//! - A port the dataplane cannot express (port outside 1–65535, unknown protocol) is left
//!   out with a warning rather than failing the whole state.

use capstan_api::compat::MaybeList;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use capstan_api::k8s_openapi::api::core::v1::{Endpoints, Service};
use capstan_api::k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Protocol, ProxyState, ServicePortName, ServicePortState, SessionAffinity};

/// The label naming an EndpointSlice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The ClientIP affinity timeout when a Service sets none (Kubernetes' default: 3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

/// A Service's ready endpoints, per port name and protocol.
pub type ServiceEndpoints = BTreeMap<(String, Protocol), Vec<SocketAddr>>;

/// Ready endpoints of every Service, by namespace and Service name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointMap {
    services: BTreeMap<(String, String), ServiceEndpoints>,
}

impl EndpointMap {
    /// An empty map.
    pub fn new() -> Self {
        EndpointMap::default()
    }

    /// The map built from EndpointSlices (several slices of one Service are merged).
    pub fn from_slices<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Self {
        let mut map = EndpointMap::new();
        for slice in slices {
            map.add_slice(slice);
        }
        map
    }

    /// The map built from Endpoints objects.
    pub fn from_endpoints<'a>(endpoints: impl IntoIterator<Item = &'a Endpoints>) -> Self {
        let mut map = EndpointMap::new();
        for object in endpoints {
            map.add_endpoints(object);
        }
        map
    }

    /// Adds one slice's ready endpoints. Slices without the service-name label, of FQDN
    /// addresses, or without a namespace are ignored.
    pub fn add_slice(&mut self, slice: &EndpointSlice) {
        let Some(namespace) = slice.metadata.namespace.as_deref() else {
            return;
        };
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(LABEL_SERVICE_NAME))
        else {
            return;
        };
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            return;
        }
        let addresses: Vec<IpAddr> = slice
            .endpoints
            .items()
            .iter()
            .filter(|endpoint| {
                endpoint
                    .conditions
                    .as_ref()
                    .and_then(|conditions| conditions.ready)
                    .unwrap_or(true)
            })
            .filter_map(|endpoint| endpoint.addresses.first()?.parse().ok())
            .collect();
        let ports = self
            .services
            .entry((namespace.to_owned(), service.clone()))
            .or_default();
        for port in slice.ports.iter().flatten() {
            let Some(number) = port.port.and_then(valid_port) else {
                continue;
            };
            let Some(protocol) = protocol_of(port.protocol.as_deref()) else {
                continue;
            };
            let name = port.name.clone().unwrap_or_default();
            ports.entry((name, protocol)).or_default().extend(
                addresses
                    .iter()
                    .map(|address| SocketAddr::new(*address, number)),
            );
        }
    }

    /// Adds one Endpoints object's ready addresses (`addresses`, not `notReadyAddresses`).
    pub fn add_endpoints(&mut self, endpoints: &Endpoints) {
        let (Some(namespace), Some(service)) = (
            endpoints.metadata.namespace.as_deref(),
            endpoints.metadata.name.as_deref(),
        ) else {
            return;
        };
        let ports = self
            .services
            .entry((namespace.to_owned(), service.to_owned()))
            .or_default();
        for subset in endpoints.subsets.iter().flatten() {
            let addresses: Vec<IpAddr> = subset
                .addresses
                .iter()
                .flatten()
                .filter_map(|address| address.ip.parse().ok())
                .collect();
            for port in subset.ports.iter().flatten() {
                let Some(number) = valid_port(port.port) else {
                    continue;
                };
                let Some(protocol) = protocol_of(port.protocol.as_deref()) else {
                    continue;
                };
                let name = port.name.clone().unwrap_or_default();
                ports.entry((name, protocol)).or_default().extend(
                    addresses
                        .iter()
                        .map(|address| SocketAddr::new(*address, number)),
                );
            }
        }
    }

    /// The ready endpoints of Service `namespace/name`, if any were added.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceEndpoints> {
        self.services.get(&(namespace.to_owned(), name.to_owned()))
    }
}

/// The desired state of `services` given their endpoints: see the [module docs](self).
pub fn proxy_state<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    endpoints: &EndpointMap,
) -> ProxyState {
    let mut state = ProxyState::new();
    for service in services {
        add_service(&mut state, service, endpoints);
    }
    state
}

fn add_service(state: &mut ProxyState, service: &Service, endpoints: &EndpointMap) {
    let (Some(namespace), Some(name), Some(spec)) = (
        service.metadata.namespace.as_deref(),
        service.metadata.name.as_deref(),
        service.spec.as_ref(),
    ) else {
        return;
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return;
    }
    let Some(cluster_ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
    else {
        // Headless ("None"), not yet allocated, or garbage: nothing to proxy.
        return;
    };
    let with_node_ports = kind == "NodePort" || kind == "LoadBalancer";
    let affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => SessionAffinity::ClientIp {
            timeout_seconds: spec
                .session_affinity_config
                .as_ref()
                .and_then(|config| config.client_ip.as_ref())
                .and_then(|client_ip| client_ip.timeout_seconds)
                .and_then(|seconds| u32::try_from(seconds).ok())
                .filter(|seconds| *seconds > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS),
        },
        _ => SessionAffinity::None,
    };
    let service_endpoints = endpoints.service(namespace, name);
    for port in spec.ports.iter().flatten() {
        let port_name = port.name.clone().unwrap_or_default();
        let (Some(number), Some(protocol)) =
            (valid_port(port.port), protocol_of(port.protocol.as_deref()))
        else {
            tracing::warn!(
                service = %format!("{namespace}/{name}"),
                port = %port_name,
                "service port left out: port or protocol the dataplane cannot express"
            );
            continue;
        };
        let node_port = if with_node_ports {
            port.node_port.and_then(valid_port)
        } else {
            None
        };
        let ready = service_endpoints
            .and_then(|ports| ports.get(&(port_name.clone(), protocol)))
            .map(|addresses| {
                addresses
                    .iter()
                    .filter(|address| address.is_ipv4() == cluster_ip.is_ipv4())
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        state.insert(
            ServicePortName::new(namespace, name, port_name, protocol),
            ServicePortState {
                cluster_ip,
                port: number,
                node_port,
                protocol,
                affinity,
                endpoints: ready,
            },
        );
    }
}

fn valid_port(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|port| *port != 0)
}

fn protocol_of(protocol: Option<&str>) -> Option<Protocol> {
    Protocol::from_kubernetes(protocol.unwrap_or("TCP"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn web() -> Service {
        service(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.10",
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP"}
                ]
            }
        }))
    }

    fn slice(name: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name,
                         "labels": {LABEL_SERVICE_NAME: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": endpoints
        }))
        .unwrap()
    }

    #[test]
    fn ready_endpoints_of_all_slices_land_on_matching_ports() {
        let slices = [
            slice(
                "web-a",
                json!([
                    {"addresses": ["10.244.1.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.244.1.3"], "conditions": {"ready": false}}
                ]),
            ),
            slice("web-b", json!([{"addresses": ["10.244.2.2"]}])),
        ];
        let state = proxy_state([&web()], &EndpointMap::from_slices(&slices));
        let http = &state.services[&ServicePortName::new("default", "web", "http", Protocol::Tcp)];
        assert_eq!(
            http,
            &ServicePortState {
                cluster_ip: "10.96.0.10".parse().unwrap(),
                port: 80,
                node_port: Some(30080),
                protocol: Protocol::Tcp,
                affinity: SessionAffinity::ClientIp {
                    timeout_seconds: 600
                },
                endpoints: vec![
                    "10.244.1.2:8080".parse().unwrap(),
                    "10.244.2.2:8080".parse().unwrap()
                ],
            }
        );
        let dns = &state.services[&ServicePortName::new("default", "web", "dns", Protocol::Udp)];
        assert_eq!(dns.protocol, Protocol::Udp);
        assert_eq!(dns.endpoints.len(), 2);
        assert!(state.validate().is_ok());
    }

    #[test]
    fn endpoints_objects_contribute_only_ready_addresses() {
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "subsets": [{
                "addresses": [{"ip": "10.244.1.2"}],
                "notReadyAddresses": [{"ip": "10.244.1.9"}],
                "ports": [{"name": "http", "port": 8080}]
            }]
        }))
        .unwrap();
        let state = proxy_state([&web()], &EndpointMap::from_endpoints([&endpoints]));
        let http = &state.services[&ServicePortName::new("default", "web", "http", Protocol::Tcp)];
        assert_eq!(http.endpoints, vec!["10.244.1.2:8080".parse().unwrap()]);
    }

    #[test]
    fn headless_and_external_name_services_are_not_proxied() {
        let headless = service(json!({
            "metadata": {"namespace": "default", "name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
        }));
        let external = service(json!({
            "metadata": {"namespace": "default", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 80}]}
        }));
        assert!(proxy_state([&headless, &external], &EndpointMap::new()).is_empty());
    }

    #[test]
    fn a_cluster_ip_service_without_endpoints_has_defaults_and_no_node_port() {
        let plain = service(json!({
            "metadata": {"namespace": "default", "name": "plain"},
            "spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 443, "nodePort": 30443}]}
        }));
        let state = proxy_state([&plain], &EndpointMap::new());
        let port = &state.services[&ServicePortName::new("default", "plain", "", Protocol::Tcp)];
        assert_eq!(port.node_port, None);
        assert_eq!(port.affinity, SessionAffinity::None);
        assert!(port.endpoints.is_empty());
    }

    #[test]
    fn ports_the_dataplane_cannot_express_are_left_out() {
        let odd = service(json!({
            "metadata": {"namespace": "default", "name": "odd"},
            "spec": {"clusterIP": "10.96.0.6", "ports": [
                {"name": "big", "port": 70000},
                {"name": "quic", "port": 443, "protocol": "QUIC"},
                {"name": "ok", "port": 443}
            ]}
        }));
        let state = proxy_state([&odd], &EndpointMap::new());
        assert_eq!(state.len(), 1);
        assert!(state.services.contains_key(&ServicePortName::new(
            "default",
            "odd",
            "ok",
            Protocol::Tcp
        )));
    }
}
