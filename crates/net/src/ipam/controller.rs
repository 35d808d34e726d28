//! The node IPAM controller: gives every Node a `spec.podCIDR` (and `spec.podCIDRs`) out of
//! the cluster CIDR, as kube-controller-manager's node-ipam controller does with
//! `--allocate-node-cidrs` (the range allocator).
//!
//! It runs on capstan-controller's runtime ([`Controller`] over Nodes, one
//! [`Reconciler`]), so it plugs into a `ControllerManager` with `.add(...)`:
//!
//! ```no_run
//! use capstan_controllers::manager::ControllerManager;
//! use capstan_net::ipam::controller::{NodeIpamController, COMPONENT};
//! use capstan_net::ipam::ClusterCidr;
//!
//! # async fn run(client: std::sync::Arc<dyn capstan_api::Client>) -> Result<(), Box<dyn std::error::Error>> {
//! let cidrs = ClusterCidr::new("10.244.0.0/16".parse()?, 24)?;
//! ControllerManager::new(client)
//!     .with_builtins()
//!     .add(COMPONENT, move |ctx| {
//!         NodeIpamController::new(ctx.client, ctx.factory, ctx.recorder, &cidrs).run(ctx.shutdown)
//!     })
//!     .run(async { /* e.g. ctrl-c */ })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Contracts
//!
//! - **Restart.** Before its first allocation the controller rebuilds its [`ClusterCidr`]
//!   from every cached Node's claim (`spec.podCIDRs`, else `spec.podCIDR`), oldest Node
//!   first (by `creationTimestamp`, then name), so existing assignments are kept. A claim that cannot be kept (outside the
//!   cluster CIDR, another mask, or already held by an older Node) is never reused for
//!   anyone else while claimed, and is reported on its Node as a `PodCIDRRejected` Warning;
//!   the Node keeps it (Kubernetes makes `podCIDR` immutable) and gets no other.
//! - **Allocation.** A Node without a claim gets the next free subnet, written as a JSON
//!   merge patch of `spec.podCIDR` and `spec.podCIDRs` carrying the Node's
//!   `resourceVersion`. On 409 the Node is read again and the patch retried
//!   ([`CIDR_UPDATE_RETRIES`] tries, as Kubernetes); if the fresh Node has a claim by then,
//!   the claim wins. A subnet stays reserved for its Node (by name and uid) from the moment
//!   it is picked until that Node is deleted, also when the write fails, so an ambiguous
//!   failure (a timeout after the write landed) can never hand it to a second Node.
//! - **Exhaustion.** With no free subnet the Node gets none and a `CIDRNotAvailable` Event
//!   (`Node <name> status is now: CIDRNotAvailable`, type Normal, as Kubernetes records
//!   it). It is tried again when a Node is deleted.
//! - **Release.** When a Node is gone from the informer cache (that name with that uid), its
//!   subnet is freed, or handed at once to the oldest Node that claims it too, and Nodes
//!   still waiting for a subnet are reconciled again.
//! - **Errors.** A failed write records `CIDRAssignmentFailed` on the Node and is retried
//!   with the runtime's per-key backoff ([`NodeIpamError`]).
//!
//! One cluster CIDR (one address family) per controller; dual-stack clusters are not
//! handled.

use capstan_api::ext::MetaExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::core::v1::Node;
use capstan_api::kube_core::params::{Patch, PatchParams};
use capstan_api::{Api, Client};
use capstan_controller::events::EventRecorder;
use capstan_controller::runtime::{
    Action, Context, Controller, ControllerError, ControllerMetrics, ManagedController, Reconciler,
};
use capstan_watch::{Cache, InformerFactory, ObjectKey};
use ipnet::IpNet;
use parking_lot::Mutex;
use serde_json::json;

use super::{ClusterCidr, IpamError};

/// The controller's name, and the component its Events report (`source.component`).
pub const COMPONENT: &str = "node-ipam-controller";

/// How many times a podCIDR write is tried when it meets 409 Conflict (Kubernetes'
/// `cidrUpdateRetries`).
pub const CIDR_UPDATE_RETRIES: u32 = 3;

