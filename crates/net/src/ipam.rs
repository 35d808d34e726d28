//! Node pod CIDRs: each node gets its own subnet of the cluster CIDR.
//!
//! [`ClusterCidr`] is the allocator behind a node IPAM controller (Kubernetes'
//! `--allocate-node-cidrs`): it cuts the cluster CIDR (say `10.244.0.0/16`) into subnets of
//! one mask (`/24` by default) and hands each node one, never the same to two nodes. Deleting
//! a node releases its subnet. It is pure: the caller feeds it the nodes (name and existing
//! `spec.podCIDR`) and writes the answers back, so a restarted controller rebuilds it with
//! [`ClusterCidr::restore`] and hands out the same subnets again.
//!
//! ```
//! use capstan_net::ipam::ClusterCidr;
//!
//! let mut cidrs = ClusterCidr::new("10.244.0.0/16".parse().unwrap(), 24)?;
//! assert_eq!(cidrs.allocate("node-a")?.to_string(), "10.244.0.0/24");
//! assert_eq!(cidrs.allocate("node-b")?.to_string(), "10.244.1.0/24");
//! assert_eq!(cidrs.allocate("node-a")?.to_string(), "10.244.0.0/24"); // idempotent
//! cidrs.release("node-a");
//! # Ok::<(), capstan_net::ipam::IpamError>(())
//! ```
//!
//! [`controller::NodeIpamController`] is that controller: it runs `ClusterCidr` against the
//! Nodes of the API and writes their `spec.podCIDR`.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;

use crate::addr::{from_u128, to_u128};

pub mod controller;

/// The most node subnets one cluster CIDR may be cut into, as a mask difference (Kubernetes'
/// limit): 65,536 nodes.
pub const MAX_MASK_DIFFERENCE: u8 = 16;

/// Why a node CIDR operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The cluster CIDR and node mask do not fit together (the mask is shorter than the
    /// cluster's, longer than the address, or cuts more than [`MAX_MASK_DIFFERENCE`] bits).
    #[error("cannot cut {cluster} into /{node_prefix} subnets: {reason}")]
    InvalidConfig {
        /// The cluster CIDR.
        cluster: IpNet,
        /// The node mask.
        node_prefix: u8,
        /// What is wrong.
        reason: String,
    },
    /// Every subnet is taken; the node gets none until another node is deleted.
    #[error("no free /{node_prefix} left in {cluster}")]
    Exhausted {
        /// The cluster CIDR.
        cluster: IpNet,
        /// The node mask.
        node_prefix: u8,
    },
    /// A node's existing CIDR is not one of the cluster CIDR's subnets (outside it, another
    /// mask, or host bits set).
    #[error("{cidr} of node {node} is not a /{node_prefix} subnet of {cluster}")]
    NotInRange {
        /// The node.
        node: String,
        /// Its CIDR.
        cidr: IpNet,
        /// The cluster CIDR.
        cluster: IpNet,
        /// The node mask.
        node_prefix: u8,
    },
    /// A node's existing CIDR already belongs to another node, or the node already has
    /// another CIDR.
    #[error("{cidr} of node {node} conflicts: {reason}")]
    Conflict {
        /// The node.
        node: String,
        /// The CIDR it claims.
        cidr: IpNet,
        /// Who holds what.
        reason: String,
    },
}

/// Hands each node a subnet of the cluster CIDR, never the same to two nodes.
#[derive(Debug, Clone)]
pub struct ClusterCidr {
    cluster: IpNet,
    node_prefix: u8,
    /// Subnets in the cluster CIDR.
    count: u32,
    /// Bits per subnet (the address width minus the node mask).
    shift: u32,
    by_node: HashMap<String, u32>,
    by_index: BTreeMap<u32, String>,
    /// Where the next search starts (next fit, so a released subnet is reused last).
    cursor: u32,
}

