//! Capstan's `Store` SPI: byte keys and values with etcd v3 semantics.
//!
//! The store is the only place where cluster state persists. It knows nothing about
//! Kubernetes objects: keys and values are opaque bytes, and the semantics are etcd v3's.
//!
//! - **One global revision.** Every write, or every transaction with at least one effective
//!   write, bumps it by exactly one. A fresh store is at revision 1.
//! - **Per-key metadata.** Each key carries its `create_revision`, `mod_revision` and
//!   `version` (writes since it was created; deleting resets it).
//! - **Compare-and-swap.** [`Txn`] compares key metadata, then runs its success or failure
//!   operations atomically. [`StoreExt`] builds create, update and delete on it, with typed
//!   [`Error::AlreadyExists`], [`Error::Conflict`] and [`Error::NotFound`].
//! - **MVCC reads.** [`Range`] reads a key or a prefix, with a limit and a start key for paging,
//!   at the current or a past revision.
//! - **Watch.** [`Store::watch`] replays every event from a revision on, in order, then follows
//!   live writes; nothing is duplicated or skipped. A revision older than the compaction point
//!   gives [`Error::Compacted`].
//!
//! Backends:
//!
//! - [`memory::MemoryStore`], the default: in-process MVCC, with history kept for watch
//!   resume and past reads until [`Store::compact`].
//! - `etcd::EtcdStore` (cargo feature `etcd`): a real etcd 3.4+ through `etcd-client`, with
//!   etcd's errors mapped onto the same [`Error`] variants.
//!
//! Every backend passes the same conformance suite (`conformance`, cargo feature
//! `conformance`), which you can run against a backend of your own.
//!
//! ```
//! use capstan_store::{memory::MemoryStore, Range, Store, StoreExt};
//! # futures::executor::block_on(async {
//! let store = MemoryStore::new();
//! let created = store.create("/registry/pods/default/web", "v1").await?;
//! let updated = store
//!     .update("/registry/pods/default/web", "v2", created.mod_revision)
//!     .await?;
//! assert_eq!(updated.version, 2);
//! // A stale expected revision is a typed conflict, and nothing changes.
//! let stale = store.update("/registry/pods/default/web", "v3", created.mod_revision).await;
//! assert!(matches!(stale, Err(capstan_store::Error::Conflict { .. })));
//! let page = store.range(Range::prefix("/registry/pods/")).await?;
//! assert_eq!(page.kvs[0].value, "v2");
//! # Ok::<(), capstan_store::Error>(())
//! # }).unwrap();
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod ext;
mod types;

pub mod memory;

#[cfg(feature = "etcd")]
pub mod etcd;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{Error, Result};
pub use ext::StoreExt;
pub use types::{
    prefix_end, Compare, CompareOp, CompareTarget, Event, EventKind, KeyValue, Op, OpResult, Range,
    RangeResponse, Revision, Txn, TxnResponse, WatchRequest, WatchStream, MAX_VALUE_BYTES,
};

use async_trait::async_trait;

/// A key-value store with etcd v3 semantics.
///
/// Callers are the API server's registry and watch cache (never controllers or nodes, which go
/// through the API). Implementations must be safe to share (`Arc<dyn Store>`) and to call
/// concurrently. All methods validate their input first and change nothing when they return
/// an error.
///
/// Errors common to all methods: [`Error::InvalidKey`] for an empty key,
/// [`Error::Unavailable`] when the backend cannot be reached (retryable; for [`Store::txn`]
/// the outcome is then unknown), and [`Error::Backend`] for anything else the backend reports.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads the keys of `range` at its revision (the current one by default), in key order.
    ///
    /// Errors: [`Error::Compacted`] when the revision is older than the compaction point,
    /// [`Error::FutureRevision`] when it is newer than the current revision.
    async fn range(&self, range: Range) -> Result<RangeResponse>;

    /// Runs a transaction atomically: evaluates every compare, then runs the success
    /// operations if all hold, otherwise the failure operations.
    ///
    /// A transaction with at least one effective write (a put, or a delete of an existing
    /// key) bumps the revision once; all its events share that revision. A key may be written
    /// at most once per transaction ([`Error::InvalidRequest`] otherwise); values over
    /// [`MAX_VALUE_BYTES`] give [`Error::ValueTooLarge`].
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Watches the keys of `request` from its start revision (the next one by default).
    ///
    /// The stream yields every event with a revision at or after the start, in revision
    /// order and, within one transaction, in operation order, exactly once. It ends with an
    /// error item if the backend loses the history it needs ([`Error::Compacted`]) or the
    /// connection ([`Error::Unavailable`]); resume with a new watch from the revision after the
    /// last event seen. Dropping the stream cancels the watch.
    ///
    /// Errors: [`Error::Compacted`] for a start older than the compaction point,
    /// [`Error::FutureRevision`] for a start beyond the next revision.
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream>;

    /// Discards history older than `revision`: reads at, and watches from, earlier revisions
    /// then give [`Error::Compacted`]. Current values are never discarded.
    ///
    /// Errors: [`Error::Compacted`] when `revision` is at or below the compaction point
    /// already, [`Error::FutureRevision`] when it is beyond the current revision.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The store's current revision: that of the last write.
    async fn current_revision(&self) -> Result<Revision>;
}