/// The reasons of the Events the controller records.
pub mod reasons {
    /// No subnet is free for a Node (Normal, as Kubernetes records it).
    pub const CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";
    /// Writing a Node's podCIDR failed (Warning).
    pub const CIDR_ASSIGNMENT_FAILED: &str = "CIDRAssignmentFailed";
    /// A Node's existing podCIDR cannot be kept: outside the cluster CIDR, another mask, or
    /// held by another Node (Warning).
    pub const POD_CIDR_REJECTED: &str = "PodCIDRRejected";
}

/// Why one reconcile of a Node failed; the runtime retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum NodeIpamError {
    /// Reading or patching the Node failed; retryable as the API error says.
    #[error("writing the podCIDR of node {node}: {source}")]
    Api {
        /// The Node.
        node: String,
        /// The API's answer.
        #[source]
        source: capstan_api::Error,
    },
    /// Every try met 409 Conflict: the Node changes faster than the controller writes.
    #[error("node {node} changed under each of {tries} podCIDR writes")]
    TooManyConflicts {
        /// The Node.
        node: String,
        /// How many writes were tried.
        tries: u32,
    },
}

/// What a Node claims as its pod CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodCidrClaim {
    /// No `spec.podCIDR(s)`: the Node waits for one.
    None,
    /// The claim of the cluster CIDR's address family.
    Cidr(IpNet),
    /// A claim that does not parse, or none of the cluster's family: it cannot be kept.
    Unusable(String),
}

/// Reads a Node's claim: the first `spec.podCIDRs` entry of `family_v4`'s family (IPv4 when
/// true), else `spec.podCIDR`.
pub fn pod_cidr_claim(node: &Node, family_v4: bool) -> PodCidrClaim {
    let spec = node.spec.as_ref();
    let listed: Vec<&String> = spec
        .and_then(|s| s.pod_cidrs.as_ref())
        .map(|all| all.iter().collect())
        .unwrap_or_default();
    let single = spec.and_then(|s| s.pod_cidr.as_ref());
    let all: Vec<&String> = if listed.is_empty() {
        single.into_iter().collect()
    } else {
        listed
    };
    let all: Vec<&String> = all.into_iter().filter(|s| !s.is_empty()).collect();
    if all.is_empty() {
        return PodCidrClaim::None;
    }
    for text in &all {
        match text.parse::<IpNet>() {
            Ok(cidr) if matches!(cidr, IpNet::V4(_)) == family_v4 => {
                return PodCidrClaim::Cidr(cidr)
            }
            Ok(_) => {}
            Err(_) => return PodCidrClaim::Unusable((*text).clone()),
        }
    }
    PodCidrClaim::Unusable(all.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","))
}

fn name_of(node: &Node) -> &str {
    node.name_str()
}

fn uid_of(node: &Node) -> &str {
    node.metadata.uid.as_deref().unwrap_or_default()
}

/// The allocator with who holds each subnet (node name and uid), shared by the reconciler
/// and the Node feed. Pure; every method is quick.
#[derive(Debug)]
struct Allocations {
    cidrs: ClusterCidr,
    /// The uid of the Node incarnation each name's subnet is reserved for.
    holders: HashMap<String, String>,
    restored: bool,
    /// The rejection last reported per Node name (uid and message), so a Node's heartbeats
    /// do not repeat the Event.
    reported: HashMap<String, (String, String)>,
}

impl Allocations {
    fn new(cidrs: &ClusterCidr) -> Self {
        Allocations {
            cidrs: ClusterCidr::new(cidrs.cluster(), cidrs.node_prefix())
                .expect("the configuration was valid"),
            holders: HashMap::new(),
            restored: false,
            reported: HashMap::new(),
        }
    }

    fn is_v4(&self) -> bool {
        matches!(self.cidrs.cluster(), IpNet::V4(_))
    }

