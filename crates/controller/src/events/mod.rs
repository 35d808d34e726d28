//! The event recorder: client-go's `record.EventRecorder` and `EventCorrelator`, writing
//! `core/v1` [`Event`]s through the [`Client`].
//!
//! An [`EventBroadcaster`] owns one background task that writes Events; any number of
//! [`EventRecorder`]s (one per reporting component, cheap to clone) feed it.
//!
//! # Contracts
//!
//! - **Never blocks the caller.** [`EventRecorder::event`] is a plain function: it stamps the
//!   Event and queues it on a bounded queue ([`EventOptions::queue_capacity`], 1000 as in
//!   client-go). When the queue is full (the API is slow or failing), the Event is dropped
//!   with a `tracing` warning and counted in [`EventMetrics::dropped`]. Events are written
//!   in the order they were recorded.
//! - **The Event as Kubernetes writes it.** `involvedObject` is an `ObjectReference` built
//!   from the object's apiVersion, kind and metadata (name, namespace, uid,
//!   resourceVersion); the Event lives in the object's namespace (`default` for
//!   cluster-scoped objects) and is named `<object name>.<hex of the Unix nanoseconds>`,
//!   unique per broadcaster. It carries `reason`, `message`, `type` (`Normal` or `Warning`),
//!   `source` (component and host), `firstTimestamp`, `lastTimestamp`, `count`,
//!   `reportingComponent` and `reportingInstance` (the host).
//! - **Repeats are aggregated**, as client-go's `EventLogger` does: an Event equal to one
//!   recorded before in involved object, type, reason, message and source, within
//!   [`EventOptions::dedup_window`], is not created again: the existing Event is patched
//!   with `count + 1`, the new `lastTimestamp` (and message). If it has disappeared
//!   meanwhile (404), it is created again under its name. What was recorded is remembered in
//!   a bounded LRU cache ([`EventOptions::cache_size`], 4096 as in client-go); an evicted
//!   Event starts over as a new one.
//! - **Similar events are combined**, as client-go's `EventAggregator` does: once
//!   [`EventOptions::similar_events_threshold`] (10) different messages share an involved
//!   object, type, reason and source within [`EventOptions::similar_events_window`] (10
//!   minutes), further ones go to a single Event whose message is
//!   `(combined from similar events): <latest message>`, counted like a repeat.
//! - **Spam is filtered**, as client-go's `EventSourceObjectSpamFilter` does: each source
//!   (component and host) and involved object (apiVersion, kind, namespace, name, uid) has
//!   a token bucket of [`EventOptions::spam_burst`] (25) tokens, refilled one per
//!   [`EventOptions::spam_refill_interval`] (5 minutes). Every Event, after aggregation,
//!   takes a token; without one it is dropped (counted in [`EventMetrics::filtered`]). The
//!   buckets are kept in an LRU of [`EventOptions::cache_size`].
//! - **Writes are retried** on retryable errors (5xx, 429, timeouts) up to
//!   [`EventOptions::max_tries`] times, [`EventOptions::retry_interval`] apart (the first wait
//!   jittered), as client-go does; other errors drop the Event with a log line.
//! - [`EventBroadcaster::flush`] waits until everything recorded before it is written (or
//!   given up); [`EventBroadcaster::shutdown`] also stops the task. Dropping the broadcaster
//!   aborts the task at once; recorders then drop what they record.
//!
//! For tests, [`EventOptions::history_capacity`] keeps the last Events written, in writing
//! order, readable with [`EventBroadcaster::history`]; the Events are also in the API.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use capstan_api::{k8s_openapi::api::core::v1::Pod, Client};
//! use capstan_apiserver::registry::Registry;
//! use capstan_controller::events::{EventBroadcaster, EventOptions};
//! use capstan_store::memory::MemoryStore;
//!
//! let client: Arc<dyn Client> = Arc::new(Registry::new(Arc::new(MemoryStore::new())));
//! let events = EventBroadcaster::new(client, EventOptions::default().history_capacity(16));
//! let recorder = events.recorder("kubelet").with_host("node-1");
//!
//! let mut pod = Pod::default();
//! pod.metadata.name = Some("web".into());
//! pod.metadata.namespace = Some("default".into());
//! recorder.normal(&pod, "Killing", "Stopping container web");
//! recorder.normal(&pod, "Killing", "Stopping container web");
//!
//! events.flush().await;
//! let history = events.history();
//! assert_eq!(history.last().unwrap().count, Some(2));
//! events.shutdown().await;
//! # });
//! ```

