//! Reflector and shared informer against a scripted `Watch` source that cuts its streams
//! every few events and compacts its history: the handlers' recorded deltas must match the
//! source's changes exactly (no loss, duplicate or reordering) while history lasts, and the
//! cache must end equal to a fresh list after a relist.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
use capstan_api::kube_core::params::{ListParams, WatchParams};
use capstan_api::kube_core::{ListMeta, ObjectList, ObjectMeta, TypeMeta, WatchEvent};
use capstan_api::{Error, Result};
use capstan_watch::{
    Backoff, Delta, EventStream, ObjectKey, ReflectorOptions, SharedInformer, Watch,
};
use futures::StreamExt;
use parking_lot::Mutex;

/// A source with a change log: objects are ConfigMaps whose `data.v` is the revision.
#[derive(Default)]
struct Script {
    revision: i64,
    objects: BTreeMap<String, ConfigMap>,
    log: Vec<(i64, WatchEvent<ConfigMap>)>,
    /// Watches from before this revision are Gone.
    compacted: i64,
    /// Streams end after this many events (0: never).
    cut_every: usize,
    lists: usize,
    watches: usize,
}

#[derive(Clone, Default)]
struct Source(Arc<Mutex<Script>>);

fn config_map(name: &str, revision: i64) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            resource_version: Some(revision.to_string()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".into(), revision.to_string())])),
        ..Default::default()
    }
}

impl Source {
    fn put(&self, name: &str) -> i64 {
        let mut script = self.0.lock();
        script.revision += 1;
        let revision = script.revision;
        let object = config_map(name, revision);
        let event = if script.objects.insert(name.into(), object.clone()).is_some() {
            WatchEvent::Modified(object)
        } else {
            WatchEvent::Added(object)
        };
        script.log.push((revision, event));
        revision
    }

    fn delete(&self, name: &str) -> i64 {
        let mut script = self.0.lock();
        script.revision += 1;
        let revision = script.revision;
        let mut object = script.objects.remove(name).expect("exists");
        object.metadata.resource_version = Some(revision.to_string());
        script.log.push((revision, WatchEvent::Deleted(object)));
        revision
    }

    fn compact(&self) {
        let mut script = self.0.lock();
        script.compacted = script.revision;
        script.log.clear();
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        self.0
            .lock()
            .objects
            .iter()
            .map(|(name, cm)| (name.clone(), cm.metadata.resource_version.clone().unwrap()))
            .collect()
    }
}

#[async_trait]
impl Watch<ConfigMap> for Source {
    async fn list(&self, params: &ListParams) -> Result<ObjectList<ConfigMap>> {
        let mut script = self.0.lock();
        script.lists += 1;
        let after = params.continue_token.clone().unwrap_or_default();
        let limit = params.limit.unwrap_or(u32::MAX) as usize;
        let mut items: Vec<ConfigMap> = script
            .objects
            .iter()
            .filter(|(name, _)| name.as_str() > after.as_str())
            .map(|(_, cm)| cm.clone())
            .collect();
        let more = items.len() > limit;
        items.truncate(limit);
        let continue_ = more.then(|| items.last().unwrap().metadata.name.clone().unwrap());
        Ok(ObjectList {
            types: TypeMeta::list::<ConfigMap>(),
            metadata: ListMeta {
                resource_version: Some(script.revision.to_string()),
                continue_,
                ..Default::default()
            },
            items,
        })
    }

    async fn watch(
        &self,
        _: &WatchParams,
        resource_version: &str,
    ) -> Result<EventStream<ConfigMap>> {
        let mut script = self.0.lock();
        script.watches += 1;
        let from: i64 = resource_version.parse().unwrap_or(0);
        if from < script.compacted {
            return Err(Error::Gone {
                message: format!("too old resource version: {from} ({})", script.compacted),
            });
        }
        let mut events: Vec<_> = script
            .log
            .iter()
            .filter(|(revision, _)| *revision > from)
            .map(|(_, event)| Ok(event.clone()))
            .collect();
        if script.cut_every > 0 {
            events.truncate(script.cut_every);
        }
        Ok(futures::stream::iter(events).boxed())
    }
}

fn options() -> ReflectorOptions {
    ReflectorOptions {
        page_size: 2,
        backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(5)),
        ..Default::default()
    }
}

