//! The service proxy: makes every Service's virtual IP and node ports reach the Service's
//! ready endpoints on this node, kube-proxy's model.
//!
//! - [`model`] turns Services and their endpoints (EndpointSlices or Endpoints) into the
//!   desired [`ProxyState`]: one [`ServicePortState`] per Service port, with its cluster IP,
//!   port, node port, protocol, session affinity and ready endpoints.
//! - A [`ProxyBackend`] programs a node's dataplane from that state: [`iptables`] (chains in
//!   the `nat` table written with `iptables-restore --noflush`), [`nftables`] (one `nft -f`
//!   transaction into its own table), [`ipvs`] (`ipvsadm --restore`), and [`fake`], which
//!   records what it is told, for tests.
//! - [`Proxier`] watches Services and EndpointSlices through shared informers and keeps a
//!   backend in sync, rate-limited: at most one sync per `min_sync_period` (bursts coalesce)
//!   and a full resync every `sync_period`.
//!
//! # Backend contract
//!
//! - **Who calls it.** One [`Proxier`] per node, one call at a time.
//! - **Full and partial syncs.** [`ProxyBackend::sync`] always receives the whole desired
//!   state. With [`Changes::Full`] the backend rewrites everything it owns and removes what
//!   it owns but the state no longer holds; with [`Changes::Partial`] it only has to rewrite
//!   the named service ports (removing those the state no longer holds), and may trust that
//!   everything else is as its last successful sync left it. The first sync, and the first
//!   after a failed one, is full.
//! - **Atomicity.** A sync is applied as one transaction where the dataplane allows it
//!   (`iptables-restore`, `nft -f`); a state that fails [`ProxyState::validate`] is refused
//!   with [`ProxyError::InvalidState`] before anything is touched.
//! - **Idempotency.** Syncing the same state twice is harmless; [`ProxyBackend::cleanup`]
//!   removes everything the backend owns and succeeds when there is nothing to remove.
//!
//! **Architecture Invariant:** backends know nothing of the API server or Kubernetes objects:
//! the [`Proxier`] translates Services and endpoints into a [`ProxyState`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;

mod command;
pub mod error;
pub mod fake;
pub mod hash;
pub mod iptables;
pub mod ipvs;
pub mod metrics;
pub mod model;
pub mod nftables;
mod proxier;
#[cfg(test)]
mod testing;

pub use error::{ProxyError, Result};
pub use metrics::{ProxierMetrics, ProxyRulesSynced};
pub use proxier::{EndpointsSource, Proxier, ProxierOptions};

/// A transport protocol a Service port uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The lower-case name tools use (`tcp`, `udp`, `sctp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Parses Kubernetes' spelling (`TCP`, `UDP`, `SCTP`); `None` for anything else.
    pub fn from_kubernetes(name: &str) -> Option<Protocol> {
        match name {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one port of one Service: `namespace/name:port` plus its protocol. The key of the
/// [`ProxyState`], and what backends hash into their chain names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name; empty for a Service's single unnamed port.
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl ServicePortName {
    /// The name of `port` of Service `namespace/name`.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        port: impl Into<String>,
        protocol: Protocol,
    ) -> Self {
        ServicePortName {
            namespace: namespace.into(),
            name: name.into(),
            port: port.into(),
            protocol,
        }
    }
}

impl fmt::Display for ServicePortName {
    /// `namespace/name:port` (`namespace/name` for an unnamed port).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Session affinity of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SessionAffinity {
    /// Every connection is balanced on its own.
    #[default]
    None,
    /// Connections from one client IP go to the endpoint it last used, for as long as it
    /// keeps coming back within `timeout_seconds`.
    ClientIp {
        /// How long an idle client keeps its endpoint (Kubernetes' default is 10800).
        timeout_seconds: u32,
    },
}

/// What the dataplane must do for one Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortState {
    /// The Service's virtual IP.
    pub cluster_ip: IpAddr,
    /// The port on the cluster IP.
    pub port: u16,
    /// The port opened on every node address, for NodePort (and LoadBalancer) Services.
    pub node_port: Option<u16>,
    /// The protocol.
    pub protocol: Protocol,
    /// Session affinity.
    pub affinity: SessionAffinity,
    /// The ready endpoints (address and target port), sorted, without duplicates. Empty when
    /// the Service has none: traffic to it then gets no translation.
    pub endpoints: Vec<SocketAddr>,
}

/// The desired dataplane of one node: every Service port, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyState {
    /// The Service ports.
    pub services: BTreeMap<ServicePortName, ServicePortState>,
}

impl ProxyState {
    /// An empty state.
    pub fn new() -> Self {
        ProxyState::default()
    }