    /// Occupies every claim of `nodes`, oldest first, once.
    fn restore(&mut self, nodes: &[Arc<Node>]) {
        if self.restored {
            return;
        }
        self.restored = true;
        let mut nodes: Vec<&Arc<Node>> = nodes.iter().collect();
        nodes.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, name_of(a))
                .cmp(&(&b.metadata.creation_timestamp, name_of(b)))
        });
        let v4 = self.is_v4();
        for node in nodes {
            if let PodCidrClaim::Cidr(cidr) = pod_cidr_claim(node, v4) {
                // Rejections are reported by each Node's own reconcile.
                let _ = self.claim(name_of(node), uid_of(node), cidr);
            }
        }
    }

    /// Records that the Node (`name`, `uid`) holds `cidr`, its claim. A different subnet
    /// reserved for the name is released first: the Node's claim is authoritative.
    fn claim(&mut self, name: &str, uid: &str, cidr: IpNet) -> Result<(), IpamError> {
        if self.cidrs.get(name).is_some_and(|held| held != cidr) {
            self.cidrs.release(name);
            self.holders.remove(name);
        }
        self.cidrs.occupy(name, cidr)?;
        self.holders.insert(name.to_owned(), uid.to_owned());
        Ok(())
    }

    /// The subnet reserved for the Node, picking one if it has none. A subnet reserved for an
    /// earlier Node of the same name passes to this one (that Node is gone).
    fn reserve(&mut self, name: &str, uid: &str) -> Result<IpNet, IpamError> {
        let cidr = self.cidrs.allocate(name)?;
        self.holders.insert(name.to_owned(), uid.to_owned());
        Ok(cidr)
    }

    /// Frees the subnet of the Node (`name`, `uid`), if that incarnation holds one.
    fn release(&mut self, name: &str, uid: &str) -> Option<IpNet> {
        if self.holders.get(name).map(String::as_str) != Some(uid) {
            return None;
        }
        self.holders.remove(name);
        self.cidrs.release(name)
    }
}

/// Gives each Node a podCIDR; see the [module docs](self).
pub struct NodeIpamReconciler {
    client: Arc<dyn Client>,
    nodes: Cache<Node>,
    recorder: EventRecorder,
    allocations: Arc<Mutex<Allocations>>,
}

impl std::fmt::Debug for NodeIpamReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIpamReconciler")
            .field("allocations", &self.allocations.lock().cidrs)
            .finish_non_exhaustive()
    }
}

impl NodeIpamReconciler {
    fn keep_claim(&self, node: &Node, claim: PodCidrClaim) -> Action {
        let name = name_of(node);
        let mut allocations = self.allocations.lock();
        let rejected = match claim {
            PodCidrClaim::Cidr(cidr) => match allocations.claim(name, uid_of(node), cidr) {
                Ok(()) => {
                    allocations.reported.remove(name);
                    return Action::await_change();
                }
                Err(error) => error.to_string(),
            },
            PodCidrClaim::Unusable(text) => {
                format!("{text} of node {name} is not a pod CIDR of this cluster's family")
            }
            PodCidrClaim::None => return Action::await_change(),
        };
        let report = (uid_of(node).to_owned(), rejected.clone());
        if allocations.reported.get(name) == Some(&report) {
            return Action::await_change();
        }
        allocations.reported.insert(name.to_owned(), report);
        drop(allocations);
        tracing::warn!(node = name, error = %rejected, "pod CIDR rejected");
        self.recorder.warning(
            node,
            reasons::POD_CIDR_REJECTED,
            format!("Node {name} keeps a pod CIDR that is not reserved for it: {rejected}"),
        );
        Action::await_change()
    }

