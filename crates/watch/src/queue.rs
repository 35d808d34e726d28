//! The work queue between event handlers and workers, with client-go's semantics.
//!
//! Event handlers [`add`](WorkQueue::add) the key of each object that changed; workers
//! [`get`](WorkQueue::get) keys and reconcile them. The queue guarantees:
//!
//! - **Deduplication.** A key added several times before a worker takes it is processed once.
//! - **One worker per key.** A key being processed is never handed out again. Adding it
//!   meanwhile marks it dirty, and it is queued again once its worker is
//!   [done](Processing::done) with it.
//! - **Delays and rate limiting.** [`add_after`](WorkQueue::add_after) queues a key later.
//!   [`add_rate_limited`](WorkQueue::add_rate_limited) asks a [`RateLimiter`] how much later
//!   (by default the larger of a per-key exponential backoff and a global token bucket), and
//!   [`forget`](WorkQueue::forget) resets a key's backoff after a success.
//! - **Shutdown with drain.** After [`shut_down`](WorkQueue::shut_down), adds are ignored and
//!   `get` hands out the keys still queued, then `None`.
//!   [`shut_down_with_drain`](WorkQueue::shut_down_with_drain) also waits for the keys in
//!   flight.
//!
//! A worker loop that retries failures with backoff:
//!
//! ```
//! use capstan_watch::queue::WorkQueue;
//!
//! async fn reconcile(key: &str) -> Result<(), String> {
//!     println!("reconciling {key}");
//!     Ok(())
//! }
//!
//! /// Runs until the queue is shut down and every queued key has been handed out.
//! async fn worker(queue: WorkQueue<String>) {
//!     while let Some(key) = queue.get().await {
//!         match reconcile(&key).await {
//!             // Success: the key's next failure starts again from the base delay.
//!             Ok(()) => queue.forget(&key),
//!             // Failure: retry later, twice as late as the previous failure.
//!             Err(_) => queue.add_rate_limited(key.key().clone()),
//!         }
//!         // Dropping `key` marks it done; if it was added meanwhile, it is queued again.
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let queue = WorkQueue::new();
//! let workers: Vec<_> = (0..2).map(|_| tokio::spawn(worker(queue.clone()))).collect();
//! queue.add("default/web".to_owned());
//! queue.add("default/db".to_owned());
//! queue.shut_down_with_drain().await;
//! for worker in workers {
//!     worker.await.unwrap();
//! }
//! # }
//! ```
//!
//! Time is read from [`tokio::time::Instant`], so delays, backoff and metrics follow tokio's
//! paused clock in tests.

use std::cmp::Ordering;
use std::collections::binary_heap::PeekMut;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backoff::ExponentialDelay;

/// Decides how long a key waits before its next retry.
///
/// [`WorkQueue::add_rate_limited`] calls [`when`](Self::when) once per retry,
/// [`WorkQueue::forget`] calls [`forget`](Self::forget) and [`WorkQueue::num_requeues`] calls
/// [`retries`](Self::retries). Implementations are shared by every worker, so they use interior
/// mutability, and they must not block: `when` computes a delay, it never sleeps.
pub trait RateLimiter<K>: Send + Sync + 'static {
    /// Records one more failure of `key` and returns how long to wait before retrying it.
    fn when(&self, key: &K) -> Duration;

    /// Clears what is remembered about `key`, typically after it succeeded. Idempotent.
    fn forget(&self, key: &K);

    /// How many failures of `key` were recorded since it was last forgotten.
    fn retries(&self, key: &K) -> u32;
}

/// Per-key exponential backoff: `base * 2^failures`, capped at `max`.
///
/// client-go's `ItemExponentialFailureRateLimiter`. The [`Default`] is the controller default:
/// 5 ms doubling up to 1000 s.
///
/// The delays are [`ExponentialDelay`]'s; this keeps the failure count of each key.
pub struct ExponentialBackoff<K> {
    delays: ExponentialDelay,
    failures: Mutex<HashMap<K, u32>>,
}

