//! One node as plugins see it during a cycle.

use capstan_api::ext::MetaExt;
use std::collections::HashMap;
use std::sync::Arc;

use capstan_api::k8s_openapi::api::core::v1::{Node, Pod};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::resources::Resources;

/// A host port a pod uses: (hostIP, protocol, port). An empty hostIP is `0.0.0.0`.
pub type HostPort = (String, String, i32);

/// A pod on a node, with its requests computed once.
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// The pod.
    pub pod: Arc<Pod>,
    /// Its effective requests.
    pub requests: Resources,
    /// Its requests with the scoring defaults for unset CPU and memory.
    pub non_zero_requests: Resources,
    /// Whether it has any pod affinity or anti-affinity term, required or preferred.
    pub has_affinity: bool,
    /// Whether it has a required pod anti-affinity term.
    pub has_required_anti_affinity: bool,
    /// The uid of its controlling owner, unless it is terminating: what
    /// [`NodeInfo::pods_controlled_by`] counts.
    pub live_controller_uid: Option<String>,
}

impl PodInfo {
    /// Computes `pod`'s requests.
    pub fn new(pod: Arc<Pod>) -> Self {
        let requests = Resources::pod_requests(&pod, false);
        let non_zero_requests = Resources::pod_requests(&pod, true);
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let pod_affinity = affinity.and_then(|a| a.pod_affinity.as_ref());
        let anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let has_required_anti_affinity = anti
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|t| !t.is_empty());
        let has_affinity = has_required_anti_affinity
            || pod_affinity.is_some_and(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
                    .is_some_and(|t| !t.is_empty())
                    || a.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                        .is_some_and(|t| !t.is_empty())
            })
            || anti.is_some_and(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
                    .is_some_and(|t| !t.is_empty())
            });
        let live_controller_uid = controller_of(&pod)
            .filter(|_| pod.metadata.deletion_timestamp.is_none())
            .map(|r| r.uid.clone());
        PodInfo {
            pod,
            requests,
            non_zero_requests,
            has_affinity,
            has_required_anti_affinity,
            live_controller_uid,
        }
    }
}

/// The owner reference of `pod` with `controller: true`.
pub(crate) fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// `namespace/name` of a pod.
pub fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace_str(), pod.name_str())
}

/// A node and the pods on it (bound or assumed), as Filter and Score read it.
///
/// Snapshots share `NodeInfo`s through `Arc`: a change copies only the node it touches
/// (`Arc::make_mut`) and bumps its `generation`.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    node: Option<Arc<Node>>,
    pods: Vec<PodInfo>,
    requested: Resources,
    non_zero_requested: Resources,
    allocatable: Resources,
    used_ports: Vec<HostPort>,
    image_sizes: HashMap<String, i64>,
    pods_with_affinity: usize,
    pods_with_required_anti_affinity: usize,
    /// Pods that are not terminating, per controlling owner's uid.
    controlled: HashMap<String, usize>,
    // Read per node by the first filters: kept here, next to the rest, rather than behind
    // the Node's pointers.
    unschedulable: bool,
    has_taints: bool,
    generation: u64,
}

impl NodeInfo {
    /// A `NodeInfo` for `node`, without pods.
    pub fn new(node: Arc<Node>) -> Self {
        let mut info = NodeInfo::default();
        info.set_node(node);
        info
    }

