//! The scheduling queue: activeQ, backoffQ and the unschedulable set (kube-scheduler's
//! `PriorityQueue`).
//!
//! Timers are tokio's, so tests run on the paused clock. Nothing runs in the background:
//! [`SchedulingQueue::pop`] moves pods whose backoff expired, and flushes pods unschedulable
//! for too long, each time it looks for work.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::Pod;
use capstan_watch::backoff::ExponentialDelay;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::framework::{pod_key, QueueSortPlugin, QueuedPodInfo};

/// The first retry delay after a failed attempt.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a pod stays unschedulable without a cluster event before it is retried.
pub const DEFAULT_UNSCHEDULABLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A cluster change that may make unschedulable pods schedulable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterEvent {
    /// A Node was added.
    NodeAdd,
    /// A Node changed (labels, taints, allocatable, schedulability).
    NodeUpdate,
    /// A bound Pod was deleted, freeing room.
    PodDelete,
    /// An assumed pod was forgotten (its bind failed), freeing room.
    AssumedPodForget,
    /// A pod's unschedulable timeout passed.
    UnschedulableTimeout,
}

/// Where a queued pod is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueLocation {
    /// Ready to be scheduled.
    Active,
    /// Waiting out its backoff.
    Backoff,
    /// Waiting for a cluster event (or the unschedulable timeout).
    Unschedulable,
    /// Popped and being scheduled.
    InFlight,
}

struct Entry {
    info: QueuedPodInfo,
    gen: u64,
    sort: Option<Arc<dyn QueueSortPlugin>>,
}

impl Entry {
    /// Whether `self` goes before `other`.
    fn before(&self, other: &Entry) -> bool {
        match &self.sort {
            Some(s) => s.less(&self.info, &other.info),
            None => default_less(&self.info, &other.info),
        }
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // BinaryHeap pops the greatest: the entry that goes first is the greatest.
    fn cmp(&self, other: &Self) -> Ordering {
        if self.before(other) {
            Ordering::Greater
        } else if other.before(self) {
            Ordering::Less
        } else {
            other.gen.cmp(&self.gen)
        }
    }
}

/// kube-scheduler's PrioritySort: higher `spec.priority` first, then earlier timestamp.
pub fn default_less(a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
    let (pa, pb) = (a.priority(), b.priority());
    pa > pb || (pa == pb && a.timestamp < b.timestamp)
}

struct Slot {
    info: QueuedPodInfo,
    location: QueueLocation,
    gen: u64,
    /// When it leaves backoff.
    backoff_until: Instant,
    /// The scheduling cycle it was popped in.
    cycle: u64,
}

#[derive(Default)]
struct Inner {
    active: BinaryHeap<Entry>,
    pods: HashMap<String, Slot>,
    next_gen: u64,
    scheduling_cycle: u64,
    move_request_cycle: u64,
    closed: bool,
    // When the next backoff or unschedulable timeout is due, as of the last scan, and
    // whether a pod was parked since (so the scan is stale).
    next_due: Option<Instant>,
    parked_since_scan: bool,
}

/// The scheduling queue. Cheap to share behind an `Arc`.
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    sort: Option<Arc<dyn QueueSortPlugin>>,
    backoff: ExponentialDelay,
    unschedulable_timeout: Duration,
}

impl std::fmt::Debug for SchedulingQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("SchedulingQueue")
            .field("pods", &inner.pods.len())
            .field("closed", &inner.closed)
            .finish()
    }
}

impl Default for SchedulingQueue {
    fn default() -> Self {
        SchedulingQueue::new(None)
    }
}

impl SchedulingQueue {
    /// A queue ordered by `sort` (the profile's QueueSort plugin), or by priority then time.
    pub fn new(sort: Option<Arc<dyn QueueSortPlugin>>) -> Self {
        SchedulingQueue {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            sort,
            backoff: ExponentialDelay::new(DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF),
            unschedulable_timeout: DEFAULT_UNSCHEDULABLE_TIMEOUT,
        }
    }

