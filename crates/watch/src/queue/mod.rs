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
//!
//! The queue's files: this one holds [`WorkQueue`] and the [`Processing`] guard;
//! `rate_limit` the [`RateLimiter`]s, `stats` the [`QueueMetrics`] figures, `shared` what the
//! clones of a queue share and the timer task of delayed adds, and `state` the queue's
//! bookkeeping of queued, processing and waiting keys.

mod rate_limit;
mod shared;
mod state;
mod stats;
#[cfg(test)]
mod tests;

use std::fmt;
use std::hash::Hash;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use shared::Shared;
use state::State;

pub use rate_limit::{DefaultRateLimiter, ExponentialBackoff, MaxOf, RateLimiter, TokenBucket};
pub use stats::{DurationStats, QueueMetrics, DURATION_BUCKETS};

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