impl ClusterCidr {
    /// An allocator of `/node_prefix` subnets of `cluster` (host bits of `cluster` are
    /// ignored). Fails with [`IpamError::InvalidConfig`] if they do not fit together.
    pub fn new(cluster: IpNet, node_prefix: u8) -> Result<Self, IpamError> {
        let cluster = cluster.trunc();
        let bad = |reason: String| IpamError::InvalidConfig {
            cluster,
            node_prefix,
            reason,
        };
        if node_prefix < cluster.prefix_len() {
            return Err(bad("the node mask is shorter than the cluster's".to_owned()));
        }
        if node_prefix > cluster.max_prefix_len() {
            return Err(bad(format!(
                "the address has only {} bits",
                cluster.max_prefix_len()
            )));
        }
        let difference = node_prefix - cluster.prefix_len();
        if difference > MAX_MASK_DIFFERENCE {
            return Err(bad(format!(
                "that is 2^{difference} subnets, more than 2^{MAX_MASK_DIFFERENCE}"
            )));
        }
        Ok(ClusterCidr {
            cluster,
            node_prefix,
            count: 1 << difference,
            shift: u32::from(cluster.max_prefix_len() - node_prefix),
            by_node: HashMap::new(),
            by_index: BTreeMap::new(),
            cursor: 0,
        })
    }

    /// Rebuilds the allocator after a restart from every node and its current CIDR.
    ///
    /// Nodes with a CIDR keep it. A CIDR that cannot be kept (not a subnet of the cluster
    /// CIDR, or claimed by two nodes: the first in input order keeps it) is left out and
    /// returned with its error, for the caller to report; nodes without a CIDR are left for
    /// [`ClusterCidr::allocate`].
    pub fn restore<N: Into<String>>(
        cluster: IpNet,
        node_prefix: u8,
        nodes: impl IntoIterator<Item = (N, Option<IpNet>)>,
    ) -> Result<(Self, Vec<IpamError>), IpamError> {
        let mut cidrs = ClusterCidr::new(cluster, node_prefix)?;
        let mut rejected = Vec::new();
        for (node, cidr) in nodes {
            if let Some(cidr) = cidr {
                if let Err(error) = cidrs.occupy(node.into(), cidr) {
                    rejected.push(error);
                }
            }
        }
        Ok((cidrs, rejected))
    }

    /// The cluster CIDR.
    pub fn cluster(&self) -> IpNet {
        self.cluster
    }

    /// The node mask.
    pub fn node_prefix(&self) -> u8 {
        self.node_prefix
    }

    /// How many subnets the cluster CIDR holds.
    pub fn capacity(&self) -> u32 {
        self.count
    }

    /// The node's subnet, if it has one.
    pub fn get(&self, node: &str) -> Option<IpNet> {
        self.by_node.get(node).map(|i| self.subnet(*i))
    }

