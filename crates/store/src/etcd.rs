//! `store::etcd`: the [`Store`] SPI on a real etcd 3.4+ cluster (cargo feature `etcd`).
//!
//! Requests go through `etcd-client`, balanced over every endpoint given, so the store keeps
//! serving while a minority of members is down. etcd's errors map onto the same [`Error`]
//! variants as [`crate::memory`]: a compacted revision is [`Error::Compacted`], a future one
//! [`Error::FutureRevision`], a lost connection or a member without a leader
//! [`Error::Unavailable`] (retryable; a transaction's outcome is then unknown).
//!
//! Writes are never retried here, because a retried compare-and-swap could apply twice. Reads
//! are not retried either: the caller decides, guided by [`Error::is_retryable`].
//!
//! A range read of many keys is paged internally, all pages at one revision, so that no single
//! gRPC response exceeds the client's message limit (4 MiB): pages are sized by count from the
//! bytes per key seen so far, and a page refused as too large is read again in halves. A list of
//! any size therefore succeeds, consistent at one revision, without raising the transport
//! limit.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, ConnectOptions, DeleteOptions, GetOptions, PutOptions,
    TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use crate::{
    CompareOp, CompareTarget, Error, Event, EventKind, KeyValue, Op, OpResult, Range,
    RangeResponse, Result, Revision, Store, Txn, TxnResponse, WatchRequest, WatchStream,
};

/// Keys asked for in the first page of a range read, before the size of a key is known.
const FIRST_PAGE_KEYS: usize = 256;

/// The most keys asked for in one page of a range read.
const MAX_PAGE_KEYS: usize = 10_000;

/// The response size a page of a range read aims at: half the client's default 4 MiB message
/// limit, so a page sized from earlier keys' average still fits when its keys run larger.
const TARGET_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// How often a range read without a revision starts over when etcd compacts its snapshot
/// between two pages.
const RANGE_RESTARTS: usize = 3;

/// The environment variable holding comma-separated etcd client URLs, e.g.
/// `http://127.0.0.1:2379`.
pub const ENDPOINTS_ENV: &str = "CAPSTAN_ETCD_ENDPOINTS";

