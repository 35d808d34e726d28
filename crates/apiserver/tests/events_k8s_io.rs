//! `events.k8s.io/v1` Events and `core/v1` Events are one storage served in two shapes, as
//! kube-apiserver serves them: reads through either group (get, list, watch, in process and
//! over HTTP through the watch cache) decode as that group's typed Event, and a write in the
//! `events.k8s.io` shape is read back through `core/v1` with its fields converted.

use std::sync::Arc;
use std::time::Duration;

use capstan_api::k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use capstan_api::k8s_openapi::api::events::v1::{Event, EventSeries};
use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_api::kube_core::params::{ListParams, Patch, PatchParams, PostParams, WatchParams};
use capstan_api::kube_core::{ObjectMeta, WatchEvent};
use capstan_api::testing::within;
use capstan_api::{Api, Client, Resource};
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::remote::RemoteClient;
use futures::StreamExt;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + second).unwrap()
}

/// An Event as the recorder writes it, through core/v1.
fn core_event(name: &str) -> CoreEvent {
    CoreEvent {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("uid-web".into()),
            ..ObjectReference::default()
        },
        reason: Some("Killing".into()),
        message: Some("Stopping container web".into()),
        type_: Some("Normal".into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some("node-1".into()),
        }),
        count: Some(3),
        first_timestamp: Some(Time(at(0))),
        last_timestamp: Some(Time(at(20))),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some("node-1".into()),
        ..CoreEvent::default()
    }
}

/// What `core_event` must look like through events.k8s.io/v1.
fn assert_events_v1_shape(event: &Event) {
    let regarding = event.regarding.as_ref().expect("regarding");
    assert_eq!(
        (regarding.kind.as_deref(), regarding.name.as_deref()),
        (Some("Pod"), Some("web"))
    );
    assert_eq!(event.note.as_deref(), Some("Stopping container web"));
    assert_eq!(event.reason.as_deref(), Some("Killing"));
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(event.reporting_controller.as_deref(), Some("kubelet"));
    assert_eq!(event.reporting_instance.as_deref(), Some("node-1"));
    assert_eq!(event.deprecated_count, Some(3));
    assert_eq!(event.deprecated_first_timestamp, Some(Time(at(0))));
    assert_eq!(event.deprecated_last_timestamp, Some(Time(at(20))));
    assert_eq!(
        event
            .deprecated_source
            .as_ref()
            .and_then(|s| s.host.as_deref()),
        Some("node-1")
    );
}

async fn reads_through_events_k8s_io_get_list_and_watch(client: Arc<dyn Client>) {
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    core.create(&PostParams::default(), &core_event("web.1"))
        .await
        .unwrap();

    let got = events.get("web.1").await.unwrap();
    assert_events_v1_shape(&got);
    // The wire shape itself: no core/v1 field leaks into events.k8s.io/v1.
    let raw = client
        .get(&Event::info(), Some("default"), "web.1")
        .await
        .unwrap();
    assert_eq!(raw.types.unwrap().api_version, "events.k8s.io/v1");
    for core_only in [
        "involvedObject",
        "message",
        "count",
        "source",
        "firstTimestamp",
    ] {
        assert!(
            raw.data.get(core_only).is_none(),
            "{core_only} in {:?}",
            raw.data
        );
    }

    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_events_v1_shape(&listed.items[0]);
    let selected = events
        .list(&ListParams::default().fields("involvedObject.name=web,reportingComponent=kubelet"))
        .await
        .unwrap();
    assert_eq!(
        selected.items.len(),
        1,
        "field selectors read the served shape"
    );

    // From "0": the current objects, then a change, all in the events.k8s.io shape.
    let mut watch = events.watch(&WatchParams::default(), "0").await.unwrap();
    match watch.next().await {
        Some(Ok(WatchEvent::Added(event))) => assert_events_v1_shape(&event),
        other => panic!("expected the Event added, got {other:?}"),
    }
    core.create(&PostParams::default(), &core_event("web.2"))
        .await
        .unwrap();
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::Added(event))) => {
                assert_eq!(event.metadata.name.as_deref(), Some("web.2"));
                assert_events_v1_shape(&event);
                break;
            }
            Some(Ok(WatchEvent::Bookmark(_))) => continue,
            other => panic!("expected web.2 added, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn events_k8s_io_reads_are_served_in_their_own_shape_in_process() {
    within(
        LIMIT,
        reads_through_events_k8s_io_get_list_and_watch(capstan_apiserver::testing::client()),
    )
    .await;
}

