//! Serving the `Client::watch` of the registry from the watch cache.
//!
//! [`CachedWatchSource`] is the registry's [`WatchSource`] for one kind. It starts that kind's
//! [`WatchCache`] on the first watch (at the watch's resourceVersion, so a list followed by a
//! watch from the list's version never sees 410), then maps Kubernetes' watch parameters
//! onto it:
//!
//! | resourceVersion | meaning |
//! |---|---|
//! | `""` | the current state as `Added` events (consistent: the cache first catches up with the store), then changes |
//! | `"0"` | the cache's state as `Added` events, then changes |
//! | `"N"` | changes after N; 410 Gone if N left the cache's window |
//!
//! `labelSelector`, `fieldSelector` (validated for the kind: 400 otherwise), the namespace,
//! `allowWatchBookmarks`, `sendInitialEvents` and `timeoutSeconds` are honoured.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::kube_core::params::WatchParams;
use capstan_api::kube_core::watch::Bookmark;
use capstan_api::kube_core::{DynamicObject, WatchEvent};
use capstan_api::{parse_label_selector, Error, FieldSelector, ResourceInfo, Result, WatchStream};
use capstan_store::Store;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::codec;
use crate::registry::storage::store_error;
use crate::registry::{EncodedWatchEvent, EncodedWatchStream, WatchSource};
use crate::watch_cache::{
    CacheEvent, CacheEventType, CacheWatchRequest, WatchCache, WatchCacheOptions, WatchFilter,
    WatchStart,
};

/// The watch source of one kind: its watch cache, started on first use.
pub struct CachedWatchSource {
    store: Arc<dyn Store>,
    resource: ResourceInfo,
    options: WatchCacheOptions,
    cache: OnceCell<WatchCache>,
}

impl std::fmt::Debug for CachedWatchSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedWatchSource")
            .field("resource", &self.resource.qualified_resource())
            .field("cache", &self.cache.get())
            .finish()
    }
}

impl CachedWatchSource {
    /// A source for `resource` over `store`; nothing runs until the first watch.
    pub fn new(store: Arc<dyn Store>, resource: ResourceInfo, options: WatchCacheOptions) -> Self {
        CachedWatchSource {
            store,
            resource,
            options,
            cache: OnceCell::new(),
        }
    }

    /// The cache, once started.
    pub fn cache(&self) -> Option<&WatchCache> {
        self.cache.get()
    }

    async fn cache_from(&self, start: Option<i64>) -> Result<&WatchCache> {
        self.cache
            .get_or_try_init(|| {
                WatchCache::start(
                    self.store.clone(),
                    self.resource.clone(),
                    self.options.clone(),
                    start.filter(|revision| *revision > 0),
                )
            })
            .await
    }
}

impl CachedWatchSource {
    /// Opens a watch on the cache, bounded by `params.timeout`.
    async fn open(
        &self,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<BoxStream<'static, Result<CacheEvent>>> {
        let labels = match &params.label_selector {
            Some(selector) => parse_label_selector(selector)?,
            None => Default::default(),
        };
        let fields = match &params.field_selector {
            Some(selector) => {
                let fields: FieldSelector = selector.parse()?;
                fields.validate_for(&self.resource)?;
                fields
            }
            None => FieldSelector::default(),
        };
        let requested = codec::parse_resource_version(resource_version)?;
        let cache = self.cache_from(requested).await?;
        let start = match requested {
            None => {
                // Consistent: the snapshot must include every write acknowledged so far.
                let current = self
                    .store
                    .current_revision()
                    .await
                    .map_err(|e| store_error(e, &self.resource, ""))?;
                cache.watch_ready(current).await?;
                WatchStart::Snapshot
            }
            Some(0) => WatchStart::Snapshot,
            Some(revision) => WatchStart::After(revision),
        };
        let send_initial_events = params.send_initial_events && start == WatchStart::Snapshot;
        let events = cache
            .watch(CacheWatchRequest {
                filter: WatchFilter {
                    namespace: namespace.map(String::from),
                    labels,
                    fields,
                },
                start,
                bookmarks: params.bookmarks,
                initial_events_end: send_initial_events,
            })
            .await?;
        Ok(match params.timeout {
            Some(seconds) => events
                .take_until(tokio::time::sleep(Duration::from_secs(u64::from(seconds))))
                .boxed(),
            None => events.boxed(),
        })
    }
}

