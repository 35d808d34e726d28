//! List-watch for Capstan components.
//!
//! Every component of the control plane lists what it cares about, then watches for changes
//! from the list's resourceVersion, and reacts. This crate holds that machinery, independent
//! of any backend:
//!
//! - [`Watch`]: the SPI, a typed list+watch source. Every [`Api<K>`](capstan_api::Api) is one,
//!   so the in-process registry and the remote HTTP client both serve it; tests can script
//!   their own to inject faults.
//!
//! The reflector, informer cache, shared informers and the work queue are being added (see
//! `ARCHITECTURE.md`).

use async_trait::async_trait;
use capstan_api::kube_core::params::{ListParams, WatchParams};
use capstan_api::kube_core::{ObjectList, WatchEvent};
use capstan_api::{Api, Resource, Result};
use futures::stream::BoxStream;

/// The events of a typed watch.
pub type EventStream<K> = BoxStream<'static, Result<WatchEvent<K>>>;

/// A typed list+watch source for one kind: what a reflector consumes.
///
/// Contract, as Kubernetes defines it:
/// - `list` returns a consistent snapshot with its resourceVersion in `metadata`; with
///   `limit` it pages, and the continue token reads the same snapshot.
/// - `watch` from that resourceVersion delivers every later change exactly once, in order,
///   then may end at any time (the caller resumes from the last resourceVersion seen). A
///   resourceVersion older than the source's history gives [`capstan_api::Error::Gone`] (or
///   `Expired`), either at once or as the stream's first item; the caller must relist.
///
/// Errors are [`capstan_api::Error`]s; [`capstan_api::Error::is_retryable`] says which ones a
/// retry may cure.
#[async_trait]
pub trait Watch<K: Resource>: Send + Sync + 'static {
    /// Lists objects, one page per call when `params.limit` is set.
    async fn list(&self, params: &ListParams) -> Result<ObjectList<K>>;

    /// Watches changes after `resource_version`.
    async fn watch(&self, params: &WatchParams, resource_version: &str) -> Result<EventStream<K>>;
}

#[async_trait]
impl<K: Resource> Watch<K> for Api<K> {
    async fn list(&self, params: &ListParams) -> Result<ObjectList<K>> {
        Api::list(self, params).await
    }

    async fn watch(&self, params: &WatchParams, resource_version: &str) -> Result<EventStream<K>> {
        Api::watch(self, params, resource_version).await
    }
}
