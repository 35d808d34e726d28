//! Pod networking for Capstan: the CNI-shaped [`NetworkPlugin`] SPI.
//!
//! The kubelet calls a [`NetworkPlugin`] once it has a pod sandbox: [`NetworkPlugin::add`]
//! wires the sandbox's network namespace and returns its addresses, [`NetworkPlugin::del`]
//! tears it down. The calls follow CNI's ADD, DEL and CHECK.
//!
//! Backends:
//!
//! - [`fake`] (always built): [`fake::FakeNetwork`], in-process IPAM over one pod CIDR with
//!   no OS access and an optional state file; cheap enough for thousands of fake nodes.
//! - [`cni`] (always built): [`cni::CniNetwork`] runs real CNI plugin binaries by the CNI
//!   spec (1.0.0, and 0.3.x/0.4.0 results) from a `.conflist` or `.conf`, caches ADD results
//!   for DEL and CHECK, and undoes a failed ADD. Its tests against Debian's
//!   `containernetworking-plugins` in network namespaces are behind the internal `test-cni` feature.
//!
//! Around the SPI, [`ipam::ClusterCidr`] hands each node its pod CIDR out of the cluster
//! CIDR, and [`routes`] computes and installs host-gw routes (each other node's pod CIDR via
//! that node's address) with `ip route`. [`netns`] binds listeners and opens connections
//! inside another network namespace, for components that serve or reach a node's addresses
//! from the host's.
//!
//! Two cluster-level pieces talk to the API server (through `capstan_api::Client` and
//! capstan-watch's informers only):
//!
//! - [`ipam::controller::NodeIpamController`]: kube-controller-manager's node IPAM
//!   controller on capstan-controller's runtime. It writes each Node's `spec.podCIDR(s)` from
//!   a [`ipam::ClusterCidr`], keeps existing assignments across restarts, frees a subnet
//!   when its Node is deleted and records `CIDRNotAvailable` when the range is exhausted.
//!   Add it to a `ControllerManager` with `.add(...)`.
//! - `dns` (feature `dns`, on by default): cluster DNS. `dns::ClusterDns` answers `A`, `AAAA` and `SRV` records of
//!   `<service>.<namespace>.svc.<domain>` from Service and EndpointSlice informers
//!   (ClusterIPs, or a headless Service's ready endpoints), `NXDOMAIN` for other names of
//!   the cluster domain and `REFUSED` outside it (no upstream forwarding);
//!   `dns::hickory::DnsServer` serves it over UDP and TCP with `hickory-server`. Its test
//!   with Debian's `dig` inside a network namespace is behind the internal `test-dns` feature.
//!
//! # Contract
//!
//! - **Who calls it.** One kubelet per node plugin. Calls for different sandboxes may run
//!   concurrently; the kubelet never runs two calls for the same sandbox at once.
//! - **Identity.** An attachment is named by [`Attachment::container_id`] (the sandbox id)
//!   and [`Attachment::ifname`], as CNI names it.
//! - **Idempotency.** `del` is idempotent: deleting an attachment that does not exist, or
//!   whose namespace is gone, succeeds and frees what is left. `add` is not: adding the same
//!   attachment twice is [`NetError::AlreadyExists`] or a plugin error.
//! - **Atomicity.** An `add` that fails leaves nothing half-made: what it created (addresses,
//!   interfaces) is released before the error returns.
//! - **Errors.** [`NetError`]; [`NetError::is_retryable`] says whether a retry can help.
//!
//! # Service proxy
//!
//! [`proxy`] is kube-proxy's part: it watches Services and EndpointSlices and programs the
//! node's dataplane (iptables, nftables or IPVS) through a [`proxy::ProxyBackend`].
//!
//! **Architecture Invariant:** this crate's SPI knows nothing of Pods or the API server: the
//! kubelet translates a Pod into an [`Attachment`]. Only `ipam::controller` and `dns` speak
//! API objects.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;
pub use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod addr;
mod atomic_write;
pub mod cni;
#[cfg(feature = "dns")]
pub mod dns;
pub mod error;
pub mod fake;
pub mod ipam;
pub mod netns;
pub mod proxy;
pub mod routes;

pub use error::{NetError, Result};