    async fn assign(&self, node: Arc<Node>) -> Result<Action, NodeIpamError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = name_of(&node).to_owned();
        let v4 = self.allocations.lock().is_v4();
        let mut current = node;
        for _ in 0..CIDR_UPDATE_RETRIES {
            let uid = uid_of(&current).to_owned();
            let reserved = self.allocations.lock().reserve(&name, &uid);
            let cidr = match reserved {
                Ok(cidr) => cidr,
                Err(error) => {
                    tracing::info!(node = %name, %error, "no pod CIDR available");
                    self.recorder.normal(
                        &*current,
                        reasons::CIDR_NOT_AVAILABLE,
                        format!("Node {name} status is now: {}", reasons::CIDR_NOT_AVAILABLE),
                    );
                    return Ok(Action::await_change());
                }
            };
            let patch = json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]},
            });
            let error = match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(node = %name, %cidr, "pod CIDR assigned");
                    return Ok(Action::await_change());
                }
                Err(error) => error,
            };
            if error.is_not_found() {
                self.allocations.lock().release(&name, &uid);
                return Ok(Action::await_change());
            }
            if !error.is_conflict() {
                return Err(self.failed(&current, error));
            }
            let fresh = match api.get_opt(&name).await {
                Ok(Some(fresh)) => fresh,
                Ok(None) => {
                    self.allocations.lock().release(&name, &uid);
                    return Ok(Action::await_change());
                }
                Err(error) => return Err(self.failed(&current, error)),
            };
            match pod_cidr_claim(&fresh, v4) {
                PodCidrClaim::None => current = Arc::new(fresh),
                claim => return Ok(self.keep_claim(&fresh, claim)),
            }
        }
        self.recorder.warning(
            &*current,
            reasons::CIDR_ASSIGNMENT_FAILED,
            format!("Node {name}: it changed under each of {CIDR_UPDATE_RETRIES} podCIDR writes"),
        );
        Err(NodeIpamError::TooManyConflicts {
            node: name,
            tries: CIDR_UPDATE_RETRIES,
        })
    }

    fn failed(&self, node: &Node, error: capstan_api::Error) -> NodeIpamError {
        let name = name_of(node).to_owned();
        self.recorder.warning(
            node,
            reasons::CIDR_ASSIGNMENT_FAILED,
            format!("Node {name}: {error}"),
        );
        NodeIpamError::Api {
            node: name,
            source: error,
        }
    }
}

#[async_trait]
impl Reconciler<Node> for NodeIpamReconciler {
    type Error = NodeIpamError;

    async fn reconcile(&self, node: Arc<Node>, _ctx: &Context) -> Result<Action, NodeIpamError> {
        let claim = {
            let mut allocations = self.allocations.lock();
            if !allocations.restored {
                allocations.restore(&self.nodes.list());
            }
            pod_cidr_claim(&node, allocations.is_v4())
        };
        match claim {
            PodCidrClaim::None => self.assign(node).await,
            claim => Ok(self.keep_claim(&node, claim)),
        }
    }
}

/// The node IPAM controller: a [`ManagedController`] for Nodes, run with a
/// [`NodeIpamReconciler`], plus the allocations it keeps. See the [module docs](self).
#[derive(Debug)]
pub struct NodeIpamController {
    managed: ManagedController<Node, NodeIpamReconciler>,
}

impl NodeIpamController {
    /// A controller writing through `client`, with the Node informer of `factory` and
    /// Events from `recorder` (whose component is usually [`COMPONENT`]), cutting subnets
    /// as `cidrs` is configured (its cluster CIDR and node mask; what it has allocated is
    /// ignored: the controller rebuilds that from the Nodes).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the factory starts the informer at once.
    pub fn new(
        client: Arc<dyn Client>,
        factory: Arc<InformerFactory>,
        recorder: EventRecorder,
        cidrs: &ClusterCidr,
    ) -> Self {
        let informer = factory.informer::<Node>();
        let controller = Controller::<Node>::new(factory).named(COMPONENT);
        let nodes = controller.cache().clone();
        let allocations = Arc::new(Mutex::new(Allocations::new(cidrs)));
        let feed = (nodes.clone(), allocations.clone());
        let controller = controller.watches_informer(informer, move |node: &Node| {
            released_node_keys(&feed.0, &feed.1, node)
        });
        let reconciler = NodeIpamReconciler {
            client,
            nodes,
            recorder,
            allocations,
        };
        NodeIpamController {
            managed: ManagedController::new(controller, reconciler),
        }
    }

    /// The underlying runtime controller's metrics.
    pub fn metrics(&self) -> Arc<ControllerMetrics> {
        self.managed.metrics()
    }

    /// Every Node name with its reserved subnet, in address order (a snapshot).
    pub fn allocations(&self) -> Vec<(String, IpNet)> {
        allocations_of(&self.managed.reconciler().allocations)
    }

    /// Runs until `shutdown` completes; reconciles in flight then finish and it returns
    /// `Ok(())`.
    ///
    /// # Errors
    ///
    /// As [`Controller::run`].
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControllerError> {
        self.managed.run(shutdown).await
    }
}

fn allocations_of(allocations: &Mutex<Allocations>) -> Vec<(String, IpNet)> {
    allocations
        .lock()
        .cidrs
        .allocations()
        .map(|(node, cidr)| (node.to_owned(), cidr))
        .collect()
}

