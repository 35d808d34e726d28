//! The event recorder over the in-process registry.

mod support;

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use capstan_api::{
    k8s_openapi::{
        api::{
            apps::v1::{Deployment, ReplicaSet},
            core::v1::{Container, Event, Node, Pod, PodSpec},
        },
        jiff::Timestamp,
    },
    kube_core::{
        params::{DeleteParams, ListParams, PostParams},
        ObjectMeta,
    },
    Api, Client,
};
use capstan_controller::events::{
    dynamic_object_reference, object_reference, EventBroadcaster, EventOptions, EventType,
    COMBINED_MESSAGE_PREFIX,
};
use support::{FaultyClient, Mode};

/// A clock starting at a fixed instant and moving `step_seconds` on every reading.
fn stepping_clock(step_seconds: i64) -> impl Fn() -> Timestamp + Send + Sync + 'static {
    let next = AtomicI64::new(1_750_000_000);
    move || Timestamp::from_second(next.fetch_add(step_seconds, Ordering::SeqCst)).unwrap()
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    }
}

/// Every Event in `namespace`, oldest name first (names end in increasing hex nanoseconds
/// per object).
async fn events_in(client: &Arc<dyn Client>, namespace: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let mut items = events.list(&ListParams::default()).await.unwrap().items;
    items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    items
}

#[tokio::test]
async fn a_recorded_event_appears_with_kubernetes_fields() {
    let client = capstan_apiserver::testing::client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut web = pod("web");
    web.metadata.uid = None;
    web.spec = Some(PodSpec {
        containers: vec![Container {
            name: "web".into(),
            image: Some("busybox".into()),
            ..Container::default()
        }],
        ..PodSpec::default()
    });
    let web = pods.create(&PostParams::default(), &web).await.unwrap();

    let broadcaster = EventBroadcaster::new(client.clone(), EventOptions::default());
    let recorder = broadcaster
        .recorder("default-scheduler")
        .with_host("node-1");
    assert_eq!(recorder.component(), "default-scheduler");
    recorder.normal(
        &web,
        "Scheduled",
        "Successfully assigned default/web to node-1",
    );
    broadcaster.flush().await;

    let events = events_in(&client, "default").await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    let name = event.metadata.name.as_deref().unwrap();
    let (object, suffix) = name.split_once('.').unwrap();
    assert_eq!(object, "web");
    assert!(u64::from_str_radix(suffix, 16).is_ok(), "{name}");
    assert_eq!(event.metadata.namespace.as_deref(), Some("default"));

    let involved = &event.involved_object;
    assert_eq!(involved.api_version.as_deref(), Some("v1"));
    assert_eq!(involved.kind.as_deref(), Some("Pod"));
    assert_eq!(involved.name.as_deref(), Some("web"));
    assert_eq!(involved.namespace.as_deref(), Some("default"));
    assert_eq!(involved.uid, web.metadata.uid);
    assert_eq!(involved.resource_version, web.metadata.resource_version);
    assert_eq!(event.involved_object, object_reference(&web));

    assert_eq!(event.reason.as_deref(), Some("Scheduled"));
    assert_eq!(
        event.message.as_deref(),
        Some("Successfully assigned default/web to node-1")
    );
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    let source = event.source.as_ref().unwrap();
    assert_eq!(source.component.as_deref(), Some("default-scheduler"));
    assert_eq!(source.host.as_deref(), Some("node-1"));
    assert_eq!(
        event.reporting_component.as_deref(),
        Some("default-scheduler")
    );
    assert_eq!(event.reporting_instance.as_deref(), Some("node-1"));
    assert_eq!(event.count, Some(1));
    assert!(event.first_timestamp.is_some());
    assert_eq!(event.first_timestamp, event.last_timestamp);

    let metrics = broadcaster.metrics();
    assert_eq!(
        (metrics.recorded, metrics.created, metrics.dropped),
        (1, 1, 0)
    );
    broadcaster.shutdown().await;
}

