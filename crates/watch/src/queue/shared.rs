//! What every clone of a queue shares: the locked [`State`], the wake-ups of getters, drains
//! and the timer task, and the rate limiter; and the timer task that fires delayed adds.

use std::collections::binary_heap::PeekMut;
use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::state::{State, Timer};
use super::RateLimiter;

/// What every clone of a queue, every guard and (weakly) the timer task share.
pub(super) struct Shared<K> {
    pub(super) state: Mutex<State<K>>,
    /// Wakes `get`: one waiter per queued key, all of them at shutdown.
    pub(super) queued: Notify,
    /// Wakes `shut_down_with_drain` when the last key in flight is done.
    pub(super) idle: Notify,
    /// Wakes the timer task: earlier deadline, shutdown, or the queue dropped.
    pub(super) timer_wake: Arc<Notify>,
    pub(super) limiter: Box<dyn RateLimiter<K>>,
    /// The name and metrics this queue reports to, once registered.
    pub(super) registration: Mutex<Option<(String, crate::metrics::WorkQueueMetrics)>>,
}

impl<K> Drop for Shared<K> {
    fn drop(&mut self) {
        self.timer_wake.notify_one();
        if let Some((name, metrics)) = self.registration.get_mut().take() {
            metrics.retire(&name, &self.state.get_mut().snapshot(Instant::now()));
        }
    }
}

/// What the timer task does next.
enum TimerStep {
    SleepUntil(Instant),
    WaitUntilWoken,
    Exit,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Shared<K> {
    pub(super) fn add(&self, key: K, is_retry: bool) {
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

    pub(super) fn add_after(self: &Arc<Self>, key: K, delay: Duration, is_retry: bool) {
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

    pub(super) fn done(&self, key: &K) {
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

    pub(super) fn shut_down(&self) {
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