/// Runs on the Node feed for every state of every change. When `node` (that uid) is no
/// longer cached it is gone: its subnet is freed, and the Nodes that may now get a subnet
/// (no claim yet) or keep theirs (claiming the freed one) are returned to be reconciled.
fn released_node_keys(
    nodes: &Cache<Node>,
    allocations: &Mutex<Allocations>,
    node: &Node,
) -> Vec<ObjectKey> {
    let live = nodes.get(&ObjectKey::of(node));
    let mut allocations = allocations.lock();
    let Some(freed) = release_if_gone(&mut allocations, node, live.as_deref()) else {
        return Vec::new();
    };
    let all = nodes.list();
    hand_over(&mut allocations, &all, freed);
    nodes_to_wake(&all, freed, allocations.is_v4())
}

/// Gives a freed subnet at once to the oldest live Node claiming it, if any, so no
/// allocation can pick it in between.
fn hand_over(allocations: &mut Allocations, nodes: &[Arc<Node>], freed: IpNet) {
    let v4 = allocations.is_v4();
    let mut claimants: Vec<&Arc<Node>> = nodes
        .iter()
        .filter(|n| pod_cidr_claim(n, v4) == PodCidrClaim::Cidr(freed))
        .collect();
    claimants.sort_by(|a, b| {
        (&a.metadata.creation_timestamp, name_of(a))
            .cmp(&(&b.metadata.creation_timestamp, name_of(b)))
    });
    for claimant in claimants {
        if allocations
            .claim(name_of(claimant), uid_of(claimant), freed)
            .is_ok()
        {
            tracing::info!(node = name_of(claimant), cidr = %freed, "pod CIDR handed over");
            return;
        }
    }
}

/// Frees `node`'s subnet when `live` (the cached Node of that name) is not that incarnation.
fn release_if_gone(
    allocations: &mut Allocations,
    node: &Node,
    live: Option<&Node>,
) -> Option<IpNet> {
    if live.is_some_and(|live| live.metadata.uid == node.metadata.uid) {
        return None;
    }
    if allocations
        .reported
        .get(name_of(node))
        .is_some_and(|(uid, _)| uid == uid_of(node))
    {
        allocations.reported.remove(name_of(node));
    }
    let freed = allocations.release(name_of(node), uid_of(node))?;
    tracing::info!(node = name_of(node), cidr = %freed, "pod CIDR released");
    Some(freed)
}

