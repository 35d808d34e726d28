//! Exponential backoff with jitter, reset after a quiet period (client-go's backoff manager).

use std::time::Duration;

use tokio::time::Instant;

/// Exponential backoff: each failure waits twice as long as the one before, from `initial`
/// up to `max`, each wait stretched by a random factor in `[1, 1 + jitter)`. After `reset_after`
/// without failures, it starts from `initial` again.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    reset_after: Duration,
    next: Duration,
    last_failure: Option<Instant>,
}

impl Backoff {
    /// A backoff from `initial` to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            jitter: 1.0,
            reset_after: Duration::from_secs(120),
            next: initial,
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
            self.next = self.initial;
        }
        self.last_failure = Some(now);
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let stretch = 1.0 + self.jitter * fastrand::f64();
        base.mul_f64(stretch)
            .min(self.max.mul_f64(1.0 + self.jitter))
    }

    /// Starts over from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial;
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