/// A [`Store`] backed by an etcd cluster. Cheap to clone: clones share connections.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the etcd members at `endpoints` and checks that the cluster answers.
    ///
    /// Errors: [`Error::InvalidRequest`] for no endpoints or a malformed one,
    /// [`Error::Unavailable`] when no member answers.
    pub async fn connect<E: AsRef<str>>(endpoints: &[E]) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::InvalidRequest {
                message: "no etcd endpoints given".into(),
            });
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from the leader refuses requests instead of serving stale data.
            .with_require_leader(true);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| match e {
                etcd_client::Error::InvalidUri(e) => Error::InvalidRequest {
                    message: format!("invalid etcd endpoint: {e}"),
                },
                other => map_error(other),
            })?;
        let store = EtcdStore { client };
        store.current_revision().await?;
        Ok(store)
    }

    /// Connects to the endpoints listed in [`ENDPOINTS_ENV`].
    ///
    /// Errors: [`Error::InvalidRequest`] when the variable is unset or empty, and those of
    /// [`EtcdStore::connect`].
    pub async fn from_env() -> Result<Self> {
        let endpoints = endpoints_from_env().ok_or_else(|| Error::InvalidRequest {
            message: format!("{ENDPOINTS_ENV} is not set (e.g. http://127.0.0.1:2379)"),
        })?;
        Self::connect(&endpoints).await
    }

    /// Wraps an already configured `etcd-client` client.
    pub fn from_client(client: Client) -> Self {
        EtcdStore { client }
    }

    /// One etcd range request: at most `limit` keys (0: all) of `start..end` at `revision`.
    async fn range_once(
        &self,
        start: &Bytes,
        end: &Bytes,
        limit: usize,
        revision: Option<Revision>,
    ) -> std::result::Result<RangeResponse, etcd_client::Error> {
        let mut options = GetOptions::new();
        if !end.is_empty() {
            options = options.with_range(end.to_vec());
        }
        if limit > 0 {
            options = options.with_limit(limit as i64);
        }
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        let mut response = self
            .client
            .kv_client()
            .get(start.to_vec(), Some(options))
            .await?;
        let revision = revision.unwrap_or_else(|| response.header().map_or(0, |h| h.revision()));
        Ok(RangeResponse {
            more: response.more(),
            count: response.count(),
            kvs: response.take_kvs().into_iter().map(from_etcd).collect(),
            revision,
        })
    }

    /// Reads a range of keys page by page at one revision (the first page's, unless `range`
    /// names one), up to `range.limit` keys (0: all). See the module docs.
    async fn range_paged(&self, range: &Range) -> std::result::Result<RangeResponse, Error> {
        let mut revision = range.revision;
        let mut start = range.start.clone();
        let mut kvs: Vec<KeyValue> = Vec::new();
        let mut total: Option<i64> = None;
        let mut page_keys = FIRST_PAGE_KEYS;
        loop {
            let want = match range.limit {
                0 => page_keys,
                limit => (limit - kvs.len()).min(page_keys),
            };
            let page = match self.range_once(&start, &range.end, want, revision).await {
                Ok(page) => page,
                Err(e) if is_message_too_large(&e) && want > 1 => {
                    page_keys = (want / 2).max(1);
                    continue;
                }
                Err(e) => return Err(self.revision_error(e, revision.unwrap_or_default()).await),
            };
            revision.get_or_insert(page.revision);
            // The first page counts the whole range; later pages count what is left of it.
            total.get_or_insert(page.count);
            let bytes: usize = page
                .kvs
                .iter()
                .map(|kv| kv.key.len() + kv.value.len())
                .sum();
            if let Some(per_key) = bytes.checked_div(page.kvs.len()) {
                page_keys = (TARGET_PAGE_BYTES / per_key.max(1)).clamp(1, MAX_PAGE_KEYS);
            }
            let more = page.more;
            kvs.extend(page.kvs);
            let full = range.limit > 0 && kvs.len() >= range.limit;
            match kvs.last() {
                Some(last) if more && !full => start = after(&last.key),
                _ => break,
            }
        }
        let count = total.unwrap_or_default();
        Ok(RangeResponse {
            more: count > kvs.len() as i64,
            count,
            kvs,
            revision: revision.unwrap_or_default(),
        })
    }

    /// The revision etcd has compacted to, learnt from a watch at `requested` (older than
    /// it): etcd's range errors do not carry it, a canceled watch does. `None` if etcd does
    /// not tell within a second.
    async fn compact_revision(&self, requested: Revision) -> Option<Revision> {
        let probe = async {
            let options = WatchOptions::new().with_start_revision(requested.max(1));
            let stream = self
                .client
                .watch_client()
                .watch(vec![0], Some(options))
                .await
                .ok()?;
            let (_requests, mut responses) = stream.split();
            while let Ok(Some(response)) = responses.message().await {
                if response.compact_revision() > 0 {
                    return Some(response.compact_revision());
                }
                if response.canceled() {
                    return None;
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(1), probe)
            .await
            .ok()
            .flatten()
    }

    async fn current_or_unknown(&self) -> Revision {
        self.current_revision().await.unwrap_or_default()
    }

    /// Maps an error of a request made at `requested`, filling in the current revision for a
    /// future-revision error.
    async fn revision_error(&self, error: etcd_client::Error, requested: Revision) -> Error {
        match map_error(error) {
            Error::Compacted { compacted, .. } => Error::Compacted {
                requested,
                compacted: match compacted {
                    Some(compacted) => Some(compacted),
                    None => self.compact_revision(requested).await,
                },
            },
            Error::FutureRevision { .. } => Error::FutureRevision {
                requested,
                current: self.current_or_unknown().await,
            },
            other => other,
        }
    }
}

/// The endpoints in [`ENDPOINTS_ENV`], if set and not empty.
pub fn endpoints_from_env() -> Option<Vec<String>> {
    let value = std::env::var(ENDPOINTS_ENV).ok()?;
    let endpoints: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect();
    (!endpoints.is_empty()).then_some(endpoints)
}

#[async_trait]
impl Store for EtcdStore {
    async fn range(&self, range: Range) -> Result<RangeResponse> {
        range.validate()?;
        if range.end.is_empty() {
            // One key: one response, which always fits.
            return match self
                .range_once(&range.start, &range.end, range.limit, range.revision)
                .await
            {
                Ok(response) => Ok(response),
                Err(e) => Err(self
                    .revision_error(e, range.revision.unwrap_or_default())
                    .await),
            };
        }
        let mut restarts = 0;
        loop {
            match self.range_paged(&range).await {
                // The snapshot this read chose was compacted between its pages: read anew.
                Err(Error::Compacted { .. })
                    if range.revision.is_none() && restarts < RANGE_RESTARTS =>
                {
                    restarts += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        txn.validate()?;
        let request_bytes: usize = txn
            .success
            .iter()
            .chain(&txn.failure)
            .map(|op| match op {
                Op::Put { key, value } => key.len() + value.len(),
                Op::Get(key) | Op::Delete(key) => key.len(),
            })
            .sum();
        let compare: Vec<_> = txn.compare.iter().map(to_etcd_compare).collect();
        let success: Vec<_> = txn.success.iter().map(to_etcd_op).collect();
        let failure: Vec<_> = txn.failure.iter().map(to_etcd_op).collect();
        let response = self
            .client
            .kv_client()
            .txn(
                etcd_client::Txn::new()
                    .when(compare)
                    .and_then(success)
                    .or_else(failure),
            )
            .await
            .map_err(|e| match map_error(e) {
                Error::ValueTooLarge { limit, .. } => Error::ValueTooLarge {
                    size: request_bytes,
                    limit,
                },
                other => other,
            })?;
        let revision = response.header().map_or(0, |h| h.revision());
        let succeeded = response.succeeded();
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let results = ops
            .iter()
            .zip(response.op_responses())
            .map(|(op, result)| to_op_result(op, result, revision))
            .collect::<Result<Vec<_>>>()?;
        Ok(TxnResponse {
            succeeded,
            revision,
            results,
        })
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        request.validate()?;
        let current = self.current_revision().await?;
        let from = request.start_revision.unwrap_or(current + 1);
        if from > current + 1 {
            return Err(Error::FutureRevision {
                requested: from,
                current,
            });
        }
        if from <= current {
            // etcd reports a compacted start only asynchronously, after the watch is created;
            // a read at the start revision tells now.
            let probe = GetOptions::new()
                .with_revision(from)
                .with_count_only()
                .with_limit(1);
            if let Err(e) = self
                .client
                .kv_client()
                .get(request.start.to_vec(), Some(probe))
                .await
            {
                return Err(self.revision_error(e, from).await);
            }
        }
        let mut options = WatchOptions::new().with_start_revision(from);
        if !request.end.is_empty() {
            options = options.with_range(request.end.to_vec());
        }
        if request.prev_kv {
            options = options.with_prev_key();
        }
        let stream = self
            .client
            .watch_client()
            .watch(request.start.to_vec(), Some(options))
            .await
            .map_err(map_error)?;
        let (requests, responses) = stream.split();
        let watcher = EtcdWatcher {
            requests,
            responses,
            progress_notify: request.progress_notify,
            pending: VecDeque::new(),
            next: from,
            done: false,
        };
        Ok(futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next_event().await?;
            Some((item, watcher))
        })
        .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        if revision <= 0 {
            return Err(Error::InvalidRequest {
                message: format!("compaction revision must be positive, got {revision}"),
            });
        }
        match self
            .client
            .kv_client()
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.revision_error(e, revision).await),
        }
    }

    async fn current_revision(&self) -> Result<Revision> {
        let response = self
            .client
            .kv_client()
            .get(vec![0], Some(GetOptions::new().with_count_only()))
            .await
            .map_err(map_error)?;
        response
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| Error::Backend {
                message: "etcd response without a header".into(),
            })
    }
}

