//! The store's one error type.

use bytes::Bytes;

use crate::Revision;

/// Why a store operation failed. Every variant means the store was left unchanged, except
/// [`Error::Unavailable`] on a transaction, whose outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty. Not retryable.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong with the key.
        reason: String,
    },

    /// The value exceeds [`crate::MAX_VALUE_BYTES`] (etcd's default request limit).
    /// Not retryable.
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge {
        /// The value's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// The request is malformed in another way (a key written twice in one transaction, a
    /// non-positive revision, an empty range). Not retryable.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong with the request.
        message: String,
    },

    /// A create found the key already present. Not retryable unchanged.
    #[error("key {} already exists (mod revision {})", show(key), current.mod_revision)]
    AlreadyExists {
        /// The key.
        key: Bytes,
        /// What the key holds now.
        current: Box<crate::KeyValue>,
    },

    /// A compare-and-swap found another mod revision than the expected one: someone else
    /// wrote first. Re-read, then retry.
    #[error(
        "conflict on key {}: expected mod revision {expected}, found {actual}",
        show(key)
    )]
    Conflict {
        /// The key.
        key: Bytes,
        /// The mod revision the caller expected.
        expected: Revision,
        /// The key's mod revision now.
        actual: Revision,
    },

    /// An update or delete found no such key. Not retryable unchanged.
    #[error("key {} not found", show(key))]
    NotFound {
        /// The key.
        key: Bytes,
    },

    /// The revision asked for is older than the compaction point, so its history is gone.
    /// Read at a newer revision (or relist), then watch from there.
    #[error("revision {requested} has been compacted{}", compacted.map(|c| format!(" (compacted at {c})")).unwrap_or_default())]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compaction point, when the backend reports it.
        compacted: Option<Revision>,
    },

    /// The revision asked for is beyond the store's current revision. Not retryable
    /// unchanged.
    #[error("revision {requested} is in the future (current revision {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },

    /// The backend could not be reached or has no quorum. Retryable; a transaction's outcome
    /// is unknown, so re-read before retrying a write.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What the backend or transport said.
        message: String,
    },

    /// The backend failed in a way not covered above. Not retryable.
    #[error("store backend error: {message}")]
    Backend {
        /// What the backend said.
        message: String,
    },
}

impl Error {
    /// Whether the same request may succeed if sent again later, unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// Shorthand for results of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn show(key: &Bytes) -> String {
    format!("{:?}", String::from_utf8_lossy(key))
}