/// One sandbox's network attachment: CNI's runtime configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The sandbox id (`CNI_CONTAINERID`).
    pub container_id: String,
    /// The path of the sandbox's network namespace (`CNI_NETNS`), for example
    /// `/var/run/netns/cni-…`. May be empty on `del` when the namespace is already gone.
    pub netns: PathBuf,
    /// The interface to create inside the namespace (`CNI_IFNAME`), `eth0` by default.
    pub ifname: String,
    /// The pod's namespace, name and uid (passed to plugins as `K8S_POD_*` args).
    pub pod_namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's uid.
    pub pod_uid: String,
    /// Host ports to map to the pod (CNI's `portMappings` capability).
    pub port_mappings: Vec<PortMapping>,
}

impl Attachment {
    /// An attachment of `container_id` in `netns`, on `eth0`.
    pub fn new(container_id: impl Into<String>, netns: impl Into<PathBuf>) -> Self {
        Attachment {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: "eth0".to_owned(),
            ..Default::default()
        }
    }

    /// Names the pod the sandbox belongs to.
    pub fn pod(
        mut self,
        namespace: impl Into<String>,
        name: impl Into<String>,
        uid: impl Into<String>,
    ) -> Self {
        self.pod_namespace = namespace.into();
        self.pod_name = name.into();
        self.pod_uid = uid.into();
        self
    }
}

/// A host port mapped to a container port (CNI's `portMappings` entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the node.
    pub host_port: u16,
    /// The port in the pod.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The node address to listen on; empty for all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// An interface a plugin created (CNI result `interfaces`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The interface's name.
    pub name: String,
    /// Its MAC address, if it has one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The network namespace path it lives in; empty for the host's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// An address assigned to an interface (CNI result `ips`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The address with its prefix length, e.g. `10.244.1.5/24`.
    pub address: IpNet,
    /// The gateway, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into [`AttachResult::interfaces`] of the interface that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route set up inside the namespace (CNI result `routes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination.
    pub dst: IpNet,
    /// The next hop; `None` for the interface's default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings a plugin returned (CNI result `dns`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// What an `add` set up: CNI's result (spec 1.0.0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachResult {
    /// The CNI spec version the result is in.
    #[serde(default)]
    pub cni_version: String,
    /// The interfaces created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// The addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// The routes set up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default)]
    pub dns: Dns,
    /// Fields this crate does not model, kept so chained plugins see them
    /// (`prevResult`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl AttachResult {
    /// The first address of each family, IPv4 first: the pod's `status.podIPs`.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let v4 = self.ips.iter().find(|ip| ip.address.addr().is_ipv4());
        let v6 = self.ips.iter().find(|ip| ip.address.addr().is_ipv6());
        v4.into_iter()
            .chain(v6)
            .map(|ip| ip.address.addr())
            .collect()
    }
}

/// Wires sandboxes' network namespaces into the pod network: CNI's ADD, DEL and CHECK.
///
/// Object-safe: the kubelet holds an `Arc<dyn NetworkPlugin>`. See the [crate docs](crate)
/// for the contract.
#[async_trait]
pub trait NetworkPlugin: Send + Sync + 'static {
    /// The network's name (the conflist's `name`, or the backend's).
    fn name(&self) -> &str;

    /// Sets up the attachment and returns what was set up. On failure nothing is left behind.
    async fn add(&self, attachment: &Attachment) -> Result<AttachResult>;

    /// Tears the attachment down and frees its addresses. Idempotent.
    async fn del(&self, attachment: &Attachment) -> Result<()>;

    /// Checks that the attachment is still as `add` made it; an error says what is wrong.
    async fn check(&self, attachment: &Attachment) -> Result<()>;

    /// Whether the plugin can serve `add` now (config loaded, binaries present). The kubelet
    /// reports the node `NetworkUnavailable` while this fails.
    async fn status(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cni_result_round_trips_with_fields_it_does_not_model() {
        let text = r#"{
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                           {"name": "eth0", "sandbox": "/var/run/netns/p1"}],
            "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1},
                    {"address": "fd00::5/64", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.96.0.10"]},
            "custom": {"kept": true}
        }"#;
        let result: AttachResult = serde_json::from_str(text).unwrap();
        assert_eq!(
            result.pod_ips(),
            vec![
                "10.244.1.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse::<IpAddr>().unwrap()
            ]
        );
        assert_eq!(result.extra["custom"]["kept"], true);
        let again: AttachResult =
            serde_json::from_value(serde_json::to_value(&result).unwrap()).unwrap();
        assert_eq!(again, result);
    }

    #[test]
    fn the_plugin_is_object_safe() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn NetworkPlugin>();
    }
}
