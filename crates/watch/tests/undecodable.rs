//! A reflector whose source sends objects that do not decode as the kind keeps going: such
//! an object is skipped (and counted), a cached copy of it is removed, a later good version
//! comes back, and every other object stays correct.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::client::{Decoded, DecodedList};
use capstan_api::k8s_openapi::api::core::v1::ConfigMap;
use capstan_api::kube_core::params::{ListParams, WatchParams};
use capstan_api::kube_core::{ListMeta, ObjectList, ObjectMeta, TypeMeta, WatchEvent};
use capstan_api::testing::{eventually, within};
use capstan_api::{Error, Resource, Result};
use capstan_watch::{
    DecodedEventStream, Delta, EventStream, InformerMetrics, ObjectKey, ReflectorOptions,
    SharedInformer, Undecodable, Watch,
};
use futures::StreamExt;
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(10);

fn config_map(name: &str, revision: u32) -> ConfigMap {
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

fn undecodable(name: &str, revision: u32) -> Box<Undecodable> {
    Box::new(Undecodable {
        namespace: Some("default".into()),
        name: name.into(),
        resource_version: Some(revision.to_string()),
        error: Error::internal(format!(
            "cannot convert ConfigMap \"{name}\" from a DynamicObject: invalid type: integer `7`, expected a map"
        )),
    })
}

/// Lists `a` (good) and `b` (undecodable) at revision 2, then streams whatever the test
/// sends, on one watch that never ends.
struct Source {
    events: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<WatchEvent<Decoded<ConfigMap>>>>>,
}

#[async_trait]
impl Watch<ConfigMap> for Source {
    async fn list(&self, _: &ListParams) -> Result<ObjectList<ConfigMap>> {
        Err(Error::internal("the reflector must list per item"))
    }

    async fn watch(&self, _: &WatchParams, _: &str) -> Result<EventStream<ConfigMap>> {
        Err(Error::internal("the reflector must watch per item"))
    }

    async fn list_decoded(&self, _: &ListParams) -> Result<DecodedList<ConfigMap>> {
        Ok(DecodedList {
            types: TypeMeta::default(),
            metadata: ListMeta {
                resource_version: Some("2".into()),
                ..ListMeta::default()
            },
            items: vec![Ok(config_map("a", 1)), Err(undecodable("b", 2))],
        })
    }

    async fn watch_decoded(
        &self,
        _: &WatchParams,
        _: &str,
    ) -> Result<DecodedEventStream<ConfigMap>> {
        match self.events.lock().take() {
            Some(events) => Ok(tokio_stream_of(events).map(Ok).boxed()),
            None => Ok(futures::stream::pending().boxed()),
        }
    }
}

fn tokio_stream_of<T: Send + 'static>(
    mut receiver: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

fn names(informer: &SharedInformer<ConfigMap>) -> Vec<String> {
    let mut names: Vec<String> = informer
        .cache()
        .list()
        .iter()
        .map(|cm| cm.metadata.name.clone().unwrap_or_default())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn undecodable_objects_are_skipped_and_a_stale_copy_is_removed_until_a_good_version_returns()
{
    within(LIMIT, async {
        let resource = ConfigMap::info().qualified_resource();
        let before = InformerMetrics::decode_errors(&resource);
        let (send, events) = mpsc::unbounded_channel();
        let source = Source {
            events: parking_lot::Mutex::new(Some(events)),
        };
        let informer = SharedInformer::spawn(Arc::new(source), ReflectorOptions::default());
        informer.wait_for_sync().await;
        assert_eq!(names(&informer), ["a"], "the list skipped b and kept a");
        assert!(InformerMetrics::decode_errors(&resource) > before);
        let mut deltas = informer.subscribe();
        assert!(matches!(deltas.recv().await, Some(Delta::Added(_))));

        // a stops decoding: its cached copy is stale, so handlers see it go.
        send.send(WatchEvent::Modified(Err(undecodable("a", 3))))
            .unwrap();
        match deltas.recv().await {
            Some(Delta::Deleted(gone)) => assert_eq!(gone.metadata.name.as_deref(), Some("a")),
            other => panic!("expected a deleted, got {other:?}"),
        }
        assert!(informer
            .cache()
            .get(&ObjectKey::namespaced("default", "a"))
            .is_none());
        assert_eq!(informer.cache().resource_version(), "3");

        // Other objects keep flowing, and good versions come back.
        send.send(WatchEvent::Added(Ok(config_map("c", 4))))
            .unwrap();
        send.send(WatchEvent::Modified(Ok(config_map("a", 5))))
            .unwrap();
        send.send(WatchEvent::Modified(Ok(config_map("b", 6))))
            .unwrap();
        eventually(LIMIT, "a, b and c cached", || async {
            names(&informer) == ["a", "b", "c"]
        })
        .await;
        assert_eq!(informer.cache().resource_version(), "6");
        assert!(InformerMetrics::decode_errors(&resource) >= before + 2);
    })
    .await;
}