    /// The Node object; `None` while only pods naming it are known.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_deref()
    }

    /// The node's name (empty when the Node is not known).
    pub fn name(&self) -> &str {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.name.as_deref())
            .unwrap_or("")
    }

    /// The pods on the node, bound or assumed.
    pub fn pods(&self) -> &[PodInfo] {
        &self.pods
    }

    /// How many pods on the node, not terminating, the owner with `uid` controls: a map
    /// lookup, not a scan of the pods.
    pub fn pods_controlled_by(&self, uid: &str) -> usize {
        self.controlled.get(uid).copied().unwrap_or(0)
    }

    /// The sum of the pods' requests.
    pub fn requested(&self) -> &Resources {
        &self.requested
    }

    /// The sum of the pods' requests, with scoring defaults for unset CPU and memory.
    pub fn non_zero_requested(&self) -> &Resources {
        &self.non_zero_requested
    }

    /// `status.allocatable`.
    pub fn allocatable(&self) -> &Resources {
        &self.allocatable
    }

    /// The host ports the pods use.
    pub fn used_ports(&self) -> &[HostPort] {
        &self.used_ports
    }

    /// Image sizes by every name of each image present on the node (`status.images`).
    pub fn image_sizes(&self) -> &HashMap<String, i64> {
        &self.image_sizes
    }

    /// The Node's `spec.unschedulable`.
    pub fn unschedulable(&self) -> bool {
        self.unschedulable
    }

    /// Whether the Node has any taint.
    pub fn has_taints(&self) -> bool {
        self.has_taints
    }

    /// How many of its pods have pod affinity or anti-affinity terms.
    pub fn pods_with_affinity(&self) -> usize {
        self.pods_with_affinity
    }

    /// How many of its pods have required pod anti-affinity terms.
    pub fn pods_with_required_anti_affinity(&self) -> usize {
        self.pods_with_required_anti_affinity
    }

    /// Moves on at every change of this node or its pods.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Replaces the Node object (allocatable and images are read again).
    pub fn set_node(&mut self, node: Arc<Node>) {
        let status = node.status.as_ref();
        self.allocatable = status
            .and_then(|s| s.allocatable.as_ref())
            .map(Resources::from_list)
            .unwrap_or_default();
        self.image_sizes.clear();
        for image in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for name in image.names.iter().flatten() {
                self.image_sizes
                    .insert(name.clone(), image.size_bytes.unwrap_or(0));
            }
        }
        let spec = node.spec.as_ref();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.has_taints = spec
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| !t.is_empty());
        self.node = Some(node);
        self.generation += 1;
    }

    /// Forgets the Node object, keeping its pods (they may still be terminating).
    pub fn remove_node(&mut self) {
        self.node = None;
        self.unschedulable = false;
        self.has_taints = false;
        self.allocatable = Resources::default();
        self.image_sizes.clear();
        self.generation += 1;
    }

    /// Adds a pod and its requests and host ports.
    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        let info = PodInfo::new(pod);
        self.requested.add(&info.requests);
        self.non_zero_requested.add(&info.non_zero_requests);
        for port in host_ports(&info.pod) {
            self.used_ports.push(port);
        }
        self.pods_with_affinity += usize::from(info.has_affinity);
        self.pods_with_required_anti_affinity += usize::from(info.has_required_anti_affinity);
        if let Some(uid) = &info.live_controller_uid {
            *self.controlled.entry(uid.clone()).or_default() += 1;
        }
        self.pods.push(info);
        self.generation += 1;
    }

    /// Removes the pod with `key` (`namespace/name`); `false` when it was not here.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let Some(i) = self
            .pods
            .iter()
            .position(|p| p.pod.name_str() == name && p.pod.namespace_str() == namespace)
        else {
            return false;
        };
        let info = self.pods.swap_remove(i);
        if let Some(uid) = &info.live_controller_uid {
            if let Some(count) = self.controlled.get_mut(uid.as_str()) {
                *count -= 1;
                if *count == 0 {
                    self.controlled.remove(uid.as_str());
                }
            }
        }
        self.pods_with_affinity -= usize::from(info.has_affinity);
        self.pods_with_required_anti_affinity -= usize::from(info.has_required_anti_affinity);
        self.requested.sub(&info.requests);
        self.non_zero_requested.sub(&info.non_zero_requests);
        for port in host_ports(&info.pod) {
            if let Some(j) = self.used_ports.iter().position(|p| *p == port) {
                self.used_ports.swap_remove(j);
            }
        }
        self.generation += 1;
        true
    }
}

/// The host ports `pod`'s containers ask for.
pub fn host_ports(pod: &Pod) -> impl Iterator<Item = HostPort> + '_ {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".to_owned());
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
            Some((ip, proto, port))
        })
}
