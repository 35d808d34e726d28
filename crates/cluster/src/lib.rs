//! Capstan's components assembled into a cluster.
//!
//! The same parts run two ways:
//!
//! - **In one process** ([`embedded::EmbeddedCluster`]): the API server on loopback, the
//!   controller manager and the scheduler (with leader election), and N nodes, each a kubelet
//!   and a service proxy. On the defaults (in-memory store, fake runtime, fake network, fake
//!   proxy) it needs nothing installed; `examples/cluster.rs` is the command line for it.
//! - **One process per component** (the `capstan` binary: `capstan apiserver`,
//!   `controller-manager`, `scheduler`, `kubelet`, `proxy`), for etcd, containerd, the CNI
//!   bridge and iptables.
//!
//! Either way every component except the API server reaches the API through a client built
//! from a kubeconfig ([`apiserver::connect`]), over HTTP, and nothing but the API server
//! touches the store.
//!
//! | module | what it starts |
//! |---|---|
//! | [`apiserver`] | the registry on the chosen store, served over HTTP(S), and its kubeconfig |
//! | [`control_plane`] | controller-manager and scheduler replicas standing for their Leases |
//! | [`node`] | a node's kubelet (runtime, pod network over its pod CIDR) and service proxy |
//! | [`dns`] | cluster DNS: Services' names over UDP and TCP |
//! | [`embedded`] | all of the above in one process |
//! | [`cli`] | the command lines: `capstan <component>` and the embedded cluster's |
//! | [`observability`] | each component's `/metrics` and health listener |
//! | [`options`] | the `--store`, `--runtime`, `--network` and `--proxy` choices |
//! | [`status`] | the compact live table of nodes and Pods the cluster command shows |
//!
//! **Architecture Invariant:** this crate only wires; it holds no Kubernetes logic of its
//! own. Every behaviour lives in the crate of its component.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod apiserver;
pub mod cli;
pub mod control_plane;
pub mod dns;
pub mod embedded;
pub mod node;
pub mod observability;
pub mod options;
pub mod status;