#[tokio::test]
async fn repeats_aggregate_into_one_event() {
    let client = capstan_apiserver::testing::client();
    let options = EventOptions::default()
        .clock(stepping_clock(10))
        .history_capacity(10);
    let broadcaster = EventBroadcaster::new(client.clone(), options);
    let recorder = broadcaster.recorder("kubelet").with_host("node-1");
    let web = pod("web");
    for _ in 0..3 {
        recorder.normal(&web, "Killing", "Stopping container web");
    }
    broadcaster.flush().await;

    let events = events_in(&client, "default").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event.count, Some(3));
    let first = event.first_timestamp.as_ref().unwrap().0;
    let last = event.last_timestamp.as_ref().unwrap().0;
    assert_eq!(last.as_second() - first.as_second(), 20);
    assert_eq!(event.message.as_deref(), Some("Stopping container web"));

    // The log shows each write: created, then patched twice under the same name.
    let history = broadcaster.history();
    let counts: Vec<_> = history.iter().map(|e| e.count.unwrap()).collect();
    assert_eq!(counts, [1, 2, 3]);
    assert!(history
        .iter()
        .all(|e| e.metadata.name == event.metadata.name));
    let metrics = broadcaster.metrics();
    assert_eq!((metrics.created, metrics.patched), (1, 2));
    broadcaster.shutdown().await;
}

#[tokio::test]
async fn different_reasons_objects_and_sources_stay_separate() {
    let client = capstan_apiserver::testing::client();
    let broadcaster = EventBroadcaster::new(client.clone(), EventOptions::default());
    let kubelet = broadcaster.recorder("kubelet");
    let controller = broadcaster.recorder("replicaset-controller");
    let (web, api) = (pod("web"), pod("api"));
    kubelet.normal(&web, "Killing", "Stopping container web");
    kubelet.normal(&web, "Pulled", "Stopping container web");
    kubelet.normal(&api, "Killing", "Stopping container web");
    controller.normal(&web, "Killing", "Stopping container web");
    kubelet.normal(&web, "Killing", "Stopping container web");
    broadcaster.flush().await;

    let events = events_in(&client, "default").await;
    assert_eq!(events.len(), 4, "{events:#?}");
    let counts: Vec<_> = events.iter().map(|e| e.count.unwrap()).collect();
    assert_eq!(counts.iter().sum::<i32>(), 5);
    assert!(counts.contains(&2));
    broadcaster.shutdown().await;
}

#[tokio::test]
async fn a_warning_keeps_its_type_and_stays_apart_from_a_normal_event() {
    let client = capstan_apiserver::testing::client();
    let broadcaster = EventBroadcaster::new(client.clone(), EventOptions::default());
    let recorder = broadcaster.recorder("kubelet");
    let web = pod("web");
    recorder.warning(&web, "BackOff", "Back-off restarting failed container");
    recorder.event(
        &web,
        EventType::Normal,
        "BackOff",
        "Back-off restarting failed container",
    );
    recorder.warning(&web, "BackOff", "Back-off restarting failed container");
    broadcaster.flush().await;

    let events = events_in(&client, "default").await;
    assert_eq!(events.len(), 2);
    let warning = events
        .iter()
        .find(|e| e.type_.as_deref() == Some("Warning"))
        .unwrap();
    assert_eq!(warning.count, Some(2));
    let normal = events
        .iter()
        .find(|e| e.type_.as_deref() == Some("Normal"))
        .unwrap();
    assert_eq!(normal.count, Some(1));
    assert_eq!(EventType::Warning.to_string(), "Warning");
    broadcaster.shutdown().await;
}

#[tokio::test]
async fn many_similar_messages_are_combined_into_one_event() {
    let client = capstan_apiserver::testing::client();
    let broadcaster = EventBroadcaster::new(client.clone(), EventOptions::default());
    let recorder = broadcaster.recorder("kubelet");
    let web = pod("web");
    for i in 0..12 {
        recorder.warning(&web, "FailedMount", format!("volume {i} not found"));
    }
    broadcaster.flush().await;

    let events = events_in(&client, "default").await;
    assert_eq!(events.len(), 10, "{events:#?}");
    let combined: Vec<_> = events
        .iter()
        .filter(|e| {
            e.message
                .as_deref()
                .unwrap()
                .starts_with(COMBINED_MESSAGE_PREFIX)
        })
        .collect();
    assert_eq!(combined.len(), 1);
    assert_eq!(combined[0].count, Some(3));
    assert_eq!(
        combined[0].message.as_deref().unwrap(),
        format!("{COMBINED_MESSAGE_PREFIX}volume 11 not found")
    );
    broadcaster.shutdown().await;
}

