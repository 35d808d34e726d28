//! A watcher's delivery: its bounded [`Mailbox`], filled by the cache, and the
//! [`CacheWatch`] stream that drains it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use capstan_api::Error;
use futures::task::AtomicWaker;
use futures::Stream;
use parking_lot::Mutex;

use super::cache::Shared;
use super::events::CacheEvent;

/// One watcher's bounded queue. The cache pushes without allocating once the queue has
/// grown to its working size, and wakes the watcher's task only if it is waiting.
pub(super) struct Mailbox {
    pub(super) queue: Mutex<VecDeque<Result<CacheEvent, Error>>>,
    pub(super) capacity: usize,
    pub(super) waker: AtomicWaker,
    /// No more items will come (the cache cut the watcher off, relisted, or stopped).
    pub(super) closed: AtomicBool,
    /// Closed because the watcher fell `capacity` events behind.
    pub(super) overflowed: AtomicBool,
}

impl Mailbox {
    pub(super) fn new(capacity: usize) -> Self {
        Mailbox {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
        }
    }

    /// Queues `event`; returns `false` (and closes the mailbox) when it is full.
    pub(super) fn push(&self, event: CacheEvent) -> bool {
        {
            let mut queue = self.queue.lock();
            if queue.len() >= self.capacity {
                drop(queue);
                self.overflowed.store(true, Ordering::Release);
                self.close();
                return false;
            }
            queue.push_back(Ok(event));
        }
        self.waker.wake();
        true
    }

    /// Queues `event` unless the mailbox is full; never closes it.
    pub(super) fn offer(&self, event: CacheEvent) {
        {
            let mut queue = self.queue.lock();
            if queue.len() >= self.capacity {
                return;
            }
            queue.push_back(Ok(event));
        }
        self.waker.wake();
    }

    /// Ends the watch with `error` after what is queued.
    pub(super) fn fail(&self, error: Error) {
        self.queue.lock().push_back(Err(error));
        self.close();
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// The events of one watch on a [`WatchCache`](super::WatchCache). Dropping it detaches the watcher.
pub struct CacheWatch {
    pub(super) initial: VecDeque<CacheEvent>,
    pub(super) mailbox: Arc<Mailbox>,
    pub(super) cache: Weak<Shared>,
    pub(super) id: u64,
    pub(super) done: bool,
}

impl Stream for CacheWatch {
    type Item = Result<CacheEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(event) = this.initial.pop_front() {
            return Poll::Ready(Some(Ok(event)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        // Register first, then look: a push after the look wakes us.
        this.mailbox.waker.register(cx.waker());
        if let Some(item) = this.mailbox.queue.lock().pop_front() {
            if item.is_err() {
                this.done = true;
            }
            return Poll::Ready(Some(item));
        }
        if !this.mailbox.closed.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // Closed: anything pushed before closing is delivered first.
        if let Some(item) = this.mailbox.queue.lock().pop_front() {
            return Poll::Ready(Some(item));
        }
        this.done = true;
        if this.mailbox.overflowed.load(Ordering::Acquire) {
            Poll::Ready(Some(Err(Error::TooManyRequests {
                message: format!(
                    "watch closed: the watcher fell {} events behind; watch again from the \
                     last resourceVersion it saw",
                    this.mailbox.capacity
                ),
                retry_after_seconds: Some(1),
            })))
        } else {
            Poll::Ready(None)
        }
    }
}

impl Drop for CacheWatch {
    fn drop(&mut self) {
        if let Some(shared) = self.cache.upgrade() {
            shared.state.lock().watchers.remove(&self.id);
        }
    }
}
