//! The node's registration, Lease heartbeat and conditions.
//!
//! [`NodeAgent::register`] creates the Node (or, when it exists, takes it over: labels merged,
//! status replaced). [`NodeAgent::heartbeat`] renews the Lease in `kube-node-lease` (created
//! owned by the Node) and re-checks the conditions: `Ready` is `False` while the runtime's
//! `version()` or the network's `status()` fails, `NetworkUnavailable` follows the network;
//! the pressure conditions are `False` (the kubelet does not measure resources). The Node
//! status is written when a condition changes, and every `status_report_interval` anyway.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use capstan_api::k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use capstan_api::k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress as ApiNodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeStatus, NodeSystemInfo,
};
use capstan_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use capstan_api::kube_core::params::PostParams;
use capstan_api::{Api, Client};
use capstan_controller::retry::retry_on_error;
use capstan_net::NetworkPlugin;
use capstan_runtime::{Clock, ContainerRuntime};

use crate::config::{KubeletConfig, NODE_LEASE_NAMESPACE};
use crate::error::{KubeletError, Result};
use crate::time::{micro_time, time};

/// The node's health as last checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Health {
    runtime: Result<String, String>,
    network: Result<(), String>,
}

/// Registers the Node and keeps its Lease and conditions current.
pub(crate) struct NodeAgent {
    config: KubeletConfig,
    nodes: Api<Node>,
    leases: Api<Lease>,
    runtime: Arc<dyn ContainerRuntime>,
    network: Arc<dyn NetworkPlugin>,
    clock: Arc<dyn Clock>,
    reported: Option<(Health, SystemTime)>,
    node_uid: Option<String>,
    /// The port of the kubelet's API, reported as `daemonEndpoints.kubeletEndpoint.port`.
    kubelet_port: Option<u16>,
}

impl NodeAgent {
    pub(crate) fn new(
        config: KubeletConfig,
        client: Arc<dyn Client>,
        runtime: Arc<dyn ContainerRuntime>,
        network: Arc<dyn NetworkPlugin>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        NodeAgent {
            config,
            nodes: Api::all(client.clone()),
            leases: Api::namespaced(client, NODE_LEASE_NAMESPACE),
            runtime,
            network,
            clock,
            reported: None,
            node_uid: None,
            kubelet_port: None,
        }
    }

    /// Reports `port` as the kubelet's endpoint in the Node's status (none: left unset).
    pub(crate) fn kubelet_port(mut self, port: Option<u16>) -> Self {
        self.kubelet_port = port;
        self
    }

