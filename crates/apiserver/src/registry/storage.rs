//! The registry's writes to the store: one transaction per write, with the main key's
//! compare-and-swap plus any companion keys (a Service's `IPAddress` record) written atomically
//! with it. And the mapping of store errors onto Kubernetes errors.

use bytes::Bytes;
use capstan_api::{Error, ResourceInfo};
use capstan_store::{Compare, CompareOp, KeyValue, Op, OpResult, Revision, Store, Txn};

/// Keys written together with the main key, in the same transaction.
#[derive(Debug, Default)]
pub(crate) struct Companions {
    /// Keys to create; the whole write fails (with [`WriteFailure::CompanionTaken`]) if one
    /// exists already.
    pub(crate) creates: Vec<(String, Bytes)>,
    /// Keys to delete (a missing one is fine).
    pub(crate) deletes: Vec<String>,
}

impl Companions {
    fn compares(&self) -> impl Iterator<Item = Compare> + '_ {
        self.creates
            .iter()
            .map(|(key, _)| Compare::create_revision(key.clone(), CompareOp::Equal, 0))
    }

    fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        let creates = self
            .creates
            .iter()
            .map(|(key, value)| Op::put(key.clone(), value.clone()));
        let deletes = self.deletes.iter().map(|key| Op::delete(key.clone()));
        creates.chain(deletes)
    }

    fn reads(&self) -> impl Iterator<Item = Op> + '_ {
        self.creates.iter().map(|(key, _)| Op::get(key.clone()))
    }
}

/// Why a write did not happen. Nothing was changed in every case.
#[derive(Debug)]
pub(crate) enum WriteFailure {
    /// A create found the key present.
    Exists,
    /// The key's mod revision is no longer the expected one.
    Stale,
    /// The key is gone.
    Missing,
    /// A companion key to create exists already.
    CompanionTaken,
    /// The store failed.
    Store(capstan_store::Error),
}

impl From<capstan_store::Error> for WriteFailure {
    fn from(error: capstan_store::Error) -> Self {
        WriteFailure::Store(error)
    }
}

/// Creates `key` (and the companions) if it does not exist.
pub(crate) async fn create(
    store: &dyn Store,
    key: &str,
    value: Bytes,
    companions: &Companions,
) -> Result<KeyValue, WriteFailure> {
    let txn = Txn::new()
        .when([Compare::create_revision(
            key.to_string(),
            CompareOp::Equal,
            0,
        )])
        .when(companions.compares())
        .and_then([Op::put(key.to_string(), value)])
        .and_then(companions.ops())
        .or_else([Op::get(key.to_string())])
        .or_else(companions.reads());
    let response = store.txn(txn).await?;
    let mut results = response.results.into_iter();
    match results.next() {
        Some(OpResult::Put { kv, .. }) if response.succeeded => Ok(kv),
        Some(OpResult::Get(Some(_))) => Err(WriteFailure::Exists),
        Some(OpResult::Get(None)) if results.any(|r| matches!(r, OpResult::Get(Some(_)))) => {
            Err(WriteFailure::CompanionTaken)
        }
        other => Err(unexpected("create", other)),
    }
}

/// Writes `key` (and the companions) if its mod revision is still `expected`.
pub(crate) async fn update(
    store: &dyn Store,
    key: &str,
    value: Bytes,
    expected: Revision,
    companions: &Companions,
) -> Result<KeyValue, WriteFailure> {
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.to_string(),
            CompareOp::Equal,
            expected,
        )])
        .when(companions.compares())
        .and_then([Op::put(key.to_string(), value)])
        .and_then(companions.ops())
        .or_else([Op::get(key.to_string())])
        .or_else(companions.reads());
    let response = store.txn(txn).await?;
    let mut results = response.results.into_iter();
    match results.next() {
        Some(OpResult::Put { kv, .. }) if response.succeeded => Ok(kv),
        Some(OpResult::Get(None)) => Err(WriteFailure::Missing),
        Some(OpResult::Get(Some(current))) if current.mod_revision != expected => {
            Err(WriteFailure::Stale)
        }
        Some(OpResult::Get(Some(_))) => Err(WriteFailure::CompanionTaken),
        other => Err(unexpected("update", other)),
    }
}

/// Deletes `key` (and the companions) if its mod revision is still `expected`; returns the
/// delete's revision.
pub(crate) async fn delete(
    store: &dyn Store,
    key: &str,
    expected: Revision,
    companions: &Companions,
) -> Result<Revision, WriteFailure> {
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.to_string(),
            CompareOp::Equal,
            expected,
        )])
        .and_then([Op::delete(key.to_string())])
        .and_then(companions.ops())
        .or_else([Op::get(key.to_string())]);
    let response = store.txn(txn).await?;
    match response.results.into_iter().next() {
        Some(OpResult::Delete { prev: Some(_) }) if response.succeeded => Ok(response.revision),
        Some(OpResult::Delete { prev: None }) | Some(OpResult::Get(None)) => {
            Err(WriteFailure::Missing)
        }
        Some(OpResult::Get(Some(_))) => Err(WriteFailure::Stale),
        other => Err(unexpected("delete", other)),
    }
}

fn unexpected(operation: &str, result: Option<OpResult>) -> WriteFailure {
    WriteFailure::Store(capstan_store::Error::Backend {
        message: format!("{operation}: unexpected transaction result {result:?}"),
    })
}