    /// Every node with its subnet, in address order.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, IpNet)> + '_ {
        self.by_index
            .iter()
            .map(|(i, node)| (node.as_str(), self.subnet(*i)))
    }

    /// Gives `node` a subnet: the one it has, or the next free one. Fails with
    /// [`IpamError::Exhausted`] when none is free.
    pub fn allocate(&mut self, node: &str) -> Result<IpNet, IpamError> {
        if let Some(cidr) = self.get(node) {
            return Ok(cidr);
        }
        if self.by_index.len() as u64 >= u64::from(self.count) {
            return Err(IpamError::Exhausted {
                cluster: self.cluster,
                node_prefix: self.node_prefix,
            });
        }
        // Next fit: the first free subnet from the cursor on, wrapping around.
        let mut index = self.cursor;
        while self.by_index.contains_key(&index) {
            index = (index + 1) % self.count;
        }
        self.insert(node.to_owned(), index);
        self.cursor = (index + 1) % self.count;
        Ok(self.subnet(index))
    }

    /// Records that `node` holds `cidr` (an existing `spec.podCIDR`). Idempotent for the same
    /// pair; fails with [`IpamError::NotInRange`] or [`IpamError::Conflict`] and changes
    /// nothing otherwise.
    pub fn occupy(&mut self, node: impl Into<String>, cidr: IpNet) -> Result<(), IpamError> {
        let node = node.into();
        let index = self.index_of(&node, cidr)?;
        match (self.by_node.get(&node), self.by_index.get(&index)) {
            (Some(held), _) if *held == index => Ok(()),
            (Some(held), _) => Err(IpamError::Conflict {
                reason: format!("the node already holds {}", self.subnet(*held)),
                node,
                cidr,
            }),
            (None, Some(owner)) => Err(IpamError::Conflict {
                reason: format!("node {owner} holds it"),
                node,
                cidr,
            }),
            (None, None) => {
                self.insert(node, index);
                Ok(())
            }
        }
    }

    /// Frees the node's subnet (when the node is deleted) and returns it. Idempotent.
    pub fn release(&mut self, node: &str) -> Option<IpNet> {
        let index = self.by_node.remove(node)?;
        self.by_index.remove(&index);
        Some(self.subnet(index))
    }

    fn insert(&mut self, node: String, index: u32) {
        self.by_index.insert(index, node.clone());
        self.by_node.insert(node, index);
    }

    fn subnet(&self, index: u32) -> IpNet {
        let base = to_u128(self.cluster.network()) + (u128::from(index) << self.shift);
        IpNet::new(from_u128(base, self.cluster), self.node_prefix).expect("the mask fits")
    }

    fn index_of(&self, node: &str, cidr: IpNet) -> Result<u32, IpamError> {
        let not_in_range = || IpamError::NotInRange {
            node: node.to_owned(),
            cidr,
            cluster: self.cluster,
            node_prefix: self.node_prefix,
        };
        if cidr.prefix_len() != self.node_prefix
            || cidr.trunc() != cidr
            || !self.cluster.contains(&cidr)
        {
            return Err(not_in_range());
        }
        let offset = to_u128(cidr.network()) - to_u128(self.cluster.network());
        u32::try_from(offset >> self.shift).map_err(|_| not_in_range())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn nodes_get_consecutive_subnets_and_keep_theirs() {
        let mut cidrs = ClusterCidr::new(net("10.244.0.0/16"), 24).unwrap();
        assert_eq!(cidrs.capacity(), 256);
        assert_eq!(cidrs.allocate("a").unwrap(), net("10.244.0.0/24"));
        assert_eq!(cidrs.allocate("b").unwrap(), net("10.244.1.0/24"));
        assert_eq!(cidrs.allocate("a").unwrap(), net("10.244.0.0/24"));
        assert_eq!(cidrs.get("b"), Some(net("10.244.1.0/24")));
        assert_eq!(
            cidrs.allocations().collect::<Vec<_>>(),
            [("a", net("10.244.0.0/24")), ("b", net("10.244.1.0/24"))]
        );
    }

    #[test]
    fn a_released_subnet_is_reused_only_after_the_others() {
        let mut cidrs = ClusterCidr::new(net("10.0.0.0/22"), 24).unwrap();
        for node in ["a", "b", "c"] {
            cidrs.allocate(node).unwrap();
        }
        assert_eq!(cidrs.release("a"), Some(net("10.0.0.0/24")));
        assert_eq!(cidrs.release("a"), None);
        assert_eq!(cidrs.allocate("d").unwrap(), net("10.0.3.0/24"));
        assert_eq!(cidrs.allocate("e").unwrap(), net("10.0.0.0/24"));
        let err = cidrs.allocate("f").unwrap_err();
        assert_eq!(err.to_string(), "no free /24 left in 10.0.0.0/22");
        assert_eq!(cidrs.get("f"), None);
    }

    #[test]
    fn masks_that_do_not_fit_the_cluster_cidr_are_refused() {
        for (cluster, prefix, wanted) in [
            ("10.0.0.0/16", 8, "shorter"),
            ("10.0.0.0/16", 33, "only 32 bits"),
            ("10.0.0.0/8", 25, "more than 2^16"),
        ] {
            let err = ClusterCidr::new(net(cluster), prefix).unwrap_err();
            assert!(err.to_string().contains(wanted), "{err}");
        }
        let cidrs = ClusterCidr::new(net("10.0.0.0/8"), 24).unwrap();
        assert_eq!(cidrs.capacity(), 65_536);
    }

    #[test]
    fn ipv6_clusters_are_cut_the_same_way() {
        let mut cidrs = ClusterCidr::new(net("fd00:10::/56"), 64).unwrap();
        assert_eq!(cidrs.allocate("a").unwrap(), net("fd00:10::/64"));
        assert_eq!(cidrs.allocate("b").unwrap(), net("fd00:10:0:1::/64"));
    }

    #[test]
    fn a_restart_keeps_existing_cidrs_and_reports_the_ones_it_cannot_keep() {
        let nodes = vec![
            ("a", Some(net("10.244.5.0/24"))),
            ("b", None),
            ("c", Some(net("10.244.5.0/24"))), // a holds it
            ("d", Some(net("10.9.0.0/24"))),   // outside
            ("e", Some(net("10.244.6.0/25"))), // another mask
            ("f", Some(net("10.244.0.0/24"))),
        ];
        let (mut cidrs, rejected) = ClusterCidr::restore(net("10.244.0.0/16"), 24, nodes).unwrap();
        assert_eq!(rejected.len(), 3);
        assert!(matches!(&rejected[0], IpamError::Conflict { node, .. } if node == "c"));
        assert!(rejected[0].to_string().contains("node a holds it"));
        assert!(matches!(&rejected[1], IpamError::NotInRange { node, .. } if node == "d"));
        assert!(matches!(&rejected[2], IpamError::NotInRange { node, .. } if node == "e"));
        assert_eq!(cidrs.get("a"), Some(net("10.244.5.0/24")));
        assert_eq!(cidrs.get("f"), Some(net("10.244.0.0/24")));
        assert_eq!(cidrs.allocate("b").unwrap(), net("10.244.1.0/24"));
        cidrs.occupy("a", net("10.244.5.0/24")).unwrap();
        let err = cidrs.occupy("a", net("10.244.7.0/24")).unwrap_err();
        assert!(
            err.to_string().contains("already holds 10.244.5.0/24"),
            "{err}"
        );
        assert_eq!(cidrs.get("a"), Some(net("10.244.5.0/24")));
        assert_eq!(cidrs.allocations().count(), 3);
    }

    proptest! {
        #[test]
        fn subnets_are_never_given_twice_and_all_come_back(
            ops in proptest::collection::vec((any::<bool>(), 0u8..24), 1..300)
        ) {
            // 16 subnets for up to 24 nodes: exhaustion happens too.
            let mut cidrs = ClusterCidr::new(net("10.8.0.0/20"), 24).unwrap();
            let mut model: HashMap<String, IpNet> = HashMap::new();
            for (add, n) in ops {
                let node = format!("node-{n}");
                if add {
                    match cidrs.allocate(&node) {
                        Ok(cidr) => {
                            if let Some(had) = model.get(&node) {
                                prop_assert_eq!(*had, cidr);
                            } else {
                                prop_assert!(!model.values().any(|c| *c == cidr));
                                prop_assert!(net("10.8.0.0/20").contains(&cidr));
                                model.insert(node, cidr);
                            }
                        }
                        Err(IpamError::Exhausted { .. }) => prop_assert_eq!(model.len(), 16),
                        Err(other) => panic!("unexpected {other}"),
                    }
                } else {
                    prop_assert_eq!(cidrs.release(&node), model.remove(&node));
                }
                let distinct: HashSet<IpNet> = cidrs.allocations().map(|(_, c)| c).collect();
                prop_assert_eq!(distinct.len(), model.len());
            }
            let (restored, rejected) = ClusterCidr::restore(
                net("10.8.0.0/20"), 24,
                model.iter().map(|(n, c)| (n.clone(), Some(*c))),
            ).unwrap();
            prop_assert!(rejected.is_empty());
            for (node, cidr) in &model {
                prop_assert_eq!(restored.get(node), Some(*cidr));
            }
            for node in model.keys() {
                cidrs.release(node);
            }
            prop_assert_eq!(cidrs.allocations().count(), 0);
        }
    }
}
