//! The kubelet's configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{KubeletError, Result};
use crate::server::ServerAuth;

/// How long a node Lease is valid (`nodeLeaseDurationSeconds`).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(40);
/// How often the Lease is renewed and the node's conditions are checked.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// How often the Node's status is written even when nothing changed
/// (`nodeStatusReportFrequency`).
pub const DEFAULT_STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(300);
/// How often a pod worker looks at its containers when nothing else wakes it (the period of
/// Kubernetes' pod lifecycle event generator).
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(1);
/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// One address of the node (`status.addresses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `Hostname`, ...
    pub kind: String,
    /// The address.
    pub address: String,
}

/// What a [`Kubelet`](crate::Kubelet) is: its node and its timings. Built with
/// [`KubeletConfig::new`] and the builder methods, checked by [`KubeletConfig::validate`].
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The Node's name (also its hostname label and the Lease's name).
    pub node_name: String,
    /// `status.capacity` (quantities as strings: `cpu: "4"`, `memory: "8Gi"`, `pods: "110"`).
    pub capacity: BTreeMap<String, String>,
    /// `status.allocatable`; the capacity when empty.
    pub allocatable: BTreeMap<String, String>,
    /// Labels of the Node, beside the `kubernetes.io/hostname`, `os` and `arch` ones the
    /// kubelet adds.
    pub labels: BTreeMap<String, String>,
    /// `status.addresses`. The first `InternalIP` is the Pods' `hostIP`.
    pub addresses: Vec<NodeAddress>,
    /// The Lease's `leaseDurationSeconds`.
    pub lease_duration: Duration,
    /// How often the Lease is renewed and conditions checked.
    pub heartbeat_interval: Duration,
    /// How often the Node status is written when nothing changed.
    pub status_report_interval: Duration,
    /// How often each pod worker re-reads its containers.
    pub sync_period: Duration,
    /// Where the kubelet's HTTP API ([`server`](crate::server)) listens; port 0 picks a free
    /// port ([`RunningKubelet::server_address`](crate::RunningKubelet::server_address) says
    /// which). `None` (the default) serves nothing.
    pub server_listen: Option<SocketAddr>,
    /// How the API authenticates and authorizes its callers (default: delegated to the API
    /// server through the kubelet's client).
    pub server_auth: ServerAuth,
    /// HTTPS for the API (feature `tls`): the serving certificate and the client CA
    /// ([`KubeletTls`](crate::server::tls::KubeletTls)). `None` (the default) serves plain
    /// HTTP.
    #[cfg(feature = "tls")]
    pub server_tls: Option<crate::server::KubeletTls>,
    /// The kubelet's own directory (`--root-dir`, `/var/lib/kubelet` in Kubernetes): Pods'
    /// volumes are written under `<root_dir>/pods/<uid>/volumes`. `None` (the default) sets
    /// up no volumes: containers start without their `volumeMounts`, which suits fake nodes
    /// in benchmarks.
    pub root_dir: Option<PathBuf>,
}

impl KubeletConfig {
    /// A node named `node_name` with 4 CPUs, 8 GiB and 110 Pods, and the default timings.
    pub fn new(node_name: impl Into<String>) -> Self {
        let capacity: BTreeMap<String, String> = [("cpu", "4"), ("memory", "8Gi"), ("pods", "110")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let node_name = node_name.into();
        KubeletConfig {
            addresses: vec![NodeAddress {
                kind: "Hostname".into(),
                address: node_name.clone(),
            }],
            node_name,
            capacity,
            allocatable: BTreeMap::new(),
            labels: BTreeMap::new(),
            lease_duration: DEFAULT_LEASE_DURATION,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            status_report_interval: DEFAULT_STATUS_REPORT_INTERVAL,
            sync_period: DEFAULT_SYNC_PERIOD,
            server_listen: None,
            server_auth: ServerAuth::default(),
            #[cfg(feature = "tls")]
            server_tls: None,
            root_dir: None,
        }
    }

    /// Sets one capacity quantity (`"cpu"`, `"2"`).
    pub fn capacity(mut self, resource: impl Into<String>, quantity: impl Into<String>) -> Self {
        self.capacity.insert(resource.into(), quantity.into());
        self
    }

    /// Sets one allocatable quantity.
    pub fn allocatable(mut self, resource: impl Into<String>, quantity: impl Into<String>) -> Self {
        self.allocatable.insert(resource.into(), quantity.into());
        self
    }

    /// Adds a Node label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds an `InternalIP` address (the Pods' `hostIP` if it is the first).
    pub fn internal_ip(mut self, address: impl Into<String>) -> Self {
        self.addresses.insert(
            0,
            NodeAddress {
                kind: "InternalIP".into(),
                address: address.into(),
            },
        );
        self
    }

    /// Sets the heartbeat interval.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Sets the Lease duration.
    pub fn lease_duration(mut self, duration: Duration) -> Self {
        self.lease_duration = duration;
        self
    }

    /// Sets the pod workers' sync period.
    pub fn sync_period(mut self, period: Duration) -> Self {
        self.sync_period = period;
        self
    }

    /// Serves the kubelet's HTTP API on `listen` (port 0: a free port).
    pub fn server_listen(mut self, listen: SocketAddr) -> Self {
        self.server_listen = Some(listen);
        self
    }

    /// Sets the kubelet's directory, where Pods' volumes are written.
    pub fn root_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.root_dir = Some(dir.into());
        self
    }

