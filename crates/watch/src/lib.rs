//! List-watch for Capstan components.
//!
//! Every component of the control plane lists what it cares about, then watches for changes
//! from the list's resourceVersion, and reacts. This crate holds that machinery, independent
//! of any backend:
//!
//! - [`Watch`]: the SPI, a typed list+watch source. Every [`Api<K>`](capstan_api::Api) is one,
//!   so the in-process registry and the remote HTTP client both serve it; tests can script
//!   their own to inject faults.
//! - [`reflector`]: lists in pages, then watches from the list's resourceVersion; resumes a
//!   dropped stream after a jittered exponential [`Backoff`], relists on 410 Gone, and never
//!   holds two full copies of the data. An object that does not decode as the kind is
//!   logged, counted ([`InformerMetrics`]) and treated as absent, never a reason to stop.
//! - [`backoff`]: [`ExponentialDelay`], the one exponential delay (base, factor, cap) that
//!   every component's backoff computes with, and the running [`Backoff`] on top of it.
//! - [`cache`]: the informer [`Cache`]: `Arc<K>` reads, a built-in namespace index and custom
//!   indexes added at any time, [`Cache::wait_for_sync`], and subscriptions to its changes.
//! - [`informer`]: [`SharedInformer`] (one reflector on its own task, any number of
//!   handlers) and [`InformerFactory`] (one shared informer per kind per process).
//! - [`queue`]: the [`WorkQueue`] between event handlers and workers, with client-go's
//!   semantics: deduplication, one worker per key, delayed and rate-limited adds, shutdown
//!   with drain, and metrics.
//! - [`metrics`]: [`WorkQueueMetrics`], the queues' figures as Kubernetes' `workqueue_*`
//!   Prometheus series, by queue name; [`InformerSyncCheck`] is the `informer-sync` health
//!   check of a component's informers.
//!
//! An informer feeding a work queue, and a worker draining it:
//!
//! ```no_run
//! use std::sync::Arc;
//! use capstan_api::k8s_openapi::api::core::v1::Pod;
//! use capstan_watch::{ObjectKey, ReflectorOptions, SharedInformer, Watch, WorkQueue};
//!
//! async fn run(source: Arc<dyn Watch<Pod>>) {
//!     let informer = SharedInformer::spawn(source, ReflectorOptions::default());
//!     informer.cache().add_index("node", |pod: &Pod| {
//!         pod.spec.iter().filter_map(|spec| spec.node_name.clone()).collect()
//!     });
//!     let queue: WorkQueue<ObjectKey> = WorkQueue::new();
//!
//!     // The handler only queues keys: the same key changing twice is handled once.
//!     let mut deltas = informer.subscribe();
//!     let feed = queue.clone();
//!     tokio::spawn(async move {
//!         while let Some(delta) = deltas.recv().await {
//!             feed.add(ObjectKey::of(delta.object().as_ref()));
//!         }
//!     });
//!
//!     informer.wait_for_sync().await;
//!     while let Some(key) = queue.get().await {
//!         let key = key.key();
//!         match informer.cache().get(key) {
//!             Some(pod) => println!("{key} is on {:?}", pod.spec.as_ref().and_then(|s| s.node_name.as_ref())),
//!             None => println!("{key} is gone"),
//!         }
//!         queue.forget(key);
//!     } // the guard drops at the end of each turn, marking the key done
//! }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

use async_trait::async_trait;
use capstan_api::client::{Decoded, DecodedList};
use capstan_api::kube_core::params::{ListParams, WatchParams};
use capstan_api::kube_core::{ObjectList, WatchEvent};
use capstan_api::{Api, Resource, Result};
use futures::stream::BoxStream;
use futures::StreamExt;

pub mod backoff;
pub mod cache;
pub mod informer;
pub mod metrics;
pub mod queue;
pub mod reflector;

pub use backoff::{Backoff, ExponentialDelay};
pub use cache::{Cache, Delta, ObjectKey, NAMESPACE_INDEX};
pub use capstan_api::client::Undecodable;
pub use informer::{InformerFactory, InformerSyncCheck, SharedInformer, SyncTracking};
pub use metrics::{InformerMetrics, WorkQueueMetrics};
pub use queue::{Processing, QueueMetrics, RateLimiter, WorkQueue};
pub use reflector::{Reflector, ReflectorOptions};

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

    /// [`list`](Watch::list) with each item decoded on its own: what the reflector calls, so
    /// that one object that does not decode as `K` is skipped instead of failing the list.
    ///
    /// The default wraps [`list`](Watch::list) (a source of typed objects has nothing left
    /// to decode); sources that decode, like [`Api`], override it.
    async fn list_decoded(&self, params: &ListParams) -> Result<DecodedList<K>> {
        let list = self.list(params).await?;
        Ok(DecodedList {
            types: list.types,
            metadata: list.metadata,
            items: list.items.into_iter().map(Ok).collect(),
        })
    }

    /// [`watch`](Watch::watch) with each event's object decoded on its own: an object that
    /// does not decode as `K` arrives as an `Err(Undecodable)` naming it, instead of an error
    /// item that would end the stream. The default wraps [`watch`](Watch::watch).
    async fn watch_decoded(
        &self,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<DecodedEventStream<K>> {
        let events = self.watch(params, resource_version).await?;
        Ok(events
            .map(|event| {
                event.map(|event| match event {
                    WatchEvent::Added(object) => WatchEvent::Added(Ok(object)),
                    WatchEvent::Modified(object) => WatchEvent::Modified(Ok(object)),
                    WatchEvent::Deleted(object) => WatchEvent::Deleted(Ok(object)),
                    WatchEvent::Bookmark(bookmark) => WatchEvent::Bookmark(bookmark),
                    WatchEvent::Error(status) => WatchEvent::Error(status),
                })
            })
            .boxed())
    }
}

/// The events of a watch decoded per object; see [`Watch::watch_decoded`].
pub type DecodedEventStream<K> = BoxStream<'static, Result<WatchEvent<Decoded<K>>>>;

#[async_trait]
impl<K: Resource> Watch<K> for Api<K> {
    async fn list(&self, params: &ListParams) -> Result<ObjectList<K>> {
        Api::list(self, params).await
    }

    async fn watch(&self, params: &WatchParams, resource_version: &str) -> Result<EventStream<K>> {
        Api::watch(self, params, resource_version).await
    }

    async fn list_decoded(&self, params: &ListParams) -> Result<DecodedList<K>> {
        Api::list_decoded(self, params).await
    }

    async fn watch_decoded(
        &self,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<DecodedEventStream<K>> {
        Api::watch_decoded(self, params, resource_version).await
    }
}
