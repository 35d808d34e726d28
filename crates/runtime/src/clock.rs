//! Time as the runtime sees it.
//!
//! Backends read timestamps from a [`Clock`]. The fake backend computes every container's
//! state lazily from `clock.now()` (it runs no tasks or timers), so a test that injects a
//! [`FakeClock`] and advances it by hand sees containers start, exit and crash exactly when it
//! says. We chose an explicit clock over tokio's paused time because the states are
//! wall-clock timestamps (`started_at`, `finished_at`) that tests compare, and because one
//! clock shared by thousands of fake nodes must move them all at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::watch;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// A future that resolves when the time may have moved enough to be worth reading again.
    /// Followers (log streams) wait on it instead of polling in a loop. Call it *before*
    /// reading the state you wait on: a move after the call wakes the future even if it has
    /// not been polled yet.
    fn tick(&self) -> BoxFuture<'static, ()>;
}

impl std::fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({:?})", self.now())
    }
}

/// The system's clock; [`Clock::tick`] resolves every 100 ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn tick(&self) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(Duration::from_millis(100)))
    }
}

/// A clock that moves only when told ([`FakeClock::advance`], [`FakeClock::set`]).
///
/// Clones share the same time. It starts at [`FakeClock::DEFAULT_START`], so runs are
/// reproducible.
#[derive(Debug, Clone)]
pub struct FakeClock {
    inner: Arc<FakeClockInner>,
}

#[derive(Debug)]
struct FakeClockInner {
    now: Mutex<SystemTime>,
    moved: watch::Sender<u64>,
}

impl FakeClock {
    /// 2024-01-01T00:00:00Z, where every new `FakeClock` starts.
    pub const DEFAULT_START: Duration = Duration::from_secs(1_704_067_200);

    /// A clock at [`FakeClock::DEFAULT_START`].
    pub fn new() -> Self {
        Self::at(SystemTime::UNIX_EPOCH + Self::DEFAULT_START)
    }

    /// A clock at `start`.
    pub fn at(start: SystemTime) -> Self {
        FakeClock {
            inner: Arc::new(FakeClockInner {
                now: Mutex::new(start),
                moved: watch::Sender::new(0),
            }),
        }
    }

    /// Moves the clock forward by `by` and wakes everything waiting on [`Clock::tick`].
    pub fn advance(&self, by: Duration) {
        *self.inner.now.lock() += by;
        self.inner.moved.send_modify(|n| *n += 1);
    }

    /// Sets the clock to `to` (which may be earlier: a clock step) and wakes waiters.
    pub fn set(&self, to: SystemTime) {
        *self.inner.now.lock() = to;
        self.inner.moved.send_modify(|n| *n += 1);
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.inner.now.lock()
    }

    fn tick(&self) -> BoxFuture<'static, ()> {
        let mut moved = self.inner.moved.subscribe();
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; if it is gone, nothing moves.
            if moved.changed().await.is_err() {
                futures::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = FakeClock::new();
        let twin = clock.clone();
        let start = clock.now();
        assert_eq!(start, SystemTime::UNIX_EPOCH + FakeClock::DEFAULT_START);
        assert_eq!(clock.now(), start);
        twin.advance(Duration::from_secs(5));
        assert_eq!(clock.now(), start + Duration::from_secs(5));
    }

    #[tokio::test]
    async fn advancing_a_fake_clock_wakes_a_pending_tick() {
        let clock = FakeClock::new();
        let tick = clock.tick();
        clock.advance(Duration::from_millis(1));
        tokio::time::timeout(Duration::from_secs(5), tick)
            .await
            .expect("tick resolves after advance");
    }
}
