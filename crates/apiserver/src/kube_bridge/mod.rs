//! kube-rs and Capstan, each over the other (feature `kube`).
//!
//! - [`client`] (and [`client_with`]): a [`kube::Client`] served by the API server in process.
//!   Requests go straight into the [`router`](crate::http::router) as tower calls: no socket,
//!   no binary, no port. A kube-rs application (its `Api`s, `watcher`s, reflectors and
//!   `Controller`s) runs against a [`Registry`] in its unit tests as it would against a real
//!   cluster, and watches stream event by event. CustomResourceDefinitions are served as
//!   the API server serves them: the client keeps the registry's
//!   [CRD controller](crate::apiextensions::serve_custom_resources) running.
//! - [`KubeClient`]: Capstan's [`Client`](capstan_api::Client) over any [`kube::Client`], so
//!   Capstan's controllers, scheduler and kubelet run against a real Kubernetes cluster with
//!   kube's configuration and authentication ([`KubeClient::infer`]). It speaks the same REST
//!   conventions and maps errors and watch events exactly as
//!   [`RemoteClient`](crate::remote::RemoteClient) does.
//!
//! ```
//! use capstan_apiserver::kube_bridge::{self, kube};
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let registry = capstan_apiserver::testing::registry();
//! let client = kube_bridge::client(registry);
//! let config_maps: Api<ConfigMap> = Api::default_namespaced(client);
//! let mut settings = ConfigMap::default();
//! settings.metadata.name = Some("settings".into());
//! let created = config_maps.create(&PostParams::default(), &settings).await?;
//! assert!(created.metadata.resource_version.is_some());
//! # Ok::<(), kube::Error>(())
//! # }).unwrap();
//! ```

mod kube_client;

use std::sync::Arc;

use crate::apiextensions::serve_custom_resources;
use crate::http::{router_with, ApiServerOptions};
use crate::registry::Registry;

/// The kube-rs version this bridge speaks, for naming its types without a direct dependency.
pub use kube;
pub use kube_client::KubeClient;

/// The namespace [`client`] and [`client_with`] give the `kube::Client`
/// (`Api::default_namespaced`), as kubeconfig does without a context namespace.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The address discovery reports for an in-process server (`serverAddressByClientCIDRs`):
/// there is no socket.
const IN_PROCESS_ADDRESS: &str = "127.0.0.1:0";

/// A [`kube::Client`] served by `registry` in process: every request is a call into the
/// API's router with the default [`ApiServerOptions`] (everyone anonymous, everything
/// allowed, no layers). Its default namespace is [`DEFAULT_NAMESPACE`].
///
/// The registry creates the system namespaces (`default`, `kube-system`, ...) on first use.
/// Clones of the client share one queue into the router (kube's `Buffer`).
///
/// # Panics
///
/// Outside a tokio runtime (kube-rs spawns the task that drives its request queue).
pub fn client(registry: Arc<Registry>) -> kube::Client {
    let address = IN_PROCESS_ADDRESS.to_string();
    let custom_resources = serve_custom_resources(registry.clone());
    let router = crate::http::router(registry, address);
    kube::Client::new(
        router.layer(axum::Extension(custom_resources)),
        DEFAULT_NAMESPACE,
    )
}

/// As [`client`], with `options`' layers (timeout, authentication, in-flight limit,
/// authorization, body limit, metrics; see [`ApiServerOptions::apply`]) and health checks
/// around the router, as [`ApiServer::bind_with`](crate::http::ApiServer::bind_with) serves it.
///
/// The requests carry no credentials: with an authenticator set and anonymous requests off
/// they are refused with 401; wrap the router in a layer of your own that adds an
/// `Authorization` header (and build the `kube::Client` with [`kube::Client::new`]) to test
/// as a given user.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn client_with(registry: Arc<Registry>, options: &ApiServerOptions) -> kube::Client {
    let health = options.health(&registry);
    let registry_for_crds = registry.clone();
    let router = router_with(
        registry,
        IN_PROCESS_ADDRESS.to_string(),
        &health,
        options.metrics_registry.clone(),
    );
    let custom_resources = serve_custom_resources(registry_for_crds);
    kube::Client::new(
        options.apply(router.layer(axum::Extension(custom_resources))),
        DEFAULT_NAMESPACE,
    )
}
