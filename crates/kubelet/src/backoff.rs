//! Per-key exponential back-off on the kubelet's clock: container restarts (crash loops) and
//! image pulls.
//!
//! The rule is Kubernetes': after a failure at time `t`, the key is backed off until
//! `t + delay`. The first failure of a key arms it with the initial delay without holding
//! anything back (a container that exits once is restarted at once); each failure seen after
//! the previous back-off ran out doubles the delay, up to the maximum. A key that has not
//! failed for twice the maximum (10 minutes with the 5-minute cap) starts over.
//!
//! The delays themselves are capstan-watch's [`ExponentialDelay`], the one exponential delay
//! every component shares; this module is a thin wrapper that keeps a step per key and adds
//! what is Kubernetes' own: time from the injected clock (`SystemTime`, not tokio's), the
//! first failure held for nothing, and the reset after twice the maximum.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use capstan_watch::backoff::ExponentialDelay;

/// The initial delay of crash-loop and image-pull back-offs.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The longest delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The step of the delay held now ([`ExponentialDelay::delay`]).
    step: u32,
    last_failure: SystemTime,
}

/// Back-off state per key. Not shared: each pod worker owns its own.
#[derive(Debug, Clone)]
pub struct Backoff {
    delays: ExponentialDelay,
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF)
    }
}

impl Backoff {
    /// A back-off starting at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            delays: ExponentialDelay::new(initial, max),
            entries: HashMap::new(),
        }
    }

    fn live(&self, key: &str, failure: SystemTime) -> Option<Entry> {
        let entry = *self.entries.get(key)?;
        let quiet = failure
            .duration_since(entry.last_failure)
            .unwrap_or_default();
        (quiet <= 2 * self.delays.max()).then_some(entry)
    }

    /// Until when `key` is held back after a failure at `failure`; `None` if it may be
    /// retried at once (`now` is past the back-off, or the key is not armed).
    pub fn held_until(
        &self,
        key: &str,
        failure: SystemTime,
        now: SystemTime,
    ) -> Option<SystemTime> {
        let entry = self.live(key, failure)?;
        let until = failure + self.delays.delay(entry.step);
        (now < until).then_some(until)
    }

    /// The delay `key` is held for now (for messages); `None` when not armed.
    pub fn delay(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| self.delays.delay(e.step))
    }

    /// Records that `key` is retried after a failure at `failure`: arms it with the initial
    /// delay, or doubles the delay (capped) if it was armed and not yet reset.
    pub fn next(&mut self, key: &str, failure: SystemTime) {
        let step = match self.live(key, failure) {
            Some(entry) => entry.step.saturating_add(1),
            None => 0,
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                step,
                last_failure: failure,
            },
        );
    }

    /// Forgets `key`.
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn the_first_failure_is_retried_at_once_and_later_ones_wait_doubling_delays() {
        let mut b = Backoff::default();
        assert_eq!(b.held_until("c", at(0), at(0)), None);
        b.next("c", at(0));
        // Second failure at 5 s: held for 10 s from it.
        assert_eq!(b.held_until("c", at(5), at(6)), Some(at(15)));
        assert_eq!(b.held_until("c", at(5), at(15)), None);
        b.next("c", at(5));
        assert_eq!(b.delay("c"), Some(Duration::from_secs(20)));
        assert_eq!(b.held_until("c", at(20), at(21)), Some(at(40)));
        b.next("c", at(20));
        assert_eq!(b.delay("c"), Some(Duration::from_secs(40)));
    }

    #[test]
    fn delays_are_capped_and_reset_after_ten_quiet_minutes() {
        let mut b = Backoff::default();
        for i in 0..10 {
            b.next("c", at(i));
        }
        assert_eq!(b.delay("c"), Some(MAX_BACKOFF));
        // A failure more than 10 minutes after the last one starts over.
        assert_eq!(b.held_until("c", at(9 + 601), at(9 + 602)), None);
        b.next("c", at(9 + 601));
        assert_eq!(b.delay("c"), Some(INITIAL_BACKOFF));
    }
}