    async fn health(&self) -> Health {
        Health {
            runtime: self
                .runtime
                .version()
                .await
                .map(|v| format!("{}://{}", v.runtime_name, v.runtime_version))
                .map_err(|e| e.to_string()),
            network: self.network.status().await.map_err(|e| e.to_string()),
        }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.config.labels.clone();
        labels.insert(
            "kubernetes.io/hostname".into(),
            self.config.node_name.clone(),
        );
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), arch().into());
        labels
    }

    fn status(
        &self,
        health: &Health,
        now: SystemTime,
        previous: Option<&NodeStatus>,
    ) -> NodeStatus {
        let quantities = |map: &BTreeMap<String, String>| -> BTreeMap<String, Quantity> {
            map.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect()
        };
        let allocatable = if self.config.allocatable.is_empty() {
            &self.config.capacity
        } else {
            &self.config.allocatable
        };
        let ready = match (&health.runtime, &health.network) {
            (Ok(_), Ok(())) => ("True", "KubeletReady", "kubelet is posting ready status".to_string()),
            (Err(e), _) => ("False", "KubeletNotReady", format!("container runtime is down: {e}")),
            (_, Err(e)) => (
                "False",
                "KubeletNotReady",
                format!("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:{e}"),
            ),
        };
        let network = match &health.network {
            Ok(()) => (
                "False",
                "RouteCreated",
                "network plugin is ready".to_string(),
            ),
            Err(e) => ("True", "NetworkPluginNotReady", e.clone()),
        };
        let wanted = [
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available".to_string(),
            ),
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure".to_string(),
            ),
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available".to_string(),
            ),
            ("NetworkUnavailable", network.0, network.1, network.2),
            ("Ready", ready.0, ready.1, ready.2),
        ];
        let conditions = wanted
            .into_iter()
            .map(|(kind, status, reason, message)| {
                let old = previous
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == kind));
                let transition = match old {
                    Some(old) if old.status == status => old.last_transition_time.clone(),
                    _ => Some(time(now)),
                };
                NodeCondition {
                    type_: kind.into(),
                    status: status.into(),
                    reason: Some(reason.into()),
                    message: Some(message),
                    last_heartbeat_time: Some(time(now)),
                    last_transition_time: transition,
                }
            })
            .collect();
        let runtime_version = health.runtime.clone().unwrap_or_else(|_| {
            previous
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.container_runtime_version.clone())
                .unwrap_or_default()
        });
        NodeStatus {
            capacity: Some(quantities(&self.config.capacity)),
            allocatable: Some(quantities(allocatable)),
            addresses: Some(
                self.config
                    .addresses
                    .iter()
                    .map(|a| ApiNodeAddress {
                        type_: a.kind.clone(),
                        address: a.address.clone(),
                    })
                    .collect(),
            ),
            conditions: Some(conditions),
            node_info: Some(NodeSystemInfo {
                architecture: arch().into(),
                operating_system: "linux".into(),
                container_runtime_version: runtime_version,
                kubelet_version: concat!("v1.33.0-capstan-", env!("CARGO_PKG_VERSION")).into(),
                os_image: "Capstan".into(),
                ..NodeSystemInfo::default()
            }),
            daemon_endpoints: match self.kubelet_port {
                Some(port) => Some(NodeDaemonEndpoints {
                    kubelet_endpoint: Some(DaemonEndpoint {
                        port: i32::from(port),
                    }),
                }),
                None => previous.and_then(|s| s.daemon_endpoints.clone()),
            },
            ..previous.cloned().unwrap_or_default()
        }
    }

    /// Creates the Node, or takes over an existing one. Retried by the caller on failure.
    pub(crate) async fn register(&mut self) -> Result<()> {
        let now = self.clock.now();
        let health = self.health().await;
        let name = self.config.node_name.clone();
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(self.labels()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(self.status(&health, now, None)),
        };
        let registered = match self.nodes.create(&PostParams::default(), &node).await {
            Ok(created) => {
                // Creation may drop the status (it is a subresource): write it.
                let mut created = created;
                created.status = node.status.clone();
                self.nodes
                    .update_status(&PostParams::default(), &created)
                    .await
                    .map_err(|e| KubeletError::api("writing the new Node's status", e))?
            }
            Err(e) if e.is_already_exists() => {
                let mut existing = self
                    .nodes
                    .get(&name)
                    .await
                    .map_err(|e| KubeletError::api("reading the existing Node", e))?;
                let mut labels = existing.metadata.labels.clone().unwrap_or_default();
                labels.extend(self.labels());
                existing.metadata.labels = Some(labels);
                let mut existing = self
                    .nodes
                    .update(&PostParams::default(), &existing)
                    .await
                    .map_err(|e| KubeletError::api("updating the existing Node", e))?;
                existing.status = Some(self.status(&health, now, existing.status.as_ref()));
                self.nodes
                    .update_status(&PostParams::default(), &existing)
                    .await
                    .map_err(|e| KubeletError::api("writing the existing Node's status", e))?
            }
            Err(e) => return Err(KubeletError::api("registering the Node", e)),
        };
        self.node_uid = registered.metadata.uid.clone();
        self.reported = Some((health, now));
        Ok(())
    }

    /// Renews the Lease and, when the conditions changed or the report interval passed,
    /// writes the Node status.
    pub(crate) async fn heartbeat(&mut self) -> Result<()> {
        let now = self.clock.now();
        self.renew_lease(now).await?;
        let health = self.health().await;
        let due = match &self.reported {
            Some((reported, at)) => {
                *reported != health
                    || now.duration_since(*at).unwrap_or_default()
                        >= self.config.status_report_interval
            }
            None => true,
        };
        if due {
            let written = retry_on_error(3, KubeletError::is_conflict, |_| async {
                let mut node = self
                    .nodes
                    .get(&self.config.node_name)
                    .await
                    .map_err(|e| KubeletError::api("reading the Node", e))?;
                node.status = Some(self.status(&health, now, node.status.as_ref()));
                self.nodes
                    .update_status(&PostParams::default(), &node)
                    .await
                    .map_err(|e| KubeletError::api("writing the Node status", e))
            })
            .await;
            match written {
                Ok(_) => self.reported = Some((health, now)),
                // It changed under every write: the next heartbeat writes again.
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn renew_lease(&self, now: SystemTime) -> Result<()> {
        let name = &self.config.node_name;
        let renew = Some(micro_time(now));
        match self
            .leases
            .get_opt(name)
            .await
            .map_err(|e| KubeletError::api("reading the node Lease", e))?
        {
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = renew;
                spec.holder_identity = Some(name.clone());
                spec.lease_duration_seconds = Some(self.config.lease_duration.as_secs() as i32);
                self.leases
                    .update(&PostParams::default(), &lease)
                    .await
                    .map_err(|e| KubeletError::api("renewing the node Lease", e))?;
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(NODE_LEASE_NAMESPACE.into()),
                        owner_references: self.node_uid.as_ref().map(|uid| {
                            vec![OwnerReference {
                                api_version: "v1".into(),
                                kind: "Node".into(),
                                name: name.clone(),
                                uid: uid.clone(),
                                ..OwnerReference::default()
                            }]
                        }),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(name.clone()),
                        lease_duration_seconds: Some(self.config.lease_duration.as_secs() as i32),
                        renew_time: renew,
                        ..LeaseSpec::default()
                    }),
                };
                self.leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .map_err(|e| KubeletError::api("creating the node Lease", e))?;
            }
        }
        Ok(())
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