impl<K> ExponentialBackoff<K> {
    /// A backoff that waits `base` after the first failure and doubles up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            delays: ExponentialDelay::new(base, max),
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl<K> Default for ExponentialBackoff<K> {
    fn default() -> Self {
        Self::new(Duration::from_millis(5), Duration::from_secs(1000))
    }
}

impl<K> fmt::Debug for ExponentialBackoff<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExponentialBackoff")
            .field("base", &self.delays.base())
            .field("max", &self.delays.max())
            .field("failing_keys", &self.failures.lock().len())
            .finish()
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> RateLimiter<K> for ExponentialBackoff<K> {
    fn when(&self, key: &K) -> Duration {
        let mut failures = self.failures.lock();
        let previous = match failures.get_mut(key) {
            Some(count) => {
                let previous = *count;
                *count = count.saturating_add(1);
                previous
            }
            None => {
                failures.insert(key.clone(), 1);
                0
            }
        };
        self.delays.delay(previous)
    }

    fn forget(&self, key: &K) {
        self.failures.lock().remove(key);
    }

    fn retries(&self, key: &K) -> u32 {
        self.failures.lock().get(key).copied().unwrap_or(0)
    }
}

/// A global token bucket: `burst` retries at once, then `qps` per second, whatever the key.
///
/// client-go's `BucketRateLimiter`. Delays come from reservations, as Go's
/// `rate.Limiter.Reserve` computes them: every call takes a token, possibly one that will
/// only exist in the future, and waits until then. The [`Default`] is the controller
/// default: 10 qps with a burst of 100. It keeps no per-key state, so
/// [`retries`](RateLimiter::retries) is always 0.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens available at `updated`; negative when reservations run ahead of the refill.
    tokens: f64,
    updated: Option<Instant>,
}

impl TokenBucket {
    /// A bucket holding `burst` tokens, refilled at `qps` tokens per second, initially full.
    ///
    /// # Panics
    ///
    /// If `qps` is not a positive finite number.
    pub fn new(qps: f64, burst: u32) -> Self {
        assert!(
            qps.is_finite() && qps > 0.0,
            "TokenBucket qps must be positive and finite, got {qps}"
        );
        Self {
            qps,
            burst: f64::from(burst),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(burst),
                updated: None,
            }),
        }
    }
}

impl Default for TokenBucket {
    fn default() -> Self {
        Self::new(10.0, 100)
    }
}

impl<K> RateLimiter<K> for TokenBucket {
    fn when(&self, _key: &K) -> Duration {
        let now = Instant::now();
        let mut bucket = self.bucket.lock();
        let refill = bucket.updated.map_or(0.0, |updated| {
            now.saturating_duration_since(updated).as_secs_f64() * self.qps
        });
        let tokens = (bucket.tokens + refill).min(self.burst) - 1.0;
        bucket.tokens = tokens;
        bucket.updated = Some(now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.qps)
        }
    }

    fn forget(&self, _key: &K) {}

    fn retries(&self, _key: &K) -> u32 {
        0
    }
}

/// Combines two limiters: waits as long as the slower one says; nest it for more.
///
/// client-go's `MaxOfRateLimiter`. Both limiters record every failure and forget every key;
/// [`retries`](RateLimiter::retries) is the larger of the two counts.
#[derive(Debug, Default)]
pub struct MaxOf<A, B> {
    first: A,
    second: B,
}

impl<A, B> MaxOf<A, B> {
    /// Combines `first` and `second`.
    pub fn new(first: A, second: B) -> Self {
        Self { first, second }
    }
}

impl<K, A: RateLimiter<K>, B: RateLimiter<K>> RateLimiter<K> for MaxOf<A, B> {
    fn when(&self, key: &K) -> Duration {
        self.first.when(key).max(self.second.when(key))
    }

    fn forget(&self, key: &K) {
        self.first.forget(key);
        self.second.forget(key);
    }

    fn retries(&self, key: &K) -> u32 {
        self.first.retries(key).max(self.second.retries(key))
    }
}

/// client-go's `DefaultControllerRateLimiter`: per-key backoff from 5 ms to 1000 s, and at
/// most 10 retries per second overall after a burst of 100. Build it with `default()`.
pub type DefaultRateLimiter<K> = MaxOf<ExponentialBackoff<K>, TokenBucket>;

/// The upper bounds, in seconds, of [`DurationStats::buckets`]: client-go's workqueue
/// histogram buckets, 10 ns to 10 s by factors of ten.
pub const DURATION_BUCKETS: [f64; 10] = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// Count, sum, maximum and histogram of a series of durations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurationStats {
    /// How many durations were recorded.
    pub count: u64,
    /// Their sum.
    pub sum: Duration,
    /// The longest one.
    pub max: Duration,
    /// How many fell in each bucket of [`DURATION_BUCKETS`]: `buckets[i]` counts the
    /// durations above bound `i - 1` and at most bound `i` (not cumulative); longer ones are
    /// only in `count`.
    pub buckets: [u64; DURATION_BUCKETS.len()],
}

impl DurationStats {
    /// The average duration, or `None` before the first one.
    pub fn mean(&self) -> Option<Duration> {
        let count = u32::try_from(self.count).ok().filter(|&count| count > 0);
        count.map(|count| self.sum / count)
    }