/// What the handler saw, folded into a name → resourceVersion map, plus the raw log.
fn fold(log: &[(String, String, &'static str)]) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for (name, rv, kind) in log {
        if *kind == "deleted" {
            state.remove(name);
        } else {
            state.insert(name.clone(), rv.clone());
        }
    }
    state
}

fn record(delta: &Delta<ConfigMap>) -> (String, String, &'static str) {
    let kind = match delta {
        Delta::Added(_) => "added",
        Delta::Updated { .. } => "updated",
        Delta::Deleted(_) => "deleted",
    };
    let object = delta.object();
    (
        object.metadata.name.clone().unwrap(),
        object.metadata.resource_version.clone().unwrap(),
        kind,
    )
}

async fn drain_until(
    deltas: &mut tokio::sync::mpsc::UnboundedReceiver<Delta<ConfigMap>>,
    log: &mut Vec<(String, String, &'static str)>,
    want: &BTreeMap<String, String>,
) {
    while fold(log) != *want {
        let delta = deltas.recv().await.expect("informer alive");
        log.push(record(&delta));
    }
}

#[tokio::test]
async fn cut_streams_resume_without_losing_duplicating_or_reordering_events() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let source = Source::default();
        source.0.lock().cut_every = 3;
        for i in 0..5 {
            source.put(&format!("cm{i}"));
        }
        let informer = SharedInformer::spawn(Arc::new(source.clone()), options());
        let mut deltas = informer.subscribe();
        informer.wait_for_sync().await;
        let mut log = Vec::new();
        drain_until(&mut deltas, &mut log, &source.snapshot()).await;
        let listed = log.len();
        assert_eq!(listed, 5, "the list arrives as five adds, in pages of two");

        let mut expected = Vec::new();
        for round in 0..20 {
            let name = format!("cm{}", round % 7);
            let revision = if round % 5 == 4 && source.snapshot().contains_key(&name) {
                let revision = source.delete(&name);
                expected.push((name, revision.to_string(), "deleted"));
                revision
            } else {
                let existed = source.snapshot().contains_key(&name);
                let revision = source.put(&name);
                expected.push((
                    name,
                    revision.to_string(),
                    if existed { "updated" } else { "added" },
                ));
                revision
            };
            assert!(revision > 0);
        }
        drain_until(&mut deltas, &mut log, &source.snapshot()).await;
        assert_eq!(
            log[listed..],
            expected[..],
            "exactly the source's changes, in order"
        );
        assert!(
            source.0.lock().watches >= 20 / 3,
            "the streams were cut and resumed"
        );
        assert_eq!(source.0.lock().lists, 3, "one paged list, never a relist");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn after_gone_the_reflector_relists_and_the_cache_equals_a_fresh_list() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let source = Source::default();
        for i in 0..6 {
            source.put(&format!("cm{i}"));
        }
        let informer = SharedInformer::spawn(Arc::new(source.clone()), options());
        let mut deltas = informer.subscribe();
        informer.wait_for_sync().await;
        let mut log = Vec::new();
        drain_until(&mut deltas, &mut log, &source.snapshot()).await;
        let unchanged = informer
            .cache()
            .get(&ObjectKey::namespaced("default", "cm5"))
            .unwrap();

        // Changes the informer cannot watch: the source compacts them away, and every later
        // watch from before that point is Gone.
        source.0.lock().cut_every = 1;
        source.delete("cm0");
        source.put("cm1");
        source.put("cm9");
        source.compact();
        source.put("cm2");
        drain_until(&mut deltas, &mut log, &source.snapshot()).await;

        let cached: BTreeMap<String, String> = informer
            .cache()
            .list()
            .iter()
            .map(|cm| {
                (
                    cm.metadata.name.clone().unwrap(),
                    cm.metadata.resource_version.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(cached, source.snapshot(), "the cache equals a fresh list");
        assert!(source.0.lock().lists > 3, "a relist happened");
        let after = informer
            .cache()
            .get(&ObjectKey::namespaced("default", "cm5"))
            .unwrap();
        assert!(
            Arc::ptr_eq(&unchanged, &after),
            "a relist keeps unchanged objects, not a second copy"
        );
        // Per object, resourceVersions only grow, and nothing is delivered twice. A deletion
        // found by the relist carries the last state seen, so its version may repeat.
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        for (name, rv, kind) in &log {
            let rv: i64 = rv.parse().unwrap();
            if let Some(previous) = last.insert(name.as_str(), rv) {
                if *kind == "deleted" {
                    assert!(rv >= previous, "{name}: deleted at {rv} after {previous}");
                } else {
                    assert!(rv > previous, "{name}: {rv} after {previous}");
                }
            }
        }
        assert!(
            log.iter()
                .any(|(name, _, kind)| name == "cm0" && *kind == "deleted"),
            "the deletion hidden by the compaction is found by the relist"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn handlers_can_subscribe_late_and_unsubscribe_at_any_time() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let source = Source::default();
        source.put("a");
        let informer = SharedInformer::spawn(Arc::new(source.clone()), options());
        informer.wait_for_sync().await;
        let early = informer.subscribe();
        drop(early);
        source.put("b");
        let mut late = informer.subscribe();
        let mut log = Vec::new();
        drain_until(&mut late, &mut log, &source.snapshot()).await;
        let names: Vec<_> = log.iter().map(|(name, _, _)| name.as_str()).collect();
        assert!(names.contains(&"a") && names.contains(&"b"), "{names:?}");
    })
    .await
    .unwrap();
}

struct FailingThenWorking {
    failures: Mutex<usize>,
    inner: Source,
}

#[async_trait]
impl Watch<ConfigMap> for FailingThenWorking {
    async fn list(&self, params: &ListParams) -> Result<ObjectList<ConfigMap>> {
        {
            let mut failures = self.failures.lock();
            if *failures > 0 {
                *failures -= 1;
                return Err(Error::ServiceUnavailable {
                    message: "not yet".into(),
                });
            }
        }
        self.inner.list(params).await
    }

    async fn watch(&self, params: &WatchParams, rv: &str) -> Result<EventStream<ConfigMap>> {
        self.inner.watch(params, rv).await
    }
}

#[tokio::test]
async fn a_failing_source_is_retried_until_it_answers() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let inner = Source::default();
        inner.put("a");
        let source = FailingThenWorking {
            failures: Mutex::new(3),
            inner: inner.clone(),
        };
        let informer = SharedInformer::spawn(Arc::new(source), options());
        informer.wait_for_sync().await;
        assert_eq!(informer.cache().len(), 1);
        assert_eq!(
            inner.0.lock().lists,
            1,
            "three failures, then one successful list"
        );
    })
    .await
    .unwrap();
}
