//! An in-process API server in one line, for tests: the [`Registry`] over a fresh
//! [`MemoryStore`], with kube-apiserver's defaults (watch cache, admission).
//!
//! ```
//! use capstan_api::{k8s_openapi::api::core::v1::ConfigMap, kube_core::params::PostParams, Api};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let config_maps: Api<ConfigMap> = Api::namespaced(capstan_apiserver::testing::client(), "default");
//! let mut settings = ConfigMap::default();
//! settings.metadata.name = Some("settings".into());
//! config_maps.create(&PostParams::default(), &settings).await?;
//! # Ok::<(), capstan_api::Error>(())
//! # }).unwrap();
//! ```

use std::sync::Arc;

use capstan_api::Client;
use capstan_store::memory::MemoryStore;

use crate::registry::Registry;

/// A new registry over its own empty in-memory store; keep the [`Registry`] to
/// [register](Registry::register) kinds of your own, or use [`client`] when the [`Client`]
/// is all you need.
pub fn registry() -> Arc<Registry> {
    Arc::new(Registry::new(Arc::new(MemoryStore::new())))
}

/// A new registry over its own empty in-memory store, as a [`Client`].
pub fn client() -> Arc<dyn Client> {
    registry()
}

/// Creates the Namespace `name` unless it exists, so a test may create objects in it (a
/// create in a missing namespace is 404, as in Kubernetes). Idempotent.
///
/// # Panics
///
/// When the create fails for another reason than the namespace existing.
pub async fn create_namespace(client: &dyn Client, name: &str) {
    let resource = capstan_api::ResourceInfo::builtin("", "Namespace").expect("a built-in kind");
    let namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name},
    }))
    .expect("a Namespace decodes");
    let params = capstan_api::kube_core::params::PostParams::default();
    match client.create(&resource, None, namespace, &params).await {
        Ok(_) | Err(capstan_api::Error::AlreadyExists { .. }) => {}
        Err(error) => panic!("creating the namespace {name}: {error}"),
    }
}