use capstan_api::kube_core::ResourceExt;
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    fmt,
    hash::Hash,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use capstan_api::{
    k8s_openapi::{
        api::core::v1::{Event, EventSource, ObjectReference},
        apimachinery::pkg::apis::meta::v1::Time,
        jiff::Timestamp,
    },
    kube_core::{
        params::{Patch, PatchParams, PostParams},
        DynamicObject, ObjectMeta,
    },
    Api, Client, Error, Resource,
};
use parking_lot::Mutex;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

/// client-go's queue length for incoming events.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1000;
/// client-go's LRU size for the event caches.
pub const DEFAULT_CACHE_SIZE: usize = 4096;
/// client-go's number of tries to write one Event.
pub const DEFAULT_MAX_TRIES: u32 = 12;
/// client-go's wait between tries.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// client-go's number of distinct messages after which similar events are combined.
pub const DEFAULT_SIMILAR_EVENTS_THRESHOLD: usize = 10;
/// client-go's window for combining similar events.
pub const DEFAULT_SIMILAR_EVENTS_WINDOW: Duration = Duration::from_secs(600);
/// The default window for aggregating repeats: kube-apiserver's default event TTL, after
/// which the Event would be gone anyway.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(3600);
/// client-go's spam filter burst: Events one source may record about one object at once.
pub const DEFAULT_SPAM_BURST: u32 = 25;
/// client-go's spam filter refill: one more Event per source and object every 5 minutes
/// (a rate of 1/300 per second).
pub const DEFAULT_SPAM_REFILL_INTERVAL: Duration = Duration::from_secs(300);
/// The prefix of a combined Event's message, as in client-go.
pub const COMBINED_MESSAGE_PREFIX: &str = "(combined from similar events): ";

/// The type of an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something may need attention.
    Warning,
}

impl EventType {
    /// The wire form: `Normal` or `Warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The wall clock Events are stamped with.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Tuning of an [`EventBroadcaster`]; the defaults are client-go's.
#[derive(Clone)]
pub struct EventOptions {
    /// Events queued for writing before further ones are dropped.
    pub queue_capacity: usize,
    /// Entries in each of the correlator's LRU caches (repeats, similar events and spam
    /// buckets).
    pub cache_size: usize,
    /// How long after its last occurrence a repeat still increments the existing Event.
    pub dedup_window: Duration,
    /// Distinct messages (same object, type, reason, source) after which further ones are
    /// combined into one Event; 0 disables combining.
    pub similar_events_threshold: usize,
    /// The window in which distinct messages are counted for combining.
    pub similar_events_window: Duration,
    /// Tokens in each source-and-object bucket of the spam filter (its burst); 0 disables
    /// the filter.
    pub spam_burst: u32,
    /// Time for one token to come back to a bucket.
    pub spam_refill_interval: Duration,
    /// Tries to write one Event on retryable errors.
    pub max_tries: u32,
    /// Wait between tries.
    pub retry_interval: Duration,
    /// How many written Events [`EventBroadcaster::history`] keeps; 0 (the default) keeps
    /// none.
    pub history_capacity: usize,
    clock: Clock,
}

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            cache_size: DEFAULT_CACHE_SIZE,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            similar_events_threshold: DEFAULT_SIMILAR_EVENTS_THRESHOLD,
            similar_events_window: DEFAULT_SIMILAR_EVENTS_WINDOW,
            spam_burst: DEFAULT_SPAM_BURST,
            spam_refill_interval: DEFAULT_SPAM_REFILL_INTERVAL,
            max_tries: DEFAULT_MAX_TRIES,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            history_capacity: 0,
            clock: Arc::new(Timestamp::now),
        }
    }
}

impl fmt::Debug for EventOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventOptions")
            .field("queue_capacity", &self.queue_capacity)
            .field("cache_size", &self.cache_size)
            .field("dedup_window", &self.dedup_window)
            .field("similar_events_threshold", &self.similar_events_threshold)
            .field("similar_events_window", &self.similar_events_window)
            .field("spam_burst", &self.spam_burst)
            .field("spam_refill_interval", &self.spam_refill_interval)
            .field("max_tries", &self.max_tries)
            .field("retry_interval", &self.retry_interval)
            .field("history_capacity", &self.history_capacity)
            .finish_non_exhaustive()
    }
}

