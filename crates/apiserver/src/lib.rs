//! Capstan's API server: the hub every component talks to.
//!
//! - `http` (feature `server`, on by default): the Kubernetes REST API over HTTP (discovery,
//!   resource paths, chunked watches), which `kubectl` drives.
//! - `remote` (feature `client`, on by default): the `Client` over HTTP, so any component can
//!   run in its own process against a remote API server.
//! - [`metrics`]: kube-apiserver's `apiserver_*` Prometheus series and the store's `etcd`
//!   health check, which `http` serves on `/metrics` and `/readyz`.
//! - [`apiextensions`]: CustomResourceDefinitions served at run time (the controller that
//!   registers their versions, structural schemas, CEL rules, printer columns).
//! - `certificates` (feature `tls`): the signer of approved CertificateSigningRequests
//!   (Kubernetes' `csrsigning` controller) with the cluster CA.
//! - [`codec`]: how objects sit in the store (JSON, resourceVersion from the mod revision).
//! - [`compactor`]: discards the store's history every interval (kube-apiserver's
//!   `--etcd-compaction-interval`), started by whoever serves the registry.
//! - [`registry`]: typed Kubernetes objects over any `Store`, serving the `Client` trait with
//!   kube-apiserver's semantics (resourceVersion, generation, status subresource, finalizers,
//!   admission with Kubernetes' defaulting and validation, patches, paged lists); each
//!   built-in kind's own rules (defaults, validation, status, deletion) sit in one strategy
//!   per kind.
//! - [`schema`]: the built-in kinds' OpenAPI schemas, which drop (or, under
//!   `fieldValidation=Strict`, refuse) unknown fields and fill the `/openapi/v3` documents.
//! - [`watch_cache`]: one store watch per resource, fanned out to any number of filtered
//!   watchers, with resume, bookmarks and slow-watcher cut-off; and
//!   [`CachedWatchSource`](watch_cache::CachedWatchSource), which serves the registry's watches
//!   from a watch cache per kind, started on first use.
//! - [`testing`]: the registry over a fresh in-memory store in one line, for tests.
//! - `kube_bridge` (feature `kube`): a `kube::Client` served by the registry in process, and
//!   `KubeClient`, the `Client` over kube-rs (a real cluster through kube's configuration).
//!
//! ```
//! use std::sync::Arc;
//! use capstan_api::{k8s_openapi::api::core::v1::ConfigMap, kube_core::params::PostParams, Api, Client};
//! use capstan_apiserver::registry::Registry;
//! use capstan_store::memory::MemoryStore;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let registry: Arc<dyn Client> = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
//! let config_maps: Api<ConfigMap> = Api::namespaced(registry, "default");
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("settings".into());
//! let created = config_maps.create(&PostParams::default(), &cm).await?;
//! assert!(created.metadata.uid.is_some());
//! assert!(created.metadata.resource_version.is_some());
//! # Ok::<(), capstan_api::Error>(())
//! # }).unwrap();
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod apiextensions;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod certificates;
pub mod codec;
pub mod compactor;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "kube")]
#[cfg_attr(docsrs, doc(cfg(feature = "kube")))]
pub mod kube_bridge;
pub mod metrics;
#[cfg(feature = "tls")]
mod pem;
pub mod protobuf;
pub mod registry;
#[cfg(feature = "client")]
pub mod remote;
pub mod schema;
pub mod serviceaccount;
pub mod testing;
pub mod watch_cache;