#[tokio::test]
async fn repeats_outside_the_window_or_evicted_from_the_cache_start_a_new_event() {
    let client = capstan_apiserver::testing::client();
    let now = Arc::new(AtomicI64::new(1_750_000_000));
    let clock = {
        let now = now.clone();
        move || Timestamp::from_second(now.load(Ordering::SeqCst)).unwrap()
    };
    let options = EventOptions::default()
        .clock(clock)
        .dedup_window(Duration::from_secs(3600));
    let broadcaster = EventBroadcaster::new(client.clone(), options);
    let recorder = broadcaster.recorder("kubelet");
    let web = pod("web");
    for step in [0, 40 * 60, 40 * 60, 61 * 60] {
        now.fetch_add(step, Ordering::SeqCst);
        recorder.normal(&web, "Pulled", "Image already present");
    }
    broadcaster.flush().await;
    let counts: Vec<_> = events_in(&client, "default")
        .await
        .iter()
        .map(|e| e.count.unwrap())
        .collect();
    assert_eq!(counts, [3, 1]);
    broadcaster.shutdown().await;

    // With room for one entry, an interleaved event evicts the first: its repeat is new.
    let client = capstan_apiserver::testing::client();
    let broadcaster = EventBroadcaster::new(client.clone(), EventOptions::default().cache_size(1));
    let recorder = broadcaster.recorder("kubelet");
    recorder.normal(&web, "Pulled", "Image already present");
    recorder.normal(&web, "Created", "Created container web");
    recorder.normal(&web, "Pulled", "Image already present");
    broadcaster.flush().await;
    assert_eq!(events_in(&client, "default").await.len(), 3);
    broadcaster.shutdown().await;
}

#[tokio::test]
async fn a_repeat_of_a_deleted_event_creates_it_again() {
    let client = capstan_apiserver::testing::client();
    let broadcaster = EventBroadcaster::new(client.clone(), EventOptions::default());
    let recorder = broadcaster.recorder("kubelet");
    let web = pod("web");
    recorder.normal(&web, "Started", "Started container web");
    broadcaster.flush().await;
    let first = events_in(&client, "default").await.remove(0);
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .delete(
            first.metadata.name.as_deref().unwrap(),
            &DeleteParams::default(),
        )
        .await
        .unwrap();

    recorder.normal(&web, "Started", "Started container web");
    broadcaster.flush().await;
    let again = events_in(&client, "default").await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].metadata.name, first.metadata.name);
    assert_eq!(again[0].count, Some(2));
    assert_eq!(broadcaster.metrics().created, 2);
}

#[tokio::test]
async fn cluster_scoped_objects_get_their_events_in_default() {
    let client = capstan_apiserver::testing::client();
    let broadcaster = EventBroadcaster::new(client.clone(), EventOptions::default());
    let recorder = broadcaster.recorder("node-controller");
    let node = Node {
        metadata: ObjectMeta {
            name: Some("node-1".into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    recorder.normal(
        &node,
        "RegisteredNode",
        "Node node-1 event: Registered Node",
    );
    let dynamic = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": { "name": "node-2" }
    }))
    .unwrap();
    recorder.event_for(
        dynamic_object_reference(&dynamic),
        EventType::Normal,
        "RegisteredNode",
        "Node node-2 event: Registered Node",
    );
    broadcaster.flush().await;
    let events = events_in(&client, "default").await;
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(event.involved_object.kind.as_deref(), Some("Node"));
        assert_eq!(event.involved_object.namespace, None);
    }
    broadcaster.shutdown().await;
}

