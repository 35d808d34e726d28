//! Exponential backoff, shared by every Capstan component.
//!
//! [`ExponentialDelay`] is the one computation: the delay of the `n`-th retry, from a base
//! multiplied by a factor (2 by default) per step, up to a cap. It keeps no state, so each
//! user keeps its own count (per attempt, per key, per Pod) and asks it for the delay:
//!
//! - [`Backoff`] here: a running count, jittered, reset after a quiet period (the reflector's
//!   resume backoff, the garbage collector's relists);
//! - [`ExponentialBackoff`](crate::queue::ExponentialBackoff): the work queue's per-key
//!   failure counts (client-go's `ItemExponentialFailureRateLimiter`);
//! - the scheduling queue's pod backoff, the Job controller's failure backoff, the kubelet's
//!   crash-loop and image-pull back-off (with Kubernetes' reset rule on top), the API server
//!   watch cache's store-watch retries, and `capstan_controller::retry::Retry` (client-go's
//!   `wait.Backoff` for conflict retries).
//!
//! [`jitter`] is client-go's `wait.Jitter`: it stretches a delay by a random factor.

use std::time::Duration;

use tokio::time::Instant;

/// An exponential delay from a base to a cap: the delay of step `n` (0 for the first retry)
/// is `base * factor^n`, at most `max`.
///
/// The factor is 2 unless [`with_factor`](Self::with_factor) changes it (1 makes a constant
/// delay). A step so large that the product overflows gives `max`, so a count may grow without
/// bound. It is a plain value: it keeps no count and never sleeps.
///
/// ```
/// use std::time::Duration;
/// use capstan_watch::backoff::ExponentialDelay;
///
/// let delays = ExponentialDelay::new(Duration::from_secs(1), Duration::from_secs(10));
/// let secs: Vec<u64> = (0..6).map(|step| delays.delay(step).as_secs()).collect();
/// assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
/// assert_eq!(delays.delay(u32::MAX), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExponentialDelay {
    base: Duration,
    max: Duration,
    factor: u32,
}

impl ExponentialDelay {
    /// Delays from `base`, doubling at each step, capped at `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        ExponentialDelay {
            base,
            max,
            factor: 2,
        }
    }

    /// Multiplies by `factor` at each step instead of 2 (1: every step waits `base`).
    pub const fn with_factor(mut self, factor: u32) -> Self {
        self.factor = factor;
        self
    }

    /// The delay of step 0, before the cap.
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// The cap.
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// The delay of step `step`: `base * factor^step`, at most [`max`](Self::max).
    pub fn delay(&self, step: u32) -> Duration {
        self.factor
            .checked_pow(step)
            .and_then(|multiplier| self.base.checked_mul(multiplier))
            .map_or(self.max, |delay| delay.min(self.max))
    }
}

/// Stretches `duration` by a random factor in `[1, 1 + max_factor)` (client-go's
/// `wait.Jitter`, without its "0 means 1" rule: a `max_factor` of 0 leaves it as it is).
pub fn jitter(duration: Duration, max_factor: f64) -> Duration {
    duration.mul_f64(1.0 + max_factor * fastrand::f64())
}

/// Exponential backoff: each failure waits twice as long as the one before, from `initial`
/// up to `max`, each wait stretched by a random factor in `[1, 1 + jitter)`. After `reset_after`
/// without failures, it starts from `initial` again.
///
/// A running count over [`ExponentialDelay`], with [`jitter`] and the quiet-period reset of
/// client-go's backoff manager.
#[derive(Debug, Clone)]
pub struct Backoff {
    delays: ExponentialDelay,
    jitter: f64,
    reset_after: Duration,
    /// The step of the next failure.
    step: u32,
    last_failure: Option<Instant>,
}

impl Backoff {
    /// A backoff from `initial` to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            delays: ExponentialDelay::new(initial, max),
            jitter: 1.0,
            reset_after: Duration::from_secs(120),
            step: 0,
            last_failure: None,
        }
    }

    /// Sets the jitter factor (0 for none).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.max(0.0);
        self
    }

    /// Sets the quiet period after which the backoff starts over.
    pub fn with_reset_after(mut self, reset_after: Duration) -> Self {
        self.reset_after = reset_after;
        self
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let now = Instant::now();
        if self
            .last_failure
            .is_some_and(|last| now.duration_since(last) >= self.reset_after)
        {
            self.step = 0;
        }
        self.last_failure = Some(now);
        let base = self.delays.delay(self.step);
        self.step = self.step.saturating_add(1);
        jitter(base, self.jitter).min(self.delays.max().mul_f64(1.0 + self.jitter))
    }

    /// Starts over from `initial`.
    pub fn reset(&mut self) {
        self.step = 0;
        self.last_failure = None;
    }
}

impl Default for Backoff {
    /// The reflector's default: 0.8 s to 30 s, full jitter, reset after 2 quiet minutes.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(800), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_delay_multiplies_up_to_its_cap_and_saturates() {
        let delays = ExponentialDelay::new(Duration::from_millis(5), Duration::from_secs(1000));
        assert_eq!(delays.delay(0), Duration::from_millis(5));
        assert_eq!(delays.delay(3), Duration::from_millis(40));
        assert_eq!(delays.delay(18), Duration::from_secs(1000));
        assert_eq!(delays.delay(31), Duration::from_secs(1000));
        assert_eq!(
            delays.delay(32),
            Duration::from_secs(1000),
            "2^32 overflows"
        );
        let huge = ExponentialDelay::new(Duration::MAX / 2, Duration::MAX);
        assert_eq!(huge.delay(2), Duration::MAX, "the product overflows");
        let fives = ExponentialDelay::new(Duration::from_millis(10), Duration::MAX).with_factor(5);
        let millis: Vec<u128> = (0..3).map(|step| fives.delay(step).as_millis()).collect();
        assert_eq!(millis, [10, 50, 250]);
        let constant =
            ExponentialDelay::new(Duration::from_millis(10), Duration::MAX).with_factor(1);
        assert_eq!(constant.delay(1000), Duration::from_millis(10));
    }

    #[test]
    fn jitter_stretches_by_at_most_its_factor() {
        for _ in 0..100 {
            let stretched = jitter(Duration::from_millis(100), 0.5);
            assert!(
                (Duration::from_millis(100)..Duration::from_millis(150)).contains(&stretched),
                "{stretched:?}"
            );
        }
        assert_eq!(
            jitter(Duration::from_millis(100), 0.0),
            Duration::from_millis(100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delays_double_up_to_the_maximum_without_jitter() {
        let mut backoff =
            Backoff::new(Duration::from_millis(800), Duration::from_secs(30)).with_jitter(0.0);
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stretches_each_delay_by_at_most_its_factor() {
        let mut backoff = Backoff::default();
        for base in [800_u128, 1600, 3200] {
            let delay = backoff.next_delay().as_millis();
            assert!((base..2 * base).contains(&delay), "{delay} for {base}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_period_resets_the_backoff() {
        let mut backoff = Backoff::default().with_jitter(0.0);
        backoff.next_delay();
        backoff.next_delay();
        tokio::time::advance(Duration::from_secs(121)).await;
        assert_eq!(backoff.next_delay(), Duration::from_millis(800));
    }
}
