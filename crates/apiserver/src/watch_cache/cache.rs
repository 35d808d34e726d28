//! The [`WatchCache`] of one resource: its shared state, and starting a watch on it from a
//! snapshot or a resourceVersion.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use capstan_api::{Error, ResourceInfo};
use capstan_store::{Revision, Store};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::events::{
    CacheEvent, CacheEventType, CacheWatchRequest, CachedObject, StoredChange, WatchFilter,
    WatchStart,
};
use super::mailbox::{CacheWatch, Mailbox};
use super::sync::{bookmark, follow, list};
use super::WatchCacheOptions;

/// A watch cache for one resource. Dropping it stops its store watch and ends its watchers.
pub struct WatchCache {
    pub(super) shared: Arc<Shared>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for WatchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("WatchCache")
            .field("resource", &self.shared.resource.qualified_resource())
            .field("revision", &state.revision)
            .field("objects", &state.objects.len())
            .field("watchers", &state.watchers.len())
            .finish()
    }
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        self.task.abort();
        for (_, slot) in self.shared.state.lock().watchers.drain() {
            slot.mailbox.close();
        }
    }
}

pub(super) struct Shared {
    pub(super) resource: ResourceInfo,
    pub(super) options: WatchCacheOptions,
    pub(super) state: Mutex<State>,
    /// The revision the cache has reached, for watches waiting on a newer one.
    pub(super) reached: watch::Sender<Revision>,
}

pub(super) struct State {
    /// Every change up to this revision is reflected.
    pub(super) revision: Revision,
    /// Watches may start after any resourceVersion at or above this one.
    pub(super) oldest: Revision,
    pub(super) window: VecDeque<Arc<StoredChange>>,
    pub(super) objects: BTreeMap<Bytes, Arc<CachedObject>>,
    pub(super) watchers: HashMap<u64, Slot>,
    pub(super) next_id: u64,
}

pub(super) struct Slot {
    pub(super) mailbox: Arc<Mailbox>,
    pub(super) filter: WatchFilter,
    pub(super) bookmarks: bool,
}

impl WatchCache {
    /// Lists the resource's prefix in `store` (at `at`, or the current revision) and starts
    /// following the store's watch from there, on the current tokio runtime.
    ///
    /// Errors: [`Error::Gone`] when `at` was compacted; others as the store reports them.
    pub async fn start(
        store: Arc<dyn Store>,
        resource: ResourceInfo,
        options: WatchCacheOptions,
        at: Option<Revision>,
    ) -> Result<WatchCache, Error> {
        let prefix = Bytes::from(resource.storage_prefix());
        let (objects, revision) = list(&*store, &resource, &prefix, at, options.list_page).await?;
        let (reached, _) = watch::channel(revision);
        let shared = Arc::new(Shared {
            resource,
            options,
            state: Mutex::new(State {
                revision,
                oldest: revision,
                window: VecDeque::new(),
                objects,
                watchers: HashMap::new(),
                next_id: 0,
            }),
            reached,
        });
        let task = tokio::spawn(follow(Arc::downgrade(&shared), store, prefix));
        Ok(WatchCache { shared, task })
    }

    /// The resource this cache holds.
    pub fn resource(&self) -> &ResourceInfo {
        &self.shared.resource
    }

    /// The revision the cache has reached.
    pub fn revision(&self) -> Revision {
        self.shared.state.lock().revision
    }

    /// How many watchers are attached.
    pub fn watcher_count(&self) -> usize {
        self.shared.state.lock().watchers.len()
    }

    /// Starts a watch; see the module docs for the semantics.
    pub async fn watch(&self, request: CacheWatchRequest) -> Result<CacheWatch, Error> {
        if let WatchStart::After(revision) = request.start {
            self.watch_ready(revision).await?;
        }
        let shared = &self.shared;
        let resource = &shared.resource;
        let mut state = shared.state.lock();
        let mut initial = VecDeque::new();
        match request.start {
            WatchStart::Snapshot => {
                initial.extend(
                    state
                        .objects
                        .values()
                        .filter(|object| request.filter.matches(object))
                        .map(|object| CacheEvent {
                            kind: CacheEventType::Added,
                            revision: object.revision,
                            object: object.json.clone(),
                        }),
                );
                if request.initial_events_end {
                    initial.push_back(bookmark(resource, state.revision, true));
                }
            }
            WatchStart::After(revision) => {
                if revision < state.oldest {
                    return Err(Error::Gone {
                        message: format!("too old resource version: {revision} ({})", state.oldest),
                    });
                }
                let first = state.window.partition_point(|c| c.revision <= revision);
                initial.extend(
                    state
                        .window
                        .range(first..)
                        .filter_map(|change| change.for_watcher(resource, &request.filter)),
                );
            }
        }
        let mailbox = Arc::new(Mailbox::new(shared.options.watcher_buffer));
        let id = state.next_id;
        state.next_id += 1;
        state.watchers.insert(
            id,
            Slot {
                mailbox: mailbox.clone(),
                filter: request.filter,
                bookmarks: request.bookmarks,
            },
        );
        Ok(CacheWatch {
            initial,
            mailbox,
            cache: Arc::downgrade(shared),
            id,
            done: false,
        })
    }

    /// Waits until the cache has reached `revision` (every change up to it is in the cache),
    /// up to [`WatchCacheOptions::too_large_wait`].
    ///
    /// Errors: [`Error::Timeout`] ("Too large resource version") when it does not get there
    /// in time.
    pub async fn watch_ready(&self, revision: Revision) -> Result<(), Error> {
        let mut reached = self.shared.reached.subscribe();
        let outcome = tokio::time::timeout(
            self.shared.options.too_large_wait,
            reached.wait_for(|current| *current >= revision),
        )
        .await
        .map(|waited| waited.is_ok());
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::ServiceUnavailable {
                message: "the watch cache stopped".into(),
            }),
            Err(_) => Err(Error::Timeout {
                message: format!(
                    "Too large resource version: {revision}, current resource version: {}",
                    *reached.borrow()
                ),
            }),
        }
    }
}