/// How long an etcd watch with progress notification may stay silent before it asks etcd
/// for a progress report.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

struct EtcdWatcher {
    requests: etcd_client::WatchRequestSender,
    responses: etcd_client::WatchResponseStream,
    progress_notify: bool,
    pending: VecDeque<Event>,
    /// The next revision expected, for error reports.
    next: Revision,
    done: bool,
}

impl EtcdWatcher {
    async fn next_event(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let message = if self.progress_notify {
                tokio::select! {
                    message = self.responses.message() => message,
                    () = tokio::time::sleep(PROGRESS_INTERVAL) => {
                        if let Err(e) = self.requests.request_progress().await {
                            self.done = true;
                            return Some(Err(map_error(e)));
                        }
                        continue;
                    }
                }
            } else {
                self.responses.message().await
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => {
                    self.done = true;
                    return Some(Err(Error::Unavailable {
                        message: "etcd closed the watch stream".into(),
                    }));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(map_error(e)));
                }
            };
            if response.canceled() {
                self.done = true;
                let compacted = response.compact_revision();
                return Some(Err(if compacted > 0 {
                    Error::Compacted {
                        requested: self.next,
                        compacted: Some(compacted),
                    }
                } else {
                    Error::Unavailable {
                        message: format!("etcd canceled the watch: {}", response.cancel_reason()),
                    }
                }));
            }
            if response.events().is_empty() {
                // A progress report: every event up to the header's revision has been sent.
                if self.progress_notify && !response.created() {
                    if let Some(revision) = response.header().map(|h| h.revision()) {
                        self.pending.push_back(Event::progress(revision));
                    }
                }
                continue;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let kind = match event.event_type() {
                    etcd_client::EventType::Put => EventKind::Put,
                    etcd_client::EventType::Delete => EventKind::Delete,
                };
                let kv = from_etcd_ref(kv);
                self.next = kv.mod_revision + 1;
                self.pending.push_back(Event {
                    kind,
                    kv,
                    prev: event.prev_kv().map(from_etcd_ref),
                });
            }
        }
    }
}

