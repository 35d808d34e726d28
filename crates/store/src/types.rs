//! Requests, responses and events of the `Store` SPI.

use std::collections::HashSet;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::{Error, Result};

/// A store revision. Revisions start at 1 and grow by one per write transaction.
pub type Revision = i64;

/// The largest value a put may carry: 1.5 MiB, etcd's default `--max-request-bytes`.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// A key with its value and metadata, as of some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// The value (empty in the `kv` of a delete event).
    pub value: Bytes,
    /// The revision of the write that created the key (0 in a delete event).
    pub create_revision: Revision,
    /// The revision of the last write to the key (for a delete event, the delete's).
    pub mod_revision: Revision,
    /// Writes since the key was created, starting at 1 (0 in a delete event).
    pub version: i64,
}

/// A read of one key or a range of keys.
///
/// Build one with [`Range::key`] or [`Range::prefix`]; page with [`Range::limit`] and
/// [`Range::start_after`]; read the past with [`Range::at_revision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The first key read.
    pub start: Bytes,
    /// Where the range ends (exclusive), etcd-style: empty reads `start` alone; `[0]` reads
    /// every key from `start` on.
    pub end: Bytes,
    /// At most this many keys (0: no limit).
    pub limit: usize,
    /// Read at this revision rather than the current one.
    pub revision: Option<Revision>,
}

impl Range {
    /// Reads exactly `key`.
    pub fn key(key: impl Into<Bytes>) -> Self {
        Range {
            start: key.into(),
            end: Bytes::new(),
            limit: 0,
            revision: None,
        }
    }

    /// Reads every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start);
        Range {
            start,
            end,
            limit: 0,
            revision: None,
        }
    }

    /// Returns at most `limit` keys (0: no limit); [`RangeResponse::more`] tells if more
    /// remain.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Continues after `key` (the last key of the previous page).
    pub fn start_after(mut self, key: &[u8]) -> Self {
        let mut next = Vec::with_capacity(key.len() + 1);
        next.extend_from_slice(key);
        next.push(0);
        self.start = next.into();
        self
    }

    /// Reads as of `revision`. Pass the first page's [`RangeResponse::revision`] to later
    /// pages for a consistent paged read.
    pub fn at_revision(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }

    /// Whether `key` falls inside this range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key_in_range(&self.start, &self.end, key)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_key(&self.start)?;
        if let Some(revision) = self.revision {
            if revision <= 0 {
                return Err(Error::InvalidRequest {
                    message: format!("revision must be positive, got {revision}"),
                });
            }
        }
        Ok(())
    }
}

/// The result of a [`Range`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    /// The keys read, in key order.
    pub kvs: Vec<KeyValue>,
    /// Whether keys beyond the limit remain.
    pub more: bool,
    /// How many keys the whole range holds at that revision, regardless of the limit.
    pub count: i64,
    /// The revision the read was served at (the store's current revision for a current read).
    pub revision: Revision,
}

/// How a [`Compare`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal to.
    Equal,
    /// Not equal to.
    NotEqual,
    /// Greater than.
    Greater,
    /// Less than.
    Less,
}

impl CompareOp {
    pub(crate) fn holds<T: Ord + ?Sized>(self, actual: &T, expected: &T) -> bool {
        match self {
            CompareOp::Equal => actual == expected,
            CompareOp::NotEqual => actual != expected,
            CompareOp::Greater => actual > expected,
            CompareOp::Less => actual < expected,
        }
    }
}

/// What a [`Compare`] looks at. A missing key has revisions and version 0, and no value (so a
/// value compare on it fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's mod revision.
    ModRevision(Revision),
    /// The key's create revision.
    CreateRevision(Revision),
    /// The key's version.
    Version(i64),
    /// The key's value.
    Value(Bytes),
}

/// One condition of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: Bytes,
    /// How it compares.
    pub op: CompareOp,
    /// What it compares, against which expected value.
    pub target: CompareTarget,
}

