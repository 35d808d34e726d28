//! Single-key conveniences built on [`Store::range`] and [`Store::txn`], the same for every
//! backend.

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    Compare, CompareOp, Error, KeyValue, Op, OpResult, Range, Result, Revision, Store, Txn,
};

/// Get, create, compare-and-swap update and delete on single keys, for every [`Store`].
///
/// Each write is one transaction, so it is atomic on every backend and the typed errors
/// ([`Error::AlreadyExists`], [`Error::Conflict`], [`Error::NotFound`]) mean nothing changed.
#[async_trait]
pub trait StoreExt: Store {
    /// Reads `key` at the current revision.
    async fn get(&self, key: impl Into<Bytes> + Send) -> Result<Option<KeyValue>> {
        Ok(self.range(Range::key(key)).await?.kvs.into_iter().next())
    }

    /// Creates `key`. Errors: [`Error::AlreadyExists`] when it exists.
    async fn create(
        &self,
        key: impl Into<Bytes> + Send,
        value: impl Into<Bytes> + Send,
    ) -> Result<KeyValue> {
        let key = key.into();
        let response = self
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([Op::put(key.clone(), value)])
                    .or_else([Op::get(key.clone())]),
            )
            .await?;
        match response.results.into_iter().next() {
            Some(OpResult::Put { kv, .. }) if response.succeeded => Ok(kv),
            Some(OpResult::Get(Some(current))) => Err(Error::AlreadyExists {
                key,
                current: Box::new(current),
            }),
            // The key vanished between the failed compare and the read: impossible within one
            // transaction, so the backend broke its contract.
            other => Err(unexpected("create", other)),
        }
    }

    /// Writes `key` only if its mod revision is still `expected`.
    ///
    /// Errors: [`Error::Conflict`] when someone wrote first, [`Error::NotFound`] when the key
    /// is gone, [`Error::InvalidRequest`] for a non-positive `expected` (use
    /// [`StoreExt::create`]).
    async fn update(
        &self,
        key: impl Into<Bytes> + Send,
        value: impl Into<Bytes> + Send,
        expected: Revision,
    ) -> Result<KeyValue> {
        let key = key.into();
        if expected <= 0 {
            return Err(Error::InvalidRequest {
                message: format!("expected mod revision must be positive, got {expected}"),
            });
        }
        let response = self
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        expected,
                    )])
                    .and_then([Op::put(key.clone(), value)])
                    .or_else([Op::get(key.clone())]),
            )
            .await?;
        match response.results.into_iter().next() {
            Some(OpResult::Put { kv, .. }) if response.succeeded => Ok(kv),
            Some(OpResult::Get(current)) => Err(mismatch(key, expected, current)),
            other => Err(unexpected("update", other)),
        }
    }

    /// Writes `key` whatever it holds. Prefer [`StoreExt::update`] where others may write.
    async fn put(
        &self,
        key: impl Into<Bytes> + Send,
        value: impl Into<Bytes> + Send,
    ) -> Result<KeyValue> {
        let response = self.txn(Txn::new().and_then([Op::put(key, value)])).await?;
        match response.results.into_iter().next() {
            Some(OpResult::Put { kv, .. }) => Ok(kv),
            other => Err(unexpected("put", other)),
        }
    }

    /// Deletes `key`, only if its mod revision is still `expected` when given. Returns what
    /// the key held.
    ///
    /// Errors: [`Error::NotFound`] when the key is missing, [`Error::Conflict`] when its mod
    /// revision is not `expected`.
    async fn delete(
        &self,
        key: impl Into<Bytes> + Send,
        expected: Option<Revision>,
    ) -> Result<KeyValue> {
        let key = key.into();
        let txn = match expected {
            Some(expected) => Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    expected,
                )])
                .and_then([Op::delete(key.clone())])
                .or_else([Op::get(key.clone())]),
            None => Txn::new().and_then([Op::delete(key.clone())]),
        };
        let response = self.txn(txn).await?;
        match response.results.into_iter().next() {
            Some(OpResult::Delete { prev: Some(prev) }) => Ok(prev),
            Some(OpResult::Delete { prev: None }) => Err(Error::NotFound { key }),
            Some(OpResult::Get(current)) => {
                Err(mismatch(key, expected.unwrap_or_default(), current))
            }
            other => Err(unexpected("delete", other)),
        }
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

fn mismatch(key: Bytes, expected: Revision, current: Option<KeyValue>) -> Error {
    match current {
        None => Error::NotFound { key },
        Some(current) => Error::Conflict {
            key,
            expected,
            actual: current.mod_revision,
        },
    }
}

fn unexpected(operation: &str, result: Option<OpResult>) -> Error {
    Error::Backend {
        message: format!("{operation}: unexpected transaction result {result:?}"),
    }
}