fn from_etcd(kv: etcd_client::KeyValue) -> KeyValue {
    let (create_revision, mod_revision, version) =
        (kv.create_revision(), kv.mod_revision(), kv.version());
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision,
        mod_revision,
        version,
    }
}

fn from_etcd_ref(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(kv.key()),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn to_etcd_compare(compare: &crate::Compare) -> etcd_client::Compare {
    let op = match compare.op {
        CompareOp::Equal => etcd_client::CompareOp::Equal,
        CompareOp::NotEqual => etcd_client::CompareOp::NotEqual,
        CompareOp::Greater => etcd_client::CompareOp::Greater,
        CompareOp::Less => etcd_client::CompareOp::Less,
    };
    let key = compare.key.to_vec();
    match &compare.target {
        CompareTarget::ModRevision(r) => etcd_client::Compare::mod_revision(key, op, *r),
        CompareTarget::CreateRevision(r) => etcd_client::Compare::create_revision(key, op, *r),
        CompareTarget::Version(v) => etcd_client::Compare::version(key, op, *v),
        CompareTarget::Value(v) => etcd_client::Compare::value(key, op, v.to_vec()),
    }
}

fn to_etcd_op(op: &Op) -> etcd_client::TxnOp {
    match op {
        Op::Get(key) => etcd_client::TxnOp::get(key.to_vec(), None),
        Op::Put { key, value } => etcd_client::TxnOp::put(
            key.to_vec(),
            value.to_vec(),
            Some(PutOptions::new().with_prev_key()),
        ),
        Op::Delete(key) => {
            etcd_client::TxnOp::delete(key.to_vec(), Some(DeleteOptions::new().with_prev_key()))
        }
    }
}

fn to_op_result(op: &Op, result: TxnOpResponse, revision: Revision) -> Result<OpResult> {
    match (op, result) {
        (Op::Get(_), TxnOpResponse::Get(mut get)) => Ok(OpResult::Get(
            get.take_kvs().into_iter().next().map(from_etcd),
        )),
        (Op::Put { key, value }, TxnOpResponse::Put(mut put)) => {
            let prev = put.take_prev_key().map(from_etcd);
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                mod_revision: revision,
                version: prev.as_ref().map_or(1, |p| p.version + 1),
            };
            Ok(OpResult::Put { kv, prev })
        }
        (Op::Delete(_), TxnOpResponse::Delete(mut delete)) => Ok(OpResult::Delete {
            prev: delete.take_prev_kvs().into_iter().next().map(from_etcd),
        }),
        (op, other) => Err(Error::Backend {
            message: format!("etcd answered {op:?} with {other:?}"),
        }),
    }
}