/// The Kubernetes error for a store error while serving `name` of `resource`.
pub(crate) fn store_error(
    error: capstan_store::Error,
    resource: &ResourceInfo,
    name: &str,
) -> Error {
    use capstan_store::Error as Store;
    match error {
        Store::AlreadyExists { .. } => Error::AlreadyExists {
            resource: resource.qualified_resource(),
            name: name.to_string(),
        },
        Store::Conflict { .. } => Error::Conflict {
            resource: resource.qualified_resource(),
            name: name.to_string(),
            message: Error::OBJECT_MODIFIED.into(),
        },
        Store::NotFound { .. } => Error::NotFound {
            resource: resource.qualified_resource(),
            name: name.to_string(),
        },
        Store::Compacted {
            requested,
            compacted,
        } => Error::Gone {
            message: match compacted {
                Some(compacted) => format!("too old resource version: {requested} ({compacted})"),
                None => format!("too old resource version: {requested}"),
            },
        },
        Store::FutureRevision { requested, current } => Error::Timeout {
            message: format!("Too large resource version: {requested}, current: {current}"),
        },
        Store::ValueTooLarge { size, limit } => Error::RequestEntityTooLarge {
            message: format!("the object is {size} bytes, over the storage limit of {limit} bytes"),
        },
        Store::Unavailable { message } => Error::ServiceUnavailable {
            message: format!("storage is unavailable: {message}"),
        },
        other => Error::internal(format!("storage: {other}")),
    }
}

/// [`store_error`] for a failed write of `name`.
pub(crate) fn write_error(failure: WriteFailure, resource: &ResourceInfo, name: &str) -> Error {
    match failure {
        WriteFailure::Exists => Error::AlreadyExists {
            resource: resource.qualified_resource(),
            name: name.to_string(),
        },
        WriteFailure::Stale => Error::Conflict {
            resource: resource.qualified_resource(),
            name: name.to_string(),
            message: Error::OBJECT_MODIFIED.into(),
        },
        WriteFailure::Missing => Error::NotFound {
            resource: resource.qualified_resource(),
            name: name.to_string(),
        },
        WriteFailure::CompanionTaken => Error::Conflict {
            resource: resource.qualified_resource(),
            name: name.to_string(),
            message: "a resource allocated with the object was taken meanwhile; try again".into(),
        },
        WriteFailure::Store(error) => store_error(error, resource, name),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::registry::test_support::{within, LIMIT};
    use capstan_store::{memory::MemoryStore, StoreExt};

    fn store() -> Arc<dyn Store> {
        Arc::new(MemoryStore::new())
    }

    fn companion(key: &str) -> Companions {
        Companions {
            creates: vec![(key.to_string(), Bytes::from_static(b"x"))],
            deletes: vec![],
        }
    }

    #[tokio::test]
    async fn a_taken_companion_fails_the_whole_create() {
        within(LIMIT, async {
            let store = store();
            store.create("/c", "taken").await.unwrap();
            let before = store.current_revision().await.unwrap();
            let failure = create(&*store, "/k", Bytes::from_static(b"v"), &companion("/c"))
                .await
                .unwrap_err();
            assert!(matches!(failure, WriteFailure::CompanionTaken));
            assert_eq!(store.current_revision().await.unwrap(), before);
            assert!(store.get("/k").await.unwrap().is_none());
        })
        .await;
    }

    #[tokio::test]
    async fn an_update_tells_stale_from_missing() {
        within(LIMIT, async {
            let store = store();
            let kv = store.create("/k", "v1").await.unwrap();
            store.update("/k", "v2", kv.mod_revision).await.unwrap();
            let none = Companions::default();
            let stale = update(&*store, "/k", "v3".into(), kv.mod_revision, &none).await;
            assert!(matches!(stale, Err(WriteFailure::Stale)));
            let missing = update(&*store, "/nope", "v".into(), 1, &none).await;
            assert!(matches!(missing, Err(WriteFailure::Missing)));
        })
        .await;
    }

    #[tokio::test]
    async fn a_delete_returns_its_revision_and_removes_companions() {
        within(LIMIT, async {
            let store = store();
            let kv = create(&*store, "/k", "v".into(), &companion("/c"))
                .await
                .unwrap();
            let companions = Companions {
                creates: vec![],
                deletes: vec!["/c".into()],
            };
            let revision = delete(&*store, "/k", kv.mod_revision, &companions)
                .await
                .unwrap();
            assert_eq!(revision, store.current_revision().await.unwrap());
            assert!(store.get("/c").await.unwrap().is_none());
        })
        .await;
    }

    #[test]
    fn store_errors_become_kubernetes_errors() {
        let pods = ResourceInfo::builtin("", "Pod").unwrap();
        let gone = store_error(
            capstan_store::Error::Compacted {
                requested: 3,
                compacted: Some(9),
            },
            &pods,
            "",
        );
        assert_eq!(gone.code(), 410);
        let large = store_error(
            capstan_store::Error::ValueTooLarge { size: 9, limit: 1 },
            &pods,
            "web",
        );
        assert_eq!(large.code(), 413);
        let down = store_error(
            capstan_store::Error::Unavailable {
                message: "no leader".into(),
            },
            &pods,
            "web",
        );
        assert!(down.is_retryable());
    }
}