impl EventOptions {
    /// Sets [`queue_capacity`](Self::queue_capacity) (at least 1).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// Sets [`cache_size`](Self::cache_size) (at least 1).
    pub fn cache_size(mut self, size: usize) -> Self {
        self.cache_size = size.max(1);
        self
    }

    /// Sets [`dedup_window`](Self::dedup_window).
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window = window;
        self
    }

    /// Sets [`similar_events_threshold`](Self::similar_events_threshold) and
    /// [`similar_events_window`](Self::similar_events_window).
    pub fn similar_events(mut self, threshold: usize, window: Duration) -> Self {
        self.similar_events_threshold = threshold;
        self.similar_events_window = window;
        self
    }

    /// Sets the spam filter's [`spam_burst`](Self::spam_burst) (0 disables it) and
    /// [`spam_refill_interval`](Self::spam_refill_interval).
    pub fn spam_filter(mut self, burst: u32, refill_interval: Duration) -> Self {
        self.spam_burst = burst;
        self.spam_refill_interval = refill_interval;
        self
    }

    /// Sets [`max_tries`](Self::max_tries) (at least 1) and
    /// [`retry_interval`](Self::retry_interval).
    pub fn retries(mut self, max_tries: u32, interval: Duration) -> Self {
        self.max_tries = max_tries.max(1);
        self.retry_interval = interval;
        self
    }

    /// Sets [`history_capacity`](Self::history_capacity).
    pub fn history_capacity(mut self, capacity: usize) -> Self {
        self.history_capacity = capacity;
        self
    }

    /// Stamps Events with `clock` instead of the system clock (for tests).
    pub fn clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

/// Counters of an [`EventBroadcaster`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventMetrics {
    /// Events accepted into the queue.
    pub recorded: u64,
    /// Events dropped because the queue was full or the broadcaster gone.
    pub dropped: u64,
    /// Events created in the API.
    pub created: u64,
    /// Repeats written as a patch of the existing Event.
    pub patched: u64,
    /// Events given up after errors.
    pub failed: u64,
    /// Events dropped by the spam filter.
    pub filtered: u64,
}

#[derive(Default)]
struct Counters {
    recorded: AtomicU64,
    dropped: AtomicU64,
    created: AtomicU64,
    patched: AtomicU64,
    failed: AtomicU64,
    filtered: AtomicU64,
}

struct Shared {
    options: EventOptions,
    counters: Counters,
    history: Mutex<VecDeque<Event>>,
}

enum Command {
    Record(Box<Event>),
    Flush(oneshot::Sender<()>),
    Shutdown,
}

/// The background writer of Events; see the [module docs](self).
///
/// Must be created inside a tokio runtime. Dropping it aborts the writer at once; use
/// [`shutdown`](Self::shutdown) to write what is queued first.
pub struct EventBroadcaster {
    sender: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl fmt::Debug for EventBroadcaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBroadcaster")
            .field("options", &self.shared.options)
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl EventBroadcaster {
    /// Starts the writer, writing Events through `client`.
    pub fn new(client: Arc<dyn Client>, options: EventOptions) -> Self {
        let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            options,
            counters: Counters::default(),
            history: Mutex::new(VecDeque::new()),
        });
        let worker = tokio::spawn(write_events(client, shared.clone(), receiver));
        EventBroadcaster {
            sender,
            shared,
            worker: Some(worker),
        }
    }

    /// A recorder reporting as `component` (e.g. `deployment-controller`), with no host.
    pub fn recorder(&self, component: impl Into<String>) -> EventRecorder {
        EventRecorder {
            sender: self.sender.clone(),
            shared: self.shared.clone(),
            source: EventSource {
                component: Some(component.into()),
                host: None,
            },
        }
    }

    /// Waits until every Event recorded before the call is written or given up.
    ///
    /// Waits as long as the writer does: through retries while the API fails.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.sender.send(Command::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Writes what is queued, then stops the writer. Recorders drop what they record after.
    ///
    /// Like [`flush`](Self::flush), waits as long as the writer does; drop the broadcaster
    /// instead to stop at once.
    pub async fn shutdown(mut self) {
        if self.sender.send(Command::Shutdown).await.is_ok() {
            if let Some(worker) = self.worker.take() {
                let _ = worker.await;
            }
        }
    }

    /// The counters so far.
    pub fn metrics(&self) -> EventMetrics {
        let counters = &self.shared.counters;
        EventMetrics {
            recorded: counters.recorded.load(Ordering::Relaxed),
            dropped: counters.dropped.load(Ordering::Relaxed),
            created: counters.created.load(Ordering::Relaxed),
            patched: counters.patched.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            filtered: counters.filtered.load(Ordering::Relaxed),
        }
    }

    /// The last [`history_capacity`](EventOptions::history_capacity) Events written, oldest
    /// first, each as the API returned it after its create or patch (so a repeat appears
    /// again with its new count).
    pub fn history(&self) -> Vec<Event> {
        self.shared.history.lock().iter().cloned().collect()
    }
}

