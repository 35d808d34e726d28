//! The store compactor: discards the store's history on kube-apiserver's schedule, so memory
//! (the memory store) or disk (etcd) does not grow with every write.
//!
//! Every [`interval`](Compactor::start) the compactor reads the store's current revision and
//! compacts to the revision it read at the previous tick, as kube-apiserver does for etcd
//! (`--etcd-compaction-interval`, 5 minutes by default). History is therefore kept for at
//! least one interval: a watch cache or a paged list (continue token) that is less than an
//! interval behind keeps working; older ones get 410 (`too old resource version`, `The
//! resourceVersion for the provided list is too old.`) and relist, as with Kubernetes.
//!
//! Several API servers may share one store and each run a compactor: a compaction another one
//! already did is not an error.
//!
//! Who starts it: whoever serves a registry (`ApiServer::bind_with` from
//! `ApiServerOptions::compaction_interval`, and the cluster's API server through it). A
//! registry used in process only (tests, embedding) compacts when its owner starts a
//! compactor itself.

use std::sync::Arc;
use std::time::Duration;

use capstan_store::{Revision, Store};
use parking_lot::Mutex;

/// kube-apiserver's default `--etcd-compaction-interval`.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// What the compactor has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionStatus {
    /// The revision history was last compacted to (by this compactor or, when it found the
    /// store compacted further already, by another).
    pub compacted: Option<Revision>,
    /// How many compactions this compactor made.
    pub compactions: u64,
    /// The revision that the next tick compacts to: the one read at the last tick.
    pub next: Option<Revision>,
    /// Why the last tick failed, if it did (cleared by the next successful tick).
    pub last_error: Option<String>,
}