/// The Nodes a freed subnet may help: those without a claim, and those claiming it.
fn nodes_to_wake(nodes: &[Arc<Node>], freed: IpNet, v4: bool) -> Vec<ObjectKey> {
    nodes
        .iter()
        .filter(|other| match pod_cidr_claim(other, v4) {
            PodCidrClaim::None => true,
            PodCidrClaim::Cidr(cidr) => cidr == freed,
            PodCidrClaim::Unusable(_) => false,
        })
        .map(|other| ObjectKey::of(other.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::k8s_openapi::api::core::v1::NodeSpec;
    use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use capstan_api::k8s_openapi::jiff::Timestamp;
    use capstan_api::kube_core::ObjectMeta;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn node(name: &str, age: i64, pod_cidrs: &[&str]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(Timestamp::from_second(1_000_000 - age).unwrap())),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: pod_cidrs.first().map(|s| s.to_string()),
                pod_cidrs: (!pod_cidrs.is_empty())
                    .then(|| pod_cidrs.iter().map(|s| s.to_string()).collect()),
                ..NodeSpec::default()
            }),
            status: None,
        })
    }

    fn allocations() -> Allocations {
        Allocations::new(&ClusterCidr::new(net("10.244.0.0/16"), 24).unwrap())
    }

    #[test]
    fn a_claim_of_the_clusters_family_is_read_from_pod_cidrs_first() {
        let dual = node("a", 0, &["fd00::/64", "10.244.3.0/24"]);
        assert_eq!(
            pod_cidr_claim(&dual, true),
            PodCidrClaim::Cidr(net("10.244.3.0/24"))
        );
        assert_eq!(
            pod_cidr_claim(&dual, false),
            PodCidrClaim::Cidr(net("fd00::/64"))
        );
        assert_eq!(pod_cidr_claim(&node("b", 0, &[]), true), PodCidrClaim::None);
        assert!(matches!(
            pod_cidr_claim(&node("c", 0, &["fd00::/64"]), true),
            PodCidrClaim::Unusable(_)
        ));
        assert_eq!(
            pod_cidr_claim(&node("d", 0, &["not-a-cidr"]), true),
            PodCidrClaim::Unusable("not-a-cidr".into())
        );
    }

    #[test]
    fn a_restore_lets_the_oldest_node_keep_a_contested_cidr() {
        let mut all = allocations();
        let young = node("a-young", 1, &["10.244.5.0/24"]);
        let old = node("z-old", 100, &["10.244.5.0/24"]);
        all.restore(&[young.clone(), old, node("waiting", 5, &[])]);
        assert_eq!(all.cidrs.get("z-old"), Some(net("10.244.5.0/24")));
        assert_eq!(all.cidrs.get("a-young"), None);
        let err = all
            .claim("a-young", "uid-a-young", net("10.244.5.0/24"))
            .unwrap_err();
        assert!(err.to_string().contains("node z-old holds it"), "{err}");
        // Restoring again does nothing.
        all.restore(&[young]);
        assert_eq!(all.cidrs.allocations().count(), 1);
    }

    #[test]
    fn a_subnet_is_released_only_for_the_incarnation_that_holds_it() {
        let mut all = allocations();
        let first = all.reserve("n", "uid-1").unwrap();
        // The node was re-created: the new one takes the reservation over.
        assert_eq!(all.reserve("n", "uid-2").unwrap(), first);
        assert_eq!(all.release("n", "uid-1"), None);
        assert_eq!(all.cidrs.get("n"), Some(first));
        assert_eq!(all.release("n", "uid-2"), Some(first));
        assert_eq!(all.release("n", "uid-2"), None);
    }

    #[test]
    fn a_nodes_own_claim_replaces_what_was_reserved_for_it() {
        let mut all = allocations();
        let reserved = all.reserve("n", "uid-n").unwrap();
        all.claim("n", "uid-n", net("10.244.9.0/24")).unwrap();
        assert_eq!(all.cidrs.get("n"), Some(net("10.244.9.0/24")));
        // The reservation went back to the pool.
        assert_eq!(all.reserve("m", "uid-m").unwrap(), net("10.244.1.0/24"));
        assert_ne!(reserved, net("10.244.9.0/24"));
    }

    #[test]
    fn a_gone_node_frees_its_subnet_and_wakes_the_nodes_waiting_or_claiming_it() {
        let mut all = allocations();
        let gone = node("gone", 0, &["10.244.0.0/24"]);
        all.claim("gone", "uid-gone", net("10.244.0.0/24")).unwrap();
        // Still cached: nothing happens.
        assert_eq!(release_if_gone(&mut all, &gone, Some(&gone)), None);
        let others = [
            node("waiting", 0, &[]),
            node("rival", 0, &["10.244.0.0/24"]),
            node("settled", 0, &["10.244.1.0/24"]),
        ];
        let freed = release_if_gone(&mut all, &gone, None).unwrap();
        assert_eq!(freed, net("10.244.0.0/24"));
        assert_eq!(all.cidrs.get("gone"), None);
        assert_eq!(
            nodes_to_wake(&others, freed, true),
            [ObjectKey::cluster("waiting"), ObjectKey::cluster("rival")]
        );
        // A second sighting frees nothing more.
        assert_eq!(release_if_gone(&mut all, &gone, None), None);
        // The claimant gets it before anyone can allocate it.
        hand_over(&mut all, &others, freed);
        assert_eq!(all.cidrs.get("rival"), Some(freed));
        assert_ne!(all.reserve("new", "uid-new").unwrap(), freed);
    }

    #[test]
    fn a_node_recreated_under_the_same_name_keeps_the_new_reservation() {
        let mut all = allocations();
        let old = node("n", 0, &[]);
        all.reserve("n", "uid-n").unwrap();
        let mut recreated = (*old).clone();
        recreated.metadata.uid = Some("uid-new".into());
        let cidr = all.reserve("n", "uid-new").unwrap();
        // The old incarnation's deletion is seen late: the new one keeps its subnet.
        assert_eq!(release_if_gone(&mut all, &old, Some(&recreated)), None);
        assert_eq!(all.cidrs.get("n"), Some(cidr));
    }
}