    /// Records one duration.
    pub fn record(&mut self, duration: Duration) {
        self.count += 1;
        self.sum = self.sum.saturating_add(duration);
        self.max = self.max.max(duration);
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[bucket] += 1;
        }
    }

    /// Adds `other`'s durations to these.
    pub fn merge(&mut self, other: &DurationStats) {
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
    }
}

/// A snapshot of a queue's state and history, from [`WorkQueue::metrics`].
///
/// The figures of client-go's workqueue metrics provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueMetrics {
    /// Keys queued and waiting for a worker.
    pub depth: usize,
    /// Keys handed to workers and not done yet.
    pub processing: usize,
    /// Keys waiting for a delayed add to fire.
    pub waiting: usize,
    /// Adds that marked a key dirty; adds of a key already queued (deduplicated) and adds
    /// after shutdown do not count. Delayed adds count when they fire.
    pub adds: u64,
    /// Calls to [`WorkQueue::add_rate_limited`] before shutdown.
    pub retries: u64,
    /// From the add of a key to a worker getting it.
    pub queue_latency: DurationStats,
    /// From a worker getting a key to its being done.
    pub work_duration: DurationStats,
    /// How long the keys in flight have been processed so far, summed; client-go's
    /// `unfinished_work_seconds`. A stuck worker makes it grow.
    pub unfinished_work: Duration,
    /// How long the oldest key in flight has been processed so far.
    pub longest_running_processor: Duration,
}