/// A running compactor. Dropping it stops it.
pub struct Compactor {
    task: tokio::task::JoinHandle<()>,
    status: Arc<Mutex<CompactionStatus>>,
    interval: Duration,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor")
            .field("interval", &self.interval)
            .field("status", &*self.status.lock())
            .finish()
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Compactor {
    /// Starts compacting `store` every `interval` on the current tokio runtime; the first
    /// compaction happens two intervals from now (the first tick only reads the revision).
    /// `None` for a zero interval: compaction is off, as kube-apiserver's
    /// `--etcd-compaction-interval=0`.
    ///
    /// Must be called within a tokio runtime.
    pub fn start(store: Arc<dyn Store>, interval: Duration) -> Option<Compactor> {
        if interval.is_zero() {
            return None;
        }
        let status = Arc::new(Mutex::new(CompactionStatus::default()));
        let task = tokio::spawn(run(store, interval, status.clone()));
        Some(Compactor {
            task,
            status,
            interval,
        })
    }

    /// What it has done so far.
    pub fn status(&self) -> CompactionStatus {
        self.status.lock().clone()
    }

    /// How often it ticks.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

async fn run(store: Arc<dyn Store>, interval: Duration, status: Arc<Mutex<CompactionStatus>>) {
    let start = tokio::time::Instant::now() + interval;
    let mut ticks = tokio::time::interval_at(start, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let next = status.lock().next;
        let outcome = tick(&*store, next).await;
        let mut status = status.lock();
        match outcome {
            Ok(tick) => {
                if let Some(compacted) = tick.compacted {
                    status.compacted = Some(compacted);
                }
                status.compactions += u64::from(tick.compacted_here);
                status.next = Some(tick.current);
                status.last_error = None;
            }
            Err(error) => {
                tracing::warn!("compaction failed, retrying at the next interval: {error}");
                status.last_error = Some(error.to_string());
            }
        }
    }
}

/// The outcome of one successful tick.
struct Tick {
    /// The store's revision at this tick: the next tick compacts to it.
    current: Revision,
    /// Where history now ends, if this tick learnt it.
    compacted: Option<Revision>,
    /// Whether this tick compacted.
    compacted_here: bool,
}

/// One tick: reads the current revision, then compacts to `previous` (read one interval ago).
///
/// Errors: the store's, when it cannot be read or compacted (the tick is retried in full at
/// the next interval, with `previous` unchanged).
async fn tick(store: &dyn Store, previous: Option<Revision>) -> capstan_store::Result<Tick> {
    let current = store.current_revision().await?;
    let Some(previous) = previous else {
        return Ok(Tick {
            current,
            compacted: None,
            compacted_here: false,
        });
    };
    match store.compact(previous).await {
        Ok(()) => {
            tracing::debug!(revision = previous, "compacted the store's history");
            Ok(Tick {
                current,
                compacted: Some(previous),
                compacted_here: true,
            })
        }
        // Compacted this far already: no writes since the last compaction, or another API
        // server on the same store compacted first.
        Err(capstan_store::Error::Compacted { compacted, .. }) => Ok(Tick {
            current,
            compacted: compacted.or(Some(previous)),
            compacted_here: false,
        }),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::testing::within;
    use capstan_store::{memory::MemoryStore, Range, StoreExt};

    /// Virtual time: a hung test fails at this limit, which the paused clock reaches at once.
    const LIMIT: Duration = Duration::from_secs(24 * 3600);

    fn is_compacted<T: std::fmt::Debug>(result: capstan_store::Result<T>) -> bool {
        matches!(result, Err(capstan_store::Error::Compacted { .. }))
    }

    #[tokio::test(start_paused = true)]
    async fn it_compacts_to_the_revision_seen_one_interval_earlier() {
        within(LIMIT, async {
            let store = Arc::new(MemoryStore::new());
            let interval = Duration::from_secs(300);
            let compactor = Compactor::start(store.clone(), interval).unwrap();
            let first = store.put("/k", "1").await.unwrap().mod_revision;
            // First tick (5 min): it only reads the revision.
            tokio::time::sleep(interval + Duration::from_secs(1)).await;
            assert_eq!(compactor.status().compacted, None);
            let seen = store.current_revision().await.unwrap();
            assert_eq!(compactor.status().next, Some(seen));
            let second = store.put("/k", "2").await.unwrap().mod_revision;
            // Second tick (10 min): history before the first tick's revision goes; what was
            // written since stays readable.
            tokio::time::sleep(interval).await;
            let status = compactor.status();
            assert_eq!((status.compacted, status.compactions), (Some(seen), 1));
            assert!(is_compacted(
                store.range(Range::key("/k").at_revision(first - 1)).await
            ));
            assert!(store
                .range(Range::key("/k").at_revision(second))
                .await
                .is_ok());
            // No writes for an interval: the tick finds nothing new to compact, without error.
            tokio::time::sleep(interval * 2).await;
            let status = compactor.status();
            assert_eq!(status.compacted, Some(second));
            assert_eq!(status.last_error, None);
            assert_eq!(store.get("/k").await.unwrap().unwrap().value, "2");
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_interval_turns_compaction_off_and_dropping_stops_it() {
        within(LIMIT, async {
            let store = Arc::new(MemoryStore::new());
            assert!(Compactor::start(store.clone(), Duration::ZERO).is_none());
            let compactor = Compactor::start(store.clone(), Duration::from_secs(60)).unwrap();
            store.put("/k", "1").await.unwrap();
            drop(compactor);
            store.put("/k", "2").await.unwrap();
            tokio::time::sleep(Duration::from_secs(600)).await;
            assert!(store.range(Range::key("/k").at_revision(2)).await.is_ok());
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_compacted_by_another_server_is_not_an_error() {
        within(LIMIT, async {
            let store = Arc::new(MemoryStore::new());
            let interval = Duration::from_secs(60);
            let compactor = Compactor::start(store.clone(), interval).unwrap();
            store.put("/k", "1").await.unwrap();
            tokio::time::sleep(interval + Duration::from_secs(1)).await;
            store.put("/k", "2").await.unwrap();
            let current = store.current_revision().await.unwrap();
            store.compact(current).await.unwrap();
            tokio::time::sleep(interval).await;
            let status = compactor.status();
            assert_eq!(status.last_error, None);
            assert_eq!((status.compacted, status.compactions), (Some(current), 0));
        })
        .await;
    }
}