/// Maps an `etcd-client` error onto the store's errors. Revision errors carry placeholder
/// revisions; callers that know the request fill them in.
fn map_error(error: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    match error {
        E::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("required revision has been compacted") {
                Error::Compacted {
                    requested: 0,
                    compacted: None,
                }
            } else if message.contains("required revision is a future revision") {
                Error::FutureRevision {
                    requested: 0,
                    current: 0,
                }
            } else if message.contains("request is too large") {
                Error::ValueTooLarge {
                    size: 0,
                    limit: crate::MAX_VALUE_BYTES,
                }
            } else if message.contains("duplicate key given in txn request") {
                Error::InvalidRequest {
                    message: message.to_string(),
                }
            } else if message.contains("key is not provided") {
                Error::InvalidKey {
                    reason: message.to_string(),
                }
            } else if matches!(
                status.code(),
                tonic_code::Unavailable | tonic_code::DeadlineExceeded | tonic_code::Cancelled
            ) || message.contains("leader")
                || message.contains("timed out")
                // tonic reports a connection lost mid-request as Unknown.
                || (status.code() == tonic_code::Unknown && is_transport_failure(message))
            {
                Error::Unavailable {
                    message: format!("{}: {message}", status.code()),
                }
            } else {
                Error::Backend {
                    message: format!("{}: {message}", status.code()),
                }
            }
        }
        E::TransportError(e) => Error::Unavailable {
            message: format!("transport: {e}"),
        },
        E::IoError(e) => Error::Unavailable {
            message: format!("io: {e}"),
        },
        E::WatchError(e) => Error::Unavailable {
            message: format!("watch: {e}"),
        },
        other => Error::Backend {
            message: other.to_string(),
        },
    }
}

/// The smallest key after `key`.
fn after(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next.into()
}

/// Whether the client refused a response for exceeding its message size limit.
fn is_message_too_large(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.message().contains("message length too large")
        }
        _ => false,
    }
}

/// The gRPC status codes that can mean "try again later".
mod tonic_code {
    pub(super) use tonic::Code::{Cancelled, DeadlineExceeded, Unavailable, Unknown};
}