impl Compare {
    /// `key`'s mod revision compared with `revision` (0 for a missing key).
    pub fn mod_revision(key: impl Into<Bytes>, op: CompareOp, revision: Revision) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::ModRevision(revision),
        }
    }

    /// `key`'s create revision compared with `revision` (0 for a missing key).
    pub fn create_revision(key: impl Into<Bytes>, op: CompareOp, revision: Revision) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::CreateRevision(revision),
        }
    }

    /// `key`'s version compared with `version` (0 for a missing key).
    pub fn version(key: impl Into<Bytes>, op: CompareOp, version: i64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Version(version),
        }
    }

    /// `key`'s value compared with `value` (always false for a missing key).
    pub fn value(key: impl Into<Bytes>, op: CompareOp, value: impl Into<Bytes>) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Value(value.into()),
        }
    }

    /// Evaluates the compare against what the key holds now.
    pub(crate) fn holds(&self, current: Option<&KeyValue>) -> bool {
        let (create, modified, version) = current
            .map(|kv| (kv.create_revision, kv.mod_revision, kv.version))
            .unwrap_or_default();
        match &self.target {
            CompareTarget::ModRevision(r) => self.op.holds(&modified, r),
            CompareTarget::CreateRevision(r) => self.op.holds(&create, r),
            CompareTarget::Version(v) => self.op.holds(&version, v),
            CompareTarget::Value(v) => current.is_some_and(|kv| self.op.holds(&kv.value, v)),
        }
    }
}

/// One operation of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Reads a key.
    Get(Bytes),
    /// Writes a key, creating it if missing.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Deletes a key; deleting a missing key is a no-op.
    Delete(Bytes),
}

impl Op {
    /// Reads `key`.
    pub fn get(key: impl Into<Bytes>) -> Self {
        Op::Get(key.into())
    }

    /// Writes `value` at `key`.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<Bytes>) -> Self {
        Op::Delete(key.into())
    }
}

/// The result of one [`Op`], in the order of the operations run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// What the key held, if anything.
    Get(Option<KeyValue>),
    /// The key as written, and what it held before.
    Put {
        /// The key as written.
        kv: KeyValue,
        /// What the key held before, if anything.
        prev: Option<KeyValue>,
    },
    /// What the deleted key held; `None` if it was missing (a no-op).
    Delete {
        /// What the key held before, if anything.
        prev: Option<KeyValue>,
    },
}

/// A transaction: if every compare holds, run `success`, else run `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// The conditions, all of which must hold.
    pub compare: Vec<Compare>,
    /// Run when every compare holds.
    pub success: Vec<Op>,
    /// Run otherwise.
    pub failure: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Txn::default()
    }

    /// Adds conditions.
    pub fn when(mut self, compare: impl IntoIterator<Item = Compare>) -> Self {
        self.compare.extend(compare);
        self
    }

    /// Adds operations run when every condition holds.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds operations run when a condition fails.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.failure.extend(ops);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for compare in &self.compare {
            validate_key(&compare.key)?;
        }
        for ops in [&self.success, &self.failure] {
            for op in ops {
                match op {
                    Op::Get(key) | Op::Delete(key) => validate_key(key)?,
                    Op::Put { key, value } => {
                        validate_key(key)?;
                        if value.len() > MAX_VALUE_BYTES {
                            return Err(Error::ValueTooLarge {
                                size: value.len(),
                                limit: MAX_VALUE_BYTES,
                            });
                        }
                    }
                }
            }
            check_unique_writes(ops)?;
        }
        Ok(())
    }
}

/// The result of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (and so `success` ran).
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: Revision,
    /// One result per operation run.
    pub results: Vec<OpResult>,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or written.
    Put,
    /// The key was deleted.
    Delete,
    /// No key changed: every event of the watched range up to `kv.mod_revision` has been
    /// delivered. Sent only to watches that asked for it
    /// ([`WatchRequest::with_progress_notify`]); its `kv` has an empty key and value.
    Progress,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change. For a delete: the key, an empty value, the delete's
    /// revision as `mod_revision`, and zero `create_revision` and `version`.
    pub kv: KeyValue,
    /// The key before the change, when the watch asked for it and the key existed.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision of the write that caused this event (for a progress item, the revision
    /// up to which the watch is complete).
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }

    /// A progress item at `revision`.
    pub fn progress(revision: Revision) -> Self {
        Event {
            kind: EventKind::Progress,
            kv: KeyValue {
                key: Bytes::new(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
            },
            prev: None,
        }
    }
}

/// A watch of a key or range, from a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    /// The first key watched.
    pub start: Bytes,
    /// Where the range ends, as in [`Range::end`].
    pub end: Bytes,
    /// The first revision delivered; `None` watches from the next write on.
    pub start_revision: Option<Revision>,
    /// Whether events carry the key's previous value ([`Event::prev`]).
    pub prev_kv: bool,
    /// Whether to send [`EventKind::Progress`] items when writes elsewhere move the revision
    /// past this range, so the watcher learns how far it is up to date.
    pub progress_notify: bool,
}

