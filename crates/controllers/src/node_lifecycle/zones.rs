//! Zones: a zone's health from its ready and not-ready Nodes, and the token bucket that
//! paces evictions in it.

use super::*;

// ---------------------------------------------------------------------------------------
// Zones
// ---------------------------------------------------------------------------------------

/// A zone's health, as Kubernetes' `ZoneState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    /// Few nodes not ready: taints at the normal rate.
    Normal,
    /// More than two and at least the threshold share not ready: slowed or stopped.
    PartialDisruption,
    /// No node ready.
    FullDisruption,
}

/// The state of a zone with `ready` Ready nodes and `not_ready` others.
pub fn zone_state(ready: usize, not_ready: usize, unhealthy_threshold: f64) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / (not_ready + ready) as f64 >= unhealthy_threshold
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// A token bucket of burst 1, as client-go's `NewTokenBucketRateLimiter(qps, 1)`.
#[derive(Debug)]
pub(super) struct TokenBucket {
    pub(super) rate: f64,
    pub(super) tokens: f64,
    pub(super) at: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: f64) -> Self {
        TokenBucket {
            rate,
            tokens: if rate > 0.0 { 1.0 } else { 0.0 },
            at: Instant::now(),
        }
    }

    pub(super) fn try_take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(1.0);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