#[tokio::test]
async fn events_k8s_io_reads_are_served_in_their_own_shape_over_http() {
    within(LIMIT, async {
        let server = ApiServer::bind(
            capstan_apiserver::testing::registry(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let client: Arc<dyn Client> = Arc::new(RemoteClient::new(&server.url()).unwrap());
        reads_through_events_k8s_io_get_list_and_watch(client).await;
    })
    .await;
}

#[tokio::test]
async fn a_write_in_the_events_k8s_io_shape_is_read_back_through_core_v1() {
    within(LIMIT, async {
        let client = capstan_apiserver::testing::client();
        let events: Api<Event> = Api::namespaced(client.clone(), "default");
        let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
        let event = Event {
            metadata: ObjectMeta {
                name: Some("web.3".into()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(at(5))),
            regarding: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..ObjectReference::default()
            }),
            related: Some(ObjectReference {
                kind: Some("Node".into()),
                name: Some("node-1".into()),
                ..ObjectReference::default()
            }),
            note: Some("Pulled image nginx".into()),
            reason: Some("Pulled".into()),
            type_: Some("Normal".into()),
            action: Some("Pull".into()),
            reporting_controller: Some("kubelet".into()),
            reporting_instance: Some("node-1".into()),
            series: Some(EventSeries {
                count: 2,
                last_observed_time: MicroTime(at(9)),
            }),
            ..Event::default()
        };
        let created = events.create(&PostParams::default(), &event).await.unwrap();
        assert_eq!(created.note.as_deref(), Some("Pulled image nginx"));
        assert_eq!(created.regarding, event.regarding);

        let stored = core.get("web.3").await.unwrap();
        assert_eq!(stored.involved_object.name.as_deref(), Some("web"));
        assert_eq!(stored.message.as_deref(), Some("Pulled image nginx"));
        assert_eq!(stored.reporting_component.as_deref(), Some("kubelet"));
        assert_eq!(stored.reporting_instance.as_deref(), Some("node-1"));
        assert_eq!(stored.event_time, Some(MicroTime(at(5))));
        assert_eq!(stored.action.as_deref(), Some("Pull"));
        assert_eq!(
            stored.related.as_ref().and_then(|r| r.name.as_deref()),
            Some("node-1")
        );
        assert_eq!(stored.series.as_ref().and_then(|s| s.count), Some(2));
        let raw = client
            .get(&CoreEvent::info(), Some("default"), "web.3")
            .await
            .unwrap();
        assert_eq!(raw.types.unwrap().api_version, "v1");
        assert!(raw.data.get("note").is_none() && raw.data.get("regarding").is_none());

        // A merge patch in the events.k8s.io shape changes the core fields.
        let patch = json!({ "note": "Pulled image nginx:1.27", "deprecatedCount": 5 });
        let patched = events
            .patch("web.3", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        assert_eq!(patched.note.as_deref(), Some("Pulled image nginx:1.27"));
        let stored = core.get("web.3").await.unwrap();
        assert_eq!(stored.message.as_deref(), Some("Pulled image nginx:1.27"));
        assert_eq!(stored.count, Some(5));

        // And the other way round: a core update shows through events.k8s.io.
        let mut changed = stored;
        changed.message = Some("Pulled image nginx:1.28".into());
        core.update(&PostParams::default(), &changed).await.unwrap();
        assert_eq!(
            events.get("web.3").await.unwrap().note.as_deref(),
            Some("Pulled image nginx:1.28")
        );

        // A delete answers in the shape it was asked in.
        let deleted = events
            .delete("web.3", &Default::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(deleted.note.as_deref(), Some("Pulled image nginx:1.28"));
        assert!(core.get_opt("web.3").await.unwrap().is_none());
    })
    .await;
}
