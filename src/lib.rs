//! Capstan: composable Kubernetes-style control-plane crates.
//!
//! This facade re-exports every crate of the workspace under a short name, so one dependency
//! gives the whole toolkit:
//!
//! | module | crate | what it holds |
//! |---|---|---|
//! | [`api`] | `capstan-api` | the object model: kinds, storage keys, selectors, the `Client` trait, `Status` errors |
//! | [`store`] | `capstan-store` | the `Store` SPI with etcd v3 semantics; `memory` and `etcd` backends |
//! | [`watch`] | `capstan-watch` | list-watch: the `Watch` SPI, reflectors, informers, work queues |
//! | [`apiserver`] | `capstan-apiserver` | the API server: storage codec, watch cache, registry, the REST API over HTTP (`http-server`) and the HTTP client (`http-client`) |
//! | [`controller`] | `capstan-controller` | the reconciler runtime, leader election, events, conflict retry, fakes for controller tests |
//! | [`controllers`] | `capstan-controllers` | the built-in controllers and the controller manager |
//! | [`scheduler`] | `capstan-scheduler` | the scheduling framework, queue, default plugins and preemption |
//! | [`cri`] | `capstan-runtime` | the container runtime: the CRI-shaped `ContainerRuntime` SPI, its fake backend and the containerd backend (`containerd`) |
//! | [`kubelet`] | `capstan-kubelet` | the node agent: Node registration and Lease, Pods run through the runtime and network SPIs |
//! | `cluster` | `capstan-cluster` | the components assembled: the embedded cluster and the command lines of the `capstan` binary (feature `cluster`, on by default) |
//! | [`net`] | `capstan-net` | the CNI-shaped `NetworkPlugin` SPI, its fake and CNI backends, pod CIDRs and host-gw routes, the service proxy, cluster DNS (`dns`) |
//!
//! Cargo features: `cluster` (default) brings the assembled components with `http-server`
//! (the REST API on axum), `http-client` (`RemoteClient`) and `dns` (cluster DNS on hickory);
//! without default features none of axum, hyper's server or hickory is compiled. `etcd` turns
//! on [`store::etcd`](capstan_store); `tls` turns on HTTPS for the API server and the remote
//! client; `containerd` turns on [`cri::containerd`](capstan_runtime); `kube` turns on
//! `apiserver::kube_bridge` (kube-rs on an in-process cluster, and Capstan's components over
//! kube-rs; see `docs/kube-rs.md`) and `testing::kube_cluster`.
//!
//! The application picks the Kubernetes API version: depend on `k8s-openapi` with a version
//! feature (`latest`, as kube-rs applications do). Every version k8s-openapi 0.29 offers
//! (Kubernetes 1.33 to 1.37) is supported.
//!
//! [`testing`] is the kit for your tests: a fake cluster in one line ([`testing::FakeCluster`]),
//! an event log to assert on, and time limits ([`testing::within`], [`testing::eventually`]).
//!
//! `ARCHITECTURE.md` at the repository root has the bird's-eye view and the invariants.
//! `docs/getting-started.md` walks through the crates, and `docs/spi/` has one page per
//! extension point; their code samples are this crate's doctests.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use capstan_api as api;
pub use capstan_apiserver as apiserver;
#[cfg(feature = "cluster")]
pub use capstan_cluster as cluster;
pub use capstan_controller as controller;
pub use capstan_controllers as controllers;
pub use capstan_kubelet as kubelet;
pub use capstan_net as net;
pub use capstan_runtime as cri;
pub use capstan_scheduler as scheduler;
pub use capstan_store as store;
pub use capstan_watch as watch;

pub mod testing;

/// The guides under `docs/`, compiled and run as doctests (`cargo test --doc -p capstan`).
#[cfg(doctest)]
mod guides {
    #[doc = include_str!("../docs/getting-started.md")]
    pub struct GettingStarted;
    #[doc = include_str!("../docs/spi/store.md")]
    pub struct StoreSpiGuide;
    #[doc = include_str!("../docs/spi/watch.md")]
    pub struct WatchSpiGuide;
    #[doc = include_str!("../docs/spi/reconciler.md")]
    pub struct ReconcilerSpiGuide;
    #[doc = include_str!("../docs/spi/scheduler-plugin.md")]
    pub struct SchedulerPluginSpiGuide;
    #[doc = include_str!("../docs/spi/container-runtime.md")]
    pub struct ContainerRuntimeSpiGuide;
    #[doc = include_str!("../docs/spi/network-plugin.md")]
    pub struct NetworkPluginSpiGuide;
    #[doc = include_str!("../docs/spi/proxy-backend.md")]
    pub struct ProxyBackendSpiGuide;
    #[doc = include_str!("../docs/pods.md")]
    pub struct PodsGuide;
    #[cfg(feature = "kube")]
    #[doc = include_str!("../docs/kube-rs.md")]
    pub struct KubeRsGuide;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_shows_the_first_controller_example_whole() {
        let readme = include_str!("../README.md");
        let example = include_str!("../examples/first_controller.rs");
        assert!(
            readme.contains(example),
            "README.md must show examples/first_controller.rs as it is: copy the file into its \
             ```rust block"
        );
    }
}