    /// Sets the backoff bounds (1 s and 10 s by default).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = ExponentialDelay::new(initial, max);
        self
    }

    /// Sets how long a pod stays unschedulable without an event (5 minutes by default).
    pub fn with_unschedulable_timeout(mut self, timeout: Duration) -> Self {
        self.unschedulable_timeout = timeout;
        self
    }

    /// The backoff after `attempts` failed attempts: 1 s doubling, at most 10 s (the initial
    /// backoff for 0 or 1 attempts; [`ExponentialDelay`]'s step `attempts - 1`).
    pub fn backoff_duration(&self, attempts: u32) -> Duration {
        self.backoff.delay(attempts.saturating_sub(1))
    }

    fn push_active(&self, inner: &mut Inner, key: &str) {
        inner.next_gen += 1;
        let gen = inner.next_gen;
        let slot = inner.pods.get_mut(key).expect("slot");
        slot.location = QueueLocation::Active;
        slot.gen = gen;
        let entry = Entry {
            info: slot.info.clone(),
            gen,
            sort: self.sort.clone(),
        };
        inner.active.push(entry);
        self.notify.notify_one();
    }

    /// Adds a new pending pod to activeQ, or updates it where it is. An update of an
    /// unschedulable pod's spec, labels or annotations moves it to activeQ (or backoffQ
    /// while backing off): its change may make it fit. A status-only update leaves it.
    pub fn add(&self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if inner.closed {
            return;
        }
        match inner.pods.get_mut(&key) {
            None => {
                inner.pods.insert(
                    key.clone(),
                    Slot {
                        info: QueuedPodInfo::new(pod, now),
                        location: QueueLocation::Active,
                        gen: 0,
                        backoff_until: now,
                        cycle: 0,
                    },
                );
                self.push_active(&mut inner, &key);
            }
            Some(slot) => {
                // Only a change a plugin could care about brings an unschedulable pod back
                // (not its status, which the scheduler itself writes on failure).
                let relevant = slot.info.pod.spec != pod.spec
                    || slot.info.pod.metadata.labels != pod.metadata.labels
                    || slot.info.pod.metadata.annotations != pod.metadata.annotations;
                slot.info.pod = pod;
                match slot.location {
                    QueueLocation::Active => self.push_active(&mut inner, &key),
                    QueueLocation::Unschedulable if !relevant => {}
                    QueueLocation::Unschedulable => {
                        let backing_off = slot.backoff_until > now;
                        if backing_off {
                            slot.location = QueueLocation::Backoff;
                            inner.parked_since_scan = true;
                            self.notify.notify_one();
                        } else {
                            self.push_active(&mut inner, &key);
                        }
                    }
                    QueueLocation::Backoff | QueueLocation::InFlight => {}
                }
            }
        }
    }

    /// Removes a pod (deleted, bound by someone else, or no longer ours).
    pub fn delete(&self, key: &str) {
        // Stale heap entries are skipped when popped.
        self.inner.lock().pods.remove(key);
    }

    /// Where `key` is, if queued.
    pub fn location(&self, key: &str) -> Option<QueueLocation> {
        self.inner.lock().pods.get(key).map(|s| s.location)
    }

    /// How many pods are in each place: (active, backoff, unschedulable, in flight).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let inner = self.inner.lock();
        let mut c = (0, 0, 0, 0);
        for s in inner.pods.values() {
            match s.location {
                QueueLocation::Active => c.0 += 1,
                QueueLocation::Backoff => c.1 += 1,
                QueueLocation::Unschedulable => c.2 += 1,
                QueueLocation::InFlight => c.3 += 1,
            }
        }
        c
    }

    /// Moves expired backoffs to activeQ and flushes old unschedulable pods; returns the next
    /// instant something is due.
    fn flush(&self, inner: &mut Inner, now: Instant) -> Option<Instant> {
        // Scan only when something may be due: a pod was parked, or the earliest known
        // deadline passed.
        if !inner.parked_since_scan && inner.next_due.is_none_or(|d| d > now) {
            return inner.next_due;
        }
        inner.parked_since_scan = false;
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (key, slot) in &inner.pods {
            let at = match slot.location {
                QueueLocation::Backoff => slot.backoff_until,
                QueueLocation::Unschedulable => {
                    (slot.info.timestamp + self.unschedulable_timeout).max(slot.backoff_until)
                }
                _ => continue,
            };
            if at <= now {
                due.push(key.clone());
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for key in due {
            self.push_active(inner, &key);
        }
        inner.next_due = next;
        next
    }

    /// Waits for the next pod to schedule and marks it in flight (its attempt counted).
    /// `None` once the queue is closed.
    pub async fn pop(&self) -> Option<QueuedPodInfo> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = {
                let mut inner = self.inner.lock();
                if inner.closed {
                    return None;
                }
                let next = self.flush(&mut inner, Instant::now());
                while let Some(entry) = inner.active.pop() {
                    let key = pod_key(&entry.info.pod);
                    let cycle = inner.scheduling_cycle + 1;
                    let Some(slot) = inner.pods.get_mut(&key) else {
                        continue;
                    };
                    if slot.gen != entry.gen || slot.location != QueueLocation::Active {
                        continue;
                    }
                    slot.location = QueueLocation::InFlight;
                    slot.info.attempts += 1;
                    slot.cycle = cycle;
                    let info = slot.info.clone();
                    inner.scheduling_cycle = cycle;
                    return Some(info);
                }
                next
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Puts a popped pod back after a failed attempt. `unschedulable`: no node fit, so it
    /// waits in the unschedulable set for a cluster event, unless one already came during its
    /// attempt, in which case it only backs off. Otherwise (an error) it backs off.
    pub fn requeue(&self, mut info: QueuedPodInfo, unschedulable: bool) {
        let key = pod_key(&info.pod);
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let move_request_cycle = inner.move_request_cycle;
        let backoff = self.backoff_duration(info.attempts);
        let Some(slot) = inner.pods.get_mut(&key) else {
            return; // deleted meanwhile
        };
        info.timestamp = now;
        // Keep a newer pod object the informer delivered while in flight.
        info.pod = slot.info.pod.clone();
        slot.info = info;
        slot.backoff_until = now + backoff;
        slot.location = if unschedulable && move_request_cycle < slot.cycle {
            QueueLocation::Unschedulable
        } else {
            QueueLocation::Backoff
        };
        inner.parked_since_scan = true;
        self.notify.notify_one();
    }

    /// Forgets a popped pod that was scheduled (or given up).
    pub fn done(&self, key: &str) {
        let mut inner = self.inner.lock();
        if inner
            .pods
            .get(key)
            .is_some_and(|s| s.location == QueueLocation::InFlight)
        {
            inner.pods.remove(key);
        }
    }

    /// A cluster event: every unschedulable pod moves to activeQ, or to backoffQ while it is
    /// still backing off. Pods in flight will back off instead of parking.
    pub fn move_all_to_active_or_backoff(&self, _event: ClusterEvent) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.move_request_cycle = inner.scheduling_cycle;
        let keys: Vec<(String, bool)> = inner
            .pods
            .iter()
            .filter(|(_, s)| s.location == QueueLocation::Unschedulable)
            .map(|(k, s)| (k.clone(), s.backoff_until > now))
            .collect();
        for (key, backing_off) in keys {
            if backing_off {
                inner.pods.get_mut(&key).expect("slot").location = QueueLocation::Backoff;
                inner.parked_since_scan = true;
            } else {
                self.push_active(&mut inner, &key);
            }
        }
        self.notify.notify_one();
    }

    /// Closes the queue: `pop` returns `None` from now on.
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }
}