    /// Sets how the HTTP API authenticates and authorizes callers.
    pub fn server_auth(mut self, auth: ServerAuth) -> Self {
        self.server_auth = auth;
        self
    }

    /// Serves the HTTP API over HTTPS with `tls` (feature `tls`; `--tls-cert-file`,
    /// `--client-ca-file`, ...). A self-signed certificate is made for the node's name and
    /// [`addresses`](Self::addresses).
    #[cfg(feature = "tls")]
    pub fn server_tls(mut self, tls: crate::server::KubeletTls) -> Self {
        self.server_tls = Some(tls);
        self
    }

    /// The address Pods report as `hostIP`: the first `InternalIP`.
    pub fn host_ip(&self) -> Option<&str> {
        self.addresses
            .iter()
            .find(|a| a.kind == "InternalIP")
            .map(|a| a.address.as_str())
    }

    /// Checks the configuration: a valid DNS-1123 node name, non-zero timings, a heartbeat
    /// shorter than the Lease. [`KubeletError::InvalidConfig`] names what is wrong.
    pub fn validate(&self) -> Result<()> {
        let name = &self.node_name;
        let valid_name = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
        if !valid_name {
            return Err(KubeletError::InvalidConfig(format!(
                "node name {name:?} is not a lowercase DNS-1123 subdomain"
            )));
        }
        for (what, value) in [
            ("heartbeat interval", self.heartbeat_interval),
            ("lease duration", self.lease_duration),
            ("sync period", self.sync_period),
            ("status report interval", self.status_report_interval),
        ] {
            if value.is_zero() {
                return Err(KubeletError::InvalidConfig(format!(
                    "{what} must not be zero"
                )));
            }
        }
        if self.heartbeat_interval >= self.lease_duration {
            return Err(KubeletError::InvalidConfig(format!(
                "heartbeat interval {:?} must be shorter than the lease duration {:?}",
                self.heartbeat_interval, self.lease_duration
            )));
        }
        if self.lease_duration.as_secs() > i32::MAX as u64 {
            return Err(KubeletError::InvalidConfig(
                "lease duration is too long".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_kubernetes_timings_and_valid() {
        let config = KubeletConfig::new("node-1").internal_ip("10.0.0.1");
        assert_eq!(config.lease_duration, Duration::from_secs(40));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(config.host_ip(), Some("10.0.0.1"));
        config.validate().unwrap();
    }

    #[test]
    fn bad_names_and_timings_are_refused_with_a_reason() {
        for name in ["", "Node", "-a", "a_b"] {
            let error = KubeletConfig::new(name).validate().unwrap_err();
            assert!(error.to_string().contains("node name"), "{error}");
        }
        let error = KubeletConfig::new("n")
            .heartbeat_interval(Duration::from_secs(60))
            .validate()
            .unwrap_err();
        assert!(
            error.to_string().contains("shorter than the lease"),
            "{error}"
        );
        let error = KubeletConfig::new("n")
            .sync_period(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("sync period"), "{error}");
    }
}