#[async_trait]
impl WatchSource for CachedWatchSource {
    async fn watch(
        &self,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream> {
        let events = self.open(namespace, params, resource_version).await?;
        Ok(events.map(|item| item.and_then(to_watch_event)).boxed())
    }

    /// Serves the cache's shared bytes as they are: no decoding, no encoding.
    async fn watch_encoded(
        &self,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<Option<EncodedWatchStream>> {
        let events = self.open(namespace, params, resource_version).await?;
        Ok(Some(
            events
                .map(|item| {
                    item.map(|event| EncodedWatchEvent {
                        event_type: match event.kind {
                            CacheEventType::Added => "ADDED",
                            CacheEventType::Modified => "MODIFIED",
                            CacheEventType::Deleted => "DELETED",
                            CacheEventType::Bookmark => "BOOKMARK",
                        },
                        object: event.object,
                    })
                })
                .boxed(),
        ))
    }
}

fn to_watch_event(event: CacheEvent) -> Result<WatchEvent<DynamicObject>> {
    let object = || {
        serde_json::from_slice::<DynamicObject>(&event.object)
            .map_err(|e| Error::internal(format!("decoding a cached object: {e}")))
    };
    Ok(match event.kind {
        CacheEventType::Added => WatchEvent::Added(object()?),
        CacheEventType::Modified => WatchEvent::Modified(object()?),
        CacheEventType::Deleted => WatchEvent::Deleted(object()?),
        CacheEventType::Bookmark => WatchEvent::Bookmark(
            serde_json::from_slice::<Bookmark>(&event.object)
                .map_err(|e| Error::internal(format!("decoding a bookmark: {e}")))?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
    use capstan_api::kube_core::params::PostParams;
    use capstan_api::{Api, Client};
    use capstan_store::memory::MemoryStore;

    use super::*;
    use crate::registry::Registry;

    use capstan_api::testing::within;

    /// How long one test may take.
    const LIMIT: Duration = Duration::from_secs(10);

    fn setup() -> (Arc<dyn Store>, Api<ConfigMap>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let registry: Arc<dyn Client> = Arc::new(Registry::new(store.clone()));
        (store, Api::namespaced(registry, "default"))
    }

    async fn create(api: &Api<ConfigMap>, name: &str) -> String {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        api.create(&PostParams::default(), &cm)
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap()
    }

    fn name(event: &WatchEvent<ConfigMap>) -> Option<String> {
        match event {
            WatchEvent::Added(cm) | WatchEvent::Modified(cm) | WatchEvent::Deleted(cm) => {
                cm.metadata.name.clone()
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn bad_selectors_and_resource_versions_are_400s_naming_the_problem() {
        within(LIMIT, async {
            let (_, api) = setup();
            let unsupported = WatchParams::default().fields("spec.bogus=x");
            let error = api.watch(&unsupported, "").await.err().unwrap();
            assert_eq!(error.code(), 400);
            assert!(error.to_string().contains("spec.bogus"), "{error}");
            let malformed = WatchParams::default().labels("app in (web");
            assert_eq!(api.watch(&malformed, "").await.err().unwrap().code(), 400);
            let error = api
                .watch(&WatchParams::default(), "abc")
                .await
                .err()
                .unwrap();
            assert_eq!(error.code(), 400);
            assert!(error.to_string().contains("resourceVersion"), "{error}");
        })
        .await;
    }

    #[tokio::test]
    async fn an_empty_resource_version_starts_from_a_consistent_snapshot() {
        within(LIMIT, async {
            let (_, api) = setup();
            create(&api, "a").await;
            create(&api, "b").await;
            let mut events = api.watch(&WatchParams::default(), "").await.unwrap();
            let first = events.next().await.unwrap().unwrap();
            let second = events.next().await.unwrap().unwrap();
            assert!(matches!(first, WatchEvent::Added(_)));
            assert_eq!(
                (name(&first), name(&second)),
                (Some("a".into()), Some("b".into()))
            );
            create(&api, "c").await;
            assert_eq!(
                name(&events.next().await.unwrap().unwrap()),
                Some("c".into())
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_watch_from_a_list_version_sees_exactly_the_later_changes() {
        within(LIMIT, async {
            let (_, api) = setup();
            create(&api, "a").await;
            let listed = api.list(&Default::default()).await.unwrap();
            let version = listed.metadata.resource_version.unwrap();
            let mut events = api.watch(&WatchParams::default(), &version).await.unwrap();
            create(&api, "b").await;
            assert_eq!(
                name(&events.next().await.unwrap().unwrap()),
                Some("b".into())
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_version_compacted_away_before_the_cache_started_is_gone() {
        within(LIMIT, async {
            let (store, api) = setup();
            let first = create(&api, "a").await;
            create(&api, "b").await;
            let current = store.current_revision().await.unwrap();
            store.compact(current).await.unwrap();
            let error = api
                .watch(&WatchParams::default(), &first)
                .await
                .err()
                .unwrap();
            assert_eq!(error.code(), 410, "{error}");
        })
        .await;
    }

    #[tokio::test]
    async fn initial_events_end_with_a_bookmark_when_asked() {
        within(LIMIT, async {
            let (_, api) = setup();
            create(&api, "a").await;
            let params = WatchParams {
                send_initial_events: true,
                bookmarks: true,
                ..WatchParams::default()
            };
            let mut events = api.watch(&params, "").await.unwrap();
            assert!(matches!(
                events.next().await.unwrap().unwrap(),
                WatchEvent::Added(_)
            ));
            match events.next().await.unwrap().unwrap() {
                WatchEvent::Bookmark(bookmark) => assert_eq!(
                    bookmark
                        .metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                ),
                other => panic!("expected the initial-events-end bookmark, got {other:?}"),
            }
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_seconds_ends_the_stream() {
        let (_, api) = setup();
        let mut events = api
            .watch(&WatchParams::default().timeout(5), "0")
            .await
            .unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(6), events.next()).await;
        assert!(matches!(ended, Ok(None)), "the stream ends after 5 s");
    }

    #[tokio::test]
    async fn the_namespace_and_selectors_filter_the_stream() {
        within(LIMIT, async {
            let (_, api) = setup();
            let params = WatchParams::default().fields("metadata.name=wanted");
            let mut events = api.watch(&params, "").await.unwrap();
            create(&api, "other").await;
            create(&api, "wanted").await;
            assert_eq!(
                name(&events.next().await.unwrap().unwrap()),
                Some("wanted".into())
            );
        })
        .await;
    }
}