#[tokio::test]
async fn the_history_keeps_the_recording_order_across_objects() {
    let client = capstan_apiserver::testing::client();
    let broadcaster = EventBroadcaster::new(
        client.clone(),
        EventOptions::default().history_capacity(100),
    );
    let deployments = broadcaster.recorder("deployment-controller");
    let replica_sets = broadcaster.recorder("replicaset-controller");
    let kubelet = broadcaster.recorder("kubelet");
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some("newkubia".into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        ..Deployment::default()
    };
    let replica_set = ReplicaSet {
        metadata: ObjectMeta {
            name: Some("newkubia-7d8f9".into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        ..ReplicaSet::default()
    };
    deployments.normal(
        &deployment,
        "ScalingReplicaSet",
        "Scaled down replica set newkubia-7d8f9 to 3 from 5",
    );
    for victim in ["newkubia-7d8f9-a", "newkubia-7d8f9-b"] {
        kubelet.normal(&pod(victim), "Killing", "Stopping container kubia");
    }
    for victim in ["newkubia-7d8f9-a", "newkubia-7d8f9-b"] {
        replica_sets.normal(
            &replica_set,
            "SuccessfulDelete",
            format!("Deleted pod: {victim}"),
        );
    }
    broadcaster.flush().await;

    let reasons: Vec<_> = broadcaster
        .history()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e.involved_object.kind.as_deref().unwrap(),
                e.reason.as_deref().unwrap()
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "Deployment/ScalingReplicaSet",
            "Pod/Killing",
            "Pod/Killing",
            "ReplicaSet/SuccessfulDelete",
            "ReplicaSet/SuccessfulDelete",
        ]
    );
    assert_eq!(
        broadcaster.history()[0]
            .involved_object
            .api_version
            .as_deref(),
        Some("apps/v1")
    );
    broadcaster.shutdown().await;
}

#[tokio::test]
async fn shutdown_writes_what_is_queued() {
    let client = capstan_apiserver::testing::client();
    let broadcaster = EventBroadcaster::new(client.clone(), EventOptions::default());
    let recorder = broadcaster.recorder("kubelet");
    for i in 0..50 {
        recorder.normal(&pod(&format!("web-{i}")), "Created", "Created container");
    }
    broadcaster.shutdown().await;
    assert_eq!(events_in(&client, "default").await.len(), 50);

    // After shutdown, recording is dropped, quietly and without blocking.
    recorder.normal(&pod("late"), "Created", "Created container");
    assert_eq!(events_in(&client, "default").await.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_never_blocks_when_the_api_hangs() {
    let faulty = FaultyClient::new(capstan_apiserver::testing::client(), 7);
    faulty.set_mode(Mode::Hanging);
    let broadcaster = EventBroadcaster::new(faulty.clone(), EventOptions::default());
    let recorder = broadcaster.recorder("kubelet");
    let web = pod("web");

    let started = std::time::Instant::now();
    for i in 0..5_000 {
        recorder.warning(&web, "Failed", format!("attempt {i}"));
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "recording took {elapsed:?}"
    );

    let metrics = broadcaster.metrics();
    assert_eq!(metrics.recorded + metrics.dropped, 5_000);
    assert!(metrics.recorded <= 1_001, "{metrics:?}");
    assert!(metrics.dropped >= 3_999, "{metrics:?}");
    // Dropping the broadcaster aborts the stuck writer.
    drop(broadcaster);
}

#[tokio::test(start_paused = true)]
async fn failing_writes_are_retried_then_given_up_without_blocking() {
    let faulty = FaultyClient::new(capstan_apiserver::testing::client(), 8);
    faulty.set_mode(Mode::Failing);
    let options = EventOptions::default().retries(3, Duration::from_secs(10));
    let broadcaster = EventBroadcaster::new(faulty.clone(), options);
    let recorder = broadcaster.recorder("kubelet");
    let started = tokio::time::Instant::now();
    recorder.normal(&pod("web"), "Started", "Started container web");
    assert_eq!(tokio::time::Instant::now(), started);
    broadcaster.flush().await;
    assert_eq!(faulty.calls(), 3);
    assert!(started.elapsed() >= Duration::from_secs(20));
    assert_eq!(broadcaster.metrics().failed, 1);

    // Once the API is back, new events go through.
    faulty.set_mode(Mode::Healthy);
    recorder.normal(&pod("api"), "Started", "Started container api");
    broadcaster.flush().await;
    assert_eq!(broadcaster.metrics().created, 1);
    broadcaster.shutdown().await;
}