/// A work queue of keys: deduplicating, one worker per key, with delayed and rate-limited
/// adds and a draining shutdown. See the [module documentation](self).
///
/// Cheap to clone: clones share one queue, so hand one to each event handler and worker.
pub struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> fmt::Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("WorkQueue")
            .field("depth", &state.queue.len())
            .field("processing", &state.processing.len())
            .field("waiting", &state.waiting.len())
            .field("shutting_down", &state.shutting_down)
            .finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    /// A queue rate limited by [`DefaultRateLimiter`].
    pub fn new() -> Self {
        Self::with_rate_limiter(DefaultRateLimiter::default())
    }

    /// A queue whose [`add_rate_limited`](Self::add_rate_limited) asks `limiter`.
    pub fn with_rate_limiter(limiter: impl RateLimiter<K>) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                queued: Notify::new(),
                idle: Notify::new(),
                timer_wake: Arc::new(Notify::new()),
                limiter: Box::new(limiter),
                registration: Mutex::new(None),
            }),
        }
    }

    /// Queues `key`, unless it is queued already. A key being processed is queued again when
    /// it is done. Ignored after shutdown.
    pub fn add(&self, key: K) {
        self.shared.add(key, false);
    }

    /// Adds `key` once `delay` has passed; a zero delay adds it now. Ignored after shutdown,
    /// and keys still waiting at shutdown are dropped.
    ///
    /// While a key waits, a later call with an earlier deadline brings it forward and one with
    /// a later deadline is ignored: the earliest wins. An immediate [`add`](Self::add) does not
    /// cancel the wait.
    ///
    /// # Panics
    ///
    /// The first delayed add of a queue spawns its timer task, so it panics outside a tokio
    /// runtime. The task ends when the queue is shut down or dropped.
    pub fn add_after(&self, key: K, delay: Duration) {
        self.shared.add_after(key, delay, false);
    }

    /// Adds `key` after the delay the rate limiter gives for its next retry, and counts a
    /// retry. Ignored after shutdown, without asking the limiter.
    ///
    /// # Panics
    ///
    /// As [`add_after`](Self::add_after), outside a tokio runtime.
    pub fn add_rate_limited(&self, key: K) {
        if self.is_shutting_down() {
            return;
        }
        let delay = self.shared.limiter.when(&key);
        self.shared.add_after(key, delay, true);
    }

    /// Resets the rate limiter's memory of `key`, typically once it succeeded. It does not
    /// remove the key from the queue. Idempotent.
    pub fn forget(&self, key: &K) {
        self.shared.limiter.forget(key);
    }

    /// How many times `key` was rate limited since it was last forgotten.
    pub fn num_requeues(&self, key: &K) -> u32 {
        self.shared.limiter.retries(key)
    }

    /// Waits for the next key and marks it processing until the returned guard is dropped.
    ///
    /// Returns `None` once the queue is shut down and no key is queued. Cancel safe: a key is
    /// taken only when the future completes.
    pub async fn get(&self) -> Option<Processing<K>> {
        loop {
            let queued = self.shared.queued.notified();
            let mut queued = std::pin::pin!(queued);
            // Registered before looking, so an add between the look and the wait wakes us.
            queued.as_mut().enable();
            {
                let mut state = self.shared.state.lock();
                if let Some(key) = state.take_next(Instant::now()) {
                    return Some(Processing {
                        shared: Arc::clone(&self.shared),
                        key,
                    });
                }
                if state.shutting_down {
                    return None;
                }
            }
            queued.await;
        }
    }

    /// Starts shutting down: later adds are ignored, delayed keys are dropped, and
    /// [`get`](Self::get) hands out the keys still queued, then returns `None` (waiting calls
    /// wake). Keys in flight may still be re-queued by their done if they were added before.
    /// Idempotent.
    pub fn shut_down(&self) {
        self.shared.shut_down();
    }

    /// Shuts down as [`shut_down`](Self::shut_down), then waits until no key is being
    /// processed, so every worker must eventually be done with its key. Keys still queued are
    /// left to [`get`](Self::get). Cancel safe: dropping the future stops only the waiting.
    pub async fn shut_down_with_drain(&self) {
        self.shut_down();
        loop {
            let idle = self.shared.idle.notified();
            if self.shared.state.lock().processing.is_empty() {
                return;
            }
            idle.await;
        }
    }

    /// Whether [`shut_down`](Self::shut_down) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.state.lock().shutting_down
    }

    /// How many keys are queued, waiting for a worker.
    pub fn len(&self) -> usize {
        self.shared.state.lock().queue.len()
    }

    /// Whether no key is queued (keys may still be processing or waiting for a delay).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the queue's metrics.
    pub fn metrics(&self) -> QueueMetrics {
        self.shared.state.lock().snapshot(Instant::now())
    }

    /// Reports this queue's figures as `name` in `metrics` (client-go's named queues), until
    /// it is dropped; its counts then stay in `metrics`' totals, so a queue rebuilt under the
    /// same name (a controller's next leadership term) continues its counters. A queue is
    /// registered once: later calls are ignored.
    pub fn register_metrics(&self, name: &str, metrics: &crate::metrics::WorkQueueMetrics) {
        let mut registration = self.shared.registration.lock();
        if registration.is_some() {
            return;
        }
        let probe: Arc<dyn crate::metrics::QueueProbe> = self.shared.clone();
        metrics.track(name, Arc::downgrade(&probe));
        *registration = Some((name.into(), metrics.clone()));
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> crate::metrics::QueueProbe for Shared<K> {
    fn snapshot(&self) -> QueueMetrics {
        self.state.lock().snapshot(Instant::now())
    }
}

/// A key handed to a worker by [`WorkQueue::get`]; dropping it marks the key done.
///
/// While it lives, the key is not handed to another worker. When it is done, the key is
/// queued again if it was added in the meantime.
#[must_use = "dropping the guard marks the key done at once"]
pub struct Processing<K: Clone + Eq + Hash + Send + Sync + 'static> {
    shared: Arc<Shared<K>>,
    key: K,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Processing<K> {
    /// The key being processed.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Marks the key done; the same as dropping the guard.
    pub fn done(self) {}
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Deref for Processing<K> {
    type Target = K;

    fn deref(&self) -> &K {
        &self.key
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Drop for Processing<K> {
    fn drop(&mut self) {
        self.shared.done(&self.key);
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static + fmt::Debug> fmt::Debug for Processing<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Processing").field(&self.key).finish()
    }
}

/// What every clone of a queue, every guard and (weakly) the timer task share.
struct Shared<K> {
    state: Mutex<State<K>>,
    /// Wakes `get`: one waiter per queued key, all of them at shutdown.
    queued: Notify,
    /// Wakes `shut_down_with_drain` when the last key in flight is done.
    idle: Notify,
    /// Wakes the timer task: earlier deadline, shutdown, or the queue dropped.
    timer_wake: Arc<Notify>,
    limiter: Box<dyn RateLimiter<K>>,
    /// The name and metrics this queue reports to, once registered.
    registration: Mutex<Option<(String, crate::metrics::WorkQueueMetrics)>>,
}

impl<K> Drop for Shared<K> {
    fn drop(&mut self) {
        self.timer_wake.notify_one();
        if let Some((name, metrics)) = self.registration.get_mut().take() {
            metrics.retire(&name, &self.state.get_mut().snapshot(Instant::now()));
        }
    }
}

struct State<K> {
    /// Keys waiting for a worker, in order; each is also in `dirty` and not in `processing`.
    queue: VecDeque<K>,
    /// Keys added and not yet handed out, with the time of that add: the queued ones, and
    /// the ones added again while processing.
    dirty: HashMap<K, Instant>,
    /// Keys handed to workers, with the time they were handed out.
    processing: HashMap<K, Instant>,
    /// Keys waiting for a delayed add: the deadline and sequence number of their live timer.
    waiting: HashMap<K, (Instant, u64)>,
    /// Every timer set, earliest first. A timer whose sequence number is no longer the one in
    /// `waiting` was superseded by an earlier deadline and is skipped when it fires.
    timers: BinaryHeap<Timer<K>>,
    next_timer_seq: u64,
    timer_started: bool,
    shutting_down: bool,
    adds: u64,
    retries: u64,
    queue_latency: DurationStats,
    work_duration: DurationStats,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            dirty: HashMap::new(),
            processing: HashMap::new(),
            waiting: HashMap::new(),
            timers: BinaryHeap::new(),
            next_timer_seq: 0,
            timer_started: false,
            shutting_down: false,
            adds: 0,
            retries: 0,
            queue_latency: DurationStats::default(),
            work_duration: DurationStats::default(),
        }
    }
}

impl<K> State<K> {
    fn snapshot(&self, now: Instant) -> QueueMetrics {
        let (unfinished_work, longest_running_processor) = self.processing.values().fold(
            (Duration::ZERO, Duration::ZERO),
            |(sum, longest), &started| {
                let running = now.saturating_duration_since(started);
                (sum.saturating_add(running), longest.max(running))
            },
        );
        QueueMetrics {
            depth: self.queue.len(),
            processing: self.processing.len(),
            waiting: self.waiting.len(),
            adds: self.adds,
            retries: self.retries,
            queue_latency: self.queue_latency,
            work_duration: self.work_duration,
            unfinished_work,
            longest_running_processor,
        }
    }
}

impl<K: Clone + Eq + Hash> State<K> {
    /// Marks `key` dirty; returns whether it entered the queue (so a getter should wake).
    fn mark_dirty(&mut self, key: K, now: Instant) -> bool {
        if self.dirty.contains_key(&key) {
            return false;
        }
        self.adds += 1;
        if self.processing.contains_key(&key) {
            self.dirty.insert(key, now);
            return false;
        }
        self.dirty.insert(key.clone(), now);
        self.queue.push_back(key);
        true
    }

    /// Pops the next queued key and marks it processing.
    fn take_next(&mut self, now: Instant) -> Option<K> {
        let key = self.queue.pop_front()?;
        if let Some(added) = self.dirty.remove(&key) {
            self.queue_latency
                .record(now.saturating_duration_since(added));
        }
        self.processing.insert(key.clone(), now);
        Some(key)
    }
}

/// A delayed add; ordered so that the [`BinaryHeap`] pops the earliest deadline first, and
/// timers with equal deadlines in the order they were set.
struct Timer<K> {
    due: Instant,
    seq: u64,
    key: K,
}

impl<K> PartialEq for Timer<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K> Eq for Timer<K> {}

impl<K> PartialOrd for Timer<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Timer<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// What the timer task does next.
enum TimerStep {
    SleepUntil(Instant),
    WaitUntilWoken,
    Exit,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Shared<K> {
    fn add(&self, key: K, is_retry: bool) {
        let queued = {
            let mut state = self.state.lock();
            if state.shutting_down {
                return;
            }
            if is_retry {
                state.retries += 1;
            }
            state.mark_dirty(key, Instant::now())
        };
        if queued {
            self.queued.notify_one();
        }
    }

    fn add_after(self: &Arc<Self>, key: K, delay: Duration, is_retry: bool) {
        if delay.is_zero() {
            self.add(key, is_retry);
            return;
        }
        let now = Instant::now();
        // Beyond `Instant`'s range is as good as never; tokio uses the same horizon.
        let due = now
            .checked_add(delay)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        let wake_timer = {
            let mut state = self.state.lock();
            if state.shutting_down {
                return;
            }
            if !state.timer_started {
                let runtime = tokio::runtime::Handle::try_current()
                    .expect("WorkQueue::add_after needs a tokio runtime for its timer task");
                runtime.spawn(run_timer(
                    Arc::downgrade(self),
                    Arc::clone(&self.timer_wake),
                ));
                state.timer_started = true;
            }
            if is_retry {
                state.retries += 1;
            }
            if matches!(state.waiting.get(&key), Some(&(waiting_until, _)) if waiting_until <= due)
            {
                return;
            }
            let seq = state.next_timer_seq;
            state.next_timer_seq += 1;
            let earliest = state.timers.peek().is_none_or(|next| due < next.due);
            state.waiting.insert(key.clone(), (due, seq));
            state.timers.push(Timer { due, seq, key });
            earliest
        };
        if wake_timer {
            self.timer_wake.notify_one();
        }
    }

    fn done(&self, key: &K) {
        let now = Instant::now();
        let (requeued, idle) = {
            let mut state = self.state.lock();
            if let Some(started) = state.processing.remove(key) {
                state
                    .work_duration
                    .record(now.saturating_duration_since(started));
            }
            let requeued = state.dirty.contains_key(key);
            if requeued {
                state.queue.push_back(key.clone());
            }
            (requeued, state.processing.is_empty())
        };
        if requeued {
            self.queued.notify_one();
        }
        if idle {
            self.idle.notify_waiters();
        }
    }

    fn shut_down(&self) {
        {
            let mut state = self.state.lock();
            if state.shutting_down {
                return;
            }
            state.shutting_down = true;
            state.waiting.clear();
            state.timers.clear();
        }
        self.queued.notify_waiters();
        self.timer_wake.notify_one();
    }

    /// Adds every key whose delay has passed; says when to look again.
    fn fire_due_timers(&self) -> TimerStep {
        let now = Instant::now();
        let mut queued = 0;
        let step = {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            if state.shutting_down {
                return TimerStep::Exit;
            }
            loop {
                let Some(next) = state.timers.peek_mut() else {
                    break TimerStep::WaitUntilWoken;
                };
                if next.due > now {
                    break TimerStep::SleepUntil(next.due);
                }
                let timer = PeekMut::pop(next);
                if state.waiting.get(&timer.key).map(|&(_, seq)| seq) == Some(timer.seq) {
                    state.waiting.remove(&timer.key);
                    if state.mark_dirty(timer.key, now) {
                        queued += 1;
                    }
                }
            }
        };
        for _ in 0..queued {
            self.queued.notify_one();
        }
        step
    }
}

/// The timer task of one queue: fires delayed adds at their deadlines. It holds the queue
/// weakly, so it ends once the queue is dropped, and it ends at shutdown.
async fn run_timer<K: Clone + Eq + Hash + Send + Sync + 'static>(
    shared: Weak<Shared<K>>,
    wake: Arc<Notify>,
) {
    loop {
        let woken = wake.notified();
        let mut woken = std::pin::pin!(woken);
        woken.as_mut().enable();
        let step = match shared.upgrade() {
            Some(shared) => shared.fire_due_timers(),
            None => TimerStep::Exit,
        };
        match step {
            TimerStep::Exit => return,
            TimerStep::WaitUntilWoken => woken.await,
            TimerStep::SleepUntil(deadline) => {
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

    use tokio::task::yield_now;
    use tokio::time::{advance, timeout};

    use super::*;

    /// Fails a test that hangs. On the paused clock it fires as soon as nothing else can run.
    async fn within<F: Future>(test: F) -> F::Output {
        timeout(Duration::from_secs(60), test)
            .await
            .expect("the test hung")
    }

    async fn yield_a_few_times() {
        for _ in 0..10 {
            yield_now().await;
        }
    }

    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_added_twice_before_it_is_taken_is_processed_once() {
        within(async {
            let queue = WorkQueue::new();
            queue.add("a");
            queue.add("b");
            queue.add("a");
            assert_eq!(queue.len(), 2);

            assert_eq!(*queue.get().await.unwrap(), "a");
            assert_eq!(*queue.get().await.unwrap(), "b");
            assert!(queue.is_empty());
            assert!(timeout(secs(1), queue.get()).await.is_err());
            assert_eq!(queue.metrics().adds, 2);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_key_is_never_handed_to_two_workers_at_once() {
        within(async {
            const KEYS: usize = 4;
            let queue = WorkQueue::<usize>::new();
            let in_flight: Arc<Vec<AtomicBool>> =
                Arc::new((0..KEYS).map(|_| AtomicBool::new(false)).collect());
            let overlaps = Arc::new(AtomicUsize::new(0));
            let processed = Arc::new(AtomicUsize::new(0));

            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let (queue, in_flight) = (queue.clone(), Arc::clone(&in_flight));
                    let (overlaps, processed) = (Arc::clone(&overlaps), Arc::clone(&processed));
                    tokio::spawn(async move {
                        while let Some(key) = queue.get().await {
                            if in_flight[*key].swap(true, SeqCst) {
                                overlaps.fetch_add(1, SeqCst);
                            }
                            for _ in 0..3 {
                                yield_now().await;
                            }
                            in_flight[*key].store(false, SeqCst);
                            processed.fetch_add(1, SeqCst);
                            key.done();
                        }
                    })
                })
                .collect();

            for round in 0..5_000 {
                queue.add(round % KEYS);
                yield_now().await;
            }
            queue.shut_down_with_drain().await;
            for worker in workers {
                worker.await.unwrap();
            }

            assert_eq!(overlaps.load(SeqCst), 0);
            assert!(processed.load(SeqCst) >= KEYS);
            let metrics = queue.metrics();
            assert_eq!((metrics.depth, metrics.processing), (0, 0));
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_re_added_while_being_processed_runs_again_after_done() {
        within(async {
            let queue = WorkQueue::new();
            queue.add("a");
            let first = queue.get().await.unwrap();

            queue.add("a");
            queue.add("a");
            assert_eq!(queue.len(), 0, "a key in flight is not queued");
            assert!(timeout(secs(1), queue.get()).await.is_err());

            first.done();
            assert_eq!(*queue.get().await.unwrap(), "a");
            assert_eq!(queue.metrics().adds, 2);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_get_cancelled_after_being_woken_passes_the_key_to_another_waiting_worker() {
        within(async {
            let queue = WorkQueue::new();
            let first = tokio::spawn({
                let queue = queue.clone();
                async move { queue.get().await.map(|key| *key) }
            });
            let second = tokio::spawn({
                let queue = queue.clone();
                async move { queue.get().await.map(|key| *key) }
            });
            yield_a_few_times().await;

            queue.add("a");
            first.abort();
            assert_eq!(second.await.unwrap(), Some("a"));
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_add_fires_after_its_delay_and_not_before() {
        within(async {
            let queue = WorkQueue::new();
            let start = Instant::now();
            queue.add_after("a", secs(10));
            assert_eq!(queue.metrics().waiting, 1);

            assert!(timeout(ms(9_999), queue.get()).await.is_err());
            assert_eq!(queue.len(), 0);

            assert_eq!(*queue.get().await.unwrap(), "a");
            assert_eq!(start.elapsed(), secs(10));
            assert_eq!(queue.metrics().waiting, 0);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_delay_adds_at_once() {
        within(async {
            let queue = WorkQueue::new();
            queue.add_after("a", Duration::ZERO);
            assert_eq!(queue.len(), 1);
            assert_eq!(queue.metrics().waiting, 0);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_of_several_delayed_adds_of_a_key_wins() {
        within(async {
            let queue = WorkQueue::new();
            let start = Instant::now();
            queue.add_after("a", secs(10));
            queue.add_after("a", secs(3));
            queue.add_after("a", secs(7));
            assert_eq!(queue.metrics().waiting, 1);

            let key = queue.get().await.unwrap();
            assert_eq!((*key, start.elapsed()), ("a", secs(3)));
            key.done();

            assert!(
                timeout(secs(20), queue.get()).await.is_err(),
                "the superseded timers do not add the key again"
            );
        })
        .await;
    }

    #[test]
    fn exponential_backoff_doubles_from_5ms_up_to_1000s_and_forget_resets_it() {
        let backoff = ExponentialBackoff::default();
        for expected in [5, 10, 20, 40, 80] {
            assert_eq!(backoff.when(&"a"), ms(expected));
        }
        let mut expected = ms(160);
        for _ in 5..100 {
            assert_eq!(backoff.when(&"a"), expected.min(secs(1000)));
            expected = expected.saturating_mul(2);
        }
        assert_eq!(backoff.when(&"a"), secs(1000));
        assert_eq!(backoff.retries(&"a"), 101);
        assert_eq!(backoff.when(&"b"), ms(5), "each key backs off on its own");

        backoff.forget(&"a");
        assert_eq!(backoff.retries(&"a"), 0);
        assert_eq!(backoff.when(&"a"), ms(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_bucket_allows_a_burst_of_100_then_spaces_retries_by_100ms() {
        within(async {
            let bucket = TokenBucket::default();
            for key in 0..100 {
                assert_eq!(bucket.when(&key), Duration::ZERO);
            }
            assert_eq!(bucket.when(&100), ms(100));
            assert_eq!(bucket.when(&101), ms(200));
            assert_eq!(bucket.when(&102), ms(300));

            // One second refills ten tokens, three of which were reserved already.
            advance(secs(1)).await;
            for key in 0..7 {
                assert_eq!(bucket.when(&key), Duration::ZERO);
            }
            assert_eq!(bucket.when(&7), ms(100));
            assert_eq!(RateLimiter::<i32>::retries(&bucket, &7), 0);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn max_of_waits_as_long_as_the_slower_limiter() {
        within(async {
            let limiter = MaxOf::new(ExponentialBackoff::default(), TokenBucket::new(1.0, 1));
            assert_eq!(limiter.when(&"a"), ms(5), "the backoff is slower");
            assert_eq!(limiter.when(&"a"), secs(1), "the bucket is slower");
            assert_eq!(limiter.retries(&"a"), 2);

            limiter.forget(&"a");
            assert_eq!(limiter.retries(&"a"), 0);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_hands_out_the_queued_keys_then_returns_none() {
        within(async {
            let queue = WorkQueue::new();
            queue.add("a");
            queue.add("b");
            queue.shut_down();
            assert!(queue.is_shutting_down());

            assert_eq!(*queue.get().await.unwrap(), "a");
            assert_eq!(*queue.get().await.unwrap(), "b");
            assert!(queue.get().await.is_none());
            assert!(queue.get().await.is_none());
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_wakes_a_waiting_get() {
        within(async {
            let queue = WorkQueue::<&str>::new();
            let waiting = tokio::spawn({
                let queue = queue.clone();
                async move { queue.get().await.is_none() }
            });
            yield_a_few_times().await;

            queue.shut_down();
            assert!(waiting.await.unwrap());
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn adds_after_shutdown_are_ignored() {
        within(async {
            let queue = WorkQueue::new();
            queue.add_after("waiting", secs(1));
            queue.shut_down();

            queue.add("a");
            queue.add_after("b", secs(1));
            queue.add_rate_limited("c");

            assert!(queue.get().await.is_none());
            let metrics = queue.metrics();
            assert_eq!((metrics.adds, metrics.retries), (0, 0));
            assert_eq!((metrics.depth, metrics.waiting), (0, 0));
            assert_eq!(queue.num_requeues(&"c"), 0);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn shut_down_with_drain_waits_for_the_keys_in_flight() {
        within(async {
            let queue = WorkQueue::new();
            queue.add("a");
            let in_flight = queue.get().await.unwrap();

            assert!(timeout(secs(1), queue.shut_down_with_drain())
                .await
                .is_err());
            assert!(queue.is_shutting_down());

            let drain = tokio::spawn({
                let queue = queue.clone();
                async move { queue.shut_down_with_drain().await }
            });
            yield_a_few_times().await;
            assert!(!drain.is_finished());

            in_flight.done();
            drain.await.unwrap();
            assert!(queue.get().await.is_none());
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_reflect_depth_adds_retries_and_latencies() {
        within(async {
            let queue = WorkQueue::new();
            queue.add("a");
            queue.add("b");
            queue.add("a");
            let metrics = queue.metrics();
            assert_eq!((metrics.depth, metrics.processing, metrics.adds), (2, 0, 2));

            advance(secs(3)).await;
            let a = queue.get().await.unwrap();
            advance(secs(1)).await;
            let b = queue.get().await.unwrap();
            advance(secs(2)).await;

            let metrics = queue.metrics();
            assert_eq!((metrics.depth, metrics.processing), (0, 2));
            assert_eq!(
                metrics.queue_latency,
                DurationStats {
                    count: 2,
                    sum: secs(7),
                    max: secs(4),
                    // Both between 1 s and 10 s.
                    buckets: [0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                }
            );
            assert_eq!(metrics.queue_latency.mean(), Some(ms(3_500)));
            assert_eq!(metrics.longest_running_processor, secs(3));
            assert_eq!(metrics.unfinished_work, secs(5));

            a.done();
            drop(b);
            queue.add_rate_limited("a");
            queue.add_rate_limited("a");

            let metrics = queue.metrics();
            assert_eq!(
                metrics.work_duration,
                DurationStats {
                    count: 2,
                    sum: secs(5),
                    max: secs(3),
                    buckets: [0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                }
            );
            assert_eq!(
                (metrics.processing, metrics.unfinished_work),
                (0, Duration::ZERO)
            );
            assert_eq!((metrics.retries, metrics.waiting), (2, 1));
            assert_eq!(queue.num_requeues(&"a"), 2);
            queue.forget(&"a");
            assert_eq!(queue.num_requeues(&"a"), 0);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_task_ends_when_the_queue_is_dropped() {
        within(async {
            let before = alive_tasks();
            let queue = WorkQueue::new();
            queue.add_after("a", secs(3600));
            yield_a_few_times().await;
            assert_eq!(alive_tasks(), before + 1);

            drop(queue);
            yield_a_few_times().await;
            assert_eq!(alive_tasks(), before);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_task_ends_at_shutdown_and_drops_the_delayed_keys() {
        within(async {
            let before = alive_tasks();
            let queue = WorkQueue::new();
            queue.add_after("a", secs(1));
            yield_a_few_times().await;
            assert_eq!(alive_tasks(), before + 1);

            queue.shut_down();
            yield_a_few_times().await;
            assert_eq!(alive_tasks(), before);
            assert_eq!(queue.metrics().waiting, 0);
            assert!(queue.get().await.is_none());
        })
        .await;
    }
}