    /// Adds (or replaces) a Service port; endpoints are sorted and deduplicated.
    pub fn insert(&mut self, name: ServicePortName, mut port: ServicePortState) {
        port.endpoints.sort();
        port.endpoints.dedup();
        self.services.insert(name, port);
    }

    /// The number of Service ports.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether the state holds no Service port.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The Service ports that differ between `previous` and `self`: added, changed or gone.
    pub fn diff(&self, previous: &ProxyState) -> BTreeSet<ServicePortName> {
        let mut changed: BTreeSet<ServicePortName> = self
            .services
            .iter()
            .filter(|(name, port)| previous.services.get(*name) != Some(*port))
            .map(|(name, _)| name.clone())
            .collect();
        changed.extend(
            previous
                .services
                .keys()
                .filter(|name| !self.services.contains_key(*name))
                .cloned(),
        );
        changed
    }

    /// Checks what every backend relies on: non-empty names, non-zero ports, endpoints of
    /// the cluster IP's family, unique cluster IP/port/protocol and node port/protocol.
    /// Backends call it before touching the dataplane.
    pub fn validate(&self) -> Result<()> {
        let invalid = |name: &ServicePortName, message: String| ProxyError::InvalidState {
            service: name.to_string(),
            message,
        };
        let mut frontends = BTreeMap::new();
        let mut node_ports = BTreeMap::new();
        for (name, port) in &self.services {
            if name.namespace.is_empty() || name.name.is_empty() {
                return Err(invalid(name, "empty namespace or name".into()));
            }
            if name.protocol != port.protocol {
                return Err(invalid(
                    name,
                    format!(
                        "the name says {} but the port says {}",
                        name.protocol, port.protocol
                    ),
                ));
            }
            if port.port == 0 || port.node_port == Some(0) {
                return Err(invalid(name, "port 0".into()));
            }
            if port.cluster_ip.is_unspecified() {
                return Err(invalid(name, "unspecified cluster IP".into()));
            }
            if let Some(endpoint) = port
                .endpoints
                .iter()
                .find(|e| e.is_ipv4() != port.cluster_ip.is_ipv4() || e.port() == 0)
            {
                return Err(invalid(
                    name,
                    format!(
                        "endpoint {endpoint} does not fit cluster IP {}",
                        port.cluster_ip
                    ),
                ));
            }
            if let Some(other) = frontends.insert((port.cluster_ip, port.port, port.protocol), name)
            {
                return Err(invalid(
                    name,
                    format!(
                        "{}:{}/{} is also {other}",
                        port.cluster_ip, port.port, port.protocol
                    ),
                ));
            }
            if let Some(node_port) = port.node_port {
                if let Some(other) = node_ports.insert((node_port, port.protocol), name) {
                    return Err(invalid(
                        name,
                        format!("node port {node_port}/{} is also {other}", port.protocol),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What changed since the backend's last successful sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changes {
    /// Rewrite everything and remove whatever the backend owns that the state does not hold.
    Full,
    /// Only these Service ports changed (added, updated, or gone from the state).
    Partial(BTreeSet<ServicePortName>),
}

impl Changes {
    /// Whether this is a full sync.
    pub fn is_full(&self) -> bool {
        matches!(self, Changes::Full)
    }
}

/// Which dataplane objects (chains, sets) belong to which Service port: what a rule-writing
/// backend remembers between syncs, so a partial sync can delete exactly the stale objects of
/// the ports it rewrites without naming every other port's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedObjects {
    /// Each Service port's objects, as the last sync wrote them.
    pub by_service: HashMap<ServicePortName, Vec<String>>,
    /// Objects found in the dataplane that no known Service port claims (read back before a
    /// full sync, which deletes those it does not write).
    pub unattributed: BTreeSet<String>,
}

impl OwnedObjects {
    /// Objects found in the dataplane, none attributed yet.
    pub fn found(names: impl IntoIterator<Item = String>) -> Self {
        OwnedObjects {
            by_service: HashMap::new(),
            unattributed: names.into_iter().collect(),
        }
    }

    /// The objects a sync writing `written` (each rewritten Service port's objects) must
    /// delete: with [`Changes::Full`] every known object it does not write, with
    /// [`Changes::Partial`] the changed ports' old objects it does not write.
    pub fn stale(
        &self,
        changes: &Changes,
        written: &BTreeMap<ServicePortName, Vec<String>>,
    ) -> BTreeSet<String> {
        let kept: BTreeSet<&String> = written.values().flatten().collect();
        let old: Box<dyn Iterator<Item = &String>> = match changes {
            Changes::Full => Box::new(
                self.unattributed
                    .iter()
                    .chain(self.by_service.values().flatten()),
            ),
            Changes::Partial(names) => Box::new(
                names
                    .iter()
                    .filter_map(|name| self.by_service.get(name))
                    .flatten()
                    .chain(&self.unattributed),
            ),
        };
        old.filter(|object| !kept.contains(object))
            .cloned()
            .collect()
    }

    /// Records a successful sync that wrote `written`.
    pub fn record(
        &mut self,
        changes: &Changes,
        mut written: BTreeMap<ServicePortName, Vec<String>>,
    ) {
        self.unattributed.clear();
        match changes {
            Changes::Full => self.by_service = written.into_iter().collect(),
            Changes::Partial(names) => {
                for name in names {
                    match written.remove(name) {
                        Some(objects) => self.by_service.insert(name.clone(), objects),
                        None => self.by_service.remove(name),
                    };
                }
            }
        }
    }

    /// The number of objects known.
    pub fn len(&self) -> usize {
        self.unattributed.len() + self.by_service.values().map(Vec::len).sum::<usize>()
    }

    /// Whether no object is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Programs a node's dataplane from a [`ProxyState`]. See the [module docs](self) for the
/// contract. Object-safe: the [`Proxier`] holds an `Arc<dyn ProxyBackend>`.
#[async_trait]
pub trait ProxyBackend: Send + Sync + 'static {
    /// The backend's name (`iptables`, `nftables`, `ipvs`, `fake`).
    fn name(&self) -> &str;

    /// Makes the dataplane match `state`; `changes` says how much may have changed since the
    /// last successful sync. On error the next sync must be [`Changes::Full`].
    async fn sync(&self, state: &ProxyState, changes: &Changes) -> Result<()>;

    /// Removes every rule, chain or table the backend owns. Idempotent.
    async fn cleanup(&self) -> Result<()>;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two services: `default/web:http` (ClusterIP, two endpoints) and `default/api`
    /// (NodePort, ClientIP affinity, one endpoint). The golden tests' input.
    pub(crate) fn sample_state() -> ProxyState {
        let mut state = ProxyState::new();
        state.insert(
            ServicePortName::new("default", "web", "http", Protocol::Tcp),
            ServicePortState {
                cluster_ip: "10.96.0.10".parse().unwrap(),
                port: 80,
                node_port: None,
                protocol: Protocol::Tcp,
                affinity: SessionAffinity::None,
                endpoints: vec![
                    "10.244.1.3:8080".parse().unwrap(),
                    "10.244.1.2:8080".parse().unwrap(),
                ],
            },
        );
        state.insert(
            ServicePortName::new("default", "api", "", Protocol::Udp),
            ServicePortState {
                cluster_ip: "10.96.0.20".parse().unwrap(),
                port: 53,
                node_port: Some(30053),
                protocol: Protocol::Udp,
                affinity: SessionAffinity::ClientIp {
                    timeout_seconds: 10800,
                },
                endpoints: vec!["10.244.2.7:5353".parse().unwrap()],
            },
        );
        state
    }

    #[test]
    fn a_diff_names_added_changed_and_removed_ports() {
        let before = sample_state();
        let mut after = before.clone();
        let web = ServicePortName::new("default", "web", "http", Protocol::Tcp);
        let api = ServicePortName::new("default", "api", "", Protocol::Udp);
        after.services.get_mut(&web).unwrap().endpoints.pop();
        after.services.remove(&api);
        let new = ServicePortName::new("kube-system", "dns", "dns", Protocol::Udp);
        let mut dns = before.services[&api].clone();
        dns.cluster_ip = "10.96.0.53".parse().unwrap();
        after.insert(new.clone(), dns);
        assert_eq!(after.diff(&before), BTreeSet::from([web, api, new]));
        assert!(before.diff(&before).is_empty());
    }

    #[test]
    fn a_state_with_clashing_frontends_is_invalid() {
        let mut state = sample_state();
        let mut copy = state.services.values().next().unwrap().clone();
        copy.node_port = None;
        state.insert(
            ServicePortName::new("other", "clash", "", copy.protocol),
            copy,
        );
        let error = state.validate().unwrap_err();
        assert!(matches!(error, ProxyError::InvalidState { .. }));
        assert!(error.to_string().contains("is also default/api"), "{error}");
    }

    #[test]
    fn endpoints_of_another_family_are_invalid() {
        let mut state = sample_state();
        let web = ServicePortName::new("default", "web", "http", Protocol::Tcp);
        state
            .services
            .get_mut(&web)
            .unwrap()
            .endpoints
            .push("[fd00::1]:80".parse().unwrap());
        assert!(state.validate().is_err());
        assert!(sample_state().validate().is_ok());
    }

    #[test]
    fn the_backend_is_object_safe() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn ProxyBackend>();
    }
}