impl Drop for EventBroadcaster {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.abort();
        }
    }
}

/// Records Events for one reporting component; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    sender: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    source: EventSource,
}

impl fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRecorder")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl EventRecorder {
    /// The same recorder, reporting from `host` (`source.host` and `reportingInstance`).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.source.host = Some(host.into());
        self
    }

    /// The reporting component.
    pub fn component(&self) -> &str {
        self.source.component.as_deref().unwrap_or_default()
    }

    /// Records an Event about `object`. Never blocks; see the [module docs](self).
    pub fn event<K: Resource>(
        &self,
        object: &K,
        type_: EventType,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.event_for(object_reference(object), type_, reason, message);
    }

    /// Records a `Normal` Event about `object`.
    pub fn normal<K: Resource>(
        &self,
        object: &K,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.event(object, EventType::Normal, reason, message);
    }

    /// Records a `Warning` Event about `object`.
    pub fn warning<K: Resource>(
        &self,
        object: &K,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.event(object, EventType::Warning, reason, message);
    }

    /// Records an Event about the object `reference` points at (see [`object_reference`]
    /// and [`dynamic_object_reference`]).
    pub fn event_for(
        &self,
        reference: ObjectReference,
        type_: EventType,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) {
        let now = Time((self.shared.options.clock)());
        let namespace = reference
            .namespace
            .clone()
            .filter(|namespace| !namespace.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let event = Event {
            metadata: ObjectMeta {
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            involved_object: reference,
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.as_str().to_string()),
            source: Some(self.source.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: self.source.component.clone(),
            reporting_instance: self.source.host.clone(),
            ..Event::default()
        };
        let counters = &self.shared.counters;
        match self.sender.try_send(Command::Record(Box::new(event))) {
            Ok(()) => {
                counters.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(Command::Record(event))) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    reason = event.reason.as_deref().unwrap_or_default(),
                    object = event.involved_object.name.as_deref().unwrap_or_default(),
                    "event queue is full; dropping the event"
                );
            }
            Err(_) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("event broadcaster is gone; dropping the event");
            }
        }
    }
}