fn is_transport_failure(message: &str) -> bool {
    [
        "transport",
        "connection",
        "connect",
        "broken pipe",
        "h2 protocol",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreExt;

    fn grpc(code: tonic::Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn etcd_errors_map_onto_the_same_variants_as_memory() {
        use tonic::Code;
        let compacted = map_error(grpc(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert!(matches!(compacted, Error::Compacted { .. }), "{compacted}");
        let future = map_error(grpc(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ));
        assert!(matches!(future, Error::FutureRevision { .. }), "{future}");
        let too_large = map_error(grpc(
            Code::InvalidArgument,
            "etcdserver: request is too large",
        ));
        assert!(
            matches!(too_large, Error::ValueTooLarge { .. }),
            "{too_large}"
        );
        let duplicate = map_error(grpc(
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ));
        assert!(
            matches!(duplicate, Error::InvalidRequest { .. }),
            "{duplicate}"
        );
        let other = map_error(grpc(
            Code::PermissionDenied,
            "etcdserver: permission denied",
        ));
        assert!(matches!(other, Error::Backend { .. }), "{other}");
    }

    /// The store at [`ENDPOINTS_ENV`], which these tests need.
    async fn real_etcd() -> EtcdStore {
        EtcdStore::from_env().await.unwrap_or_else(|e| {
            panic!("this test needs a real etcd: run `scripts/test`, or set {ENDPOINTS_ENV}: {e}")
        })
    }

    /// A key prefix no other run uses.
    fn unique_prefix(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("/capstan-test/{name}/{}-{nanos}/", std::process::id())
    }

    /// Writes `count` keys of `value` under `prefix`, `per_txn` keys per transaction.
    async fn fill(store: &EtcdStore, prefix: &str, count: usize, per_txn: usize, value: &Bytes) {
        for first in (0..count).step_by(per_txn) {
            let puts = (first..(first + per_txn).min(count))
                .map(|i| Op::put(format!("{prefix}{i:06}"), value.clone()));
            store.txn(Txn::new().and_then(puts)).await.unwrap();
        }
    }

    async fn within<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(240), future)
            .await
            .expect("test timed out")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_larger_than_the_message_limit_is_read_in_pages_at_one_revision() {
        within(async {
            let store = real_etcd().await;
            let prefix = unique_prefix("large-range");
            let value = Bytes::from(vec![b'x'; 1024]);
            fill(&store, &prefix, 30_000, 100, &value).await;
            let before = store.current_revision().await.unwrap();
            // A write after the read's snapshot must not show up in it.
            let all = store.range(Range::prefix(prefix.clone())).await.unwrap();
            assert_eq!(all.kvs.len(), 30_000);
            assert_eq!((all.count, all.more), (30_000, false));
            assert!(all.revision >= before);
            assert!(all.kvs.windows(2).all(|w| w[0].key < w[1].key));
            assert!(all.kvs.iter().all(|kv| kv.mod_revision <= all.revision));
            store.put(format!("{prefix}zzz-later"), "v").await.unwrap();
            let at = store
                .range(Range::prefix(prefix.clone()).at_revision(all.revision))
                .await
                .unwrap();
            assert_eq!(
                at.kvs.len(),
                30_000,
                "the old snapshot, paged at its revision"
            );
            let limited = store
                .range(Range::prefix(prefix.clone()).limit(25_000))
                .await
                .unwrap();
            assert_eq!(limited.kvs.len(), 25_000);
            assert_eq!((limited.count, limited.more), (30_001, true));
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_shrink_when_a_few_large_values_exceed_the_message_limit() {
        within(async {
            let store = real_etcd().await;
            let prefix = unique_prefix("large-values");
            // Five values of 1.2 MiB: 6 MiB together, over the 4 MiB limit of one response.
            let value = Bytes::from(vec![b'y'; 1200 * 1024]);
            fill(&store, &prefix, 5, 1, &value).await;
            let all = store.range(Range::prefix(prefix.clone())).await.unwrap();
            assert_eq!(all.kvs.len(), 5);
            assert!(all.kvs.iter().all(|kv| kv.value.len() == value.len()));
            assert!(!all.more);
        })
        .await;
    }

    #[test]
    fn lost_connections_and_leaderless_members_are_retryable() {
        use tonic::Code;
        for error in [
            grpc(Code::Unavailable, "etcdserver: no leader"),
            grpc(Code::Unknown, "transport error"),
            grpc(Code::Unavailable, "etcdserver: request timed out"),
            grpc(Code::Unavailable, "etcdserver: leader changed"),
            grpc(Code::DeadlineExceeded, "deadline exceeded"),
        ] {
            let mapped = map_error(error);
            assert!(mapped.is_retryable(), "{mapped} should be retryable");
        }
        let unknown = map_error(grpc(Code::Unknown, "something else entirely"));
        assert!(!unknown.is_retryable(), "{unknown}");
    }
}