impl WatchRequest {
    /// Watches exactly `key`.
    pub fn key(key: impl Into<Bytes>) -> Self {
        WatchRequest {
            start: key.into(),
            end: Bytes::new(),
            start_revision: None,
            prev_kv: false,
            progress_notify: false,
        }
    }

    /// Watches every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start);
        WatchRequest {
            start,
            end,
            start_revision: None,
            prev_kv: false,
            progress_notify: false,
        }
    }

    /// Replays events from `revision` on before following live writes.
    pub fn from_revision(mut self, revision: Revision) -> Self {
        self.start_revision = Some(revision);
        self
    }

    /// Asks for each key's previous value in the events.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    /// Asks for [`EventKind::Progress`] items: the memory backend sends one after each write
    /// outside the range; etcd sends one when asked, which the etcd backend does while the
    /// stream is idle.
    pub fn with_progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }

    /// Whether `key` falls inside the watched range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key_in_range(&self.start, &self.end, key)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_key(&self.start)?;
        if let Some(revision) = self.start_revision {
            if revision <= 0 {
                return Err(Error::InvalidRequest {
                    message: format!("start revision must be positive, got {revision}"),
                });
            }
        }
        Ok(())
    }
}

/// The events of a watch; see [`crate::Store::watch`].
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// The smallest key greater than every key starting with `prefix` (etcd's prefix range end).
/// A prefix of only `0xff` bytes has no such key, and gives `[0]`: "to the end".
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end.into();
        }
    }
    Bytes::from_static(&[0])
}

pub(crate) fn key_in_range(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

pub(crate) fn validate_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            reason: "the key is empty".into(),
        });
    }
    Ok(())
}

/// A key may be written once per branch. Small branches (the common case) are checked
/// without allocating.
fn check_unique_writes(ops: &[Op]) -> Result<()> {
    let written = || {
        ops.iter().filter_map(|op| match op {
            Op::Put { key, .. } | Op::Delete(key) => Some(key),
            Op::Get(_) => None,
        })
    };
    if ops.len() <= 8 {
        for (i, key) in written().enumerate() {
            if written().skip(i + 1).any(|other| other == key) {
                return Err(duplicate_key(key));
            }
        }
    } else {
        let mut seen = HashSet::new();
        for key in written() {
            if !seen.insert(key) {
                return Err(duplicate_key(key));
            }
        }
    }
    Ok(())
}

fn duplicate_key(key: &Bytes) -> Error {
    Error::InvalidRequest {
        message: format!(
            "key {:?} is written more than once in one transaction",
            String::from_utf8_lossy(key)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(
            prefix_end(b"/registry/pods/"),
            Bytes::from_static(b"/registry/pods0")
        );
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), Bytes::from_static(&[0]));
    }

    #[test]
    fn ranges_contain_their_keys_and_nothing_else() {
        let single = Range::key("a");
        assert!(single.contains(b"a"));
        assert!(!single.contains(b"ab"));
        let prefix = Range::prefix("/registry/pods/");
        assert!(prefix.contains(b"/registry/pods/default/web"));
        assert!(!prefix.contains(b"/registry/podsx"));
        assert!(!prefix.contains(b"/registry/deployments/default/web"));
    }

    #[test]
    fn start_after_skips_exactly_the_given_key() {
        let range = Range::prefix("k/").start_after(b"k/1");
        assert!(!range.contains(b"k/1"));
        assert!(range.contains(b"k/1\0"));
        assert!(range.contains(b"k/2"));
    }

    #[test]
    fn a_transaction_writing_one_key_twice_is_invalid() {
        let txn = Txn::new().and_then([Op::put("a", "1"), Op::delete("a")]);
        assert!(matches!(txn.validate(), Err(Error::InvalidRequest { .. })));
        let reads_twice = Txn::new().and_then([Op::get("a"), Op::get("a"), Op::put("a", "1")]);
        assert!(reads_twice.validate().is_ok());
    }

    #[test]
    fn compares_on_a_missing_key_see_zero_revisions_and_no_value() {
        assert!(Compare::mod_revision("k", CompareOp::Equal, 0).holds(None));
        assert!(Compare::version("k", CompareOp::Less, 1).holds(None));
        assert!(!Compare::value("k", CompareOp::NotEqual, "x").holds(None));
    }
}