/// The `ObjectReference` Kubernetes puts in `involvedObject`: apiVersion and kind of `K`, and
/// the object's name, namespace, uid and resourceVersion.
pub fn object_reference<K: Resource>(object: &K) -> ObjectReference {
    let info = K::info();
    let meta = object.meta();
    ObjectReference {
        api_version: Some(info.api_version()),
        kind: Some(info.kind().to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

/// [`object_reference`] for a [`DynamicObject`], taking apiVersion and kind from its type
/// information.
pub fn dynamic_object_reference(object: &DynamicObject) -> ObjectReference {
    let meta = &object.metadata;
    ObjectReference {
        api_version: object.types.as_ref().map(|t| t.api_version.clone()),
        kind: object.types.as_ref().map(|t| t.kind.clone()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

// ---------------------------------------------------------------------------------------------
// The writer

async fn write_events(
    client: Arc<dyn Client>,
    shared: Arc<Shared>,
    mut receiver: mpsc::Receiver<Command>,
) {
    let mut correlator = Correlator::new(&shared.options);
    while let Some(command) = receiver.recv().await {
        match command {
            Command::Record(event) => {
                let now = event
                    .last_timestamp
                    .as_ref()
                    .map(|time| time.0)
                    .unwrap_or_else(|| (shared.options.clock)());
                let (event, repeat) = correlator.correlate(*event, now);
                // As client-go: aggregated and counted first, then filtered.
                if !correlator.allow(&event, now) {
                    shared.counters.filtered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        reason = event.reason.as_deref().unwrap_or_default(),
                        object = event.involved_object.name.as_deref().unwrap_or_default(),
                        "event dropped by the spam filter"
                    );
                    continue;
                }
                if let Some(written) = write_event(&client, &shared, event, repeat).await {
                    let capacity = shared.options.history_capacity;
                    if capacity > 0 {
                        let mut history = shared.history.lock();
                        while history.len() >= capacity {
                            history.pop_front();
                        }
                        history.push_back(written);
                    }
                }
            }
            Command::Flush(done) => {
                let _ = done.send(());
            }
            // Writes what was queued before (and any stragglers), then ends.
            Command::Shutdown => receiver.close(),
        }
    }
}

/// Creates `event`, or patches the existing Event for a repeat; retries retryable errors.
async fn write_event(
    client: &Arc<dyn Client>,
    shared: &Shared,
    event: Event,
    repeat: bool,
) -> Option<Event> {
    let namespace = event.namespace().unwrap_or_default();
    let name = event.name_any();
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let options = &shared.options;
    let counters = &shared.counters;
    let mut tries = 0;
    loop {
        tries += 1;
        let result = if repeat {
            let patch = serde_json::json!({
                "count": event.count,
                "lastTimestamp": event.last_timestamp,
                "message": event.message,
            });
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                // Deleted meanwhile (e.g. its TTL passed): create it again.
                Err(error) if error.is_not_found() => create(&events, &event, counters).await,
                Ok(patched) => {
                    counters.patched.fetch_add(1, Ordering::Relaxed);
                    Ok(patched)
                }
                Err(error) => Err(error),
            }
        } else {
            create(&events, &event, counters).await
        };
        match result {
            Ok(written) => return Some(written),
            Err(error) if error.is_retryable() && tries < options.max_tries => {
                tracing::warn!(%namespace, %name, %error, tries, "failed to write event; retrying");
                let wait = if tries == 1 {
                    capstan_watch::backoff::jitter(options.retry_interval, 0.25)
                } else {
                    options.retry_interval
                };
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                if error.is_already_exists() {
                    tracing::debug!(%namespace, %name, %error, "event already exists; dropping it");
                } else {
                    tracing::error!(%namespace, %name, %error, tries, "failed to write event; dropping it");
                }
                return None;
            }
        }
    }
}

async fn create(events: &Api<Event>, event: &Event, counters: &Counters) -> Result<Event, Error> {
    let mut event = event.clone();
    event.metadata.resource_version = None;
    let created = events.create(&PostParams::default(), &event).await?;
    counters.created.fetch_add(1, Ordering::Relaxed);
    Ok(created)
}

// ---------------------------------------------------------------------------------------------
// The correlator

/// What makes Events similar: everything but the message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SimilarKey {
    component: Option<String>,
    host: Option<String>,
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    field_path: Option<String>,
    type_: Option<String>,
    reason: Option<String>,
}

impl SimilarKey {
    fn of(event: &Event) -> Self {
        let source = event.source.clone().unwrap_or_default();
        let object = &event.involved_object;
        SimilarKey {
            component: source.component,
            host: source.host,
            api_version: object.api_version.clone(),
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            uid: object.uid.clone(),
            field_path: object.field_path.clone(),
            type_: event.type_.clone(),
            reason: event.reason.clone(),
        }
    }
}

/// What makes Events repeats: similar with the same message, or the combined Event of
/// similar ones (`None`).
type RepeatKey = (SimilarKey, Option<String>);

struct Similar {
    messages: HashSet<String>,
    last: Timestamp,
}

struct Observed {
    name: String,
    count: i32,
    first: Timestamp,
    last: Timestamp,
}

/// What the spam filter counts by (client-go's `getSpamKey`): the source and the involved
/// object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SpamKey {
    component: Option<String>,
    host: Option<String>,
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl SpamKey {
    fn of(event: &Event) -> Self {
        let source = event.source.clone().unwrap_or_default();
        let object = &event.involved_object;
        SpamKey {
            component: source.component,
            host: source.host,
            api_version: object.api_version.clone(),
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            uid: object.uid.clone(),
        }
    }
}

/// A token bucket, refilled lazily from the time of its last use.
struct Bucket {
    tokens: f64,
    last: Timestamp,
}

/// client-go's `EventCorrelator`: the aggregator, the repeat logger and the spam filter.
struct Correlator {
    similar: Lru<SimilarKey, Similar>,
    observed: Lru<RepeatKey, Observed>,
    spam: Lru<SpamKey, Bucket>,
    spam_burst: u32,
    spam_refill_interval: Duration,
    similar_threshold: usize,
    similar_window: Duration,
    dedup_window: Duration,
    last_suffix: u128,
}

impl Correlator {
    fn new(options: &EventOptions) -> Self {
        Correlator {
            similar: Lru::new(options.cache_size),
            observed: Lru::new(options.cache_size),
            spam: Lru::new(options.cache_size),
            spam_burst: options.spam_burst,
            spam_refill_interval: options.spam_refill_interval,
            similar_threshold: options.similar_events_threshold,
            similar_window: options.similar_events_window,
            dedup_window: options.dedup_window,
            last_suffix: 0,
        }
    }

    /// Names `event` and decides whether it is a repeat (true: patch) or new (false: create).
    fn correlate(&mut self, mut event: Event, now: Timestamp) -> (Event, bool) {
        let similar_key = SimilarKey::of(&event);
        let message = event.message.clone().unwrap_or_default();
        let mut key: RepeatKey = (similar_key.clone(), Some(message.clone()));

        if self.similar_threshold > 0 {
            if self.similar.get_mut(&similar_key).is_none() {
                self.similar.insert(
                    similar_key.clone(),
                    Similar {
                        messages: HashSet::new(),
                        last: now,
                    },
                );
            }
            let record = self.similar.get_mut(&similar_key).expect("just inserted");
            if elapsed(now, record.last) > self.similar_window {
                record.messages.clear();
            }
            record.last = now;
            record.messages.insert(message.clone());
            if record.messages.len() >= self.similar_threshold {
                // Keep the set bounded, as client-go does.
                if let Some(any) = record.messages.iter().next().cloned() {
                    record.messages.remove(&any);
                }
                event.message = Some(format!("{COMBINED_MESSAGE_PREFIX}{message}"));
                key = (similar_key, None);
            }
        }

        if let Some(previous) = self.observed.get_mut(&key) {
            if elapsed(now, previous.last) <= self.dedup_window {
                previous.count = previous.count.saturating_add(1);
                previous.last = now;
                event.metadata.name = Some(previous.name.clone());
                event.count = Some(previous.count);
                event.first_timestamp = Some(Time(previous.first));
                event.last_timestamp = Some(Time(now));
                return (event, true);
            }
        }
        let name = self.name_for(&event, now);
        event.metadata.name = Some(name.clone());
        event.count = Some(1);
        let first = event.first_timestamp.as_ref().map_or(now, |time| time.0);
        self.observed.insert(
            key,
            Observed {
                name,
                count: 1,
                first,
                last: now,
            },
        );
        (event, false)
    }

    /// The spam filter: whether `event`'s source and object still have a token at `now`
    /// (taking it). A new bucket starts full.
    fn allow(&mut self, event: &Event, now: Timestamp) -> bool {
        if self.spam_burst == 0 {
            return true;
        }
        let burst = f64::from(self.spam_burst);
        let key = SpamKey::of(event);
        if self.spam.get_mut(&key).is_none() {
            self.spam.insert(
                key.clone(),
                Bucket {
                    tokens: burst,
                    last: now,
                },
            );
        }
        let bucket = self.spam.get_mut(&key).expect("just inserted");
        let refill = self.spam_refill_interval.as_secs_f64();
        let earned = if refill > 0.0 {
            elapsed(now, bucket.last).as_secs_f64() / refill
        } else {
            burst
        };
        bucket.tokens = (bucket.tokens + earned).min(burst);
        if now > bucket.last {
            bucket.last = now;
        }
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// `<object name>.<hex nanoseconds>`, strictly increasing per correlator.
    fn name_for(&mut self, event: &Event, now: Timestamp) -> String {
        let nanos = u128::try_from(now.as_nanosecond()).unwrap_or(0);
        let suffix = nanos.max(self.last_suffix + 1);
        self.last_suffix = suffix;
        let object = event.involved_object.name.as_deref().unwrap_or_default();
        format!("{object}.{suffix:x}")
    }
}

fn elapsed(now: Timestamp, then: Timestamp) -> Duration {
    let nanos = now.as_nanosecond() - then.as_nanosecond();
    Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
}

/// A least-recently-used map of bounded size.
struct Lru<K, V> {
    entries: HashMap<K, (V, u64)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    capacity: usize,
}

impl<K: Clone + Eq + Hash, V> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Lru {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let (value, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        self.tick += 1;
        *used = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(value)
    }

    fn insert(&mut self, key: K, value: V) {
        self.tick += 1;
        if let Some((_, used)) = self.entries.insert(key.clone(), (value, self.tick)) {
            self.order.remove(&used);
        }
        self.order.insert(self.tick, key);
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests;
