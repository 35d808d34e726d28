//! How long a key waits before its next retry: the [`RateLimiter`] trait, a per-key
//! [`ExponentialBackoff`], a global [`TokenBucket`], their combination [`MaxOf`] and
//! client-go's [`DefaultRateLimiter`].

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::backoff::ExponentialDelay;

/// Decides how long a key waits before its next retry.
///
/// [`WorkQueue::add_rate_limited`] calls [`when`](Self::when) once per retry,
/// [`WorkQueue::forget`] calls [`forget`](Self::forget) and [`WorkQueue::num_requeues`] calls
/// [`retries`](Self::retries). Implementations are shared by every worker, so they use interior
/// mutability, and they must not block: `when` computes a delay, it never sleeps.
///
/// [`WorkQueue::add_rate_limited`]: super::WorkQueue::add_rate_limited
/// [`WorkQueue::forget`]: super::WorkQueue::forget
/// [`WorkQueue::num_requeues`]: super::WorkQueue::num_requeues
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
